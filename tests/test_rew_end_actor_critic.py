"""Fast checks of the reward/end network, the actor-critic network, lambda returns and both losses."""

import math

import pytest
import torch

from diamond_pl.modules.actor_critic import actor_critic_loss
from diamond_pl.modules.lambda_returns import lambda_returns
from diamond_pl.modules.rew_end import rew_end_loss
from diamond_pl.nets.actor_critic_net import ActorCriticNet, ActorCriticNetConfig, sample_actions
from diamond_pl.nets.rew_end_net import RewEndNet, RewEndNetConfig

GAMMA, LAMBDA = 0.985, 0.95


def num_params(net: torch.nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


def small_rew_end(num_actions: int = 4) -> RewEndNet:
    torch.manual_seed(0)
    cfg = RewEndNetConfig(num_actions, lstm_dim=16, cond_channels=8, depths=(1, 1, 1, 1), channels=(8, 8, 8, 8))
    return RewEndNet(cfg)


def small_actor_critic(num_actions: int = 4) -> ActorCriticNet:
    torch.manual_seed(0)
    return ActorCriticNet(ActorCriticNetConfig(num_actions, lstm_dim=16, channels=(8, 8, 16, 16)))


# ---------------------------------------------------------------------------------------------------------------------
# networks


@pytest.mark.parametrize("num_actions", [4, 18])
def test_parameter_counts_at_paper_size(num_actions):
    assert num_params(RewEndNet(RewEndNetConfig(num_actions))) == 5_900_352 + 128 * num_actions
    assert num_params(ActorCriticNet(ActorCriticNetConfig(num_actions))) == 3_227_585 + 513 * num_actions


def test_shapes():
    b, t, a = 2, 5, 6
    net = small_rew_end(a)
    obs, next_obs = torch.rand(b, t, 3, 64, 64) * 2 - 1, torch.rand(b, t, 3, 64, 64) * 2 - 1
    logits_rew, logits_end, (h, c) = net(obs, torch.randint(a, (b, t)), next_obs)
    assert logits_rew.shape == (b, t, 3) and logits_end.shape == (b, t, 2)
    assert h.shape == c.shape == (1, b, 16)

    ac = small_actor_critic(a)
    logits, value, (hx, cx) = ac(obs[:, 0])
    assert logits.shape == (b, a) and value.shape == (b,) and hx.shape == cx.shape == (b, 16)


def test_rew_end_lstm_state_carries_over():
    """Running T steps at once equals running them one at a time with the state carried (imagination does this)."""
    net = small_rew_end()
    obs, next_obs, act = torch.rand(2, 4, 3, 64, 64), torch.rand(2, 4, 3, 64, 64), torch.randint(4, (2, 4))
    with torch.no_grad():
        full_rew, full_end, full_state = net(obs, act, next_obs)
        state, steps = None, []
        for t in range(4):
            r, e, state = net(obs[:, t : t + 1], act[:, t : t + 1], next_obs[:, t : t + 1], state)
            steps.append(torch.cat((r, e), dim=-1))
    torch.testing.assert_close(torch.cat(steps, dim=1), torch.cat((full_rew, full_end), dim=-1))
    torch.testing.assert_close(state[0], full_state[0])


def test_zero_heads_give_uniform_policy_and_zero_value():
    ac = small_actor_critic(5)
    logits, value, _ = ac(torch.rand(3, 3, 64, 64) * 2 - 1)
    assert torch.equal(logits, torch.zeros(3, 5)) and torch.equal(value, torch.zeros(3))


def test_forget_gate_bias_is_one():
    for lstm, suffix in ((small_rew_end().lstm, "_l0"), (small_actor_critic().lstm, "")):
        bias_ih, bias_hh = getattr(lstm, "bias_ih" + suffix), getattr(lstm, "bias_hh" + suffix)
        h = bias_ih.numel() // 4  # gate order i, f, g, o
        expected = torch.zeros(4 * h)
        expected[h : 2 * h] = 1
        assert torch.equal(bias_ih.detach(), expected) and torch.equal(bias_hh.detach(), torch.zeros(4 * h))


def test_sample_actions_temperature():
    logits = torch.tensor([[0.0, 1.0, 0.5]]).repeat(1000, 1)
    gen = torch.Generator().manual_seed(0)
    assert torch.equal(sample_actions(logits, temperature=1e-3, generator=gen), torch.ones(1000, dtype=torch.long))
    actions = sample_actions(logits, generator=gen)
    assert actions.shape == (1000,) and set(actions.tolist()) == {0, 1, 2}


# ---------------------------------------------------------------------------------------------------------------------
# lambda returns


def test_lambda_returns_terminal_truncated_and_chunk_end():
    rew = torch.tensor([[2.0, -0.5, 3.0, 0.0]])  # sign-clipped inside: 1, -1, 1, 0
    v = torch.tensor([[0.3, 7.0, -2.0, 0.8]])
    # step 1 terminal, step 2 truncated, step 3 is the chunk end of a running episode
    end = torch.tensor([[False, True, False, False]])
    trunc = torch.tensor([[False, False, True, False]])
    g = lambda_returns(rew, end, trunc, v, GAMMA, LAMBDA)[0]
    g3 = 0 + GAMMA * 0.8  # chunk end: r~ + gamma V'
    g2 = 1 + GAMMA * -2.0  # truncation: r~ + gamma V'(final obs), nothing from later steps
    g1 = -1.0  # terminal: r~ only
    g0 = 1 + GAMMA * ((1 - LAMBDA) * 0.3 + LAMBDA * g1)
    torch.testing.assert_close(g, torch.tensor([g0, g1, g2, g3]))


def test_lambda_returns_no_done_is_td_lambda():
    torch.manual_seed(0)
    rew, v = torch.randn(3, 15), torch.randn(3, 15)
    no = torch.zeros(3, 15, dtype=torch.bool)
    g = lambda_returns(rew, no, no, v, GAMMA, LAMBDA)
    expected, nxt = torch.empty(3, 15), v[:, -1]
    for t in reversed(range(15)):
        nxt = rew[:, t].sign() + GAMMA * ((1 - LAMBDA) * v[:, t] + LAMBDA * nxt)
        expected[:, t] = nxt
    torch.testing.assert_close(g, expected)


# ---------------------------------------------------------------------------------------------------------------------
# losses


def rew_end_batch(b: int = 4, t: int = 7):
    torch.manual_seed(1)
    obs = torch.rand(b, t, 3, 64, 64) * 2 - 1
    act = torch.randint(4, (b, t))
    rew = torch.randn(b, t) * 3
    end = torch.zeros(b, t, dtype=torch.bool)
    mask = torch.ones(b, t, dtype=torch.bool)
    # window 0: episode terminates at transition 3 (frames 4.. are padding)
    end[0, 3], mask[0, 4:] = True, False
    # window 1: left padding (episode starts at frame 2), no end
    mask[1, :2] = False
    # window 2: truncated episode (final obs stored, no end flag): frames 5.. are padding
    mask[2, 5:] = False
    # window 3: end flag only on the last frame, which is not a transition of the window
    end[3, -1] = True
    obs = obs * mask[:, :, None, None, None]  # padding frames are 0
    final_obs = torch.rand(b, 3, 64, 64) * 2 - 1
    has_final_obs = torch.tensor([True, False, True, True])
    return obs, act, rew, end, mask, final_obs, has_final_obs


def test_rew_end_loss_matches_manual_computation():
    net = small_rew_end()
    obs, act, rew, end, mask, final_obs, has_final_obs = rew_end_batch()
    out = rew_end_loss(net, obs, act, rew, end, mask, final_obs, has_final_obs)

    next_obs = obs[:, 1:].clone()
    next_obs[0, 3] = final_obs[0]  # only window 0 has an end flag among its transitions
    logits_rew, logits_end, _ = net(obs[:, :-1], act[:, :-1], next_obs)
    m = mask[:, :-1]
    target_rew = (rew[:, :-1].sign() + 1).long()
    loss_rew = torch.nn.functional.cross_entropy(logits_rew[m], target_rew[m])
    loss_end = torch.nn.functional.cross_entropy(logits_end[m], end[:, :-1][m].long())
    torch.testing.assert_close(out.metrics["loss_rew"], loss_rew)
    torch.testing.assert_close(out.metrics["loss_end"], loss_end)
    torch.testing.assert_close(out.loss, loss_rew + loss_end)
    assert torch.equal(out.mask, m) and torch.equal(out.target_rew, target_rew)
    assert out.pred_rew.shape == out.pred_end.shape == (4, 6)


def test_rew_end_loss_ignores_padded_transitions():
    net = small_rew_end()
    obs, act, rew, end, mask, final_obs, has_final_obs = rew_end_batch()
    base = rew_end_loss(net, obs, act, rew, end, mask, final_obs, has_final_obs).loss
    rew2, end2 = rew.clone(), end.clone()
    rew2[~mask], end2[~mask] = 5.0, True  # targets of padded transitions
    torch.testing.assert_close(rew_end_loss(net, obs, act, rew2, end2, mask, final_obs, has_final_obs).loss, base)


def test_rew_end_loss_uses_final_obs_only_at_terminations():
    net = small_rew_end()
    obs, act, rew, end, mask, final_obs, has_final_obs = rew_end_batch()
    base = rew_end_loss(net, obs, act, rew, end, mask, final_obs, has_final_obs).loss
    for window, used in ((0, True), (1, False), (2, False), (3, False)):
        changed = final_obs.clone()
        changed[window] = -changed[window]
        loss = rew_end_loss(net, obs, act, rew, end, mask, changed, has_final_obs).loss
        assert (loss != base).item() == used, window


def test_actor_critic_loss_pieces():
    b, t, a = 2, 15, 6
    logits = torch.zeros(b, t, a, requires_grad=True)  # uniform policy
    values = torch.randn(b, t, requires_grad=True)
    returns = torch.randn(b, t)
    actions = torch.randint(a, (b, t))
    loss, metrics = actor_critic_loss(logits, values, actions, returns, entropy_weight=0.001, value_weight=1.0)

    torch.testing.assert_close(metrics["policy_entropy"], torch.tensor(math.log2(a)))
    torch.testing.assert_close(metrics["loss_entropy"], torch.tensor(-0.001 * math.log(a)))
    torch.testing.assert_close(metrics["loss_actions"], math.log(a) * (returns - values.detach()).mean())
    torch.testing.assert_close(metrics["loss_values"], ((values.detach() - returns) ** 2).mean())
    torch.testing.assert_close(loss.detach(), metrics["loss_total"])
    torch.testing.assert_close(
        metrics["loss_total"], metrics["loss_actions"] + metrics["loss_entropy"] + metrics["loss_values"]
    )
    # the advantage is a constant for the policy term: the value gets gradient from the value loss only
    loss.backward()
    torch.testing.assert_close(values.grad, 2 * (values.detach() - returns) / (b * t))


def test_actor_critic_policy_batched_and_per_frame_use_agree():
    """The collector's batched uint8 interface and the tools' per-frame interface are one policy with one state."""
    import numpy as np

    from diamond_pl.frames import uint8_to_float
    from diamond_pl.modules.actor_critic import ActorCriticPolicy

    torch.manual_seed(0)
    net = ActorCriticNet(ActorCriticNetConfig(num_actions=4, lstm_dim=16, channels=(8, 8, 8, 8), img_size=16))
    torch.nn.init.normal_(net.actor_linear.weight)  # a non-uniform policy
    frames = np.random.default_rng(0).integers(0, 256, (3, 2, 3, 16, 16), dtype=np.uint8)  # (time, env, C, H, W)

    batched = ActorCriticPolicy(net)
    torch.manual_seed(1)
    batched_acts = [batched.act(frames[t]) for t in range(3)]
    single = ActorCriticPolicy(net)
    torch.manual_seed(1)
    # env 0 only: the same state sequence as row 0 of the batched policy; the draws differ in count, not in state
    for t in range(3):
        single.act_on_frame(uint8_to_float(torch.from_numpy(frames[t, 0])))
    torch.testing.assert_close(single.hx_cx[0][0], batched.hx_cx[0][0])
    assert all(a.shape == (2,) and a.dtype == np.int64 for a in batched_acts)

    # burn-in steps the LSTM from zeros like acting does, but draws no action (no RNG use)
    burnt = ActorCriticPolicy(net)
    state = torch.random.get_rng_state()
    burnt.burn_in(uint8_to_float(torch.from_numpy(frames[:, 0])))
    assert torch.equal(torch.random.get_rng_state(), state)
    torch.testing.assert_close(burnt.hx_cx[0][0], single.hx_cx[0][0])

    # reset(mask) zeroes the ended envs only; reset() every env
    batched.reset(np.array([True, False]))
    assert batched.hx_cx[0][0].abs().sum() == 0 and batched.hx_cx[0][1].abs().sum() > 0
    batched.reset()
    assert batched.hx_cx is None
