"""The SLURM side of `sweep`: one array task = one `FitJob(spec)`. Kept apart from sweep.py because it imports
submitit (an optional dependency) at import time, as submitit needs the job's class importable by name on the node.

Preemption and time-outs: submitit sends the job a signal (USR2, `--signal-delay-s` before the kill), calls
`checkpoint()`, which requeues the same call; the requeued task's `run_fit` finds `checkpoints/last.ckpt` and resumes
with `--ckpt_path last` (at most one epoch is redone). Lightning's own SLURM auto-requeue listens to SIGUSR1, which
submitit's sbatch script does not send, so the two never both requeue a run.
"""

from __future__ import annotations

import submitit

from diamond_pl.sweep import RunSpec, run_fit


class FitJob(submitit.helpers.Checkpointable):
    """Run (or resume) one fit; raise when it fails, so SLURM and submitit report the task as failed."""

    def __call__(self, spec: dict) -> dict:
        result = run_fit(spec)
        if result["state"] != "finished":
            run = RunSpec(**spec)
            raise RuntimeError(f"{run.key}: fit failed ({result.get('error') or 'exit code ' + str(result.get('returncode'))});"
                               f" see {run.run_dir}/fit.log")  # fmt: skip
        return result

    # checkpoint(): Checkpointable's default requeues this call with the same spec, which is all a resume needs.
