"""Regression guards for the actor-critic loss and the reward/end model's end head (reference spec §6.2, §7.4).

  - the actor-critic loss gradient equals the spec's, term by term, at a non-uniform policy (where the entropy term
    has a gradient) with non-zero advantages: removing the value baseline or flipping the entropy sign fails here,
    although the imagination learning test would still pass;
  - the end head learns when episodes end (the reward learning test never trains or checks it).
"""

import numpy as np
import pytest
import torch

from diamond_pl.data.batch import Batch
from diamond_pl.modules.actor_critic import actor_critic_loss
from diamond_pl.modules.optim import OptimConfig, configure_adamw
from diamond_pl.modules.rew_end import RewEndModule
from diamond_pl.nets.rew_end_net import RewEndNetConfig


def test_actor_critic_loss_gradient_is_reinforce_with_baseline_value_mse_and_entropy_bonus():
    """Spec §7.4 over B x T entries, entropy weight 0.001, value weight 1:
    d/dlogits = [ (G - V) (pi - onehot(a)) + 0.001 pi (log pi + H) ] / (B T),  d/dV = 2 (V - G) / (B T)."""
    g = torch.Generator().manual_seed(0)
    b, t, a = 3, 5, 4
    logits = (torch.randn(b, t, a, generator=g) * 2).requires_grad_()
    values = torch.randn(b, t, generator=g).requires_grad_()
    returns = torch.randn(b, t, generator=g) * 3
    actions = torch.randint(a, (b, t), generator=g)
    loss, metrics = actor_critic_loss(logits, values, actions, returns, entropy_weight=0.001, value_weight=1.0)
    loss.backward()

    with torch.no_grad():
        log_pi = torch.log_softmax(logits, -1)
        pi = log_pi.exp()
        entropy = -(pi * log_pi).sum(-1, keepdim=True)
        advantage = (returns - values)[..., None]
        onehot = torch.nn.functional.one_hot(actions, a).float()
        expected_logits_grad = (advantage * (pi - onehot) + 0.001 * pi * (log_pi + entropy)) / (b * t)
        expected_values_grad = 2 * (values - returns) / (b * t)
        assert (advantage.abs() > 0.1).any() and (entropy < np.log(a) - 0.1).any()  # the terms are not trivial
    torch.testing.assert_close(logits.grad, expected_logits_grad, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(values.grad, expected_values_grad, rtol=1e-5, atol=1e-7)
    # and the values of the pieces
    with torch.no_grad():
        lp_a = log_pi.gather(-1, actions[..., None])[..., 0]
        torch.testing.assert_close(metrics["loss_actions"], -(lp_a * (returns - values)).mean())
        torch.testing.assert_close(metrics["loss_entropy"], -0.001 * entropy.mean())
        torch.testing.assert_close(metrics["loss_values"], ((values - returns) ** 2).mean())
        torch.testing.assert_close(metrics["policy_entropy"], entropy.mean() / np.log(2))


def test_actor_critic_loss_weights_scale_their_terms():
    g = torch.Generator().manual_seed(1)
    logits, values = torch.randn(2, 3, 4, generator=g), torch.randn(2, 3, generator=g)
    returns, actions = torch.randn(2, 3, generator=g), torch.randint(4, (2, 3), generator=g)
    _, m1 = actor_critic_loss(logits, values, actions, returns, entropy_weight=0.001, value_weight=1.0)
    _, m2 = actor_critic_loss(logits, values, actions, returns, entropy_weight=0.01, value_weight=0.5)
    torch.testing.assert_close(m2["loss_entropy"], 10 * m1["loss_entropy"])
    torch.testing.assert_close(m2["loss_values"], 0.5 * m1["loss_values"])
    torch.testing.assert_close(m2["loss_actions"], m1["loss_actions"])


SIDE, T, END_ACTION = 16, 6, 3


def episode_ends(rng: np.random.Generator, batch_size: int) -> Batch:
    """Noise frames; taking action 3 ends the episode: that step has end = 1, the window is padding after it and the
    episode's final frame is stored. No rewards. So `end` is a function of the action."""
    batch = Batch.zeros(batch_size, T, (3, SIDE, SIDE))
    batch.obs.numpy()[:] = rng.integers(0, 256, size=batch.obs.shape, dtype=np.uint8)
    act = rng.integers(0, 4, size=(batch_size, T))
    mask = np.ones((batch_size, T), bool)
    end = np.zeros((batch_size, T), bool)
    has_final = np.zeros(batch_size, bool)
    for i in range(batch_size):
        hits = np.flatnonzero(act[i, : T - 1] == END_ACTION)
        if hits.size:
            p = hits[0]
            end[i, p], mask[i, p + 1 :], has_final[i] = True, False, True
            act[i, p + 1 :] = 0
            batch.obs.numpy()[i, p + 1 :] = 0
    batch.act.numpy()[:] = act
    batch.end.numpy()[:] = end
    batch.mask_padding.numpy()[:] = mask
    batch.final_obs.numpy()[:] = rng.integers(0, 256, size=batch.final_obs.shape, dtype=np.uint8)
    batch.has_final_obs.numpy()[:] = has_final
    return batch


def test_reward_end_model_learns_when_episodes_end():
    torch.manual_seed(0)
    module = RewEndModule(
        RewEndNetConfig(num_actions=4, lstm_dim=32, cond_channels=16, depths=(1, 1), channels=(16, 16),
                        attn_depths=(0, 0), img_size=SIDE)  # fmt: skip
    )
    rng = np.random.default_rng(0)
    opt, sched = configure_adamw(module.net, OptimConfig(lr=2e-3, warmup_steps=10))
    for _ in range(80):
        loss, _ = module.loss(episode_ends(rng, 16), "train")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(module.net.parameters(), 100.0)
        opt.step()
        sched.step()
    module.classification_metrics("train")
    test_batch = episode_ends(np.random.default_rng(1), 64)
    assert test_batch.end.any()
    with torch.no_grad():
        module.loss(test_batch, "test")
    test = module.classification_metrics("test")
    print("\nend classes (continue, end) recall:", [round(test[f"classification_metrics/end_recall_class_{k}"].item(), 3)
                                                    for k in range(2)])  # fmt: skip
    assert test["classification_metrics/end_recall_class_1"] > 0.9
    assert test["classification_metrics/end_precision_class_1"] > 0.9
    assert test["classification_metrics/end_recall_class_0"] > 0.9


def test_actor_critic_module_loss_uses_its_own_gamma_lambda_and_weights():
    """One update's loss = spec §7.3 lambda returns with the configured gamma and lambda on a rollout of
    backup_every steps, then §7.4 with the configured weights (values unlike the defaults, so a swapped or dropped
    argument shows)."""
    from test_regression_imagination import ScriptedEnv, done_script, memory_net

    from diamond_pl.envs.env_loop import EnvLoop
    from diamond_pl.modules.actor_critic import ActorCriticLossConfig, ActorCriticModule
    from diamond_pl.modules.lambda_returns import lambda_returns
    from diamond_pl.nets.actor_critic_net import ActorCriticNetConfig

    cfg = ActorCriticLossConfig(gamma=0.9, lambda_=0.7, entropy_weight=0.05, value_weight=0.5, backup_every=5)
    module = ActorCriticModule(ActorCriticNetConfig(num_actions=3, lstm_dim=8, channels=(4, 4, 4, 4), img_size=16), cfg)
    module.net.load_state_dict(memory_net().state_dict())
    end, trunc = done_script()
    loss, metrics = module.loss(module.make_env_loop(ScriptedEnv(end, trunc), generator=torch.Generator().manual_seed(0)))

    ref = EnvLoop(ScriptedEnv(end, trunc), memory_net(), generator=torch.Generator().manual_seed(0)).rollout(5)
    returns = lambda_returns(ref.rew, ref.end, ref.trunc, ref.value_bootstrap, 0.9, 0.7)
    expected, _ = actor_critic_loss(ref.logits, ref.value, ref.act, returns, entropy_weight=0.05, value_weight=0.5)
    torch.testing.assert_close(loss, expected, rtol=1e-5, atol=1e-6)
    other = lambda_returns(ref.rew, ref.end, ref.trunc, ref.value_bootstrap, 0.7, 0.95)
    assert not torch.allclose(other, returns)  # (the check can tell gamma from lambda)


def test_collection_policy_resets_only_the_envs_that_ended():
    """§7.5: the LSTM state is zeroed for envs whose episode ended (every life loss in the train env), h and c
    alike; the others keep theirs."""
    from test_regression_imagination import memory_net

    from diamond_pl.modules.actor_critic import ActorCriticPolicy

    policy = ActorCriticPolicy(memory_net())
    policy.act(np.random.default_rng(0).integers(0, 256, (3, 3, 16, 16), dtype=np.uint8))
    h, c = (t.clone() for t in policy.hx_cx)
    assert (h != 0).all() and (c != 0).all() and not torch.equal(h, c)
    policy.reset(np.array([False, True, False]))
    assert torch.equal(policy.hx_cx[0][[0, 2]], h[[0, 2]]) and torch.equal(policy.hx_cx[1][[0, 2]], c[[0, 2]])
    assert (policy.hx_cx[0][1] == 0).all() and (policy.hx_cx[1][1] == 0).all()
    # the probabilities shown by the interactive tools: softmax(logits / temperature)
    policy.reset()
    policy.temperature = 0.5
    _, probs, _ = policy.act_on_frame(torch.zeros(3, 16, 16))
    with torch.no_grad():
        logits = policy.net(torch.zeros(1, 3, 16, 16))[0][0]
    torch.testing.assert_close(probs, torch.softmax(logits / 0.5, -1))


def test_per_class_metrics_from_a_known_confusion_matrix():
    """§6.2 / §12: precision_k = TP_k / predicted k, recall_k = TP_k / true k, F1 = 2 P R / (P + R), 0 where
    undefined; padded transitions (target IGNORE) are left out."""
    from diamond_pl.modules.rew_end import IGNORE, per_class_metrics

    confusion = [[5, 1, 0], [2, 6, 2], [0, 1, 0]]  # rows: true class, columns: predicted
    target = torch.tensor([t for t in range(3) for p in range(3) for _ in range(confusion[t][p])] + [IGNORE] * 4)
    pred = torch.tensor([p for t in range(3) for p in range(3) for _ in range(confusion[t][p])] + [2] * 4)
    m = per_class_metrics(3)
    m.update(pred, target)
    out = m.compute()
    precision, recall = [5 / 7, 6 / 8, 0.0], [5 / 6, 6 / 10, 0.0]
    for k in range(3):
        p, r = precision[k], recall[k]
        f1 = 2 * p * r / (p + r) if p + r else 0.0
        assert out["precision"][k].item() == pytest.approx(p)
        assert out["recall"][k].item() == pytest.approx(r)
        assert out["f1_score"][k].item() == pytest.approx(f1)


def tiny_rew_end(side: int = SIDE) -> RewEndModule:
    torch.manual_seed(0)
    return RewEndModule(RewEndNetConfig(num_actions=4, lstm_dim=8, cond_channels=4, depths=(1,), channels=(4,),
                                        attn_depths=(0,), img_size=side))  # fmt: skip


def window_batch(mask_padding, rew, end=None, seed=0) -> Batch:
    mask_padding = np.asarray(mask_padding, bool)
    b, t = mask_padding.shape
    rng = np.random.default_rng(seed)
    batch = Batch.zeros(b, t, (3, SIDE, SIDE))
    frames = rng.integers(0, 256, size=batch.obs.shape, dtype=np.uint8)
    batch.obs.numpy()[:] = frames * mask_padding[..., None, None, None]  # padding frames are 0
    batch.act.numpy()[:] = rng.integers(0, 4, size=(b, t)) * mask_padding
    batch.rew.numpy()[:] = rew
    batch.end.numpy()[:] = np.zeros((b, t), bool) if end is None else end
    batch.mask_padding.numpy()[:] = mask_padding
    return batch


@pytest.mark.parametrize("mask_padding", [
    [[True, True]],  # one transition in the whole batch
    [[False, True, True, True, False], [True, True, False, False, False]],  # padding on both sides (spec 2.4)
])  # fmt: skip
def test_reward_end_loss_is_the_mean_cross_entropy_over_real_transitions(mask_padding):
    """§6.2: CE(reward logits, sign(r) + 1) + CE(end logits, end), each averaged over the real transitions
    (mask = mask_padding[:, :-1]), whatever their number."""
    module = tiny_rew_end()
    torch.nn.init.normal_(module.net.head[2].weight, std=0.5)  # logits that differ between transitions
    mask_padding = np.asarray(mask_padding)
    rew = np.random.default_rng(1).choice([-3.0, 0.0, 2.0], size=mask_padding.shape) * mask_padding
    batch = window_batch(mask_padding, rew)
    loss, metrics = module.loss(batch)

    obs = batch.obs_float()
    with torch.no_grad():
        logits_rew, logits_end, _ = module.net(obs[:, :-1], batch.act[:, :-1], obs[:, 1:])
    real = torch.from_numpy(mask_padding[:, :-1])
    ce = torch.nn.functional.cross_entropy
    want_rew = ce(logits_rew[real], (torch.sign(batch.rew[:, :-1]) + 1).long()[real])
    want_end = ce(logits_end[real], batch.end[:, :-1].long()[real])
    torch.testing.assert_close(metrics["loss_rew"], want_rew)
    torch.testing.assert_close(metrics["loss_end"], want_end)
    torch.testing.assert_close(loss.detach(), want_rew + want_end)
    assert set(metrics) == {"loss_rew", "loss_end", "loss_total"}  # spec §12's names (logged, plotted)
    torch.testing.assert_close(metrics["loss_total"], want_rew + want_end)


def test_per_class_metrics_of_an_epoch_count_real_transitions_only_and_stages_apart():
    """§6.2 / §12: the confusion counts accumulate over the real transitions of the stage's batches only; a class
    never predicted (or never true) has precision (recall, F1) 0. With the head's output layer zeroed, every
    prediction is class 0 (argmax of equal logits is the first)."""
    module = tiny_rew_end()
    torch.nn.init.zeros_(module.net.head[2].weight)
    # train: 3 real transitions (rewards -1, -2, +1; the third ends the episode), then 2 padded ones
    train = window_batch([[True, True, True, False, False, False]], [[-1.0, -2.0, 1.0, 0.0, 0.0, 0.0]],
                         end=[[False, False, True, False, False, False]])  # fmt: skip
    # test: 5 real transitions, all rewarded +1, none ending
    test = window_batch([[True] * 6], [[1.0] * 6], seed=1)
    module.loss(train, "train")
    module.loss(test, "test")

    def check(metrics, expected):
        got = {k: round(v.item(), 6) for k, v in metrics.items()}
        want = {f"classification_metrics/{head}_{name}_class_{k}": round(v, 6)
                for head, per_name in expected.items() for name, values in per_name.items()
                for k, v in enumerate(values)}  # fmt: skip
        assert got == want

    # rew targets (real) 0, 0, 2, predicted 0, 0, 0; end targets 0, 0, 1, predicted 0, 0, 0
    check(module.classification_metrics("train"), {
        "rew": {"precision": [2 / 3, 0, 0], "recall": [1, 0, 0], "f1_score": [0.8, 0, 0]},
        "end": {"precision": [2 / 3, 0], "recall": [1, 0], "f1_score": [0.8, 0]},
    })  # fmt: skip
    # rew targets 2 x 5, predicted 0 x 5; end targets 0 x 5, predicted 0 x 5
    check(module.classification_metrics("test"), {
        "rew": {"precision": [0, 0, 0], "recall": [0, 0, 0], "f1_score": [0, 0, 0]},
        "end": {"precision": [1, 0], "recall": [1, 0], "f1_score": [1, 0]},
    })  # fmt: skip


def test_collection_policy_state_survives_a_checkpoint():
    """The collector's recurrent state is saved with the run (`Collector.state_dict`), so a resumed run acts on from
    the same h and c; a fresh policy (no state saved) starts from zeros."""
    from test_regression_imagination import memory_net

    from diamond_pl.modules.actor_critic import ActorCriticPolicy

    frames = np.random.default_rng(0).integers(0, 256, (4, 3, 3, 16, 16), dtype=np.uint8)
    policy = ActorCriticPolicy(memory_net())
    policy.act(frames[0])
    state = policy.state_dict()
    h, c = (t.clone() for t in policy.hx_cx)
    assert [t.shape for t in state["hx_cx"]] == [(3, policy.net.lstm.hidden_size)] * 2

    resumed = ActorCriticPolicy(memory_net())
    resumed.load_state_dict(state)
    assert torch.equal(resumed.hx_cx[0], h) and torch.equal(resumed.hx_cx[1], c)
    for frame in frames[1:]:
        policy.act(frame)
        resumed.act(frame)
    assert all(torch.equal(a, b) for a, b in zip(policy.hx_cx, resumed.hx_cx))

    fresh = ActorCriticPolicy(memory_net())
    assert fresh.state_dict() == {"hx_cx": None}
    fresh.load_state_dict(fresh.state_dict())
    assert fresh.hx_cx is None
