"""`import-diamond`: a reference DIAMOND agent state dict becomes a diamond_pl checkpoint that loads with
`DiamondAgent.load_from_checkpoint(weights_only=True)` and reproduces the reference outputs
(../shared/golden/diamond_small, README there for the tolerances); broken inputs fail with errors that say what to do."""

from pathlib import Path

import pytest
import torch

from diamond_pl.agent import DiamondAgent
from diamond_pl.cli import main as cli_main
from diamond_pl.tools.checkpoints import CheckpointError, load_agent, resolve_game

RTOL = ATOL = 1e-4
LEVEL = 2 / 255  # one 8-bit level in [-1, 1]
MAX_FLIPPED = 1e-3  # fraction of pixels allowed one level off (values on a level boundary)


def import_diamond(*args) -> None:
    cli_main(["import-diamond", *map(str, args)])


def import_error(*args) -> str:
    """Run the command expecting a usage error (exit status 2); the one line it prints."""
    import contextlib
    import io

    err = io.StringIO()
    with contextlib.redirect_stderr(err), pytest.raises(SystemExit) as e:
        import_diamond(*args)
    assert e.value.code == 2, f"expected exit status 2, got {e.value.code!r}"
    lines = [line for line in err.getvalue().splitlines() if line.startswith("import-diamond: error: ")]
    assert len(lines) == 1, err.getvalue()
    return lines[0]


def assert_close_up_to_level_flips(actual, expected):
    assert actual.shape == expected.shape
    diff = (actual - expected).abs()
    off = diff > ATOL + RTOL * expected.abs()
    assert off.float().mean().item() <= MAX_FLIPPED, f"{off.sum().item()} pixels differ"
    assert diff.max().item() <= LEVEL + ATOL, f"max diff {diff.max().item()}"


# --- the golden agent, imported once ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def checkpoint(golden_dir, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("import") / "breakout.ckpt"
    import_diamond(golden_dir / "agent_state_dict.pt", "--out", out, "--game", "Breakout")
    return out


@pytest.fixture(scope="module")
def agent(checkpoint) -> DiamondAgent:
    return DiamondAgent.load_from_checkpoint(checkpoint, weights_only=True).eval()


@pytest.mark.golden
def test_checkpoint_is_a_plain_lightning_checkpoint(checkpoint, golden_dir):
    ckpt = torch.load(checkpoint, weights_only=True)
    assert {"state_dict", "hyper_parameters", "pytorch-lightning_version", "diamond_pl"} <= set(ckpt)
    assert ckpt["diamond_pl"]["format"] == "diamond-agent-state-dict"
    assert ckpt["diamond_pl"]["imported_from"] == str((golden_dir / "agent_state_dict.pt").resolve())
    assert ckpt["hyper_parameters"]["env"]["game"] == "Breakout"
    assert not list(checkpoint.parent.glob(".*.tmp")), "the atomic write left its temp file behind"


@pytest.mark.golden
def test_inferred_configs_equal_golden_config(agent, golden_config):
    hp = agent.hparams
    for name in ("denoiser", "rew_end_model", "actor_critic"):
        inferred = {k: list(v) if isinstance(v, tuple) else v for k, v in hp[name].items()}
        assert inferred.pop("num_actions") == golden_config["num_actions"]
        assert inferred == golden_config[name], name
    assert agent.denoiser.denoiser.sigma_data == golden_config["sigma_data"]
    assert agent.denoiser.denoiser.sigma_offset_noise == golden_config["sigma_offset_noise"]


@pytest.mark.golden
def test_imported_denoiser_reproduces_reference(agent, golden_outputs):
    ref = golden_outputs["denoiser"]
    args = (ref["noisy_next_obs"], ref["sigma"], ref["prev_obs"], ref["prev_act"])
    with torch.no_grad():
        out, _ = agent.denoiser.denoiser.model_output(*args)
        denoised = agent.denoiser.denoiser.denoise(*args)
    torch.testing.assert_close(out, ref["inner_model_output"], rtol=RTOL, atol=ATOL)
    assert_close_up_to_level_flips(denoised, ref["denoised_quantised"])


