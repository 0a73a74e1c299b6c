"""Input-channel expansion for conditional generation (paper Sec. 4.2).

The conditional model takes the noisy video J, a masked conditioning video C and its mask M,
concatenated as <J, C, M> (3 + 3 + 1 = 7 channels). "We expand the channel dimension of the first
convolution layer from 3 to 7 ... and fine-tune our base T2V model": the pre-trained weights are
kept for the first channels and the new input channels get zero weights, so at initialisation
the expanded model ignores C and M and equals the unconditional model on J.

What trains afterwards (``trainable``): ``"all"`` makes the whole expanded ``conv_in`` trainable;
``"new_channels"`` splits it into the pre-trained convolution and a convolution on the new input
channels (:class:`ConditionedConvIn`, the same function) and trains only the latter, so the
pre-trained first-layer weights stay exactly those of the T2I model.
"""

from __future__ import annotations

import torch
from diffusers.models.unets import UNet2DConditionModel
from torch import nn

from lumiere.errors import ConfigError
from lumiere.models.stunet import STUNet

CONV_IN_TRAINING = ("new_channels", "all")


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


class ConditionedConvIn(nn.Conv2d):
    """An expanded conv_in split in two: the pre-trained convolution plus a convolution on the new channels.

    Equal to one convolution over all input channels (convolution is linear in its input
    channels); split so that only the new weights (``conditioning``) can be trained. Its own
    weight/bias keep the pre-trained names (``conv_in.weight``, ``conv_in.bias``) and shapes.
    """

    def __init__(self, expanded: nn.Conv2d, pretrained_channels: int) -> None:
        extra = expanded.in_channels - pretrained_channels
        if extra < 1 or expanded.groups != 1:
            raise ConfigError(f"cannot split a {expanded.in_channels}-channel conv_in into {pretrained_channels} + new")
        options = dict(kernel_size=expanded.kernel_size, stride=expanded.stride, padding=expanded.padding,
                       dilation=expanded.dilation, padding_mode=expanded.padding_mode)
        super().__init__(pretrained_channels, expanded.out_channels, bias=expanded.bias is not None, **options)
        self.conditioning = nn.Conv2d(extra, expanded.out_channels, bias=False, **options)
        self.to(expanded.weight.device, expanded.weight.dtype)
        with torch.no_grad():
            self.weight.copy_(expanded.weight[:, :pretrained_channels])
            self.conditioning.weight.copy_(expanded.weight[:, pretrained_channels:])
            if expanded.bias is not None:
                self.bias.copy_(expanded.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pretrained, extra = x[:, :self.in_channels], x[:, self.in_channels:]
        return super().forward(pretrained) + self.conditioning(extra)


def expand_input_channels(model: STUNet | UNet2DConditionModel, new_in_channels: int = 7,
                          trainable: str = "all") -> STUNet | UNet2DConditionModel:
    """Grow ``conv_in`` to ``new_in_channels`` inputs (pre-trained weights first, zeros for the new ones), in place.

    ``trainable="all"``: for a STUNet, ``conv_in`` becomes trainable (and part of
    ``trainable_state_dict``), also when it already has ``new_in_channels``, so a resumed run marks
    it the same way. ``trainable="new_channels"``: ``conv_in`` becomes a :class:`ConditionedConvIn`
    whose pre-trained part is frozen; for a STUNet only its new-channel weights train.
    """
    if trainable not in CONV_IN_TRAINING:
        raise ConfigError(f"trainable must be one of {CONV_IN_TRAINING}, got {trainable!r}")
    unet = model.unet if isinstance(model, STUNet) else model
    if not isinstance(unet, UNet2DConditionModel):
        raise ConfigError(f"expand_input_channels needs a STUNet or UNet2DConditionModel, got {type(model).__name__}")
    old_in_channels = unet.conv_in.in_channels
    if new_in_channels < old_in_channels:
        raise ConfigError(f"cannot shrink the input from {old_in_channels} to {new_in_channels} channels")
    if trainable == "new_channels" and new_in_channels == old_in_channels:
        raise ConfigError(f"conv_in already takes {new_in_channels} channels: there are no new channels to train")
    if new_in_channels > old_in_channels:
        unet.conv_in = _expanded_conv(unet.conv_in, new_in_channels)
        unet.register_to_config(in_channels=new_in_channels)  # keep config and layer consistent (save/load)
    if trainable == "new_channels":
        unet.conv_in = ConditionedConvIn(unet.conv_in, old_in_channels)
        unet.conv_in.requires_grad_(False)
        if isinstance(model, STUNet):
            model.mark_unet_module_trainable("conv_in.conditioning")
    elif isinstance(model, STUNet):
        model.mark_unet_module_trainable("conv_in")
    return model
