"""For the DDP test: each rank writes what its train store holds when training ends."""

import hashlib
import json
from pathlib import Path

from lightning.pytorch.callbacks import Callback


class StoreFingerprint(Callback):
    def __init__(self, out_dir: str) -> None:
        self.out_dir = Path(out_dir)

    def on_train_end(self, trainer, pl_module) -> None:
        store = trainer.datamodule.train_store
        h = hashlib.sha256()
        for i in range(len(store)):
            ep = store.get(i)
            for a in (ep.obs, ep.act, ep.rew, ep.end, ep.trunc, ep.final_obs):
                h.update(b"-" if a is None else a.tobytes())
        info = {"rank": trainer.global_rank, "world_size": trainer.world_size, "lengths": [int(x) for x in store.lengths],
                "num_steps": int(store.num_steps), "sha256": h.hexdigest(), "global_step": trainer.global_step}
        self.out_dir.mkdir(parents=True, exist_ok=True)
        (self.out_dir / f"rank{trainer.global_rank}.json").write_text(json.dumps(info))
