"""Stylized generation (paper Sec. 4.1, Fig. 6): interpolate the spatial (T2I) weights towards a style.

Lumiere trains only the temporal layers and keeps the text-to-image weights fixed, so a
text-to-image model fine-tuned on a style can replace them. Plugging the style weights in
directly often gives distorted or static videos: the temporal layers then see inputs far from
the distribution they were trained on. The paper instead interpolates

    W_interpolate = alpha * W_style + (1 - alpha) * W_orig,      alpha in [0.5, 1] in practice,

on the spatial layers only; the temporal layers are untouched. Here the spatial layers are
exactly `stunet.unet` (the frozen diffusers U-Net); the temporal blocks live outside it.

The style weights come from a fine-tuned copy of the *same* T2I model (e.g. the stage-0 export
fine-tuned by `lumiere.training.style_finetune`), saved in diffusers format: an export folder
holding `unet/`, a U-Net folder, or a `.safetensors` state dict.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Mapping

import torch
from safetensors.torch import load_file
from torch import Tensor, nn

from lumiere.errors import ConfigError, InputFileError

DIFFUSERS_WEIGHTS = "diffusion_pytorch_model.safetensors"


def check_alpha(alpha: float) -> float:
    """Alpha must be a number in [0, 1] (0: original weights, 1: the style weights)."""
    try:
        if isinstance(alpha, bool):
            raise TypeError
        alpha = float(alpha)
    except (TypeError, ValueError):
        raise ConfigError(f"style alpha must be a number in [0, 1] (the paper uses 0.5-1), got {alpha!r}") from None
    if not 0.0 <= alpha <= 1.0:
        raise ConfigError(f"style alpha must lie in [0, 1] (the paper uses 0.5-1), got {alpha}")
    return alpha


def load_style_unet_state_dict(path: str) -> dict[str, Tensor]:
    """The U-Net state dict of a style T2I model: an export folder (`unet/`), a U-Net folder, or a .safetensors file."""
    candidates = [path] if path.endswith(".safetensors") else [
        os.path.join(path, "unet", DIFFUSERS_WEIGHTS), os.path.join(path, DIFFUSERS_WEIGHTS)]
    if not os.path.exists(path):
        raise InputFileError(f"style model not found: {path}")
    for candidate in candidates:
        if os.path.isfile(candidate):
            try:
                return load_file(candidate)
            except Exception as error:  # truncated or foreign file
                raise InputFileError(f"cannot read style weights {candidate}: {error}") from error
    raise InputFileError(f"{path} holds no diffusers U-Net weights (looked for {' and '.join(candidates)})")


def _interpolated(name: str, original: Tensor, style: Tensor, alpha: float) -> Tensor:
    """alpha * style + (1 - alpha) * original, for a tensor whose style counterpart may have fewer input channels.

    A conditional model's `conv_in` has more input channels (<J, C, M>, Sec. 4.2) than the
    style T2I's: the RGB input channels are interpolated, the conditioning channels, which have
    no T2I counterpart, are kept.
    """
    style = style.to(original.device, original.dtype)
    if style.shape == original.shape:
        return alpha * style + (1.0 - alpha) * original
    widened_input = (original.ndim >= 2 and style.ndim == original.ndim and style.shape[0] == original.shape[0]
                     and style.shape[2:] == original.shape[2:] and style.shape[1] < original.shape[1])
    if not widened_input:
        raise ConfigError(f"style weight {name} has shape {tuple(style.shape)}, the model's {tuple(original.shape)}: "
                          "was the style model fine-tuned from this model's T2I weights?")
    result = original.clone()
    rgb = style.shape[1]
    result[:, :rgb] = alpha * style + (1.0 - alpha) * original[:, :rgb]
    return result


@torch.no_grad()
def interpolate_spatial_weights(stunet: nn.Module, style_unet_state_dict: Mapping[str, Tensor], alpha: float,
                                *, inplace: bool = False) -> nn.Module:
    """Return the STUNet with W = alpha * W_style + (1 - alpha) * W_orig on its spatial (T2I) weights.

    `stunet` is a `lumiere.models.STUNet` (any module with the T2I U-Net as `.unet`). By default
    a deep copy is modified and returned; `inplace=True` modifies `stunet` itself (saves memory
    for large models). Temporal weights are never touched. Every floating-point U-Net weight must
    have a style counterpart, except the conditioning part of a conditional model's `conv_in`.
    """
    alpha = check_alpha(alpha)
    if not hasattr(stunet, "unet"):
        raise ConfigError(f"stylization needs a STUNet (a model with a .unet), got {type(stunet).__name__}")
    model = stunet if inplace else copy.deepcopy(stunet)
    spatial = model.unet.state_dict()
    missing = [name for name, value in spatial.items()
               if value.is_floating_point() and name not in style_unet_state_dict
               and not name.startswith("conv_in.conditioning.")]
    if missing:
        raise ConfigError(f"the style U-Net lacks {len(missing)} of the model's spatial weights (e.g. {missing[0]}): "
                          "it must be fine-tuned from the same T2I model")
    updated = {name: _interpolated(name, value, style_unet_state_dict[name], alpha)
               for name, value in spatial.items()
               if value.is_floating_point() and name in style_unet_state_dict}
    model.unet.load_state_dict(updated, strict=False)
    return model
