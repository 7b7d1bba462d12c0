"""One seed per run: `seed_everything: true` draws it, the saved config.yaml and the checkpoint record it, and the
saved config repeats the run bit-exactly on CPU (weights, optimiser states, every collected frame)."""

from pathlib import Path

import numpy as np
import torch
import yaml

from diamond_pl.train import SEED_KEY, seed_alias

from helpers.smoke_run import fit

# the smoke config run as the paper config is: seed drawn, data and loop seeds following it; no evaluations (speed)
AS_PAPER = ["--seed_everything=true", "--data.seed=null", "--loop.seed=null", "--loop.total_env_steps=300",
            "--loop.num_final_epochs=1", "--loop.eval_every=0", "--loop.final_eval_episodes=0"]


def saved_config(run: Path) -> Path:
    return run / "logs" / "smoke" / "version_0" / "config.yaml"


def test_saved_config_repeats_the_run(tmp_path):
    first, second = tmp_path / "first", tmp_path / "second"
    first.mkdir(), second.mkdir()
    proc = fit(first, *AS_PAPER)
    cfg = yaml.safe_load(saved_config(first).read_text())
    seed = cfg["seed_everything"]
    assert isinstance(seed, int) and not isinstance(seed, bool)
    out = proc.stdout + proc.stderr
    assert f"Seed {seed} (drawn at random)" in out
    # the end-of-fit line: epochs, where the checkpoint and logs are, the seed
    assert f"fit done: 2 epochs · checkpoint {first}/checkpoints/last.ckpt · logs {first}/logs" in out, out[-2000:]
    assert f"seed {seed}" in out.split("fit done:")[1]
    assert cfg["data"]["seed"] is None and cfg["loop"]["seed"] is None  # null = the run's seed
    a = torch.load(first / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert a[SEED_KEY] == seed and a["datamodule_hyper_parameters"]["seed"] == seed

    # the saved config alone (paths moved to another folder) repeats the run
    moved = [f"--data.run_dir={second}", f"--checkpoint.dirpath={second}/checkpoints",
             f"--snapshot.dirpath={second}/checkpoints", f"--trainer.logger.init_args.save_dir={second}/logs"]
    proc = fit(second, "--config", str(saved_config(first)), *moved, fast=False)
    assert f"Seed {seed} (given)" in proc.stdout + proc.stderr
    b = torch.load(second / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert a["global_step"] == b["global_step"] and a["state_dict"].keys() == b["state_dict"].keys()
    for k in a["state_dict"]:
        assert torch.equal(a["state_dict"][k], b["state_dict"][k]), k
    for oa, ob in zip(a["optimizer_states"], b["optimizer_states"]):
        for sa, sb in zip(oa["state"].values(), ob["state"].values()):
            assert all(torch.equal(sa[k], sb[k]) for k in sa)
    files_a = sorted((first / "dataset" / "train" / "episodes").glob("*.npz"))
    files_b = sorted((second / "dataset" / "train" / "episodes").glob("*.npz"))
    assert [f.name for f in files_a] == [f.name for f in files_b] and files_a
    for fa, fb in zip(files_a, files_b):
        with np.load(fa) as x, np.load(fb) as y:
            assert x.files == y.files and all(np.array_equal(x[k], y[k]) for k in x.files), fa.name


def test_seed_is_short_for_seed_everything():
    assert seed_alias(["--seed", "7", "--seed=8", "--data.seed=9"]) == [
        "--seed_everything", "7", "--seed_everything=8", "--data.seed=9"]
