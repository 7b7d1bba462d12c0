"""`python -m diamond_pl report SOURCE [--compare DIAMOND IRIS Simulus] --out DIR`: Atari-100k results as rliable
aggregates.

SOURCE is a sweep folder (`RUNS_DIR/<game>/seed_<k>/results.json`, see `sweep`), a JSON file of per-seed scores in
the published format (game -> list of per-seed mean returns), or the name of a shipped reference method (DIAMOND,
IRIS, Simulus: `diamond_pl/reference_scores/`).

DIR gets `report.md`, `report.json` (the same numbers, machine-readable) and PNG plots:
- mean, median, IQM and optimality gap of human-normalised scores (HNS) with stratified-bootstrap 95 % CIs
  (Agarwal et al., NeurIPS 2021, through `rliable`), for this source and each compared method on the same games;
- the same on the agent-optimal and the human-optimal games separately (see AGENT_OPTIMAL below);
- performance profiles (fraction of runs with HNS > tau) and the probability of improvement over each method;
- a per-game table: this source's mean and seed range, each method's mean and seed range, and where this source's
  mean falls against that range.
Games or seeds that are missing are listed; runs left out of the aggregates (unequal seed counts) are listed too.
"""

from __future__ import annotations

import argparse
import json
import sys
from importlib import resources
from pathlib import Path

from diamond_pl.games import ATARI_100K_GAMES, UnknownGameError, score_table, validate_game

REFERENCE_METHODS: tuple[str, ...] = ("DIAMOND", "IRIS", "Simulus")

# Agent-optimal vs human-optimal games. JEDI (Lim et al., arXiv 2505.19698) partitions Atari 100k evenly into tasks
# where world-model agents beat the human reference and tasks where they fall far short; its exact list is not
# shipped here, so diamond_pl fixes its own with the same idea: the 13 games with the highest median HNS over the five
# published world-model agents in atari100k_scores.json (DIAMOND, IRIS, STORM, DreamerV3, Simulus; all have a
# median HNS >= 0.63) are agent-optimal, the other 13 (median HNS <= 0.45) human-optimal. A fixed list, so it does not
# move with the run being reported. tests/test_report.py recomputes it from the table.
AGENT_OPTIMAL: tuple[str, ...] = (
    "Assault", "Boxing", "Breakout", "CrazyClimber", "Freeway", "Gopher", "Jamesbond", "Kangaroo", "Krull",
    "KungFuMaster", "Pong", "RoadRunner", "UpNDown",
)  # fmt: skip
HUMAN_OPTIMAL: tuple[str, ...] = tuple(g for g in ATARI_100K_GAMES if g not in AGENT_OPTIMAL)

METRICS = ("Mean", "Median", "IQM", "Optimality gap")
TAUS = [i / 10 for i in range(0, 81)]  # performance profile thresholds: HNS 0 to 8


class ReportError(ValueError):
    """Bad input: printed as one line, exit code 2."""


# ---------------------------------------------------------------------------------------------------------- inputs
def canonical_method(name: str) -> str:
    canonical = {m.lower(): m for m in REFERENCE_METHODS}.get(name.lower())
    if canonical is None:
        raise ReportError(f"unknown reference method {name!r}: choose from {', '.join(REFERENCE_METHODS)}")
    return canonical


def load_reference(name: str) -> dict[str, list[float]]:
    """A shipped method's per-seed scores: game -> list of per-seed mean returns."""
    canonical = canonical_method(name)
    with resources.files("diamond_pl").joinpath(f"reference_scores/{canonical}.json").open() as f:
        return _check_scores(json.load(f), f"reference_scores/{canonical}.json")


def _check_scores(data, where: str) -> dict[str, list[float]]:
    if not isinstance(data, dict):
        raise ReportError(f"{where}: expected a JSON object game -> list of per-seed scores")
    out: dict[str, list[float]] = {}
    for game, seeds in data.items():
        try:
            canonical = validate_game(game)
        except UnknownGameError as e:
            raise ReportError(f"{where}: {e}") from None
        if not isinstance(seeds, list) or not all(isinstance(s, (int, float)) for s in seeds):
            raise ReportError(f"{where}: {game!r} must map to a list of numbers (one score per seed)")
        out[canonical] = [float(s) for s in seeds]
    return out


