"""Silence library output that is not the user's concern, each filter aimed at one known message (never blanket).

Light on purpose (standard library only): `diamond_pl.cli` installs it before a command's heavy imports.
"""

from __future__ import annotations

import logging
import warnings

LITLOGGER_TIP = "💡 Tip: For seamless cloud logging"  # Lightning 2.6 logs this advert on every Trainer without LitLogger


# diamond_pl passes its own model summary (without the FLOPs that read 0), which Lightning then reports
OWN_SUMMARY = "Trainer already configured with model summary callbacks"


def _drop_litlogger_tip(record: logging.LogRecord) -> bool:
    return not str(record.msg).startswith((LITLOGGER_TIP, OWN_SUMMARY))


def install() -> None:
    # Lightning's own pytree helper builds a LeafSpec, which torch >= 2.10 deprecates: a Lightning matter
    warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated", category=FutureWarning,
                            module=r"lightning\.pytorch\.utilities\._pytree")
    # torch.compile's inductor imports torch.utils.mkldnn, whose 14 `torch.jit.script_method`s warn at import
    warnings.filterwarnings("ignore", message=r"`torch\.jit\.script_method` is deprecated", category=DeprecationWarning,
                            module=r"torch\.jit\._script")
    logger = logging.getLogger("lightning.pytorch.utilities.rank_zero")
    if _drop_litlogger_tip not in logger.filters:
        logger.addFilter(_drop_litlogger_tip)
