"""The reward/end network, the actor-critic network and the lambda returns reproduce the reference implementation
(golden weights and outputs in ../shared/golden/diamond_small, see its README)."""

import pytest
import torch

from diamond_pl.modules.lambda_returns import lambda_returns
from diamond_pl.nets.actor_critic_net import ActorCriticNet, ActorCriticNetConfig
from diamond_pl.nets.rew_end_net import RewEndNet, RewEndNetConfig

pytestmark = pytest.mark.golden
TOL = dict(rtol=1e-4, atol=1e-4)


def component(state_dict: dict, prefix: str) -> dict:
    return {k[len(prefix) :]: v for k, v in state_dict.items() if k.startswith(prefix)}


def test_rew_end_net_matches_reference(golden_config, golden_state_dict, golden_outputs):
    cfg = golden_config["rew_end_model"]
    net = RewEndNet(
        RewEndNetConfig(
            num_actions=golden_config["num_actions"],
            img_channels=cfg["img_channels"],
            lstm_dim=cfg["lstm_dim"],
            cond_channels=cfg["cond_channels"],
            depths=tuple(cfg["depths"]),
            channels=tuple(cfg["channels"]),
            attn_depths=tuple(cfg["attn_depths"]),
            img_size=cfg["img_size"],
        )
    )
    net.load_state_dict(component(golden_state_dict, "rew_end_model."), strict=True)
    ref = golden_outputs["rew_end"]
    with torch.no_grad():
        logits_rew, logits_end, (h, c) = net.eval()(ref["obs"], ref["act"], ref["next_obs"])
    torch.testing.assert_close(logits_rew, ref["logits_rew"], **TOL)
    torch.testing.assert_close(logits_end, ref["logits_end"], **TOL)
    torch.testing.assert_close(h, ref["h"], **TOL)
    torch.testing.assert_close(c, ref["c"], **TOL)


def test_actor_critic_net_matches_reference(golden_config, golden_state_dict, golden_outputs):
    cfg = golden_config["actor_critic"]
    net = ActorCriticNet(
        ActorCriticNetConfig(
            num_actions=golden_config["num_actions"],
            img_channels=cfg["img_channels"],
            lstm_dim=cfg["lstm_dim"],
            channels=tuple(cfg["channels"]),
            down=tuple(cfg["down"]),
            img_size=cfg["img_size"],
        )
    )
    net.load_state_dict(component(golden_state_dict, "actor_critic."), strict=True)
    ref = golden_outputs["actor_critic"]
    logits, values, hx_cx = [], [], None
    with torch.no_grad():
        for t in range(ref["obs"].size(1)):  # one frame at a time from a zero state
            l, v, hx_cx = net.eval()(ref["obs"][:, t], hx_cx)
            logits.append(l)
            values.append(v)
    torch.testing.assert_close(torch.stack(logits, dim=1), ref["logits_act"], **TOL)
    torch.testing.assert_close(torch.stack(values, dim=1), ref["value"], **TOL)
    torch.testing.assert_close(hx_cx[0], ref["h"], **TOL)
    torch.testing.assert_close(hx_cx[1], ref["c"], **TOL)


def test_lambda_returns_match_reference(golden_outputs):
    ref = golden_outputs["lambda_returns"]
    returns = lambda_returns(
        ref["rew"], ref["end"], ref["trunc"], ref["value_bootstrap"], gamma=ref["gamma"], lambda_=ref["lambda_"]
    )
    torch.testing.assert_close(returns, ref["returns"], **TOL)