class Source:
    """Per-seed scores of the reported agent: scores[game][seed] = mean return of the final evaluation."""

    def __init__(self, name: str, scores: dict[str, dict[int, float]], games: list[str], seeds: list[int],
                 problems: list[str], config_hashes: dict[str, int]):  # fmt: skip
        self.name, self.scores, self.games, self.seeds = name, scores, games, seeds
        self.problems, self.config_hashes = problems, config_hashes


def load_source(source: str) -> Source:
    path = Path(source)
    if path.is_dir():
        return _load_runs_dir(path)
    if path.is_file():
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError as e:
            raise ReportError(f"{path} is not valid JSON ({e})") from None
        per_seed = _check_scores(data, str(path))
        return _from_per_seed(path.stem, per_seed)
    if source.lower() in {m.lower() for m in REFERENCE_METHODS}:
        return _from_per_seed(canonical_method(source), load_reference(source))
    raise ReportError(f"{source!r} is neither a sweep folder, a scores JSON file nor one of the shipped methods "
                      f"({', '.join(REFERENCE_METHODS)})")  # fmt: skip


def _from_per_seed(name: str, per_seed: dict[str, list[float]]) -> Source:
    scores = {g: dict(enumerate(v)) for g, v in per_seed.items() if v}
    num_seeds = max((len(v) for v in per_seed.values()), default=0)
    return Source(name, scores, list(ATARI_100K_GAMES), list(range(num_seeds)), [], {})


def _load_runs_dir(runs_dir: Path) -> Source:
    """Read every `<game>/seed_<k>/results.json`; the expected games and seeds come from the sweep's manifest
    (`sweep.json`), else all 26 games and every seed seen."""
    from diamond_pl.sweep import MANIFEST, run_folders

    scores: dict[str, dict[int, float]] = {}
    problems: list[str] = []
    hashes: dict[str, int] = {}
    manifest_path = runs_dir / MANIFEST
    if manifest_path.is_file():
        manifest = json.loads(manifest_path.read_text())
        games, seeds = list(manifest["games"]), [int(s) for s in manifest["seeds"]]
    else:
        games, seeds = list(ATARI_100K_GAMES), []
    for game, seed, run in run_folders(runs_dir):
        results_file = run / "results.json"
        if not results_file.is_file():
            continue
        try:
            res = json.loads(results_file.read_text())
        except json.JSONDecodeError as e:
            problems.append(f"{results_file}: not valid JSON ({e}); left out")
            continue
        if res.get("mean") is None:
            problems.append(f"{results_file}: no final evaluation episodes (final_eval_episodes 0?); left out")
            continue
        if str(res.get("game")) != game:
            problems.append(f"{results_file}: says game {res.get('game')!r} but lies under {game}/; left out")
            continue
        scores.setdefault(game, {})[seed] = float(res["mean"])
        hashes[str(res.get("config_hash"))] = hashes.get(str(res.get("config_hash")), 0) + 1
        if game not in games:
            games.append(game)
        if seed not in seeds:
            seeds.append(seed)
    order = {g: i for i, g in enumerate(ATARI_100K_GAMES)}
    games.sort(key=lambda g: order.get(g, len(order)))
    return Source(runs_dir.name, scores, games, sorted(seeds), problems, hashes)


# ----------------------------------------------------------------------------------------------------- numbers
def hns(game: str, score: float) -> float:
    row = score_table()[game]
    return (score - row["random"]) / (row["human"] - row["random"])


def hns_matrix(per_game: dict[str, list[float]], games: list[str]):
    """(runs, games) HNS array, as rliable wants it."""
    import numpy as np

    return np.array([[hns(g, s) for s in per_game[g]] for g in games], dtype=np.float64).T


def _aggregate(x):
    import numpy as np
    from rliable import metrics

    return np.array([metrics.aggregate_mean(x), metrics.aggregate_median(x), metrics.aggregate_iqm(x),
                     metrics.aggregate_optimality_gap(x)])  # fmt: skip


