"""ReplayDataModule: store locations, sampler factory, test traversal, static datasets, checkpoint state."""

import io

import numpy as np
import pytest
import torch

from diamond_pl.data.datamodule import ReplayDataModule
from diamond_pl.data.episode import Episode
from diamond_pl.data.store import EpisodeStore


def make_episode(length, finished=True, seed=0):
    rng = np.random.default_rng(seed)
    end = np.zeros(length, bool)
    end[-1] = finished
    return Episode(obs=rng.integers(0, 256, (length, 3, 64, 64), dtype=np.uint8), act=rng.integers(0, 4, length),
                   rew=rng.integers(-1, 2, length).astype(np.float32), end=end, trunc=np.zeros(length, bool),
                   final_obs=rng.integers(0, 256, (3, 64, 64), dtype=np.uint8) if finished else None)


def weights_only_roundtrip(obj):
    buf = io.BytesIO()
    torch.save(obj, buf)
    buf.seek(0)
    return torch.load(buf, weights_only=True)


def test_stores_live_in_the_run_dir(tmp_path):
    dm = ReplayDataModule(run_dir=str(tmp_path / "run"), game="breakout", batch_size=4)
    assert dm.game == "Breakout"
    assert dm.train_store.directory == tmp_path / "run" / "dataset" / "train"
    assert dm.test_store.directory == tmp_path / "run" / "dataset" / "test"
    assert dm.train_store.name == "train_dataset" and dm.test_store.name == "test_dataset"
    dm.train_store.add_episode(make_episode(5))
    assert (tmp_path / "run" / "dataset" / "train" / "episodes" / "000000.npz").is_file()


def test_bad_config_fails_at_construction(tmp_path):
    with pytest.raises(ValueError, match="sample_weights"):
        ReplayDataModule(run_dir=str(tmp_path), sample_weights=(0.5, 0.6))
    with pytest.raises(ValueError, match="Unknown game"):
        ReplayDataModule(run_dir=str(tmp_path), game="Tetris")


def test_samplers_and_test_traversal(tmp_path):
    dm = ReplayDataModule(run_dir=str(tmp_path), batch_size=3, seed=0)
    for i in range(5):
        dm.train_store.add_episode(make_episode(8 + i, seed=i))
    dm.test_store.add_episode(make_episode(13, seed=9))
    denoiser = dm.sampler("denoiser", seq_len=6)
    rew_end = dm.sampler("rew_end", seq_len=19, can_sample_beyond_end=True)
    assert dm.sampler("denoiser", seq_len=6) is denoiser
    b = denoiser.sample()
    assert b.obs.shape == (3, 6, 3, 64, 64) and b.mask_padding[:, -1].all()
    assert rew_end.sample().obs.shape == (3, 19, 3, 64, 64)
    with pytest.raises(ValueError, match="exists"):
        dm.sampler("denoiser", seq_len=7)
    # Samplers get independent streams from one seed.
    assert not torch.equal(denoiser.sample().segment_ids, dm.sampler("other", 6).sample().segment_ids)
    batches = list(dm.test_traversal(seq_len=6))
    assert [b.segment_ids[:, 1].tolist() for b in batches] == [[0, 6]]  # [12, 18) has 1 real step: dropped


def test_denoiser_final_obs_reaches_the_denoiser_sampler_only(tmp_path):
    for flag in (False, True):
        dm = ReplayDataModule(run_dir=str(tmp_path / str(flag)), batch_size=3, seed=0, denoiser_final_obs=flag)
        dm.train_store.add_episode(make_episode(8))
        dm.train_dataloader()
        assert dm._samplers["denoiser"].with_final_obs is flag
        assert dm._samplers["rew_end_model"].with_final_obs is False  # the reward/end model has batch.final_obs
        assert dm.hparams.denoiser_final_obs is flag
    with pytest.raises(ValueError, match="denoiser_final_obs must be true or false, got 'yes'"):
        ReplayDataModule(run_dir=str(tmp_path), denoiser_final_obs="yes")


def test_state_dict_weights_only_and_resume(tmp_path):
    dm = ReplayDataModule(run_dir=str(tmp_path), batch_size=4, seed=1)
    dm.train_store.add_episode(make_episode(6, seed=0))
    dm.train_store.add_episode(make_episode(4, finished=False, seed=1))
    dm.test_store.add_episode(make_episode(5, seed=2))
    sampler = dm.sampler("denoiser", 6)
    sampler.sample()
    state = weights_only_roundtrip(dm.state_dict())
    assert state["train_store"]["lengths"] == [6, 4] and state["run_dir"] == str(tmp_path)
    expected = sampler.sample().segment_ids

    # After the checkpoint: more data, which the resumed run must not see.
    dm.train_store.add_episode(make_episode(4, finished=False, seed=1).extend(make_episode(3, seed=3)), 1)
    dm.train_store.add_episode(make_episode(9, seed=4))

    resumed = ReplayDataModule(run_dir=str(tmp_path), batch_size=4, seed=999)
    resumed.load_state_dict(state)
    assert resumed.train_store.lengths.tolist() == [6, 4] and not resumed.train_store.get(1).is_finished
    assert resumed.test_store.lengths.tolist() == [5]
    # The sampler created after the restore continues the checkpointed stream.
    assert torch.equal(resumed.sampler("denoiser", 6).sample().segment_ids, expected)
    assert weights_only_roundtrip(resumed.state_dict())["samplers"].keys() == {"denoiser"}


def test_static_dataset(tmp_path):
    root = tmp_path / "static"
    train, test = EpisodeStore(root / "train", "x"), EpisodeStore(root / "test", "y")
    for i in range(6):
        train.add_episode(make_episode(5 + i, seed=i))
    test.add_episode(make_episode(7, seed=10))
    dm = ReplayDataModule(run_dir=str(tmp_path / "run"), static_dataset=str(root), batch_size=2)
    dm.setup("fit")
    assert dm.is_static and dm.train_store.read_only and dm.test_store.read_only
    assert dm.train_store.lengths.tolist() == [5, 6, 7, 8, 9, 10] and len(dm.test_store) == 1
    sampler = dm.sampler("denoiser", 6)
    assert sampler.sample_weights is None  # uniform over steps (ignore_sample_weights)
    assert sampler.sample().obs.shape == (2, 6, 3, 64, 64)
    state = weights_only_roundtrip(dm.state_dict())
    resumed = ReplayDataModule(run_dir=str(tmp_path / "run"), static_dataset=str(root), batch_size=2)
    resumed.load_state_dict(state)
    assert resumed.train_store.lengths.tolist() == [5, 6, 7, 8, 9, 10]
    kept = ReplayDataModule(run_dir=str(tmp_path / "run"), static_dataset=str(root), ignore_sample_weights=False)
    assert kept.sample_weights == (0.1, 0.1, 0.1, 0.7)
