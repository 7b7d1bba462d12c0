"""RewEndModule: predicts the reward sign and the episode end of a transition (reference spec §6).

Trained with cross-entropy on windows of 19 real frames (18 transitions, padding on both sides allowed). Because
non-zero rewards and ends are rare, per-class precision / recall / F1 (torchmetrics) are the metrics to watch; they
accumulate over an epoch (train) or an evaluation (test).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor
from torchmetrics import MetricCollection
from torchmetrics.classification import MulticlassF1Score, MulticlassPrecision, MulticlassRecall

from diamond_pl.data.batch import Batch
from diamond_pl.modules.component import Component
from diamond_pl.modules.optim import OptimConfig
from diamond_pl.nets.rew_end_net import (
    NUM_END_CLASSES, NUM_REW_CLASSES, RewEndNet, RewEndNetConfig,
)

IGNORE = -1  # target value of padded transitions in the per-class metrics (no boolean indexing, no host sync)


class RewEndLossOutput(NamedTuple):
    loss: Tensor  # scalar, to backpropagate
    metrics: dict[str, Tensor]  # detached scalars: loss_rew, loss_end, loss_total
    # for the per-class metrics; only entries where `mask` is True are real
    pred_rew: Tensor  # int64 (B, T-1), argmax class
    target_rew: Tensor  # int64 (B, T-1), sign(r) + 1
    pred_end: Tensor  # int64 (B, T-1)
    target_end: Tensor  # int64 (B, T-1)
    mask: Tensor  # bool (B, T-1), real (non-padding) transitions


def rew_end_loss(
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


def rew_end_optim() -> OptimConfig:
    return OptimConfig(lr=1e-4, eps=1e-8, weight_decay=0.01, warmup_steps=100, max_grad_norm=100.0)


def per_class_metrics(num_classes: int) -> MetricCollection:
    """Per-class precision, recall and F1 (0 where undefined), from one shared set of true/false positive counts
    (torchmetrics' compute groups); targets equal to IGNORE are left out. `compute()` -> {"precision": (K,), ...}."""
    kwargs = {"num_classes": num_classes, "average": "none", "ignore_index": IGNORE, "zero_division": 0}
    return MetricCollection({"precision": MulticlassPrecision(**kwargs), "recall": MulticlassRecall(**kwargs),
                             "f1_score": MulticlassF1Score(**kwargs)})


class RewEndModule(Component):
    name = "rew_end_model"

    def __init__(self, net: RewEndNetConfig, optim: OptimConfig | None = None) -> None:
        super().__init__()
        self.net_cfg = net
        self.optim_cfg = optim or rew_end_optim()
        self.net = RewEndNet(net)
        # one pair of metric sets per stage ("train_"/"test_": ModuleDict keys must not shadow Module.train), so a test
        # pass does not disturb the train epoch's counts
        self.classification = torch.nn.ModuleDict(
            {
                stage: torch.nn.ModuleDict(
                    {"rew": per_class_metrics(NUM_REW_CLASSES), "end": per_class_metrics(NUM_END_CLASSES)}
                )
                for stage in ("train_", "test_")
            }
        )

    def forward(self, obs: Tensor, act: Tensor, next_obs: Tensor, hx_cx=None):
        return self.net(obs, act, next_obs, hx_cx)

    def loss(self, batch: Batch, stage: str = "train") -> tuple[Tensor, dict[str, Tensor]]:
        out = rew_end_loss(
            self.net, batch.obs_float(), batch.act, batch.rew, batch.end, batch.mask_padding,
            batch.final_obs_float(), batch.has_final_obs,
        )  # fmt: skip
        with torch.no_grad():
            heads = self.classification[stage + "_"]
            heads["rew"].update(out.pred_rew.flatten(), out.target_rew.masked_fill(~out.mask, IGNORE).flatten())
            heads["end"].update(out.pred_end.flatten(), out.target_end.masked_fill(~out.mask, IGNORE).flatten())
        return out.loss, dict(out.metrics)

    def classification_metrics(self, stage: str) -> dict[str, Tensor]:
        """Per-class precision / recall / F1 accumulated since the last call for this stage; then reset."""
        metrics = {}
        for head, collection in self.classification[stage + "_"].items():
            for name, per_class in collection.compute().items():
                metrics.update({f"classification_metrics/{head}_{name}_class_{k}": v for k, v in enumerate(per_class)})
            collection.reset()
        return metrics

    def trainable(self) -> torch.nn.Module:
        return self.net
