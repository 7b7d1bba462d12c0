"""Regression guards for the imagination loop (reference spec §7.2, §8), checked against the spec's procedure.

  - env loop: the rollout (logits, values, bootstrap values and every gradient) equals a step-by-step transcription
    of spec §7.2 on a scripted env: V_final of a done env from the *current* hidden state, no gradient; the state of
    done envs zeroed, then burnt in on the env's `burnin_obs` from zero state *with* gradient; no burn-in at the very
    first reset; the state detached between chunks; the last bootstrap the next observation's value.
  - world-model env: after a done, the observation is the new context's *last* frame and `burnin_obs` its first
    three, in order; the next-frame model is conditioned on the 4-frame buffer with the policy's action in the last
    slot; the reward/end LSTM of a reset env is the one burnt in on its context's 3 real transitions.
"""

import math

import numpy as np
import pytest
import torch

from diamond_pl.data.episode import Episode
from diamond_pl.data.sampler import SegmentSampler
from diamond_pl.data.store import EpisodeStore
from diamond_pl.envs.env_loop import EnvLoop
from diamond_pl.envs.world_model_env import StepOutput, WorldModelEnv, WorldModelEnvConfig
from diamond_pl.nets.actor_critic_net import ActorCriticNet, ActorCriticNetConfig

SIZE, A, N_ENVS, K = 16, 3, 4, 6


def memory_net() -> ActorCriticNet:
    """A small actor-critic whose heads are not zero (the paper's init would make every value 0) and whose LSTM
    remembers, so a wrong hidden state shows up in the values and logits."""
    torch.manual_seed(0)
    net = ActorCriticNet(ActorCriticNetConfig(num_actions=A, lstm_dim=8, channels=(4, 4, 4, 4), img_size=SIZE))
    with torch.no_grad():
        for head in (net.critic_linear, net.actor_linear):
            torch.nn.init.normal_(head.weight)
            torch.nn.init.normal_(head.bias)
    return net


class ScriptedEnv:
    """A TorchEnv whose frames and done flags are fixed in advance; burn-in frames are leaves that require grad."""

    def __init__(self, end: torch.Tensor, trunc: torch.Tensor, with_burnin: bool = True, seed: int = 0,
                 burnin_len: int = 3) -> None:
        g = torch.Generator().manual_seed(seed)
        steps = end.shape[0]
        self.end, self.trunc = end, trunc
        self.obs = torch.rand(steps + 1, N_ENVS, 3, SIZE, SIZE, generator=g) * 2 - 1
        self.final = torch.rand(steps, N_ENVS, 3, SIZE, SIZE, generator=g) * 2 - 1
        self.rew = torch.randint(-1, 2, (steps, N_ENVS), generator=g).float()
        self.burnin = [(torch.rand(N_ENVS, burnin_len, 3, SIZE, SIZE, generator=g) * 2 - 1).requires_grad_() if with_burnin
                       else None for _ in range(steps)]  # fmt: skip
        self.t = 0

    def reset(self) -> torch.Tensor:
        self.t = 0
        return self.obs[0]

    def step(self, act: torch.Tensor) -> StepOutput:
        t = self.t
        self.t += 1
        return StepOutput(obs=self.obs[t + 1], rew=self.rew[t], end=self.end[t], trunc=self.trunc[t],
                          final_obs=self.final[t], burnin_obs=self.burnin[t])  # fmt: skip


def done_script(steps: int = K + 4) -> tuple[torch.Tensor, torch.Tensor]:
    end = torch.zeros(steps, N_ENVS, dtype=torch.bool)
    trunc = torch.zeros(steps, N_ENVS, dtype=torch.bool)
    end[1, 0] = end[4, 2] = end[7, 1] = True  # env 0 ends early, env 2 later, env 1 in the second chunk
    trunc[2, 1] = trunc[5, 0] = trunc[K - 1, 3] = True  # truncations, one on the last step of the first chunk
    end[K - 1, 2] = True  # an end on the last step of the chunk
    return end, trunc


