"""A callback that ends `fit` at a chosen hook with exit status 0 (start-up output tests)."""

import os

from lightning.pytorch.callbacks import Callback


class StopAt(Callback):
    def __init__(self, hook: str = "setup") -> None:
        self.hook = hook

    def _stop(self, name: str) -> None:
        if name == self.hook:
            print(f"stopped at {name}", flush=True)
            os._exit(0)  # no teardown: the output up to here is what the test reads

    def setup(self, trainer, pl_module, stage):
        self._stop("setup")

    def on_train_start(self, trainer, pl_module):
        self._stop("on_train_start")
