"""Fault injection for the resume test: the process kills itself (SIGKILL, no clean-up) at a given batch."""

import os
import signal

from lightning.pytorch.callbacks import Callback


class SigkillAt(Callback):
    def __init__(self, epoch: int, batch: int) -> None:
        self.epoch, self.batch = epoch, batch

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.current_epoch == self.epoch and batch_idx == self.batch:
            os.kill(os.getpid(), signal.SIGKILL)
