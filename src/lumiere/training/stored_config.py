"""A model config read from a file is data: it may name only the project's own stage classes and parts.

A Lumiere checkpoint stores the resolved model config it was trained with, so that ``generate.py``,
``evaluate.py``, ``apps.py`` and a later stage can rebuild the stage. Handing that config to Hydra's
``instantiate`` as it is would call whatever ``_target_`` the file names (``builtins.exec``,
``os.system``, ``subprocess.run``, ``torch.load`` of a pickle): a checkpoint from a colleague or a
download must never run code. :func:`check_stored_model_config` walks the whole config before
anything is built and allows only the targets listed here; anything else is a one-line
:class:`UnsafeConfigError` naming the offending key.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from lumiere.errors import InputFileError

# The stage classes a checkpoint may rebuild (the top-level ``_target_``).
STAGE_TARGETS = frozenset({
    "lumiere.training.TextToImageModule",
    "lumiere.training.stages.TextToImageModule",
    "lumiere.training.TextToVideoModule",
    "lumiere.training.stages.TextToVideoModule",
    "lumiere.training.SuperResolutionModule",
    "lumiere.training.ssr.SuperResolutionModule",
    "lumiere.training.ConditionalVideoModule",
    "lumiere.training.conditional.ConditionalVideoModule",
    "lumiere.training.StyleFineTuneModule",
    "lumiere.training.style_finetune.StyleFineTuneModule",
})

# The parts a stage config may build inside it (nested ``_target_``s).
PART_TARGETS = frozenset({
    "lumiere.models.STUNet",
    "lumiere.models.stunet.STUNet",
    "lumiere.models.TemporalConditioning",
    "lumiere.models.temporal_conditioning.TemporalConditioning",
    "lumiere.models.build_unet",
    "lumiere.models.t2i.build_unet",
    "lumiere.models.build_tiny_text_encoder",
    "lumiere.models.text.build_tiny_text_encoder",
    "lumiere.diffusion.DiffusionObjective",
    "lumiere.diffusion.objective.DiffusionObjective",
    "lumiere.data.style.StyleTransform",
    "lumiere.data.StyleTransform",
    # optimizers, always built partially (``_partial_: true``) around the trainable parameters
    "torch.optim.AdamW",
    "torch.optim.Adam",
    "torch.optim.SGD",
})

# Hydra's own keys that change how a node is built; everything else is an argument.
_HYDRA_KEYS = frozenset({"_target_", "_partial_", "_convert_", "_recursive_", "_args_"})
_PLAIN = (str, int, float, bool, type(None))


class UnsafeConfigError(InputFileError):
    """A stored config that names something other than the project's own classes."""


def check_stored_model_config(config: Any, source: str) -> None:
    """Raise UnsafeConfigError unless ``config`` (a plain dict from a file) builds only a Lumiere stage.

    Checked: the top-level ``_target_`` is a stage class; every nested ``_target_`` is one of the
    project's parts; keys are strings, Hydra keys only the known ones; values are plain
    (str/int/float/bool/None, lists, dicts), and no string is an interpolation (``${...}``, which
    Hydra would resolve through its resolvers)."""
    if not isinstance(config, Mapping):
        raise UnsafeConfigError(f"refusing {source}: its model config is a {type(config).__name__}, not a mapping")
    target = config.get("_target_")
    if target not in STAGE_TARGETS:
        raise UnsafeConfigError(f"refusing {source}: model_config._target_={target!r} is not one of the project's stage classes")
    _check_node(config, "model_config", source, top=True)


def _check_node(node: Any, where: str, source: str, top: bool = False) -> None:
    if isinstance(node, Mapping):
        for key, value in node.items():
            if not isinstance(key, str):
                raise UnsafeConfigError(f"refusing {source}: {where} has a non-string key {key!r}")
            path = f"{where}.{key}"
            if key.startswith("_") and key.endswith("_") and key not in _HYDRA_KEYS:
                raise UnsafeConfigError(f"refusing {source}: {path} is not a key a stored config may hold")
            if key == "_target_" and not top and value not in PART_TARGETS:
                raise UnsafeConfigError(f"refusing {source}: {path}={value!r} is not one of the project's classes")
            _check_node(value, path, source)
    elif isinstance(node, (list, tuple)):
        for index, value in enumerate(node):
            _check_node(value, f"{where}[{index}]", source)
    elif not isinstance(node, _PLAIN):
        raise UnsafeConfigError(f"refusing {source}: {where} holds a {type(node).__name__}, not a plain value")
    elif isinstance(node, str) and "${" in node:
        raise UnsafeConfigError(f"refusing {source}: {where} is an interpolation ({node[:40]!r}); stored configs are resolved")
