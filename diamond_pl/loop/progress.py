"""What a run tells its user: a progress bar with the phase, a real rate and ETA, the start-up projection on a CPU,
and a one-line summary at the end of `fit`.

Rich's own speed and remaining-time columns estimate from the last 30 s of progress; a paper-size update takes longer
than that on a CPU, so they showed `0.00it/s` and `-:--:--` forever. The bar here times every update itself (per
component, since a denoiser update and an actor-critic update differ by 10x) and projects the epoch and the run from
the schedule (`ReplayDataModule.updates`), which is known in advance.
"""

from __future__ import annotations

import time
from pathlib import Path

import lightning as L
from lightning.pytorch.accelerators import CPUAccelerator
from lightning.pytorch.callbacks import ModelSummary, RichProgressBar
from lightning.pytorch.utilities import rank_zero_info
from lightning.pytorch.utilities.model_summary.model_summary import get_formatted_model_size, get_human_readable_count
from rich.progress import ProgressColumn
from rich.text import Text

COMPONENTS = ("denoiser", "rew_end_model", "actor_critic")
LABELS = {"denoiser": "denoiser", "rew_end_model": "reward/end", "actor_critic": "actor-critic"}

# Seconds per update at paper sizes (batch 32) on the 2-core CPU of docs/performance.md, run P ("fast" paths):
# denoiser 15.1 s, reward/end 11.6 s, actor-critic 113 s (imagination included). Parameter counts at paper sizes
# (README): 4.4M, 5.9M, 3.2M. A convolutional network's work at a fixed frame size grows about like its parameter
# count, which scales the table to other sizes.
PAPER_CPU_SECONDS = {"denoiser": 15.1, "rew_end_model": 11.6, "actor_critic": 113.0}
PAPER_PARAMS = {"denoiser": 4.4e6, "rew_end_model": 5.9e6, "actor_critic": 3.2e6}
WARN_ABOVE_S = 24 * 3600  # a projected CPU run longer than a day gets the start-up warning


def duration(seconds: float) -> str:
    """3 d 4 h, 5 h 12 min, 4 min 10 s, 12 s."""
    s = int(round(seconds))
    if s >= 86400:
        return f"{s // 86400} d {s % 86400 // 3600} h"
    if s >= 3600:
        return f"{s // 3600} h {s % 3600 // 60} min"
    if s >= 60:
        return f"{s // 60} min {s % 60} s"
    return f"{s} s"


def find_loop(trainer: L.Trainer):
    """The collection callback (duck-typed: anything with `total_env_steps`), or None."""
    return next((cb for cb in trainer.callbacks if hasattr(cb, "total_env_steps")), None)


def schedule_updates(datamodule, num_epochs: int) -> dict[str, int]:
    """Updates per component over `num_epochs` epochs of the schedule."""
    first, later = datamodule.updates(0), datamodule.updates(1)
    return {c: getattr(first, c) + (num_epochs - 1) * getattr(later, c) for c in COMPONENTS} if num_epochs > 0 else {}


def projected_cpu_seconds(pl_module, datamodule, loop) -> float:
    """Rough run time on a 2-core CPU from the paper-size table, scaled by update counts and network sizes."""
    # the number of epochs before the initial collection fixes it: its lower bound of initial steps gives the most
    epochs = (loop.total_env_steps - loop.initial_steps_min) // loop.steps_per_epoch + loop.num_final_epochs
    updates = schedule_updates(datamodule, epochs)
    params = {c: sum(p.numel() for p in pl_module.components[c].parameters()) for c in COMPONENTS}
    imagination = (params["denoiser"] + params["rew_end_model"] + params["actor_critic"]) / sum(PAPER_PARAMS.values())
    scale = {"denoiser": params["denoiser"] / PAPER_PARAMS["denoiser"],
             "rew_end_model": params["rew_end_model"] / PAPER_PARAMS["rew_end_model"],
             "actor_critic": imagination}  # fmt: skip  (an actor-critic update is mostly imagination: all three nets)
    batch = datamodule.batch_size / 32
    return sum(updates.get(c, 0) * PAPER_CPU_SECONDS[c] * scale[c] * batch for c in COMPONENTS)