def interval_estimates(matrices: dict, reps: int, seed: int):
    """Point estimates and stratified-bootstrap 95 % CIs of METRICS: name -> (point (4,), ci (2, 4))."""
    import numpy as np
    from rliable import library as rly

    points, cis = rly.get_interval_estimates(matrices, _aggregate, reps=reps, random_state=np.random.RandomState(seed))
    return {k: (points[k], cis[k]) for k in matrices}


def probability_of_improvement(ours, theirs: dict, reps: int, seed: int):
    """P(ours > method) with its 95 % CI for each method (stratified bootstrap over the runs of each)."""
    import numpy as np
    from rliable import library as rly, metrics

    pairs = {name: (ours, m) for name, m in theirs.items()}
    points, cis = rly.get_interval_estimates(pairs, metrics.probability_of_improvement, reps=reps,
                                             random_state=np.random.RandomState(seed))  # fmt: skip
    return {k: (float(points[k]), cis[k].ravel()) for k in pairs}


# ------------------------------------------------------------------------------------------------------ report
def build_report(source: Source, compare: list[str], out: Path, reps: int = 2000, seed: int = 0,
                 plots: bool = True, poi_reps: int = 200) -> dict:  # fmt: skip
    import warnings

    import numpy as np

    # rliable hands arch a RandomState (reproducible CIs); arch 7 warns that it prefers a Generator
    warnings.filterwarnings("ignore", message="random_state is deprecated", category=FutureWarning)

    out.mkdir(parents=True, exist_ok=True)
    references = {m: load_reference(m) for m in compare}
    present = [g for g in source.games if source.scores.get(g)]
    missing_games = [g for g in source.games if not source.scores.get(g)]
    missing_runs = [(g, s) for g in present for s in source.seeds if s not in source.scores[g]]
    if not present:
        raise ReportError(f"{source.name}: no finished run (no results.json with a final evaluation) to report")
    # rliable needs the same number of runs per game: the first k seeds of each game, k = the smallest count
    k = min(len(source.scores[g]) for g in present)
    used = {g: sorted(source.scores[g])[:k] for g in present}
    left_out = [(g, s) for g in present for s in sorted(source.scores[g])[k:]]
    ours = {g: [source.scores[g][s] for s in used[g]] for g in present}
    for m, ref in references.items():
        lacking = [g for g in present if g not in ref]
        if lacking:
            raise ReportError(f"reference {m} has no scores for {', '.join(lacking)}")

    subsets = {"All games": present, "Agent-optimal games": [g for g in present if g in AGENT_OPTIMAL],
               "Human-optimal games": [g for g in present if g in HUMAN_OPTIMAL]}  # fmt: skip
    aggregates: dict[str, dict] = {}
    for subset, games in subsets.items():
        if not games:
            continue
        matrices = {source.name: hns_matrix(ours, games)}
        matrices.update({m: hns_matrix(ref, games) for m, ref in references.items()})
        est = interval_estimates(matrices, reps, seed)
        aggregates[subset] = {
            "games": games,
            "methods": {name: {metric: {"value": float(p[i]), "ci": [float(ci[0, i]), float(ci[1, i])]}
                               for i, metric in enumerate(METRICS)} for name, (p, ci) in est.items()},
        }  # fmt: skip
    all_ours = hns_matrix(ours, present)
    theirs = {m: hns_matrix(ref, present) for m, ref in references.items()}
    poi = probability_of_improvement(all_ours, theirs, poi_reps, seed) if theirs else {}

    per_game = []
    for g in source.games:
        row = {"game": g, "subset": "agent" if g in AGENT_OPTIMAL else "human" if g in HUMAN_OPTIMAL else None,
               "seeds": {str(s): source.scores.get(g, {})[s] for s in sorted(source.scores.get(g, {}))}}  # fmt: skip
        if g in ours:
            vals = list(source.scores[g].values())
            mean = float(np.mean(vals))
            row.update(mean=mean, min=min(vals), max=max(vals), hns=hns(g, mean))
        for m, ref in references.items():
            if g in ref:
                r = ref[g]
                entry = {"mean": float(np.mean(r)), "min": min(r), "max": max(r)}
                if "mean" in row:
                    entry["position"] = ("above" if row["mean"] > entry["max"] else "below" if row["mean"] < entry["min"]
                                         else "within")  # fmt: skip
                row[m] = entry
        per_game.append(row)

    summary = {
        "source": source.name, "compare": list(compare), "reps": reps, "poi_reps": poi_reps, "bootstrap_seed": seed,
        "games_expected": source.games, "games_present": present, "missing_games": missing_games,
        "missing_runs": [[g, s] for g, s in missing_runs], "left_out_of_aggregates": [[g, s] for g, s in left_out],
        "runs_per_game_in_aggregates": k, "problems": source.problems, "config_hashes": source.config_hashes,
        "aggregates": aggregates,
        "probability_of_improvement": {m: {"value": p, "ci": [float(ci[0]), float(ci[1])]} for m, (p, ci) in poi.items()},
        "per_game": per_game,
        "agent_optimal_games": list(AGENT_OPTIMAL), "human_optimal_games": list(HUMAN_OPTIMAL),
    }  # fmt: skip
    figures = _plots(source.name, ours, present, references, aggregates, poi, out, reps) if plots else []
    summary["figures"] = figures
    (out / "report.json").write_text(json.dumps(summary, indent=1) + "\n")
    (out / "report.md").write_text(_markdown(summary))
    return summary


