"""The tasks that the Hydra entry points call, one module each, and the wrapper they run in.

| entry point   | task                  | module                          |
|---------------|-----------------------|---------------------------------|
| `train.py`    | ``train(cfg)``        | ``lumiere.tasks.training``      |
| `evaluate.py` | ``evaluate(cfg)``     | ``lumiere.tasks.evaluation``    |
| `generate.py` | ``generate(cfg)``     | ``lumiere.tasks.generation``    |
| `apps.py`     | ``apps(cfg)``         | ``lumiere.tasks.applications``  |

Each task takes the composed config, builds objects with ``hydra.utils.instantiate``, calls library
code with plain arguments (the evaluation protocols live in ``lumiere.evaluation``, the
applications in ``lumiere.apps``) and returns the metrics a sweeper optimises. ``run_task``
(``lumiere.tasks.runner``) wraps a task: one-line errors, loggers always closed, a failing job in a
multirun returns +inf instead of stopping the sweep.

Attributes are imported on first use (PEP 562): ``from lumiere.tasks import train`` does not
import the applications or the evaluation code.
"""

from __future__ import annotations

from lumiere._lazy import lazy_exports

_EXPORTS = {
    "run_task": "lumiere.tasks.runner",
    "train": "lumiere.tasks.training",
    "evaluate": "lumiere.tasks.evaluation",
    "generate": "lumiere.tasks.generation",
    "apps": "lumiere.tasks.applications",
}

__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, globals(), _EXPORTS)
