"""The small JSON file a stage-0 export carries next to its diffusers weights.

A frozen U-Net is only usable with the noise schedule and parameterisation it was trained with:
an inflated stage that regresses epsilon on a U-Net trained for v (or the other way round)
trains and samples garbage without any error. Stage 0 writes these settings beside the weights;
the inflating stage compares them with its own objective before training. A pipeline folder from
elsewhere (real DeepFloyd IF weights) has no such file: its `scheduler/scheduler_config.json` is
what describes its schedule (``lumiere.models.pipeline_folder``; a bare U-Net folder given on its
own is taken on trust).
"""

from __future__ import annotations

import json
import os
from typing import Any

from lumiere.diffusion import DiffusionObjective
from lumiere.errors import ConfigError

OBJECTIVE_KEYS = ("prediction_type", "beta_schedule")


def write_export_meta(folder: str | os.PathLike, filename: str, objective: DiffusionObjective, **extra: Any) -> None:
    """Record the objective's settings (and `extra`) as `folder/filename`."""
    meta = {key: getattr(objective, key) for key in OBJECTIVE_KEYS}
    with open(os.path.join(os.fspath(folder), filename), "w") as handle:
        json.dump({**meta, **extra}, handle)


def read_export_meta(folder: str | os.PathLike, filename: str) -> dict:
    """The recorded settings of an export (`{}` for a U-Net folder from elsewhere)."""
    path = os.path.join(os.fspath(folder), filename)
    if not os.path.isfile(path):
        return {}
    with open(path) as handle:
        return json.load(handle)


def check_objective_matches(meta: dict, objective: DiffusionObjective, folder: str | os.PathLike) -> None:
    """One line naming the first setting in which `objective` differs from the export's."""
    for key in OBJECTIVE_KEYS:
        if key in meta and meta[key] != getattr(objective, key):
            raise ConfigError(f"the U-Net in {folder} was trained with {key}={meta[key]!r}, but this stage's "
                              f"objective has {key}={getattr(objective, key)!r} (set model.objective.{key})")