def _fmt(x: float | None, digits: int = 3) -> str:
    return "–" if x is None else f"{x:.{digits}f}"


def _score(x: float) -> str:
    return f"{x:.1f}" if abs(x) < 1000 else f"{x:.0f}"


def _markdown(s: dict) -> str:
    name = s["source"]
    lines = [f"# Atari 100k report: {name}", ""]
    n_present, n_expected = len(s["games_present"]), len(s["games_expected"])
    lines += [f"Human-normalised scores (HNS) over {n_present} of {n_expected} expected games, "
              f"{s['runs_per_game_in_aggregates']} run(s) per game in the aggregates; 95 % stratified-bootstrap "
              f"confidence intervals ({s['reps']} resamples, rliable). Compared methods are aggregated on the same "
              f"games{' (their published 5 seeds)' if s['compare'] else ''}.", ""]  # fmt: skip
    if n_present < 26:
        lines += [f"**Only {n_present} of the 26 Atari-100k games: these aggregates are not comparable with the "
                  f"published 26-game figures; compare the rows below, computed on the same games.**", ""]
    lines += ["## Missing", ""]
    if not (s["missing_games"] or s["missing_runs"] or s["left_out_of_aggregates"] or s["problems"]):
        lines += ["Nothing: every expected game and seed has a result.", ""]
    if s["missing_games"]:
        lines += [f"- Games without any finished run ({len(s['missing_games'])}): {', '.join(s['missing_games'])}"]
    if s["missing_runs"]:
        runs = ", ".join(f"{g} seed {k}" for g, k in s["missing_runs"])
        lines += [f"- Runs not finished ({len(s['missing_runs'])}): {runs}"]
    if s["left_out_of_aggregates"]:
        runs = ", ".join(f"{g} seed {k}" for g, k in s["left_out_of_aggregates"])
        lines += [f"- Finished but left out of the aggregates, which need the same number of runs per game "
                  f"({len(s['left_out_of_aggregates'])}): {runs} (they are in the per-game table)"]
    lines += [f"- {p}" for p in s["problems"]]
    if len(s["config_hashes"]) > 1:
        lines += [f"- The runs come from {len(s['config_hashes'])} different configs (config hash: runs): "
                  + ", ".join(f"{h}: {n}" for h, n in s["config_hashes"].items())]
    lines += [""]
    for subset, agg in s["aggregates"].items():
        lines += [f"## Aggregates: {subset.lower()} ({len(agg['games'])})", ""]
        lines += ["| Method | " + " | ".join(METRICS) + " |", "|---|" + "---|" * len(METRICS)]
        for method, vals in agg["methods"].items():
            cells = [f"{v['value']:.3f} [{v['ci'][0]:.3f}, {v['ci'][1]:.3f}]" for v in vals.values()]
            lines += [f"| {'**' + method + '**' if method == name else method} | " + " | ".join(cells) + " |"]
        lines += ["", "Optimality gap: lower is better. Games: " + ", ".join(agg["games"]), ""]
    if s["probability_of_improvement"]:
        lines += ["## Probability of improvement", "",
                  f"P({name} > Y): the probability that a run of {name} beats a run of Y on a game picked at random "
                  "(Mann-Whitney U per game, averaged over the games both cover); CIs from "
                  f"{s['poi_reps']} stratified-bootstrap resamples (rliable's per-game test is slow).", "",
                  "| Y | P(X > Y) [95 % CI] |", "|---|---|"]  # fmt: skip
        for m, v in s["probability_of_improvement"].items():
            lines += [f"| {m} | {v['value']:.3f} [{v['ci'][0]:.3f}, {v['ci'][1]:.3f}] |"]
        lines += [""]
    lines += ["## Per game", "",
              f"Mean return over seeds [lowest seed, highest seed]; HNS of the mean; against each method: whether "
              f"{name}'s mean lies above, within or below that method's seed range. A = agent-optimal, "
              f"H = human-optimal game.", ""]  # fmt: skip
    head = ["Game", "", name, "HNS"] + [c for m in s["compare"] for c in (m, f"vs {m}")]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in s["per_game"]:
        tag = {"agent": "A", "human": "H"}.get(row["subset"], "")
        if "mean" in row:
            ours = f"{_score(row['mean'])} [{_score(row['min'])}, {_score(row['max'])}] ({len(row['seeds'])})"
            cells = [row["game"], tag, ours, _fmt(row["hns"])]
        else:
            cells = [row["game"], tag, "missing", "–"]
        for m in s["compare"]:
            r = row.get(m)
            cells += ["–", "–"] if r is None else [f"{_score(r['mean'])} [{_score(r['min'])}, {_score(r['max'])}]",
                                                   r.get("position", "–")]  # fmt: skip
        lines += ["| " + " | ".join(cells) + " |"]
    lines += ["", f"Agent-optimal games: {', '.join(s['agent_optimal_games'])}. Human-optimal games: "
              f"{', '.join(s['human_optimal_games'])}. The split: the 13 games with the highest median HNS over five "
              "published world-model agents (DIAMOND, IRIS, STORM, DreamerV3, Simulus) are agent-optimal (after "
              "JEDI, Lim et al. 2025, which splits Atari 100k evenly the same way).", ""]  # fmt: skip
    if s["figures"]:
        lines += ["## Plots", ""] + [f"![{f}]({f})" for f in s["figures"]] + [""]
    lines += ["Reference scores: DIAMOND (Alonso et al. 2024), IRIS (Micheli et al. 2023), Simulus (Cohen et al.), "
              "per-seed data from each method's public repository (diamond_pl/reference_scores/README.md).", ""]
    return "\n".join(lines)