def startup_warning(trainer: L.Trainer, pl_module, datamodule) -> str | None:
    """One line when a CPU run is projected to take more than a day (the paper config: about two years)."""
    loop = find_loop(trainer)
    if loop is None or not isinstance(trainer.accelerator, CPUAccelerator) or pl_module.model_free:
        return None
    seconds = projected_cpu_seconds(pl_module, datamodule, loop)
    if seconds <= WARN_ABOVE_S:
        return None
    return (f"Warning: on this CPU this config would train for roughly {duration(seconds)} (paper-size CPU timings of "
            f"docs/performance.md: 15 s per denoiser update, 113 s per actor-critic update); train on a GPU, or try "
            f"configs/smoke.yaml (about a minute on a CPU)")


def announce(trainer: L.Trainer, text: str) -> None:
    """Show a phase that is not an update (collection, evaluation): on the bar if one is running, else as a line."""
    if trainer.global_rank != 0:
        return
    bar = trainer.progress_bar_callback
    if isinstance(bar, DiamondProgressBar) and bar.set_phase(text):
        return
    rank_zero_info(f"{text} ...")


class PaceColumn(ProgressColumn):
    """The bar's own rate / ETA text (rich's columns cannot estimate updates slower than 30 s)."""

    def __init__(self, bar: "DiamondProgressBar") -> None:
        super().__init__()
        self.bar = bar

    def render(self, task) -> Text:
        return Text(self.bar.pace_text, style="grey70")


class DiamondProgressBar(RichProgressBar):
    """Epoch i/N of the schedule, the phase (collection / component i/n / evaluation), seconds per update, the epoch's
    and the run's ETA, and real env steps out of the budget."""

    def __init__(self, refresh_rate: int = 1, leave: bool = False) -> None:
        super().__init__(refresh_rate=refresh_rate, leave=leave)
        self.seconds: dict[str, float] = {}  # per component: total measured seconds and updates (this process)
        self.counts: dict[str, int] = {}
        self.pace_text = ""
        self._last: float | None = None
        self._epoch_done: dict[str, int] = {}

    def configure_columns(self, trainer: L.Trainer) -> list:
        columns = super().configure_columns(trainer)
        return [*columns[:3], PaceColumn(self)]  # description, bar, i/n; then ours instead of time and it/s

    def get_metrics(self, trainer, pl_module) -> dict:
        items = super().get_metrics(trainer, pl_module)
        items.pop("v_num", None)  # the fixed TensorBoard version: always 0, never informative
        return items

    # --- timing ---------------------------------------------------------------------------------------------------
    def on_train_epoch_start(self, trainer, pl_module) -> None:
        super().on_train_epoch_start(trainer, pl_module)
        self._last = time.perf_counter()
        self._epoch_done = {c: 0 for c in COMPONENTS}

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        now = time.perf_counter()
        component = batch[0] if isinstance(batch, (tuple, list)) and batch and batch[0] in COMPONENTS else None
        if component is not None and self._last is not None:
            self.seconds[component] = self.seconds.get(component, 0.0) + now - self._last
            self.counts[component] = self.counts.get(component, 0) + 1
            self._epoch_done[component] = self._epoch_done.get(component, 0) + 1
        self._last = now
        super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)
        if component is not None:
            self._describe(trainer, component)

    def seconds_per_update(self) -> dict[str, float]:
        """Measured where known; a component not yet run is estimated from a measured one with the paper table's
        ratio (an actor-critic update is ~8x a denoiser update at any size)."""
        known = {c: self.seconds[c] / self.counts[c] for c in self.counts if self.counts[c]}
        if not known:
            return {}
        ref = next(iter(known))
        return {c: known.get(c, known[ref] * PAPER_CPU_SECONDS[c] / PAPER_CPU_SECONDS[ref]) for c in COMPONENTS}

    def _describe(self, trainer, component: str) -> None:
        dm, epoch = trainer.datamodule, trainer.current_epoch
        if dm is None or not hasattr(dm, "updates"):
            return
        now_counts = dm.updates(epoch)
        spu = self.seconds_per_update()
        left_epoch = {c: getattr(now_counts, c) - self._epoch_done.get(c, 0) for c in COMPONENTS}
        max_epochs = trainer.max_epochs if trainer.max_epochs and trainer.max_epochs > 0 else epoch + 1
        later = dm.updates(epoch + 1)
        left_run = {c: left_epoch[c] + (max_epochs - epoch - 1) * getattr(later, c) for c in COMPONENTS}
        eta_epoch = sum(max(left_epoch[c], 0) * spu.get(c, 0.0) for c in COMPONENTS)
        eta_run = sum(max(left_run[c], 0) * spu.get(c, 0.0) for c in COMPONENTS)
        rate = spu.get(component, 0.0)
        pace = f"{rate:.1f} s/update" if rate >= 1 else f"{1 / rate:.1f} updates/s" if rate > 0 else ""
        parts = [pace, f"ETA epoch {duration(eta_epoch)}, run {duration(eta_run)}"]
        loop = find_loop(trainer)
        if loop is not None and hasattr(dm, "train_store"):
            parts.append(f"{dm.train_store.num_steps:,}/{loop.total_env_steps:,} env steps")
        self.pace_text = " · ".join(p for p in parts if p)
        n = getattr(now_counts, component)
        self._set_description(f"Epoch {epoch + 1}/{max_epochs} · {LABELS[component]} {self._epoch_done[component]}/{n}")

    def _set_description(self, text: str) -> bool:
        if self.progress is None or self.train_progress_bar_id is None or not self.is_enabled:
            return False
        self.progress.update(self.train_progress_bar_id, description=text)
        self.refresh()
        return True

    def set_phase(self, text: str) -> bool:
        """Show a non-update phase; False when no bar is on screen (the caller prints a line instead)."""
        max_epochs = self.trainer.max_epochs
        epoch = min(self.trainer.current_epoch, max_epochs - 1) if max_epochs and max_epochs > 0 else self.trainer.current_epoch
        return self._set_description(f"Epoch {epoch + 1}/{max_epochs} · {text}")


