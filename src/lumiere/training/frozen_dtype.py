"""The dtype of a stage's frozen parts (issue 20, item 5): how ``model.frozen_dtype`` is read, the
automatic choice from the trainer, the cast of the frozen weights, and the autocast scope in which
float32 trainable layers and lower-precision frozen layers meet in one compute dtype.

`DiffusionModule.cast_frozen_parts` and `DiffusionModule.frozen_compute_scope` call these; every
direct call of a stage's ``network_forward`` (training, sampling, probes, applications) must run
inside ``module.frozen_compute_scope()``.
"""

from __future__ import annotations

from collections.abc import Iterable
from contextlib import AbstractContextManager, nullcontext

import torch
from torch import nn

from lumiere.errors import ConfigError

FROZEN_DTYPES = {"fp32": torch.float32, "float32": torch.float32, "bf16": torch.bfloat16, "bfloat16": torch.bfloat16,
                 "fp16": torch.float16, "float16": torch.float16}
# Normalisation layers of the frozen parts stay float32 whatever frozen_dtype is: their weights are a
# negligible share of the parameters, and CPU autocast runs layer/group norm in float32 without
# casting their weights (a bf16 weight there is a dtype error).
FLOAT32_NORMS = (nn.LayerNorm, nn.GroupNorm)


def parse_frozen_dtype(value: str | None) -> torch.dtype | None:
    """``frozen_dtype`` as a torch dtype; None for "auto" / null (decided from the trainer, see ``auto_frozen_dtype``)."""
    if value is None or str(value).lower() == "auto":
        return None
    dtype = FROZEN_DTYPES.get(str(value).lower())
    if dtype is None:
        raise ConfigError(f"model.frozen_dtype={value!r} is not a dtype: use auto, fp32, bf16 or fp16")
    return dtype


def auto_frozen_dtype(precision: str | None, device_type: str | None) -> torch.dtype:
    """bf16 under a bf16 trainer precision (bf16-mixed / bf16-true) on an accelerator, else float32
    (on CPU, and whenever no trainer says otherwise: sampling from a checkpoint)."""
    if precision is not None and str(precision).startswith("bf16") and device_type not in (None, "cpu"):
        return torch.bfloat16
    return torch.float32


def cast_frozen_weights(modules: Iterable[nn.Module], dtype: torch.dtype) -> None:
    """Cast the parameters that do not train of ``modules`` to ``dtype`` (normalisation layers: float32).

    Parameters with ``requires_grad`` (the temporal blocks, any trainable U-Net part) keep their
    float32 master copies."""
    for module in modules:
        for layer in module.modules():
            target = torch.float32 if isinstance(layer, FLOAT32_NORMS) else dtype
            for parameter in layer.parameters(recurse=False):
                if not parameter.requires_grad and parameter.is_floating_point() and parameter.dtype != target:
                    parameter.data = parameter.data.to(target)


def frozen_autocast(dtype: torch.dtype, device_type: str) -> AbstractContextManager:
    """Autocast to ``dtype`` when the frozen parts are in a lower precision and no autocast is active
    yet on ``device_type`` (Lightning's bf16-mixed already opens one); else a no-op."""
    if dtype == torch.float32 or torch.is_autocast_enabled(device_type):
        return nullcontext()
    return torch.autocast(device_type, dtype=dtype)