def _plots(name, ours, present, references, aggregates, poi, out: Path, reps: int) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt
    import numpy as np
    from rliable import library as rly, plot_utils

    figures = []
    methods = [name, *references]
    palette = plt.get_cmap("tab10")
    colors = {m: palette(i) for i, m in enumerate(methods)}
    for subset, agg in aggregates.items():
        points = {m: np.array([v[k]["value"] for k in METRICS]) for m, v in agg["methods"].items()}
        cis = {m: np.array([[v[k]["ci"][0] for k in METRICS], [v[k]["ci"][1] for k in METRICS]])
               for m, v in agg["methods"].items()}  # fmt: skip
        fig, _ = plot_utils.plot_interval_estimates(points, cis, metric_names=list(METRICS), algorithms=methods,
                                                    colors=colors, xlabel="Human-normalised score")  # fmt: skip
        fname = "aggregates_" + subset.split()[0].lower().replace("-", "_") + ".png"
        fig.savefig(out / fname, bbox_inches="tight", dpi=120)
        plt.close(fig)
        figures.append(fname)
    score_dict = {name: hns_matrix(ours, present), **{m: hns_matrix(r, present) for m, r in references.items()}}
    np.random.seed(0)  # create_performance_profile takes no random state
    profiles, profile_cis = rly.create_performance_profile(score_dict, TAUS, reps=min(reps, 2000))
    fig, ax = plt.subplots(figsize=(7, 4.5))
    plot_utils.plot_performance_profiles(profiles, TAUS, performance_profile_cis=profile_cis, colors=colors,
                                         xlabel=r"Human-normalised score $(\tau)$", ax=ax)  # fmt: skip
    ax.legend([plt.Line2D([0], [0], color=colors[m], lw=2) for m in methods], methods, loc="upper right")
    fig.savefig(out / "performance_profiles.png", bbox_inches="tight", dpi=120)
    plt.close(fig)
    figures.append("performance_profiles.png")
    if poi:
        pair_points = {f"{name},{m}": v[0] for m, v in poi.items()}
        pair_cis = {f"{name},{m}": np.asarray(v[1]).reshape(2, 1) for m, v in poi.items()}
        ax = plot_utils.plot_probability_of_improvement(pair_points, pair_cis, figsize=(4, 0.6 + 0.5 * len(poi)))
        ax.figure.savefig(out / "probability_of_improvement.png", bbox_inches="tight", dpi=120)
        plt.close(ax.figure)
        figures.append("probability_of_improvement.png")
    return figures