@pytest.mark.golden
def test_imported_sampler_reproduces_reference_euler3(agent, golden_outputs):
    ref, cond = golden_outputs["sampler_euler3"], golden_outputs["denoiser"]
    assert agent.denoiser.sampler.cfg.num_steps == 3 and agent.denoiser.sampler.cfg.order == 1  # DIAMOND's default
    sample = agent.denoiser.sample_next_obs(cond["prev_obs"], cond["prev_act"], initial_noise=ref["initial_noise"])
    assert_close_up_to_level_flips(sample, ref["sample"])


@pytest.mark.golden
def test_imported_rew_end_model_reproduces_reference(agent, golden_outputs):
    ref = golden_outputs["rew_end"]
    with torch.no_grad():
        logits_rew, logits_end, (h, c) = agent.rew_end_model(ref["obs"], ref["act"], ref["next_obs"])
    for actual, name in ((logits_rew, "logits_rew"), (logits_end, "logits_end"), (h, "h"), (c, "c")):
        torch.testing.assert_close(actual, ref[name], rtol=RTOL, atol=ATOL, msg=name)


@pytest.mark.golden
def test_imported_actor_critic_reproduces_reference(agent, golden_outputs):
    ref = golden_outputs["actor_critic"]
    logits, values, hx_cx = [], [], None
    with torch.no_grad():
        for t in range(ref["obs"].size(1)):  # one frame at a time from a zero state
            l, v, hx_cx = agent.actor_critic(ref["obs"][:, t], hx_cx)
            logits.append(l)
            values.append(v)
    torch.testing.assert_close(torch.stack(logits, dim=1), ref["logits_act"], rtol=RTOL, atol=ATOL)
    torch.testing.assert_close(torch.stack(values, dim=1), ref["value"], rtol=RTOL, atol=ATOL)
    torch.testing.assert_close(hx_cx[0], ref["h"], rtol=RTOL, atol=ATOL)
    torch.testing.assert_close(hx_cx[1], ref["c"], rtol=RTOL, atol=ATOL)


@pytest.mark.golden
def test_load_agent_reads_both_formats_alike(checkpoint, golden_dir, agent):
    from_ckpt = load_agent(checkpoint)
    from_reference = load_agent(golden_dir / "agent_state_dict.pt")  # converted on the fly; 4 actions = Breakout only
    assert from_ckpt.game == from_reference.game == "Breakout"
    assert not from_ckpt.training and not from_reference.training
    a, b = from_ckpt.state_dict(), from_reference.state_dict()
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    with pytest.raises(CheckpointError, match="plays Breakout, not Pong"):
        load_agent(checkpoint, game="Pong")


@pytest.mark.golden
def test_game_may_be_left_out_when_the_action_count_names_one_game(golden_dir, tmp_path):
    import_diamond(golden_dir / "agent_state_dict.pt", "--out", tmp_path / "a.ckpt")
    assert torch.load(tmp_path / "a.ckpt", weights_only=True)["hyper_parameters"]["env"]["game"] == "Breakout"
    # an existing output is kept unless asked
    assert "--overwrite" in import_error(golden_dir / "agent_state_dict.pt", "--out", tmp_path / "a.ckpt")
    import_diamond(golden_dir / "agent_state_dict.pt", "--out", tmp_path / "a.ckpt", "--overwrite")


def test_ambiguous_or_unknown_action_counts_ask_for_the_game():
    with pytest.raises(CheckpointError, match="--game") as e:
        resolve_game(6, None, "x.pt")
    assert "Pong" in str(e.value) and "Qbert" in str(e.value)
    with pytest.raises(CheckpointError, match="no Atari-100k game"):
        resolve_game(5, None, "x.pt")
    assert resolve_game(3, None, "x.pt") == "Freeway"
    with pytest.raises(CheckpointError, match="Unknown game"):
        resolve_game(4, "Tetris", "x.pt")


# --- broken inputs ----------------------------------------------------------------------------------------------------


@pytest.fixture
def save_variant(golden_state_dict, tmp_path):
    """Write a modified copy of the golden state dict; returns its path."""

    def save(drop=(), add=None, replace=None, name="variant.pt") -> Path:
        sd = {k: v for k, v in golden_state_dict.items() if not any(k.startswith(d) for d in drop)}
        sd.update(add or {})
        sd.update(replace or {})
        path = tmp_path / name
        torch.save(sd, path)
        return path

    return save


