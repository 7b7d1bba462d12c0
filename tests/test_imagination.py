"""Imagination: the world-model env and the env loop, with hand-made world models of known behaviour."""

import numpy as np
import pytest
import torch

from diamond_pl.data.episode import Episode
from diamond_pl.data.sampler import SegmentSampler
from diamond_pl.data.store import EpisodeStore
from diamond_pl.envs.world_model_env import WorldModelEnv, WorldModelEnvConfig
from diamond_pl.modules.actor_critic import ActorCriticLossConfig, ActorCriticModule
from diamond_pl.modules.optim import OptimConfig
from diamond_pl.nets.actor_critic_net import ActorCriticNetConfig

SIZE = 16  # small frames keep these tests fast; the networks take the size as a parameter
A = 3
GENERATED = 0.5  # the stub world model always generates this flat frame, which no real frame has


def real_store(tmp_path, num_episodes=6, length=12) -> EpisodeStore:
    """Episodes whose frames are flat, each with a unique value (so a frame tells where it came from)."""
    store = EpisodeStore(tmp_path / "train", "train_dataset")
    value = 1
    for e in range(num_episodes):
        vals = np.arange(value, value + length, dtype=np.uint8)
        value += length
        obs = np.broadcast_to(vals[:, None, None, None], (length, 3, SIZE, SIZE)).copy()
        end = np.zeros(length, bool)
        end[-1] = True
        final = np.full((3, SIZE, SIZE), 250, np.uint8)
        store.add_episode(Episode(obs, np.arange(length) % A, np.zeros(length, np.float32), end, np.zeros(length, bool), final))
    return store


def stub_next_obs(prev_obs, prev_act):
    return torch.full_like(prev_obs[:, -1], GENERATED)


def stub_rew_end(p_end: float, rewarded_action: int = 1):
    """Reward +1 exactly when the rewarded action was taken; end with probability p_end."""

    def fn(obs, act, next_obs, hx_cx):
        n, t = act.shape
        big = 1e4
        logits_rew = torch.zeros(n, t, 3)
        logits_rew[..., 1] = big * (act != rewarded_action)  # class 1 = reward 0
        logits_rew[..., 2] = big * (act == rewarded_action)  # class 2 = reward +1
        p = torch.tensor([1 - p_end, p_end]).clamp(1e-6, 1)
        logits_end = p.log().expand(n, t, 2)
        h = torch.zeros(1, n, 4) if hx_cx is None else hx_cx[0]
        return logits_rew, logits_end, (h, h.clone())

    return fn


def make_env(store, num_envs=4, horizon=5, p_end=0.0, preload=2, seed=0):
    sampler = SegmentSampler(store, batch_size=num_envs, seq_len=4, seed=seed)
    cfg = WorldModelEnvConfig(num_envs=num_envs, horizon=horizon, num_batches_to_preload=preload)
    return WorldModelEnv(stub_next_obs, stub_rew_end(p_end), sampler.sample, cfg, generator=torch.Generator().manual_seed(seed))


def make_module(lstm_dim=16, lr=1e-4, warmup=100) -> ActorCriticModule:
    torch.manual_seed(0)
    net = ActorCriticNetConfig(num_actions=A, lstm_dim=lstm_dim, channels=(8, 8, 8, 8), img_size=SIZE)
    optim = OptimConfig(lr=lr, weight_decay=0.0, warmup_steps=warmup, max_grad_norm=100.0)
    return ActorCriticModule(net, ActorCriticLossConfig(), optim)


def memoryless_critic(module: ActorCriticModule) -> None:
    """Make the LSTM forget everything each step, so V is a function of the current frame alone."""
    lstm = module.net.lstm
    with torch.no_grad():
        lstm.weight_hh.zero_()
        h = lstm.hidden_size
        lstm.bias_ih[h : 2 * h] = -1e4  # forget gate closed
        torch.nn.init.normal_(module.net.critic_linear.weight)


