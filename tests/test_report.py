"""report: rliable aggregates on the shipped published scores, missing games/seeds listed, the agent/human split."""

import json
from pathlib import Path

import numpy as np
import pytest

from diamond_pl import report
from diamond_pl.games import ATARI_100K_GAMES, score_table


def _run_report(argv, capsys):
    report.main(argv)
    return capsys.readouterr()


def test_report_reproduces_published_diamond_aggregates(tmp_path, capsys):
    out = tmp_path / "rep"
    _run_report(["DIAMOND", "--out", str(out), "--reps", "2000", "--poi-reps", "20", "--no-plots"], capsys)
    s = json.loads((out / "report.json").read_text())
    assert s["missing_games"] == [] and s["missing_runs"] == [] and s["runs_per_game_in_aggregates"] == 5
    ours = s["aggregates"]["All games"]["methods"]["DIAMOND (this source)"]
    assert ours["Mean"]["value"] == pytest.approx(1.459, abs=5e-4)
    assert ours["Median"]["value"] == pytest.approx(0.373, abs=5e-4)
    assert ours["IQM"]["value"] == pytest.approx(0.641, abs=5e-4)
    lo, hi = ours["IQM"]["ci"]
    assert 0.56 < lo < 0.60 and 0.69 < hi < 0.73  # published: about 0.58-0.71
    assert ours["Mean"]["ci"][0] < 1.459 < ours["Mean"]["ci"][1]
    methods = s["aggregates"]["All games"]["methods"]
    assert methods["IRIS"]["Mean"]["value"] == pytest.approx(1.046, abs=5e-4)
    assert methods["Simulus"]["Mean"]["value"] == pytest.approx(1.645, abs=5e-4)
    assert methods["Simulus"]["IQM"]["value"] == pytest.approx(0.99, abs=0.01)
    # a method against itself: probability of improvement 0.5
    assert s["probability_of_improvement"]["DIAMOND"]["value"] == pytest.approx(0.5)
    assert set(s["aggregates"]) == {"All games", "Agent-optimal games", "Human-optimal games"}
    md = (out / "report.md").read_text()
    assert "1.459" in md and "0.641" in md and "Nothing: every expected game and seed has a result" in md
    boxing = next(r for r in s["per_game"] if r["game"] == "Boxing")
    assert boxing["subset"] == "agent" and boxing["DIAMOND"]["position"] == "within"


def test_agent_optimal_split_is_the_top_half_of_published_median_hns():
    table = score_table()
    methods = ("DIAMOND", "IRIS", "STORM", "DreamerV3", "Simulus")

    def median_hns(g):
        row = table[g]
        vals = [row[m]["mean"] if isinstance(row[m], dict) else row[m] for m in methods]
        return np.median([(v - row["random"]) / (row["human"] - row["random"]) for v in vals])

    ranked = sorted(ATARI_100K_GAMES, key=median_hns, reverse=True)
    assert set(report.AGENT_OPTIMAL) == set(ranked[:13])
    assert set(report.HUMAN_OPTIMAL) == set(ranked[13:]) and len(report.HUMAN_OPTIMAL) == 13


def _fake_run(runs: Path, game: str, seed: int, mean: float, config_hash="abc"):
    run = runs / game / f"seed_{seed}"
    run.mkdir(parents=True)
    (run / "results.json").write_text(json.dumps({"game": game, "seed": seed, "mean": mean, "returns": [mean],
                                                  "config_hash": config_hash}))


def test_report_lists_missing_games_and_seeds_and_plots(tmp_path, capsys):
    runs = tmp_path / "runs"
    runs.mkdir()
    (runs / "sweep.json").write_text(json.dumps({"games": ["Breakout", "Pong", "Boxing"], "seeds": [0, 1]}))
    _fake_run(runs, "Breakout", 0, 100.0)
    _fake_run(runs, "Breakout", 1, 50.0)
    _fake_run(runs, "Pong", 1, -5.0, config_hash="other")
    (runs / "Boxing" / "seed_0").mkdir(parents=True)  # started, never finished
    out = tmp_path / "rep"
    printed = _run_report([str(runs), "--out", str(out), "--reps", "200", "--poi-reps", "20"], capsys).out
    s = json.loads((out / "report.json").read_text())
    assert s["games_present"] == ["Breakout", "Pong"] and s["missing_games"] == ["Boxing"]
    assert s["missing_runs"] == [["Pong", 0]]
    assert s["left_out_of_aggregates"] == [["Breakout", 1]]  # one run per game in the aggregates
    assert s["runs_per_game_in_aggregates"] == 1 and s["config_hashes"] == {"abc": 2, "other": 1}
    agg = s["aggregates"]["All games"]["methods"]["runs"]
    hns = [(100.0 - 1.7) / (30.5 - 1.7), (-5.0 + 20.7) / (14.6 + 20.7)]
    assert agg["Mean"]["value"] == pytest.approx(np.mean(hns))
    assert s["aggregates"]["All games"]["methods"]["DIAMOND"]["Mean"]["value"] != pytest.approx(1.459, abs=0.01)
    md = (out / "report.md").read_text()
    assert "Boxing" in md.split("## Missing")[1].split("##")[0] and "Pong seed 0" in md and "Breakout seed 1" in md
    assert "Only 2 of the 26" in md and "2 different configs" in md
    breakout = next(r for r in s["per_game"] if r["game"] == "Breakout")
    assert breakout["mean"] == 75.0 and breakout["min"] == 50.0 and breakout["DIAMOND"]["position"] == "below"
    assert "Human-optimal games" not in s["aggregates"]  # Breakout and Pong are both agent-optimal
    assert s["figures"] == ["aggregates_all.png", "aggregates_agent_optimal.png", "performance_profiles.png",
                            "probability_of_improvement.png"]
    for f in s["figures"]:
        assert (out / f).stat().st_size > 1000 and f in md
    assert "missing: 1 games, 1 runs" in printed


@pytest.mark.parametrize("argv, needle", [
    (["Nope", "--out", "X"], "neither a sweep folder"),
    (["DIAMOND", "--compare", "Dreamer", "--out", "X"], "unknown reference method 'Dreamer'"),
    (["DIAMOND", "--out", "X", "--reps", "1"], "--reps 1"),
])  # fmt: skip
def test_report_bad_input_is_one_line_exit_2(tmp_path, capsys, argv, needle):
    argv = [str(tmp_path / a) if a == "X" else a for a in argv]
    with pytest.raises(SystemExit) as e:
        report.main(argv)
    err = capsys.readouterr().err
    assert e.value.code == 2 and needle in err and err.count("\n") == 1 and "Traceback" not in err


def test_report_on_a_scores_json_with_a_bad_game(tmp_path, capsys):
    bad = tmp_path / "scores.json"
    bad.write_text(json.dumps({"Tetris": [1.0]}))
    with pytest.raises(SystemExit) as e:
        report.main([str(bad), "--out", str(tmp_path / "o")])
    assert e.value.code == 2 and "Unknown game 'Tetris'" in capsys.readouterr().err
