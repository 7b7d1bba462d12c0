"""Episode file format, EpisodeStore (RAM + disk, segments, state), Batch."""

import io

import numpy as np
import pytest
import torch

from diamond_pl.data import episode as episode_module
from diamond_pl.data.batch import Batch, collate
from diamond_pl.data.episode import Episode, EpisodeFileError
from diamond_pl.data.store import EpisodeStore, bytes_per_step
from diamond_pl.frames import uint8_to_float


def make_episode(length, finished=True, seed=0, trunc=False):
    rng = np.random.default_rng(seed)
    end = np.zeros(length, bool)
    tr = np.zeros(length, bool)
    if finished:
        (tr if trunc else end)[-1] = True
    return Episode(
        obs=rng.integers(0, 256, (length, 3, 64, 64), dtype=np.uint8),
        act=rng.integers(0, 4, length),
        rew=rng.choice(np.array([-1.0, 0.0, 0.0, 1.0, 2.5], np.float32), length),
        end=end,
        trunc=tr,
        final_obs=rng.integers(0, 256, (3, 64, 64), dtype=np.uint8) if finished else None,
    )


def assert_same(a: Episode, b: Episode):
    for name in ("obs", "act", "rew", "end", "trunc"):
        x, y = getattr(a, name), getattr(b, name)
        assert x.dtype == y.dtype and x.shape == y.shape
        assert np.array_equal(x, y), name
    assert (a.final_obs is None) == (b.final_obs is None)
    if a.final_obs is not None:
        assert np.array_equal(a.final_obs, b.final_obs)


def weights_only_roundtrip(obj):
    buf = io.BytesIO()
    torch.save(obj, buf)
    buf.seek(0)
    return torch.load(buf, weights_only=True)


# ----------------------------------------------------------------------------- Episode
def test_episode_properties_and_extend():
    a, b = make_episode(5, finished=False, seed=1), make_episode(3, seed=2)
    assert a.length == len(a) == 5 and not a.is_finished and b.is_finished
    assert b.ret == pytest.approx(float(b.rew.astype(np.float64).sum()))
    ab = a.extend(b)
    assert ab.length == 8 and ab.is_finished and np.array_equal(ab.final_obs, b.final_obs)
    assert np.array_equal(ab.obs[:5], a.obs) and np.array_equal(ab.act[5:], b.act)
    with pytest.raises(ValueError, match="already finished"):
        b.extend(a)
    head = ab.head(6)
    assert head.length == 6 and not head.is_finished and head.final_obs is None


def test_episode_validation():
    ep = make_episode(4)
    with pytest.raises(TypeError, match="uint8"):
        Episode(ep.obs.astype(np.float32), ep.act, ep.rew, ep.end, ep.trunc, ep.final_obs)
    with pytest.raises(ValueError, match="final_obs"):
        Episode(ep.obs, ep.act, ep.rew, ep.end, ep.trunc, None)
    with pytest.raises(ValueError, match="done flag before"):
        Episode(ep.obs, ep.act, ep.rew, np.array([0, 1, 0, 1], bool), ep.trunc, ep.final_obs)


@pytest.mark.parametrize("finished", [True, False])
def test_episode_file_roundtrip_bit_exact(tmp_path, finished):
    ep = make_episode(9, finished=finished, seed=3)
    ep.save(tmp_path / "e.npz")
    loaded = Episode.load(tmp_path / "e.npz")
    assert_same(ep, loaded)
    with np.load(tmp_path / "e.npz", allow_pickle=False) as npz:  # documented keys, no pickle
        assert set(npz.files) == {"format_version", "obs", "act", "rew", "end", "trunc"} | (
            {"final_obs"} if finished else set())
        assert int(npz["format_version"]) == 1