@pytest.mark.golden
def test_wrong_game_names_both_action_counts(golden_dir, tmp_path):
    msg = import_error(golden_dir / "agent_state_dict.pt", "--out", tmp_path / "x.ckpt", "--game", "Pong")
    assert "Pong has 6 actions" in msg and "weights have 4" in msg and "Breakout" in msg
    assert not (tmp_path / "x.ckpt").exists()


@pytest.mark.golden
def test_missing_key(save_variant, tmp_path):
    msg = import_error(save_variant(drop=["rew_end_model.head.0.bias"]), "--out", tmp_path / "x.ckpt")
    assert "missing keys ['rew_end_model.head.0.bias']" in msg
    # a key the architecture is read from
    msg = import_error(save_variant(drop=["denoiser.inner_model.act_emb.0.weight"]), "--out", tmp_path / "x.ckpt")
    assert "missing key 'denoiser.inner_model.act_emb.0.weight'" in msg


@pytest.mark.golden
def test_missing_component(save_variant, tmp_path):
    msg = import_error(save_variant(drop=["actor_critic."]), "--out", tmp_path / "x.ckpt")
    assert "['actor_critic'] are missing" in msg


@pytest.mark.golden
def test_unknown_keys(save_variant, tmp_path):
    msg = import_error(save_variant(add={"actor_critic.extra_head.weight": torch.zeros(2)}), "--out", tmp_path / "x")
    assert "unknown keys ['actor_critic.extra_head.weight']" in msg
    msg = import_error(save_variant(add={"optimizer.step": torch.zeros(())}), "--out", tmp_path / "x")
    assert "unknown keys ['optimizer.step']" in msg and "denoiser., rew_end_model., actor_critic." in msg


@pytest.mark.golden
def test_inconsistent_shapes(save_variant, golden_state_dict, tmp_path):
    bad = {"rew_end_model.head.0.weight": torch.zeros(64, 65)}
    msg = import_error(save_variant(replace=bad), "--out", tmp_path / "x.ckpt")
    assert "inconsistent shapes [rew_end_model.head.0.weight [64, 65] (expected [64, 64])]" in msg
    # a tensor the architecture is read from: the rest of the file then disagrees with it
    bad = {"denoiser.inner_model.unet.d_blocks.0.resblocks.0.conv1.weight": torch.zeros(16, 32, 3, 3)}
    msg = import_error(save_variant(replace=bad), "--out", tmp_path / "x.ckpt")
    assert "inconsistent shapes" in msg and "d_blocks.0.resblocks.0.conv1.weight [16, 32, 3, 3]" in msg
    # the action counts of the components disagree
    bad = {"actor_critic.actor_linear.weight": torch.zeros(6, 64), "actor_critic.actor_linear.bias": torch.zeros(6)}
    msg = import_error(save_variant(replace=bad), "--out", tmp_path / "x.ckpt")
    assert "disagree on the number of actions" in msg and "'actor_critic': 6" in msg


def test_missing_file(tmp_path):
    msg = import_error(tmp_path / "nope.pt", "--out", tmp_path / "x.ckpt")
    assert "nope.pt: no such file" in msg


def test_corrupt_and_truncated_files(tmp_path):
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"this is not a torch file" * 10)
    assert "cannot be read as a torch file" in import_error(garbage, "--out", tmp_path / "x.ckpt")
    good = tmp_path / "good.pt"
    torch.save({"denoiser.w": torch.zeros(1000)}, good)
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(good.read_bytes()[:-300])
    assert "corrupt, truncated" in import_error(truncated, "--out", tmp_path / "x.ckpt")


def test_files_that_are_not_agent_state_dicts(tmp_path):
    path = tmp_path / "list.pt"
    torch.save([torch.zeros(1)], path)
    assert "expected a non-empty state dict" in import_error(path, "--out", tmp_path / "x.ckpt")
    torch.save({"denoiser.w": torch.zeros(1), "epoch": 3}, path)
    assert "not a state dict: ['epoch'] are not tensors" in import_error(path, "--out", tmp_path / "x.ckpt")
    torch.save({"denoiser.w": Path("x")}, path)  # an arbitrary object: weights_only refuses to unpickle it
    assert "holds Python objects" in import_error(path, "--out", tmp_path / "x.ckpt")
    torch.save({"state_dict": {}, "hyper_parameters": {}}, path)
    assert "already a Lightning/diamond_pl checkpoint" in import_error(path, "--out", tmp_path / "x.ckpt")