def fit_summary(trainer: L.Trainer, seed: int | None = None) -> str:
    """One line at the end of `fit`: final (or last) return, human-normalised score where it applies, files."""
    loop = find_loop(trainer)
    metrics = getattr(loop, "last_metrics", None) or {}
    parts = [f"fit done: {trainer.current_epoch} epochs"]
    for prefix, name in (("final", "final return"), ("test", "last test return")):
        if f"{prefix}/return_mean" in metrics:
            text = f"{name} {metrics[f'{prefix}/return_mean']:.1f}"
            if metrics.get(f"{prefix}/human_normalised_score") is not None:
                text += f" (human-normalised {metrics[f'{prefix}/human_normalised_score']:.3f})"
            parts.append(text)
            break
    ckpt = trainer.checkpoint_callback
    if ckpt is not None and ckpt.dirpath:
        last = Path(ckpt.dirpath) / "last.ckpt"
        parts.append(f"checkpoint {last if last.exists() else ckpt.dirpath}")
    if trainer.logger is not None and trainer.logger.log_dir:
        parts.append(f"logs {trainer.logger.log_dir}")
    if seed is not None:
        parts.append(f"seed {seed}")
    return " · ".join(parts)


class ComponentSummary(ModelSummary):
    """The model summary without Lightning's FLOPs column and total: they need an example input the agent does not
    have (a composite of three networks) and always read 0."""

    @staticmethod
    def summarize(summary_data, total_parameters: int, trainable_parameters: int, model_size: float,
                  total_training_modes: dict, total_flops: int = 0, **kwargs) -> None:
        columns = dict(summary_data)
        names, types, params = columns.get("Name", []), columns.get("Type", []), columns.get("Params", [])
        width = max((len(n) for n in names), default=4)
        twidth = max((len(t) for t in types), default=4)
        lines = [f"  {n:<{width}}  {t:<{twidth}}  {p:>8}" for n, t, p in zip(names, types, params)]
        lines.append(f"  {'total':<{width}}  {'':<{twidth}}  {get_human_readable_count(total_parameters):>8}  "
                     f"({get_formatted_model_size(model_size)} MB)")
        rank_zero_info("\n".join(lines))
