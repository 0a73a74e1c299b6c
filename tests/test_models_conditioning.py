"""Channel expansion for conditional generation (Sec. 4.2): 3 -> 7 input channels, unchanged at init."""

from __future__ import annotations

import pytest
import torch

from lumiere.errors import ConfigError
from lumiere.models import STUNet, build_unet, expand_input_channels
from lumiere.models.t2i import unet_text_dim


def _inputs(unet, frames=8, size=16):
    g = torch.Generator().manual_seed(0)
    video = torch.randn(2, 3, frames, size, size, generator=g)
    text = torch.randn(2, 5, unet_text_dim(unet), generator=g)
    extra = torch.randn(2, 4, frames, size, size, generator=g)  # <C, M>: any values
    return video, torch.tensor([5, 900]), text, extra


def test_expanded_stunet_at_init_equals_the_unconditional_model_for_any_extra_channels():
    torch.manual_seed(0)
    model = STUNet(build_unet("if_stage1_tiny"))
    video, timestep, text, extra = _inputs(model.unet)
    with torch.no_grad():
        unconditional = model(video, timestep, text)
    expand_input_channels(model, 7)
    assert model.unet.conv_in.in_channels == 7 and model.unet.config.in_channels == 7 and model.in_channels == 7
    with torch.no_grad():
        conditional = model(torch.cat([video, extra], dim=1), timestep, text)
        other_extra = model(torch.cat([video, 3 * extra.flip(2)], dim=1), timestep, text)
    assert (conditional - unconditional).abs().max() <= 1e-5
    assert (other_extra - unconditional).abs().max() <= 1e-5
    with pytest.raises(ConfigError, match="7 input channels"):
        model(video, timestep, text)


def test_expanded_conv_in_trains_and_is_saved_with_the_temporal_weights():
    model = expand_input_channels(STUNet(build_unet("if_stage1_tiny")), 7)
    state = model.trainable_state_dict()
    assert {"unet.conv_in.weight", "unet.conv_in.bias"} <= set(state)
    assert state["unet.conv_in.weight"].shape[1] == 7
    assert not any(k.startswith("unet.") and not k.startswith("unet.conv_in.") for k in state)
    video, timestep, text, extra = _inputs(model.unet)
    model(torch.cat([video, extra], dim=1), timestep, text).square().mean().backward()
    assert model.unet.conv_in.weight.grad[:, 3:].abs().sum() > 0  # the new input weights learn
    assert all(p.grad is None for n, p in model.unet.named_parameters() if not n.startswith("conv_in."))


def test_expanded_2d_unet_equals_original_and_shrinking_is_refused():
    torch.manual_seed(0)
    unet = build_unet("sd_tiny")
    x = torch.randn(2, 3, 16, 16)
    text = torch.randn(2, 5, unet_text_dim(unet))
    with torch.no_grad():
        before = unet(x, 10, text).sample
        expand_input_channels(unet, 7)
        after = unet(torch.cat([x, torch.randn(2, 4, 16, 16)], dim=1), 10, text).sample
    assert unet.config.in_channels == 7
    assert (after - before).abs().max() <= 1e-5
    with pytest.raises(ConfigError, match="shrink"):
        expand_input_channels(unet, 3)
