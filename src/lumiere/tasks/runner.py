"""How every task runs: ``run_task`` wraps a task so that a user error prints one line, loggers are
always closed, and (in a multirun) one failing job does not stop the others; it returns the metric
a sweeper optimises. ``instantiate_collection`` builds a dict-of-configs group (callbacks, loggers).
"""

from __future__ import annotations

import logging
import math
import sys
from collections.abc import Callable
from typing import Any

from omegaconf import DictConfig

from lumiere.errors import LumiereError

log = logging.getLogger("lumiere")


def run_task(task: Callable[[DictConfig], dict[str, float]], cfg: DictConfig) -> float | None:
    """Run a task; return the value of `cfg.optimized_metric` (for sweepers) if it has one."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    from lumiere.utils import quiet_libraries

    quiet_libraries()  # no library notices or loading bars above the task's output (or its error line)
    multirun = HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN
    try:
        metrics = task(cfg)
    except LumiereError as error:
        if multirun:  # one failing job must not stop the sweep: report it and return a bad value
            log.error("job failed: %s", error)
            return math.inf
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
    except Exception:
        if multirun:
            log.exception("job failed")
            return math.inf
        raise
    finally:
        close_loggers()
    name = cfg.get("optimized_metric")
    if name and name in metrics:
        return float(metrics[name])
    return None


def close_loggers() -> None:
    try:
        import wandb
    except ImportError:  # pragma: no cover
        return
    if wandb.run is not None:
        wandb.finish()


def instantiate_collection(config: DictConfig | None) -> list[Any]:
    """Instantiate every entry of a dict-of-configs group (callbacks, loggers); skip nulls."""
    from lumiere.utils import instantiate_config

    if not config:
        return []
    return [instantiate_config(entry) for entry in config.values() if entry is not None and "_target_" in entry]