@pytest.mark.parametrize("where", ["savez", "replace"])
def test_atomic_write_survives_interrupted_write(tmp_path, monkeypatch, where):
    store = EpisodeStore(tmp_path / "train", "train_dataset")
    old = make_episode(6, finished=False, seed=4)
    store.add_episode(old)
    path = store.path(0)

    def crash(*args, **kwargs):
        if where == "savez":  # write a partial archive first, like a kill in the middle of the write
            args[0].write(b"PK\x03\x04 partial")
        raise KeyboardInterrupt("simulated crash")

    if where == "savez":
        monkeypatch.setattr(episode_module.np, "savez", crash)
    else:
        monkeypatch.setattr(episode_module.os, "replace", crash)
    with pytest.raises(KeyboardInterrupt):
        store.add_episode(old.extend(make_episode(3, seed=5)), 0)
    monkeypatch.undo()

    assert_same(Episode.load(path), old)  # the old file is intact
    assert_same(store.get(0), old) and store.num_steps == 6  # RAM untouched since the write failed
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # temp file cleaned up

    # A temp file left by a hard kill (no cleanup) is never picked up, and is removed on reload.
    (path.parent / ".000001.npz.x1y2.tmp").write_bytes(b"PK junk")
    reloaded = EpisodeStore(tmp_path / "train", "train_dataset")
    reloaded.load_state_dict(store.state_dict())
    assert len(reloaded) == 1 and [p.name for p in path.parent.iterdir()] == [path.name]
    assert len(EpisodeStore.import_directory(tmp_path / "train")) == 1


def _write_bad(path, kind):
    ep = make_episode(4)
    fields = dict(format_version=np.int64(1), obs=ep.obs, act=ep.act, rew=ep.rew, end=ep.end, trunc=ep.trunc,
                  final_obs=ep.final_obs)
    if kind == "truncated":
        ep.save(path)
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])
    elif kind == "garbage":
        path.write_bytes(b"not an episode at all")
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "missing_field":
        del fields["rew"]
        np.savez(path, **fields)
    elif kind == "wrong_dtype":
        fields["obs"] = ep.obs.astype(np.float32)
        np.savez(path, **fields)
    elif kind == "object_array":  # would need pickle to load
        fields["act"] = np.array([1, "a", None, 2], dtype=object)
        np.savez(path, **fields)
    elif kind == "inconsistent":
        fields["act"] = ep.act[:2]
        np.savez(path, **fields)
    elif kind == "version":
        fields["format_version"] = np.int64(99)
        np.savez(path, **fields)


@pytest.mark.parametrize("kind", ["truncated", "garbage", "empty", "missing_field", "wrong_dtype", "object_array",
                                  "inconsistent", "version"])
def test_bad_episode_file_raises_clear_error(tmp_path, kind):
    path = tmp_path / "000000.npz"
    _write_bad(path, kind)
    with pytest.raises(EpisodeFileError) as info:
        Episode.load(path)
    assert str(path) in str(info.value)
    if kind == "missing_field":
        assert "rew" in str(info.value)
    if kind == "wrong_dtype":
        assert "obs" in str(info.value) and "uint8" in str(info.value)


def test_missing_file_raises_clear_error(tmp_path):
    with pytest.raises(EpisodeFileError, match="missing"):
        Episode.load(tmp_path / "nope.npz")


# ----------------------------------------------------------------------------- EpisodeStore
def test_store_roundtrip_ram_and_disk_bit_exact(tmp_path):
    store = EpisodeStore(tmp_path / "train", "train_dataset")
    eps = [make_episode(n, seed=n) for n in (3, 8, 5)] + [make_episode(4, finished=False, seed=9)]
    eps[1] = make_episode(8, seed=8, trunc=True)
    for i, ep in enumerate(eps):
        assert store.add_episode(ep) == i
        assert store.path(i) == tmp_path / "train" / "episodes" / f"{i:06d}.npz"
    assert len(store) == 4 and store.num_steps == 20
    assert store.lengths.tolist() == [3, 8, 5, 4]
    all_rew = np.concatenate([e.rew for e in eps])
    assert store.counts_rew == [(all_rew < 0).sum(), (all_rew == 0).sum(), (all_rew > 0).sum()]
    assert store.counts_end == [18, 2]  # ep 1 is truncated, ep 3 unfinished
    for i, ep in enumerate(eps):
        assert_same(store.get(i), ep)

    state = weights_only_roundtrip(store.state_dict())
    reloaded = EpisodeStore(tmp_path / "train", "train_dataset")
    reloaded.load_state_dict(state)
    assert reloaded.lengths.tolist() == [3, 8, 5, 4]
    assert reloaded.counts_rew == store.counts_rew and reloaded.counts_end == store.counts_end
    for i, ep in enumerate(eps):
        assert_same(reloaded.get(i), ep)
    assert reloaded.metrics()["train_dataset/num_steps"] == 20


def test_stored_episodes_are_immutable(tmp_path):
    store = EpisodeStore(tmp_path, "s")
    store.add_episode(make_episode(3))
    with pytest.raises(ValueError):
        store.get(0).obs[0, 0, 0, 0] = 1


