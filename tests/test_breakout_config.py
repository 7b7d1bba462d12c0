"""configs/breakout.yaml's `loop:` and `data:` sections and the optimiser settings hold the reference's values.

Every expected number below is written from the reference spec (diamond_reference_spec.md, section in the comment),
not read from the code's defaults, so editing the config or a default that the config relies on fails here.
`tests/test_configs.py` checks that `model:` equals the code's defaults; this file checks the values themselves.
"""

from pathlib import Path

import pytest
import yaml

from diamond_pl.data.datamodule import ReplayDataModule
from diamond_pl.loop.collect_evaluate import CollectAndEvaluate

ROOT = Path(__file__).resolve().parents[1]
N = 4  # num_steps_conditioning (spec §3.1)
HORIZON = 15  # imagination horizon (spec §8)


@pytest.fixture(scope="module")
def config() -> dict:
    return yaml.safe_load((ROOT / "configs" / "breakout.yaml").read_text())


def test_loop_section_is_the_reference_schedule(config):
    loop = config["loop"]
    assert loop["total_env_steps"] == 100_000  # Atari 100k (§9.4)
    assert loop["steps_per_epoch"] == 100  # real steps per epoch (§9.4)
    assert loop["epsilon"] == 0.01  # train collection (§7.2)
    assert loop["noop_max"] == 30  # §1.2
    # initial collection (§9.3): 5,000 steps, + 100 until 10 minority-class rewards or 10,000 steps
    assert (loop["initial_steps_min"], loop["initial_steps_max"], loop["initial_steps_increment"]) == (5000, 10000, 100)
    assert loop["threshold_rew"] == 10
    assert loop["num_final_epochs"] == 50  # §9.4
    assert (loop["eval_every"], loop["eval_episodes"], loop["final_eval_episodes"]) == (10, 4, 100)  # §10
    cb = CollectAndEvaluate(**loop)  # the section is accepted as is and reaches the callback
    assert (cb.total_env_steps, cb.steps_per_epoch, cb.epsilon, cb.noop_max) == (100_000, 100, 0.01, 30)
    assert (cb.initial_steps_min, cb.initial_steps_max, cb.initial_steps_increment, cb.threshold_rew) == (
        5000, 10000, 100, 10)  # fmt: skip
    assert (cb.num_final_epochs, cb.eval_every, cb.eval_episodes, cb.final_eval_episodes) == (50, 10, 4, 100)
    # the typical run of §9.3: 5,000 initial steps -> 950 collection epochs -> 1,000 epochs in all
    assert (cb.total_env_steps - cb.initial_steps_min) // cb.steps_per_epoch + cb.num_final_epochs == 1000


def test_data_section_is_the_reference_batching(config, tmp_path):
    data = config["data"]
    assert data["game"] == "Breakout"
    assert data["batch_size"] == 32  # §9.2
    assert data["sample_weights"] == [0.1, 0.1, 0.1, 0.7]  # §2.4
    # §9.4: epoch 1 is 10k / 10k / 5k updates, later epochs 400 / 400 / 400
    assert data["updates_first_epoch"] == {"denoiser": 10_000, "rew_end_model": 10_000, "actor_critic": 5_000}
    assert data["updates_per_epoch"] == {"denoiser": 400, "rew_end_model": 400, "actor_critic": 400}
    # §2.5: denoiser windows n + 1 + 1 autoregressive step, reward/end windows horizon + n
    assert data["denoiser_seq_len"] == N + 2 == 6
    assert data["rew_end_seq_len"] == HORIZON + N == 19
    assert config["model"]["denoiser"]["num_steps_conditioning"] == N
    assert config["model"]["world_model_env"]["horizon"] == HORIZON

    dm = ReplayDataModule(**{**data, "run_dir": str(tmp_path)})
    assert (dm.batch_size, list(dm.sample_weights)) == (32, [0.1, 0.1, 0.1, 0.7])
    assert (dm.denoiser_seq_len, dm.rew_end_seq_len) == (6, 19)
    first, later = dm.updates(0), dm.updates(1)
    assert (first.denoiser, first.rew_end_model, first.actor_critic) == (10_000, 10_000, 5_000)
    assert (later.denoiser, later.rew_end_model, later.actor_critic) == (400, 400, 400)
    assert dm.updates(999) == later


def test_optimiser_and_loss_settings_are_the_reference_values(config):
    """§9.2: AdamW lr 1e-4, eps 1e-8, 100 warm-up steps; weight decay 0.01 / 0.01 / 0; clipping 1 / 100 / 100.
    §7.3-7.4: gamma 0.985, lambda 0.95, entropy 0.001, value 1, 15-step chunks. §8: 32 envs, horizon 15, 256 batches."""
    model = config["model"]
    for name, wd, clip in (("denoiser_optim", 0.01, 1.0), ("rew_end_model_optim", 0.01, 100.0),
                           ("actor_critic_optim", 0.0, 100.0)):  # fmt: skip
        assert model[name] == {"lr": 1e-4, "eps": 1e-8, "weight_decay": wd, "warmup_steps": 100, "max_grad_norm": clip}
    assert model["actor_critic_loss"] == {"gamma": 0.985, "lambda_": 0.95, "entropy_weight": 0.001, "value_weight": 1.0,
                                          "backup_every": 15, "temperature": 1.0}  # fmt: skip
    assert model["world_model_env"] == {"num_envs": 32, "horizon": 15, "num_batches_to_preload": 256}
    assert model["sampler"]["num_steps"] == 3 and model["sampler"]["order"] == 1 and model["sampler"]["s_churn"] == 0
    assert (model["sampler"]["sigma_min"], model["sampler"]["sigma_max"], model["sampler"]["rho"]) == (0.002, 5.0, 7.0)
