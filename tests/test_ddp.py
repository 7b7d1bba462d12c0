"""DDP on 2 CPU processes (gloo): rank 0 collects and broadcasts, every rank holds the same store, same budget."""

import json

from helpers.smoke_run import fit


def test_two_process_ddp_shares_one_replay_store(tmp_path):
    out = tmp_path / "fingerprints"
    cb = json.dumps([{"class_path": "store_fingerprint.StoreFingerprint", "init_args": {"out_dir": str(out)}}])
    fit(tmp_path, "--trainer.devices=2", "--trainer.strategy=ddp_find_unused_parameters_true",
        f"--trainer.callbacks={cb}", "--loop.eval_every=0", "--loop.final_eval_episodes=0")
    r0 = json.loads((out / "rank0.json").read_text())
    r1 = json.loads((out / "rank1.json").read_text())
    assert r0["world_size"] == r1["world_size"] == 2
    assert r0["num_steps"] == 400  # the real-step budget does not grow with the number of processes
    assert r0["lengths"] == r1["lengths"] and r0["sha256"] == r1["sha256"]
    assert r0["global_step"] == r1["global_step"] > 0  # both ranks ran the same schedule
