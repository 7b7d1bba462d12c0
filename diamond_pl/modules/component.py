"""The contract of DIAMOND's three trained components (denoiser, reward/end model, actor-critic).

Each component is a LightningModule that owns its network, its loss and its optimiser settings:

* `name`: its key everywhere: the agent attribute, so the checkpoint prefix (`denoiser.`...), the log prefix
  (`denoiser/train/...`), the config sections (`model.denoiser`, `model.denoiser_optim`) and the update schedule;
* `loss(batch) -> (loss, metrics)`: one optimiser step's loss and detached metrics; the batch is a `data.batch.Batch`
  for the world-model components and the imagination env loop for the actor-critic;
* `optim_cfg`: AdamW + warm-up + gradient clipping (`modules/optim.py`), applied to `trainable()`.

The agent (`agent.py`) trains them in the order of `COMPONENTS`, one optimiser each, without knowing which is which.
"""

from __future__ import annotations

from typing import Any, ClassVar

import lightning as L
from torch import Tensor, nn

from diamond_pl.modules.optim import OptimConfig, configure_adamw

COMPONENTS: tuple[str, ...] = ("denoiser", "rew_end_model", "actor_critic")  # training and optimiser order


class Component(L.LightningModule):
    name: ClassVar[str]
    optim_cfg: OptimConfig

    def loss(self, batch: Any) -> tuple[Tensor, dict[str, Tensor]]:
        raise NotImplementedError

    def trainable(self) -> nn.Module:
        """The module whose parameters this component's optimiser updates."""
        raise NotImplementedError

    def configure_optimizers(self):
        opt, sched = configure_adamw(self.trainable(), self.optim_cfg)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}