def test_in_progress_episode_extended_under_same_id(tmp_path):
    store = EpisodeStore(tmp_path, "train_dataset")
    part = make_episode(5, finished=False, seed=1)
    assert store.add_episode(part) == 0
    assert store.add_episode(make_episode(3, seed=2)) == 1
    full = part.extend(make_episode(4, seed=3))
    assert store.add_episode(full, 0) == 0
    assert len(store) == 2 and store.num_steps == 12 and store.lengths.tolist() == [9, 3]
    assert store.counts_end == [10, 2]
    assert_same(store.get(0), full)
    reloaded = EpisodeStore(tmp_path, "train_dataset")
    reloaded.load_state_dict(store.state_dict())
    assert_same(reloaded.get(0), full)
    with pytest.raises(ValueError, match="finished"):
        store.add_episode(make_episode(12), 0)
    store.add_episode(make_episode(6, finished=False), 2)  # id == len appends
    with pytest.raises(ValueError, match="shorter"):
        store.add_episode(make_episode(2, finished=False), 2)
    with pytest.raises(IndexError):
        store.add_episode(make_episode(2), 7)


def test_state_dict_is_weights_only_safe_and_load_truncates_future(tmp_path):
    store = EpisodeStore(tmp_path / "train", "train_dataset")
    store.add_episode(make_episode(4, seed=0))
    in_progress = make_episode(5, finished=False, seed=1)
    store.add_episode(in_progress)
    state = weights_only_roundtrip(store.state_dict())
    assert state == store.state_dict()

    # The "future" after the checkpoint: episode 1 finishes, episodes 2 and 3 are added.
    store.add_episode(in_progress.extend(make_episode(4, seed=2)), 1)
    store.add_episode(make_episode(7, seed=3))
    store.add_episode(make_episode(2, finished=False, seed=4))

    resumed = EpisodeStore(tmp_path / "train", "train_dataset")
    resumed.load_state_dict(state)
    assert len(resumed) == 2 and resumed.lengths.tolist() == [4, 5]
    assert_same(resumed.get(1), in_progress)  # cut back: unfinished again, no final_obs
    assert resumed.get(1).final_obs is None and not resumed.get(1).is_finished
    assert sorted(p.name for p in (tmp_path / "train" / "episodes").iterdir()) == ["000000.npz", "000001.npz"]
    assert_same(Episode.load(resumed.path(1)), in_progress)  # the file is cut back too
    assert resumed.counts_end == [8, 1]
    # Loading the same state into the live store (RAM differs) also forgets the future.
    store.load_state_dict(state)
    assert store.lengths.tolist() == [4, 5] and store.add_episode(make_episode(3)) == 2


def test_load_state_dict_missing_or_short_file(tmp_path):
    store = EpisodeStore(tmp_path, "train_dataset")
    store.add_episode(make_episode(4))
    store.add_episode(make_episode(5, finished=False))
    state = store.state_dict()
    store.path(1).unlink()
    with pytest.raises(EpisodeFileError, match="000001.npz.*missing"):
        EpisodeStore(tmp_path, "train_dataset").load_state_dict(state)
    make_episode(3, finished=False).save(store.path(1))
    with pytest.raises(EpisodeFileError, match="older than the checkpoint"):
        EpisodeStore(tmp_path, "train_dataset").load_state_dict(state)


def test_clear(tmp_path):
    store = EpisodeStore(tmp_path / "test", "test_dataset")
    store.add_episode(make_episode(3))
    store.add_episode(make_episode(3))
    store.clear()
    assert len(store) == 0 and store.num_steps == 0 and store.counts_rew == [0, 0, 0]
    assert not list((tmp_path / "test" / "episodes").glob("*.npz"))
    assert store.add_episode(make_episode(2)) == 0


