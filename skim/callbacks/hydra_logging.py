"""Hydra callback: Lightning's log records go through Hydra's handlers only, so each line is printed once.

``import lightning`` gives the ``lightning`` logger a console handler of its own and leaves it propagating to the
root logger, which Hydra's ``job_logging`` equips with a console and a file handler: every Lightning INFO line
("Seed set to 42", "GPU available") appeared twice on the console. ``lightning.pytorch`` and ``lightning.fabric``
add a handler too and stop propagating when they are imported before any logging is configured, which would keep
their lines out of the run's log file. Logging configuration alone cannot fix this, since the handlers appear when
Lightning is imported, usually after Hydra has configured logging; so this runs when each job starts.
"""

from __future__ import annotations

import logging
from typing import Any

from hydra.experimental.callback import Callback


def route_lightning_logs_to_root() -> None:
    import lightning

    # Lightning's own handler on the top-level logger; kept by reference, so handlers a user configured stay
    console = getattr(lightning, "_console", None)
    top = logging.getLogger("lightning")
    if console is not None and console in top.handlers:
        top.removeHandler(console)
    top.propagate = True
    for name in ("lightning.pytorch", "lightning.fabric"):
        logger = logging.getLogger(name)
        if not logger.propagate:
            # the import-time fallback (a bare StreamHandler, propagation off) that Lightning installs when the
            # root logger has no handlers yet
            for handler in list(logger.handlers):
                logger.removeHandler(handler)
            logger.propagate = True


class LightningLogsThroughHydra(Callback):
    def on_job_start(self, config: Any, **kwargs: Any) -> None:
        route_lightning_logs_to_root()