def spec_rollouts(net: ActorCriticNet, env: ScriptedEnv, chunks: list[int]):
    """Spec §7.2, written out per env. Returns per chunk (logits (N,K,A), values (N,K), value_bootstrap (N,K))."""
    zeros = torch.zeros(N_ENVS, net.lstm.hidden_size)
    h, c = zeros, zeros.clone()  # the very first reset is not burnt in
    obs = env.reset()
    t_env, out = 0, []
    for k in chunks:
        h, c = h.detach(), c.detach()  # truncated BPTT: the state is detached at the start of every call
        logits_l, values_l, final_l, done_l = [], [], [], []
        for _ in range(k):
            logits, value, (h, c) = net(obs, (h, c))
            end, trunc = env.end[t_env], env.trunc[t_env]
            final_obs, burnin, next_obs = env.final[t_env], env.burnin[t_env], env.obs[t_env + 1]
            with torch.no_grad():  # V_final: one more LSTM step from the done env's current state
                _, v_final, _ = net(final_obs, (h, c))
            rows_h, rows_c = [], []
            for i in range(N_ENVS):
                hi, ci = h[i : i + 1], c[i : i + 1]
                if end[i] or trunc[i]:
                    hi, ci = torch.zeros_like(hi), torch.zeros_like(ci)
                    if burnin is not None:
                        for j in range(burnin.shape[1]):  # from zero state, with gradient
                            _, _, (hi, ci) = net(burnin[i : i + 1, j], (hi, ci))
                rows_h.append(hi)
                rows_c.append(ci)
            h, c = torch.cat(rows_h), torch.cat(rows_c)
            logits_l.append(logits)
            values_l.append(value)
            final_l.append(v_final)
            done_l.append(end | trunc)
            obs = next_obs
            t_env += 1
        with torch.no_grad():
            _, v_next, _ = net(obs, (h, c))  # the state is not advanced by this call
        values = torch.stack(values_l, 1)
        boot = torch.empty_like(values)
        for t in range(k):
            nxt = values[:, t + 1].detach() if t + 1 < k else v_next
            boot[:, t] = torch.where(done_l[t], final_l[t], nxt)
        out.append((torch.stack(logits_l, 1), values, boot))
    return out


def weighted_sum(logits, values, seed):
    g = torch.Generator().manual_seed(seed)
    return (logits * torch.randn(logits.shape, generator=g)).sum() + (values * torch.randn(values.shape, generator=g)).sum()


def grads(net, burnin):
    out = [p.grad.clone() for p in net.parameters()]
    out += [b.grad.clone() for b in burnin if b is not None and b.grad is not None]
    return out


@pytest.mark.parametrize("with_burnin, burnin_len", [(True, 3), (True, 2), (False, 0)],
                         ids=["imagination", "imagination_n3", "real_env"])  # fmt: skip
