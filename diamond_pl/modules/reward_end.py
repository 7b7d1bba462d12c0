"""RewardEndModule: predicts the reward sign and the episode end of a transition (reference spec §6).

Trained with cross-entropy on windows of 19 real frames (18 transitions, padding on both sides allowed). Because
non-zero rewards and ends are rare, per-class precision / recall / F1 from confusion matrices (rows = true class,
columns = predicted) are the metrics to watch; they accumulate over an epoch (train) or an evaluation (test).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor
from torchmetrics.classification import MulticlassConfusionMatrix

from diamond_pl.data.batch import Batch
from diamond_pl.modules.component import Component
from diamond_pl.modules.optim import OptimConfig
from diamond_pl.nets.rew_end_net import (
    NUM_END_CLASSES, NUM_REW_CLASSES, RewEndNet, RewEndNetConfig,
)

IGNORE = -1  # target value of padded transitions in the confusion matrices (no boolean indexing, no host sync)


class RewEndLossOutput(NamedTuple):
    loss: Tensor  # scalar, to backpropagate
    metrics: dict[str, Tensor]  # detached scalars: loss_rew, loss_end, loss_total
    # for the confusion matrices (rows = true class, columns = predicted); only entries where `mask` is True are real
    pred_rew: Tensor  # int64 (B, T-1), argmax class
    target_rew: Tensor  # int64 (B, T-1), sign(r) + 1
    pred_end: Tensor  # int64 (B, T-1)
    target_end: Tensor  # int64 (B, T-1)
    mask: Tensor  # bool (B, T-1), real (non-padding) transitions


def reward_end_loss(
    net: RewEndNet,
    obs: Tensor,
    act: Tensor,
    rew: Tensor,
    end: Tensor,
    mask_padding: Tensor,
    final_obs: Tensor,
    has_final_obs: Tensor,
) -> RewEndLossOutput:
    """The reward/end model's training loss on a batch of windows (spec §6.2).

    obs float [-1, 1] (B, T, C, H, W) with padding frames already 0, act int64 (B, T), rew raw float (B, T),
    end bool (B, T), mask_padding bool (B, T), final_obs float [-1, 1] (B, C, H, W), has_final_obs bool (B,).
    T frames give T - 1 transitions (T = 19 in DIAMOND -> 18), the LSTM starting from zero at the window start.
    """
    obs_t, act_t, next_obs = obs[:, :-1], act[:, :-1], obs[:, 1:]
    rew_t, end_t, mask = rew[:, :-1], end[:, :-1].bool(), mask_padding[:, :-1].bool()

    # A terminal transition's next frame lies beyond the episode, so in the window it is padding: put the stored
    # real post-terminal frame there (only the first end of a window; truncations are left as padding, end = 0).
    has_end = end_t.any(dim=1) & has_final_obs.bool()
    first_end = end_t.int().argmax(dim=1)  # argmax returns the first maximal index
    positions = torch.arange(end_t.size(1), device=end_t.device)
    patch = (positions[None] == first_end[:, None]) & has_end[:, None]  # (B, T-1), at most one True per row
    next_obs = torch.where(patch[:, :, None, None, None], final_obs[:, None].to(next_obs.dtype), next_obs)

    logits_rew, logits_end, _ = net(obs_t, act_t, next_obs)
    target_rew = (torch.sign(rew_t) + 1).long()
    target_end = end_t.long()

    # each cross-entropy is averaged over the real transitions only (a masked mean, no host sync)
    maskf = mask.float()
    num_real = maskf.sum().clamp(min=1)
    ce_rew = F.cross_entropy(logits_rew.flatten(0, 1), target_rew.flatten(), reduction="none")
    ce_end = F.cross_entropy(logits_end.flatten(0, 1), target_end.flatten(), reduction="none")
    loss_rew = (ce_rew * maskf.flatten()).sum() / num_real
    loss_end = (ce_end * maskf.flatten()).sum() / num_real
    loss = loss_rew + loss_end

    metrics = {"loss_rew": loss_rew.detach(), "loss_end": loss_end.detach(), "loss_total": loss.detach()}
    return RewEndLossOutput(
        loss,
        metrics,
        pred_rew=logits_rew.detach().argmax(dim=-1),
        target_rew=target_rew,
        pred_end=logits_end.detach().argmax(dim=-1),
        target_end=target_end,
        mask=mask,
    )


def reward_end_optim() -> OptimConfig:
    return OptimConfig(lr=1e-4, eps=1e-8, weight_decay=0.01, warmup_steps=100, max_grad_norm=100.0)


def per_class_metrics(confusion: Tensor, prefix: str) -> dict[str, Tensor]:
    """precision_k = C[k,k] / sum_i C[i,k], recall_k = C[k,k] / sum_j C[k,j], f1 = 2 P R / (P + R); 0 where undefined."""
    c = confusion.double()
    tp = c.diagonal()
    precision = torch.nan_to_num(tp / c.sum(dim=0))
    recall = torch.nan_to_num(tp / c.sum(dim=1))
    f1 = torch.nan_to_num(2 * precision * recall / (precision + recall))
    out = {}
    for k in range(c.shape[0]):
        out[f"{prefix}_precision_class_{k}"] = precision[k].float()
        out[f"{prefix}_recall_class_{k}"] = recall[k].float()
        out[f"{prefix}_f1_score_class_{k}"] = f1[k].float()
    return out


class RewardEndModule(Component):
    name = "rew_end_model"

    def __init__(self, net: RewEndNetConfig, optim: OptimConfig | None = None) -> None:
        super().__init__()
        self.net_cfg = net
        self.optim_cfg = optim or reward_end_optim()
        self.net = RewEndNet(net)
        # one pair of confusion matrices per stage ("train_"/"test_": ModuleDict keys must not shadow Module.train),
        # so a test pass does not disturb the train epoch's counts
        self.confusion = torch.nn.ModuleDict(
            {
                stage: torch.nn.ModuleDict(
                    {
                        "rew": MulticlassConfusionMatrix(NUM_REW_CLASSES, ignore_index=IGNORE),
                        "end": MulticlassConfusionMatrix(NUM_END_CLASSES, ignore_index=IGNORE),
                    }
                )
                for stage in ("train_", "test_")
            }
        )

    def forward(self, obs: Tensor, act: Tensor, next_obs: Tensor, hx_cx=None):
        return self.net(obs, act, next_obs, hx_cx)

    def loss(self, batch: Batch, stage: str = "train") -> tuple[Tensor, dict[str, Tensor]]:
        out = reward_end_loss(
            self.net, batch.obs_float(), batch.act, batch.rew, batch.end, batch.mask_padding,
            batch.final_obs_float(), batch.has_final_obs,
        )  # fmt: skip
        with torch.no_grad():
            cm = self.confusion[stage + "_"]
            cm["rew"].update(out.pred_rew.flatten(), out.target_rew.masked_fill(~out.mask, IGNORE).flatten())
            cm["end"].update(out.pred_end.flatten(), out.target_end.masked_fill(~out.mask, IGNORE).flatten())
        return out.loss, dict(out.metrics)

    def classification_metrics(self, stage: str) -> dict[str, Tensor]:
        """Per-class precision / recall / F1 accumulated since the last call for this stage; then reset."""
        cm = self.confusion[stage + "_"]
        metrics = {
            **per_class_metrics(cm["rew"].compute(), "classification_metrics/rew"),
            **per_class_metrics(cm["end"].compute(), "classification_metrics/end"),
        }
        cm["rew"].reset()
        cm["end"].reset()
        return metrics

    def trainable(self) -> torch.nn.Module:
        return self.net
