"""The pieces that make a run resumable from any moment, without running one (see tests/test_resume.py for that)."""

import os
import signal

import numpy as np
import pytest
import torch

from diamond_pl.data.episode import Episode
from diamond_pl.data.store import EpisodeStore
from diamond_pl.loop import interrupt
from diamond_pl.loop.resume import (
    AtomicCheckpointIO,
    clean_run_folder,
    full_checkpoints,
    newest_checkpoint,
    repair_last_link,
)


def episode(length: int, seed: int) -> Episode:
    rng = np.random.default_rng(seed)
    end = np.zeros(length, bool)
    end[-1] = True
    return Episode(obs=rng.integers(0, 255, (length, 3, 64, 64), dtype=np.uint8), act=np.zeros(length, np.int64),
                   rew=np.zeros(length, np.float32), end=end, trunc=np.zeros(length, bool),
                   final_obs=np.zeros((3, 64, 64), np.uint8))


def test_a_new_test_set_version_leaves_the_committed_one_for_a_resume(tmp_path):
    store = EpisodeStore(tmp_path / "test", "test")
    store.begin_version("epoch_00002")
    store.add_episode(episode(5, 0))
    store.publish()
    committed = store.state_dict()  # what the checkpoint after this evaluation records
    store.begin_version("epoch_00004")  # the next evaluation, killed half-way
    store.add_episode(episode(7, 1))
    assert os.readlink(tmp_path / "test" / "episodes") == "epoch_00002"  # not published yet
    resumed = EpisodeStore(tmp_path / "test", "test")
    resumed.load_state_dict(committed)
    assert resumed.lengths.tolist() == [5] and resumed.subdir == "epoch_00002"
    assert np.array_equal(resumed.get(0).obs, episode(5, 0).obs)
    resumed.begin_version("epoch_00004")  # the redone evaluation starts from an empty folder
    assert len(resumed) == 0 and not (tmp_path / "test" / "epoch_00004").exists()
    resumed.add_episode(episode(3, 2))
    resumed.publish()
    resumed.begin_version("final")  # older versions than the current one go
    assert sorted(p.name for p in (tmp_path / "test").iterdir()) == ["episodes", "epoch_00004"]


def test_version_names_are_checked(tmp_path):
    with pytest.raises(ValueError, match="version name"):
        EpisodeStore(tmp_path, "test").begin_version("../train")


def _full_ckpt(path, step: int, epoch: int, finished: bool = False) -> None:
    torch.save({"state_dict": {"w": torch.zeros(2)}, "loops": {}, "global_step": step, "epoch": epoch,
                "callbacks": {"CollectAndEvaluate": {"finished": finished}}}, path)


def test_last_is_the_newest_complete_full_checkpoint(tmp_path):
    d = tmp_path / "checkpoints"
    d.mkdir()
    _full_ckpt(d / "start.ckpt", 0, 0)
    _full_ckpt(d / "epoch_00001.ckpt", 20, 1)
    _full_ckpt(d / "epoch_00000.ckpt", 10, 0)
    torch.save({"state_dict": {"w": torch.zeros(2)}}, d / "agent_epoch_00001.ckpt")  # weight-only snapshot
    (d / "epoch_00002.ckpt").write_bytes(b"PK\x03\x04 truncated")
    (d / ".epoch_00002.ckpt.abc.tmp").write_bytes(b"half")
    os.symlink("epoch_00000.ckpt", d / "last.ckpt")
    assert [c.path.name for c in full_checkpoints(d)] == ["start.ckpt", "epoch_00000.ckpt", "epoch_00001.ckpt"]
    assert newest_checkpoint(d).path.name == "epoch_00001.ckpt"
    _full_ckpt(d / "final.ckpt", 20, 2, finished=True)
    newest = newest_checkpoint(d)
    assert newest.path.name == "final.ckpt" and newest.finished
    repair_last_link(d, newest)  # last.ckpt resolves: left alone
    assert os.readlink(d / "last.ckpt") == "epoch_00000.ckpt"
    (d / "epoch_00000.ckpt").unlink()  # Lightning deleted it before re-linking: dangling
    repair_last_link(d, newest)
    assert os.readlink(d / "last.ckpt") == "final.ckpt"
    assert clean_run_folder(tmp_path / "run", [d]) == 1 and not list(d.glob(".*.tmp"))


def test_checkpoints_are_written_atomically(tmp_path):
    io = AtomicCheckpointIO.make()
    path = tmp_path / "x.ckpt"

    class Boom(Exception):
        pass

    class Exploding:
        def __reduce__(self):
            raise Boom()

    io.save_checkpoint({"a": torch.ones(1)}, path)
    with pytest.raises(Boom):
        io.save_checkpoint({"a": torch.zeros(1), "b": Exploding()}, path)
    assert torch.equal(torch.load(path, weights_only=True)["a"], torch.ones(1))  # the old file, intact
    assert not list(tmp_path.glob(".*.tmp"))


def test_a_stop_signal_is_honoured_at_the_next_safe_point():
    interrupt.install()
    try:
        interrupt.check("nothing yet")
        os.kill(os.getpid(), signal.SIGTERM)  # the handler only sets the flag
        with pytest.raises(interrupt.Interrupted) as e:
            interrupt.check("before update 3")
        assert e.value.exit_code == 128 + signal.SIGTERM and "SIGTERM before update 3" in str(e.value)
        assert signal.getsignal(signal.SIGTERM) is not interrupt._handler  # a second SIGTERM acts at once
    finally:
        interrupt.uninstall()
        interrupt.requested = None
