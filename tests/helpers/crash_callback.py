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


class KillAt(Callback):
    """Send `sig` (KILL, TERM or INT) to this process at one moment of a run, for the kill-anywhere test:

    * `write="substring", nth=n`: inside the n-th atomic write (episode, checkpoint, snapshot) whose path contains
      the substring, after the data went to the temp file and before the rename (a killed write leaves its temp file);
    * `epoch=e, batch=b`: before update b of epoch e (0-based);
    * `last_link_epoch=e`: when Lightning is about to re-link last.ckpt in epoch e, i.e. after it wrote the new epoch
      file and deleted the previous one (last.ckpt then dangles).
    """

    def __init__(self, sig: str = "KILL", write: str | None = None, nth: int = 1, epoch: int | None = None,
                 batch: int | None = None, last_link_epoch: int | None = None) -> None:
        self.signum = getattr(signal, f"SIG{sig}")
        self.write, self.nth, self.epoch, self.batch, self.last_link_epoch = write, nth, epoch, batch, last_link_epoch
        self.count = 0

    def _fire(self) -> None:
        os.kill(os.getpid(), self.signum)

    def setup(self, trainer, pl_module, stage) -> None:
        if self.write is not None:
            import diamond_pl.atomic as atomic

            original = atomic._atomic_write

            def patched(path, write):
                if self.write in str(path):
                    self.count += 1
                    if self.count == self.nth:
                        def write_then_fire(f):
                            write(f)
                            f.flush()
                            self._fire()

                        return original(path, write_then_fire)
                return original(path, write)

            atomic._atomic_write = patched
        if self.last_link_epoch is not None:
            for cb in trainer.checkpoint_callbacks:
                if cb.save_last:
                    original_link = cb._save_last_checkpoint

                    def save_last(trainer_, candidates, _original=original_link):
                        if trainer_.current_epoch == self.last_link_epoch:
                            self._fire()
                        return _original(trainer_, candidates)

                    cb._save_last_checkpoint = save_last

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.current_epoch == self.epoch and batch_idx == self.batch:
            self._fire()
