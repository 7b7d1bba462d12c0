"""RewardEndModule: predicts the reward sign and the episode end of a transition (reference spec §6).

Trained with cross-entropy on windows of 19 real frames (18 transitions, padding on both sides allowed). Because
non-zero rewards and ends are rare, per-class precision / recall / F1 from confusion matrices (rows = true class,
columns = predicted) are the metrics to watch; they accumulate over an epoch (train) or an evaluation (test).
"""

from __future__ import annotations

import lightning as L
import torch
from torch import Tensor
from torchmetrics.classification import MulticlassConfusionMatrix

from diamond_pl.data.batch import Batch
from diamond_pl.modules.optim import OptimConfig, configure_adamw
from diamond_pl.nets.rew_end_net import NUM_END_CLASSES, NUM_REW_CLASSES, RewEndNet, RewEndNetConfig

IGNORE = -1  # target value of padded transitions in the confusion matrices (no boolean indexing, no host sync)


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


class RewardEndModule(L.LightningModule):
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
        out = self.net.compute_loss(
            batch.obs_float(), batch.act, batch.rew, batch.end, batch.mask_padding,
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

    def configure_optimizers(self):
        opt, sched = configure_adamw(self.net, self.optim_cfg)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}