def test_segment_padding(tmp_path):
    store = EpisodeStore(tmp_path, "s")
    ep = make_episode(5, seed=7)
    store.add_episode(ep)
    seg = store.segment(0, -2, 4)  # 2 padding steps on the left
    assert seg.mask_padding.tolist() == [False, False, True, True, True, True]
    assert np.array_equal(seg.obs[2:], ep.obs[:4]) and not seg.obs[:2].any()
    assert np.array_equal(seg.act[2:], ep.act[:4]) and not seg.act[:2].any()
    assert seg.has_final_obs and np.array_equal(seg.final_obs, ep.final_obs)
    seg = store.segment(0, 3, 9)  # padding on the right
    assert seg.mask_padding.tolist() == [True, True, False, False, False, False]
    assert np.array_equal(seg.rew[:2], ep.rew[3:]) and not seg.rew[2:].any() and seg.end.tolist()[:2] == [False, True]
    seg = store.segment(0, -1, 7)  # both sides
    assert seg.mask_padding.tolist() == [False] + [True] * 5 + [False, False]
    with pytest.raises(ValueError):
        store.segment(0, 5, 8)  # no real step


def test_batch_collate_obs_float_and_to(tmp_path):
    store = EpisodeStore(tmp_path, "s")
    store.add_episode(make_episode(5, seed=1))
    store.add_episode(make_episode(4, finished=False, seed=2))
    windows = ([0, 1, 1], [-2, 0, 1], [2, 4, 5])
    batch = store.gather(*windows)
    assert batch.obs.dtype == torch.uint8 and batch.obs.shape == (3, 4, 3, 64, 64)
    assert batch.act.dtype == torch.int64 and batch.rew.dtype == torch.float32 and batch.end.dtype == torch.bool
    assert batch.segment_ids.tolist() == [[0, -2, 2], [1, 0, 4], [1, 1, 5]]
    assert batch.has_final_obs.tolist() == [True, False, False]
    same = collate([store.segment(*w) for w in zip(*windows)])
    for name in ("obs", "act", "rew", "end", "trunc", "mask_padding", "final_obs", "has_final_obs", "segment_ids"):
        assert torch.equal(getattr(batch, name), getattr(same, name)), name

    x = batch.obs_float()
    assert x.dtype == torch.float32
    assert torch.all(x[0, :2] == 0.0)  # padding is mid-gray 0.0, not uint8 0 -> -1
    assert torch.equal(x[0, 2:], uint8_to_float(batch.obs[0, 2:]))
    assert torch.equal(x[2, 3], torch.zeros(3, 64, 64))
    f = batch.final_obs_float()
    assert torch.equal(f[0], uint8_to_float(batch.final_obs[0])) and torch.all(f[1:] == 0)
    moved = batch.to("cpu", non_blocking=True)
    assert isinstance(moved, Batch) and torch.equal(moved.obs, batch.obs)
    if torch.cuda.is_available():
        assert batch.pin_memory().obs.is_pinned()


def test_memory_cost_per_step(tmp_path):
    # 64x64 RGB uint8 frame + int64 action + float32 reward + 2 bools: 100k steps ~ 1.23 GB, no float copy.
    assert bytes_per_step() == 3 * 64 * 64 + 8 + 4 + 1 + 1 == 12302
    assert 100_000 * bytes_per_step() / 1e9 == pytest.approx(1.23, abs=0.005)
    store = EpisodeStore(tmp_path, "s")
    store.add_episode(make_episode(7))
    store.add_episode(make_episode(5, finished=False))
    assert store.get(0).obs.dtype == np.uint8
    assert store.nbytes == store.num_steps * bytes_per_step() + 1 * 3 * 64 * 64  # + one final_obs


def test_import_directory(tmp_path):
    store = EpisodeStore(tmp_path / "ds", "s")
    eps = [make_episode(4, seed=1), make_episode(6, finished=False, seed=2)]
    for ep in eps:
        store.add_episode(ep)
    imported = EpisodeStore.import_directory(tmp_path / "ds", "static")
    assert imported.read_only and imported.lengths.tolist() == [4, 6]
    for i, ep in enumerate(eps):
        assert_same(imported.get(i), ep)
    with pytest.raises(PermissionError):
        imported.add_episode(make_episode(2))
    with pytest.raises(PermissionError):
        imported.clear()
    imported.load_state_dict(imported.state_dict())  # resume in static mode

    flat = tmp_path / "flat"  # a plain folder of <id>.npz files
    for i, ep in enumerate(eps):
        ep.save(flat / f"{i}.npz")
    assert EpisodeStore.import_directory(flat).lengths.tolist() == [4, 6]
    (flat / "0.npz").unlink()
    with pytest.raises(EpisodeFileError, match="missing \\[0\\]"):
        EpisodeStore.import_directory(flat)
    with pytest.raises(EpisodeFileError, match="no episode files"):
        EpisodeStore.import_directory(tmp_path / "empty")