def test_rollout_shapes_and_truncation_at_horizon(tmp_path):
    env = make_env(real_store(tmp_path), num_envs=4, horizon=5)
    loop = make_module().make_env_loop(env)
    r = loop.rollout(15)
    assert r.obs.shape == (4, 15, 3, SIZE, SIZE) and r.logits.shape == (4, 15, A)
    assert r.act.shape == r.rew.shape == r.end.shape == r.trunc.shape == r.value.shape == r.value_bootstrap.shape
    # no sampled ends: every env is truncated after exactly 5 steps, then restarts
    expected = torch.zeros(15, dtype=torch.bool)
    expected[[4, 9, 14]] = True
    assert (r.trunc == expected).all() and not r.end.any()
    assert r.value.requires_grad and not r.value_bootstrap.requires_grad
    # the state persists across calls: the next chunk continues the episodes (truncation again 5 steps later)
    r2 = loop.rollout(5)
    assert r2.trunc[:, 4].all() and not r2.trunc[:, :4].any()


def test_sampled_ends_reset_envs_and_contexts_come_from_real_data(tmp_path):
    store = real_store(tmp_path)
    real_values = {int(v) for ep in range(len(store)) for v in store.get(ep).obs[:, 0, 0, 0]}
    env = make_env(store, num_envs=4, horizon=15, p_end=0.5)
    loop = make_module().make_env_loop(env)
    r = loop.rollout(15)
    done = r.end | r.trunc
    assert r.end.any() and (~r.end).any()  # ends are sampled, not deterministic
    # an env that just ended observes a real context frame next; otherwise it observes the generated frame
    obs_value = r.obs[:, 1:, 0, 0, 0]
    after_done = done[:, :-1]
    assert torch.allclose(obs_value[~after_done], torch.tensor(GENERATED))
    for v in obs_value[after_done].tolist():
        if v == 0.0:
            continue  # left padding of a context at an episode start (mid-gray)
        u = round((v + 1) / 2 * 255)
        assert u in real_values, f"context frame {u} is not real data"


def test_contexts_are_kept_as_uint8_and_taken_as_the_batches_float_frames(tmp_path):
    store = real_store(tmp_path, length=3)  # short episodes: many contexts carry left padding
    env = make_env(store, num_envs=4, preload=2, seed=3)
    env.reset()
    assert env.pool["obs"].dtype == torch.uint8  # 4x less memory than float32
    first = SegmentSampler(store, batch_size=4, seq_len=4, seed=3).sample()  # the first batch the env preloaded
    assert (~first.mask_padding).any()  # the comparison covers padding frames (0.0, not -1)
    assert torch.equal(env.obs_buffer, first.obs_float())
    assert torch.equal(env.act_buffer, first.act)


def test_bootstrap_values_use_the_final_observation(tmp_path):
    env = make_env(real_store(tmp_path), num_envs=4, horizon=3, p_end=0.3)
    module = make_module()
    memoryless_critic(module)
    loop = module.make_env_loop(env)
    r = loop.rollout(12)
    done = r.end | r.trunc
    assert done.any() and (~done).any()
    with torch.no_grad():
        _, v_generated, _ = module.net(torch.full((1, 3, SIZE, SIZE), GENERATED))
    # done (terminated or truncated): V of the final (generated) frame; otherwise V of the next observation
    assert torch.allclose(r.value_bootstrap[done], v_generated.expand(int(done.sum())), atol=1e-5)
    assert torch.allclose(r.value_bootstrap[:, :-1][~done[:, :-1]], r.value[:, 1:][~done[:, :-1]].detach(), atol=1e-5)


def test_actor_critic_learns_the_rewarded_action_in_imagination(tmp_path):
    """In a world model whose reward depends only on the action, imagined return rises far above uniform's."""
    env = make_env(real_store(tmp_path), num_envs=8, horizon=15, preload=16)
    module = make_module(lr=1e-2, warmup=0)
    loop = module.make_env_loop(env, generator=torch.Generator().manual_seed(0))
    opt = module.configure_optimizers()["optimizer"]
    rates = []
    for _ in range(50):
        loss, metrics = module.loss(loop)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(module.parameters(), 100.0)
        opt.step()
        rates.append(metrics["imagined_reward_mean"].item())
    assert np.mean(rates[:5]) == pytest.approx(1 / A, abs=0.12)  # uniform policy at the start
    assert np.mean(rates[-10:]) > 0.8, rates
