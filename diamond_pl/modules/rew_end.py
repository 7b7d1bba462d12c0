"""RewEndModule: predicts the reward sign and the episode end of a transition (reference spec §6).

Trained with cross-entropy on windows of 19 real frames (18 transitions, padding on both sides allowed). Because
non-zero rewards and ends are rare, per-class precision / recall / F1 (torchmetrics) are the metrics to watch; they
accumulate over an epoch (train) or an evaluation (test).
"""

from __future__ import annotations

import lightning as L
import torch
from torch import Tensor
from torchmetrics import MetricCollection
from torchmetrics.classification import MulticlassF1Score, MulticlassPrecision, MulticlassRecall

from diamond_pl.data.batch import Batch
from diamond_pl.modules.optim import OptimConfig, configure_adamw
from diamond_pl.nets.rew_end_net import NUM_END_CLASSES, NUM_REW_CLASSES, RewEndNet, RewEndNetConfig

IGNORE = -1  # target value of padded transitions in the per-class metrics (no boolean indexing, no host sync)


def rew_end_optim() -> OptimConfig:
    return OptimConfig(lr=1e-4, eps=1e-8, weight_decay=0.01, warmup_steps=100, max_grad_norm=100.0)


def per_class_metrics(num_classes: int) -> MetricCollection:
    """Per-class precision, recall and F1 (0 where undefined), from one shared set of true/false positive counts
    (torchmetrics' compute groups); targets equal to IGNORE are left out. `compute()` -> {"precision": (K,), ...}."""
    kwargs = {"num_classes": num_classes, "average": "none", "ignore_index": IGNORE, "zero_division": 0}
    return MetricCollection({"precision": MulticlassPrecision(**kwargs), "recall": MulticlassRecall(**kwargs),
                             "f1_score": MulticlassF1Score(**kwargs)})


class RewEndModule(L.LightningModule):
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
        out = self.net.compute_loss(
            batch.obs_float(), batch.act, batch.rew, batch.end, batch.mask_padding,
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

    def configure_optimizers(self):
        opt, sched = configure_adamw(self.net, self.optim_cfg)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}