# --------------------------------------------------------------------------------------------------------- CLI
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m diamond_pl report",
        description="Aggregate Atari-100k results with rliable (mean, median, IQM, optimality gap of human-normalised "
        "scores with stratified-bootstrap 95%% CIs, performance profiles, probability of improvement), per game "
        "and on the agent-optimal / human-optimal games, compared with published methods. Writes DIR/report.md, "
        "DIR/report.json and PNG plots.",
    )
    p.add_argument("source", help="a sweep folder (RUNS_DIR), a JSON file game -> per-seed scores, or a shipped method "
                   f"({', '.join(REFERENCE_METHODS)})")  # fmt: skip
    p.add_argument("--compare", nargs="*", default=list(REFERENCE_METHODS), metavar="METHOD",
                   help=f"published methods to compare with (default: all of {' '.join(REFERENCE_METHODS)}; "
                   "none: --compare with no name)")  # fmt: skip
    p.add_argument("--out", required=True, help="output folder (created)")
    p.add_argument("--reps", type=int, default=2000, help="bootstrap resamples (default 2000)")
    p.add_argument("--poi-reps", type=int, default=200, help="bootstrap resamples for the probability of "
                   "improvement (default 200: rliable runs one Mann-Whitney test per game per resample)")
    p.add_argument("--seed", type=int, default=0, help="bootstrap random seed (default 0: reproducible CIs)")
    p.add_argument("--name", default=None, help="name of the reported agent in tables and plots (default: the "
                   "source's folder or file name)")  # fmt: skip
    p.add_argument("--no-plots", action="store_true", help="Markdown and JSON only")
    return p


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    try:
        for name, value, default in (("--reps", args.reps, 2000), ("--poi-reps", args.poi_reps, 200)):
            if value < 10:
                raise ReportError(f"{name} {value}: use at least 10 bootstrap resamples ({default} is the default)")
        compare = list(dict.fromkeys(canonical_method(m) for m in args.compare))
        source = load_source(args.source)
        if args.name:
            source.name = args.name
        if source.name in compare:
            source.name = f"{source.name} (this source)"
        try:
            import matplotlib  # noqa: F401
            import rliable  # noqa: F401
        except ImportError as e:
            raise ReportError(f"report needs rliable and matplotlib ({e}): pip install -e '.[sweep]'") from None
        summary = build_report(source, compare, Path(args.out), reps=args.reps, seed=args.seed,
                               plots=not args.no_plots, poi_reps=args.poi_reps)  # fmt: skip
    except ReportError as e:
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(2) from None
    agg = summary["aggregates"]["All games"]["methods"][source.name]
    print(f"{source.name}: {len(summary['games_present'])} games, " + ", ".join(
        f"{m} {v['value']:.3f} [{v['ci'][0]:.3f}, {v['ci'][1]:.3f}]" for m, v in agg.items()))  # fmt: skip
    if summary["missing_games"] or summary["missing_runs"]:
        print(f"missing: {len(summary['missing_games'])} games, {len(summary['missing_runs'])} runs (listed in the report)")
    print(f"wrote {Path(args.out) / 'report.md'}")
