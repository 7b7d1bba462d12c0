"""The per-epoch update schedule: the train "dataloader" of a DIAMOND epoch (reference spec §9.4).

One epoch trains the three components one after the other: N_denoiser denoiser updates, then N_rew_end reward/end
updates, then N_actor_critic actor-critic updates (epoch 1: 10k / 10k / 5k, later epochs: 400 / 400 / 400). The
schedule yields one `(component, batch)` per optimiser step, so Lightning's epoch has a finite, known length (a real
progress bar). Batches are sampled lazily, at the moment they are consumed, so every update sees the newest data and a
resumed run draws the same batches as an uninterrupted one. The actor-critic's item carries no batch: its data is an
imagined rollout that the agent generates itself.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Callable, Iterator


@dataclass
class UpdateCounts:
    """Optimiser steps per component in one epoch (one field per name of `modules.component.COMPONENTS`)."""

    denoiser: int = 400
    rew_end_model: int = 400
    actor_critic: int = 400

    def __post_init__(self) -> None:
        for name, count in asdict(self).items():
            if count < 0:
                raise ValueError(f"update count {name} must be >= 0, got {count}")


class UpdateSchedule:
    """Iterable of (component, batch) in training order; `len()` is the number of optimiser steps."""

    def __init__(self, phases: list[tuple[str, int, Callable[[], Any] | None]]) -> None:
        self.phases = phases

    def __len__(self) -> int:
        return sum(n for _, n, _ in self.phases)

    def __iter__(self) -> Iterator[tuple[str, Any]]:
        for component, n, make_batch in self.phases:
            for _ in range(n):
                yield component, (make_batch() if make_batch is not None else None)