def test_env_loop_rollout_and_gradients_follow_the_spec(with_burnin, burnin_len):
    chunks = [K, 4]
    end, trunc = done_script(sum(chunks))

    net = memory_net()
    env = ScriptedEnv(end, trunc, with_burnin, burnin_len=burnin_len)
    loop = EnvLoop(env, net, generator=torch.Generator().manual_seed(0))
    rollouts = [loop.rollout(k) for k in chunks]
    torch.testing.assert_close(rollouts[0].end, end[:K].T)
    torch.testing.assert_close(rollouts[0].trunc, trunc[:K].T)
    torch.testing.assert_close(rollouts[0].obs, env.obs[:K].transpose(0, 1))
    loss = sum(weighted_sum(r.logits, r.value, i) for i, r in enumerate(rollouts))
    net.zero_grad()
    loss.backward()
    actual_grads = grads(net, env.burnin)

    ref_net = memory_net()
    ref_env = ScriptedEnv(end, trunc, with_burnin, burnin_len=burnin_len)
    expected = spec_rollouts(ref_net, ref_env, chunks)
    ref_loss = sum(weighted_sum(lg, v, i) for i, (lg, v, _) in enumerate(expected))
    ref_loss.backward()
    expected_grads = grads(ref_net, ref_env.burnin)

    for r, (logits, values, boot) in zip(rollouts, expected):
        torch.testing.assert_close(r.logits, logits, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(r.value, values, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(r.value_bootstrap, boot, rtol=1e-5, atol=1e-6)
        assert r.value.requires_grad and not r.value_bootstrap.requires_grad
    assert len(actual_grads) == len(expected_grads)
    for a, e in zip(actual_grads, expected_grads):
        torch.testing.assert_close(a, e, rtol=1e-4, atol=1e-6)


def test_burn_in_after_an_imagined_reset_carries_gradient():
    """The burn-in frames shape the policy's next outputs and gradient flows back through them (reference: the
    burn-in runs with gradient when training); only envs that were done are burnt in."""
    end, trunc = done_script()
    env = ScriptedEnv(end, trunc, with_burnin=True)
    net = memory_net()
    r = EnvLoop(env, net, generator=torch.Generator().manual_seed(0)).rollout(K)
    # step 1: env 0 ended -> its value at step 2 depends on the burn-in frames of step 1, other envs' do not
    r.value[:, 2].sum().backward()
    g = env.burnin[1].grad
    assert g is not None, "the burn-in ran without gradient"
    assert g[0].abs().sum() > 0
    assert torch.all(g[1:] == 0)


def test_final_observation_value_uses_the_current_state_not_a_fresh_one():
    """A done env's bootstrap is V(final obs) one LSTM step on from the state that chose the last action (§7.2.3).
    Zero and burnt-in states give different values with a remembering LSTM; the spec's is the only one that fits."""
    end, trunc = done_script()
    env = ScriptedEnv(end, trunc)
    net = memory_net()
    r = EnvLoop(env, net, generator=torch.Generator().manual_seed(0)).rollout(K)
    t, i = 1, 0  # env 0 ends at step 1
    with torch.no_grad():
        h = (torch.zeros(1, 8), torch.zeros(1, 8))
        for s in range(t + 1):
            _, _, h = net(env.obs[s, i : i + 1], h)
        v_current = net(env.final[t, i : i + 1], h)[1]
        v_zero = net(env.final[t, i : i + 1], None)[1]
    torch.testing.assert_close(r.value_bootstrap[i, t], v_current[0], rtol=1e-5, atol=1e-6)
    assert not torch.isclose(v_current[0], v_zero[0], atol=1e-3)


# --- world-model env ----------------------------------------------------------------------------------------------


EP_LEN = 12


def flat_store(tmp_path, num_episodes=6) -> EpisodeStore:
    """Flat frames, value 1 + 12 e + j for step j of episode e, action j % A: a frame says where it came from."""
    store = EpisodeStore(tmp_path / "train", "train_dataset")
    for e in range(num_episodes):
        vals = np.arange(1 + EP_LEN * e, 1 + EP_LEN * (e + 1), dtype=np.uint8)
        obs = np.broadcast_to(vals[:, None, None, None], (EP_LEN, 3, SIZE, SIZE)).copy()
        end = np.zeros(EP_LEN, bool)
        end[-1] = True
        store.add_episode(Episode(obs, np.arange(EP_LEN) % A, np.zeros(EP_LEN, np.float32), end,
                                  np.zeros(EP_LEN, bool), np.full((3, SIZE, SIZE), 250, np.uint8)))  # fmt: skip
    return store


def frame_value(x: torch.Tensor) -> int | None:
    """Store value of a flat float frame, None for a padding frame (exactly 0.0)."""
    v = float(x.flatten()[0])
    assert torch.all(x == v)
    return None if v == 0.0 else round((v + 1) / 2 * 255)


def store_action(value: int | None) -> int:
    return 0 if value is None else ((value - 1) % EP_LEN) % A  # padding steps carry NOOP


class Recorder:
    """Stub world model: generates flat frames of a running value; the reward/end "LSTM state" is an id whose
    history is recorded, so a test can tell which transitions a state was built from."""

    def __init__(self) -> None:
        self.next_obs_calls, self.history, self.next_id, self.gen = [], {}, 1.0, 200

    def next_obs(self, prev_obs, prev_act):
        self.next_obs_calls.append((prev_obs.clone(), prev_act.clone()))
        self.gen += 1
        return torch.full_like(prev_obs[:, -1], self.gen / 255 * 2 - 1)

    def rew_end(self, obs, act, next_obs, hx_cx):
        n, t = act.shape
        ids = torch.arange(n, dtype=torch.float32) + self.next_id
        self.next_id += n
        for i in range(n):
            prev = None if hx_cx is None else float(hx_cx[0][0, i, 0])
            steps = [(frame_value(obs[i, s]), int(act[i, s]), frame_value(next_obs[i, s])) for s in range(t)]
            self.history[float(ids[i])] = (prev, steps)
        h = ids[None, :, None].expand(1, n, 2).clone()
        logits_rew = torch.zeros(n, t, 3)
        logits_end = torch.tensor([0.0, -1e4]).expand(n, t, 2).clone()  # no sampled ends: only truncation
        return logits_rew, logits_end, (h, h.clone())


def test_world_model_env_reset_context_conditioning_and_reward_state(tmp_path):
    rec = Recorder()
    sampler = SegmentSampler(flat_store(tmp_path), batch_size=N_ENVS, seq_len=4, seed=1)
    cfg = WorldModelEnvConfig(num_envs=N_ENVS, horizon=3, num_batches_to_preload=6)
    env = WorldModelEnv(rec.next_obs, rec.rew_end, sampler.sample, cfg, generator=torch.Generator().manual_seed(0))
    first = env.reset()
    prev = {i: [frame_value(f) for f in env.obs_buffer[i]] for i in range(N_ENVS)}  # the 4 context frames
    assert [frame_value(f) for f in first] == [prev[i][-1] for i in range(N_ENVS)]  # the context's last frame
    checked_resets = 0
    for step in range(7):
        act = torch.tensor([(step + i) % A for i in range(N_ENVS)])
        state_in = env.hx_cx[0][0, :, 0].clone()
        out = env.step(act)
        prev_obs, prev_act = rec.next_obs_calls[-1]
        for i in range(N_ENVS):
            # conditioning: the 4 latest frames, the policy's action in the last slot
            assert [frame_value(f) for f in prev_obs[i]] == prev[i]
            assert int(prev_act[i, -1]) == int(act[i])
            # the reward/end model steps on (last frame, action, generated frame) from the env's own state
            sid = float(env.hx_cx[0][0, i, 0]) if not bool(out.trunc[i]) else None
            generated = frame_value(out.final_obs[i])
            if sid is not None:
                parent, steps = rec.history[sid]
                assert parent == float(state_in[i]) and steps == [(prev[i][-1], int(act[i]), generated)]
        assert torch.equal(out.trunc, torch.full((N_ENVS,), (step + 1) % 3 == 0))  # horizon 3
        for i in range(N_ENVS):
            if bool(out.trunc[i]):
                # reset: obs is the new context's last frame, burnin_obs its first three, in order
                ctx = [frame_value(f) for f in out.burnin_obs[i]] + [frame_value(out.obs[i])]
                real = [v for v in ctx if v is not None]
                assert real and ctx[: 4 - len(real)] == [None] * (4 - len(real)), ctx  # padding only on the left
                assert real == list(range(real[0], real[0] + len(real))), ctx  # consecutive real frames
                assert ctx[-1] is not None and ctx[-1] < 200  # a real frame, not a generated one
                # the env's reward/end state was burnt in on the context's 3 transitions, from zero
                parent, steps = rec.history[float(env.hx_cx[0][0, i, 0])]
                assert parent is None
                assert steps == [(ctx[s], store_action(ctx[s]), ctx[s + 1]) for s in range(3)]
                prev[i] = ctx
                checked_resets += 1
            else:
                prev[i] = prev[i][1:] + [frame_value(out.final_obs[i])]
                assert frame_value(out.obs[i]) == prev[i][-1]  # not done: obs is the generated frame
    assert checked_resets == 2 * N_ENVS


def test_world_model_env_passes_past_actions_to_the_next_frame_model(tmp_path):
    """Spec §8: the action buffer rolls with the frames; after two steps the model sees the context's last two
    actions then the two policy actions."""
    rec = Recorder()
    sampler = SegmentSampler(flat_store(tmp_path), batch_size=N_ENVS, seq_len=4, seed=2)
    cfg = WorldModelEnvConfig(num_envs=N_ENVS, horizon=5, num_batches_to_preload=2)
    env = WorldModelEnv(rec.next_obs, rec.rew_end, sampler.sample, cfg, generator=torch.Generator().manual_seed(0))
    env.reset()
    ctx_act = env.act_buffer.clone()
    a1, a2 = torch.tensor([1, 2, 0, 1]), torch.tensor([2, 0, 1, 1])
    env.step(a1)
    env.step(a2)
    first, second = rec.next_obs_calls
    assert torch.equal(first[1], torch.cat((ctx_act[:, :3], a1[:, None]), 1))
    assert torch.equal(second[1], torch.cat((ctx_act[:, 1:3], a1[:, None], a2[:, None]), 1))


def test_policy_step_defaults_and_epsilon_are_the_spec_ones():
    """Imagination acts with temperature 1 and epsilon 0 (§7.2); with epsilon, one coin per step decides for the
    whole batch whether every action is replaced by a uniform one (§13 item 14); a generator makes it reproducible."""
    from diamond_pl.envs.env_loop import policy_step
    from diamond_pl.nets.actor_critic_net import sample_actions

    net = memory_net()
    loop = EnvLoop(ScriptedEnv(*done_script()), net)
    assert (loop.temperature, loop.epsilon) == (1.0, 0.0)
    obs = torch.rand(64, 3, SIZE, SIZE) * 2 - 1
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    act, logits, value, _ = policy_step(net, obs, None, generator=g1)
    assert torch.equal(act, sample_actions(logits, 1.0, g2))  # default: temperature 1, no epsilon draw
    assert torch.equal(g1.get_state(), g2.get_state())
    again = policy_step(net, obs, None, generator=torch.Generator().manual_seed(3))[0]
    assert torch.equal(again, act)

    with torch.no_grad():  # a policy that always picks action 0
        net.actor_linear.weight.zero_()
        net.actor_linear.bias.copy_(torch.tensor([50.0] + [0.0] * (A - 1)))
    g = torch.Generator().manual_seed(0)
    randomised, seen = 0, torch.zeros(A)
    for _ in range(200):
        act = policy_step(net, obs, None, epsilon=0.3, generator=g)[0]
        if (act != 0).any():  # a coin hit: the whole batch is uniform (64 envs: never all 0 by chance)
            randomised += 1
            seen += torch.bincount(act, minlength=A)
    assert 40 <= randomised <= 80  # ~ 0.3 x 200
    assert (seen / seen.sum() - 1 / A).abs().max() < 0.03  # uniform over every action, 0 included
    all_random = [policy_step(net, obs, None, epsilon=1.0, generator=g)[0] for _ in range(5)]
    assert all((a != 0).any() for a in all_random)


def test_imagined_reward_and_end_are_sampled_from_the_model_reproducibly(tmp_path):
    """§6.3: reward = sampled class - 1, end sampled, from the env's generator (a seeded run is repeatable)."""
    p_rew, p_end = torch.tensor([0.5, 0.2, 0.3]), 0.25

    def rew_end(obs, act, next_obs, hx_cx):
        n, t = act.shape
        h = torch.zeros(1, n, 2)
        return p_rew.log().expand(n, t, 3), torch.tensor([1 - p_end, p_end]).log().expand(n, t, 2), (h, h.clone())

    def run(seed):
        sampler = SegmentSampler(flat_store(tmp_path), batch_size=64, seq_len=4, seed=0)
        cfg = WorldModelEnvConfig(num_envs=64, horizon=100, num_batches_to_preload=40)
        env = WorldModelEnv(Recorder().next_obs, rew_end, sampler.sample, cfg,
                            generator=torch.Generator().manual_seed(seed))  # fmt: skip
        env.reset()
        outs = [env.step(torch.zeros(64, dtype=torch.long)) for _ in range(20)]
        return torch.stack([o.rew for o in outs]), torch.stack([o.end for o in outs])

    rew, end = run(0)
    rew2, end2 = run(0)
    assert torch.equal(rew, rew2) and torch.equal(end, end2)
    assert not torch.equal(rew, run(1)[0])
    freq = torch.stack([(rew == v).float().mean() for v in (-1.0, 0.0, 1.0)])
    torch.testing.assert_close(freq, p_rew, atol=0.03, rtol=0)
    assert end.float().mean().item() == pytest.approx(p_end, abs=0.03)


def test_contexts_are_never_reused(tmp_path):
    """Every reset takes a context not used before (§8: when fewer remain than a chunk may need, new ones are
    preloaded): with horizon 1 every env restarts at every step, the worst case."""
    rec = Recorder()
    sampler = SegmentSampler(flat_store(tmp_path), batch_size=2, seq_len=4, seed=0)
    cfg = WorldModelEnvConfig(num_envs=2, horizon=1, num_batches_to_preload=4)
    env = WorldModelEnv(rec.next_obs, rec.rew_end, sampler.sample, cfg, generator=torch.Generator().manual_seed(0))
    loop = EnvLoop(env, memory_net(), generator=torch.Generator().manual_seed(0))
    used = []
    for k in (3, 2, 3, 1, 3):
        env.ensure_contexts(k)  # as the agent does before each chunk
        if loop.obs is None:
            loop.reset()
            used += env.hx_cx[0][0, :, 0].tolist()
        for _ in range(k):
            loop.env.step(torch.zeros(2, dtype=torch.long))
            used += env.hx_cx[0][0, :, 0].tolist()
    burnt_in = [i for i in used if rec.history[i][0] is None]
    assert len(burnt_in) == len(used)  # every state after a step is a fresh context's (horizon 1)
    assert len(set(used)) == len(used), "a context was handed out twice"


def test_a_seeded_generator_makes_acting_repeatable_whatever_the_global_rng():
    from diamond_pl.envs.env_loop import policy_step

    net, obs = memory_net(), torch.rand(16, 3, SIZE, SIZE) * 2 - 1

    def acts(seed, global_seed):
        torch.manual_seed(global_seed)  # a different global RNG state must not matter
        g = torch.Generator().manual_seed(seed)
        eps = [policy_step(net, obs, None, epsilon=0.5, generator=g)[0] for _ in range(6)]
        loop = EnvLoop(ScriptedEnv(*done_script()), net, generator=torch.Generator().manual_seed(seed))
        return torch.stack(eps), loop.rollout(K).act

    a, b = acts(0, 1), acts(0, 2)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    c = acts(1, 1)
    assert not torch.equal(a[0], c[0]) and not torch.equal(a[1], c[1])


class StillEnv:
    """N envs showing one gray frame forever: no reward, never done."""

    def __init__(self, n: int) -> None:
        self.frame = torch.zeros(n, 3, SIZE, SIZE)

    def reset(self) -> torch.Tensor:
        return self.frame

    def step(self, act: torch.Tensor) -> StepOutput:
        n = act.shape[0]
        no = torch.zeros(n, dtype=torch.bool)
        return StepOutput(obs=self.frame, rew=torch.zeros(n), end=no, trunc=no, final_obs=self.frame, burnin_obs=None)


def test_actor_critic_module_acts_at_its_configured_temperature():
    """The actor-critic trains on actions a ~ softmax(logits / temperature) with the configured temperature
    (`model.actor_critic_loss.temperature`, DIAMOND #34); an epsilon given to its env loop is used too."""
    from diamond_pl.modules.actor_critic import ActorCriticLossConfig, ActorCriticModule

    module = ActorCriticModule(ActorCriticNetConfig(num_actions=A, lstm_dim=8, channels=(4, 4, 4, 4), img_size=SIZE),
                               ActorCriticLossConfig(temperature=0.25))  # fmt: skip
    with torch.no_grad():  # logits (1, 0, 0) in every state
        module.net.actor_linear.weight.zero_()
        module.net.actor_linear.bias.copy_(torch.tensor([1.0] + [0.0] * (A - 1)))

    def share_of_action_0(**kwargs) -> float:
        loop = module.make_env_loop(StillEnv(64), generator=torch.Generator().manual_seed(0), **kwargs)
        return (loop.rollout(10).act == 0).float().mean().item()  # 640 draws

    p0 = math.exp(1 / 0.25) / (math.exp(1 / 0.25) + A - 1)  # 0.965 (0.576 at temperature 1)
    assert abs(share_of_action_0() - p0) < 0.03
    assert abs(share_of_action_0(epsilon=1.0) - 1 / A) < 0.07  # every action uniform


def test_preloaded_contexts_are_used_until_too_few_remain(tmp_path):
    """§8: a block of `num_batches_to_preload` context batches is preloaded and handed out in order; new ones are
    preloaded only when fewer remain than a chunk may request (every env ending at every one of its k steps plus the
    reset: num_envs (k + 1)), so contexts stay in use (and may be stale) between refills."""
    rec = Recorder()
    sampler = SegmentSampler(flat_store(tmp_path), batch_size=2, seq_len=4, seed=0)
    calls = []

    def sample_contexts():
        calls.append(1)
        return sampler.sample()

    cfg = WorldModelEnvConfig(num_envs=2, horizon=15, num_batches_to_preload=4)  # pools of 8 contexts
    env = WorldModelEnv(rec.next_obs, rec.rew_end, sample_contexts, cfg, generator=torch.Generator().manual_seed(0))
    env.ensure_contexts(3)
    assert len(calls) == 4  # the first block
    env.ensure_contexts(3)  # 8 left, a 3-step chunk may need 2 x 4 = 8
    env.reset()  # takes 2
    env.ensure_contexts(2)  # 6 left, 2 x 3 = 6 needed
    assert len(calls) == 4, "contexts were preloaded again while enough remained"
    env.ensure_contexts(3)  # 6 left, 8 needed
    assert len(calls) == 8
