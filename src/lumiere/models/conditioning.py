"""Input-channel expansion for conditional generation (paper Sec. 4.2).

The conditional model takes the noisy video J, a masked conditioning video C and its mask M,
concatenated as <J, C, M> (3 + 3 + 1 = 7 channels). "We expand the channel dimension of the first
convolution layer from 3 to 7 ... and fine-tune our base T2V model": the pre-trained weights are
kept for the first channels and the new input channels get zero weights, so at initialisation
the expanded model ignores C and M and equals the unconditional model on J.
"""

from __future__ import annotations

import torch
from diffusers.models.unets import UNet2DConditionModel
from torch import nn

from lumiere.errors import ConfigError
from lumiere.models.stunet import STUNet


def _expanded_conv(conv: nn.Conv2d, new_in_channels: int) -> nn.Conv2d:
    grown = nn.Conv2d(
        new_in_channels,
        conv.out_channels,
        kernel_size=conv.kernel_size,
        stride=conv.stride,
        padding=conv.padding,
        dilation=conv.dilation,
        groups=conv.groups,
        bias=conv.bias is not None,
        padding_mode=conv.padding_mode,
    ).to(device=conv.weight.device, dtype=conv.weight.dtype)
    with torch.no_grad():
        grown.weight.zero_()  # new channels start with no influence
        grown.weight[:, : conv.in_channels] = conv.weight
        if conv.bias is not None:
            grown.bias.copy_(conv.bias)
    return grown


def expand_input_channels(model: STUNet | UNet2DConditionModel, new_in_channels: int = 7) -> STUNet | UNet2DConditionModel:
    """Grow ``conv_in`` to ``new_in_channels`` inputs (pre-trained weights first, zeros for the new ones), in place.

    For a STUNet, ``conv_in`` becomes trainable (and part of ``trainable_state_dict``), also when it
    already has ``new_in_channels``: the new input weights are learned when fine-tuning the
    conditional model, and a resumed run marks them the same way.
    """
    unet = model.unet if isinstance(model, STUNet) else model
    if not isinstance(unet, UNet2DConditionModel):
        raise ConfigError(f"expand_input_channels needs a STUNet or UNet2DConditionModel, got {type(model).__name__}")
    old_in_channels = unet.conv_in.in_channels
    if new_in_channels < old_in_channels:
        raise ConfigError(f"cannot shrink the input from {old_in_channels} to {new_in_channels} channels")
    if new_in_channels > old_in_channels:
        unet.conv_in = _expanded_conv(unet.conv_in, new_in_channels)
        unet.register_to_config(in_channels=new_in_channels)  # keep config and layer consistent (save/load)
    if isinstance(model, STUNet):
        model.mark_unet_module_trainable("conv_in")
    return model
