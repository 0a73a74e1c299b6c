"""Stylized generation (paper Sec. 4.1): spatial-weight interpolation and the synthetic styles."""

from __future__ import annotations

import pytest
import torch

from lumiere.apps.stylize import interpolate_spatial_weights, load_style_unet_state_dict
from lumiere.data.style import StyleTransform
from lumiere.errors import ConfigError, InputFileError
from lumiere.models import STUNet, build_unet, save_unet
from lumiere.training.conditional import expand_for_conditioning


@pytest.fixture(scope="module")
def stunet_and_style():
    torch.manual_seed(0)
    stunet = STUNet(build_unet("if_stage1_tiny"), num_temporal_attention_layers=1, temporal_attention_head_dim=16)
    with torch.no_grad():  # non-zero temporal weights, so "untouched" is a real check
        for _, param in stunet.trainable_named_parameters():
            param.add_(torch.randn_like(param) * 0.01)
    style_unet = build_unet("if_stage1_tiny")
    with torch.no_grad():
        for (_, style_param), (_, param) in zip(style_unet.named_parameters(), stunet.unet.named_parameters()):
            style_param.copy_(param + torch.randn_like(param) * 0.1)  # a "fine-tuned" copy
    return stunet, style_unet.state_dict()


def temporal_state(stunet):
    return {k: v.clone() for k, v in stunet.state_dict().items() if not k.startswith("unet.")}


def test_alpha_zero_gives_the_original_weights_exactly(stunet_and_style):
    stunet, style = stunet_and_style
    result = interpolate_spatial_weights(stunet, style, 0.0).state_dict()
    for name, value in stunet.state_dict().items():
        assert torch.equal(result[name], value), name


def test_alpha_one_gives_the_style_weights_exactly_and_leaves_temporal_weights(stunet_and_style):
    stunet, style = stunet_and_style
    result = interpolate_spatial_weights(stunet, style, 1.0)
    spatial = result.unet.state_dict()
    for name, value in style.items():
        assert torch.equal(spatial[name], value), name
    everything = result.state_dict()
    for name, value in temporal_state(stunet).items():
        assert torch.equal(everything[name], value), name


def test_interpolation_is_linear_and_does_not_modify_the_input_model(stunet_and_style):
    stunet, style = stunet_and_style
    before = {k: v.clone() for k, v in stunet.unet.state_dict().items()}
    result = interpolate_spatial_weights(stunet, style, 0.7)
    after = stunet.unet.state_dict()
    for name, value in result.unet.state_dict().items():
        assert torch.allclose(value, 0.7 * style[name] + 0.3 * before[name], atol=1e-6), name
        assert torch.equal(after[name], before[name])


def test_a_conditional_model_interpolates_rgb_input_weights_and_keeps_the_conditioning_ones(stunet_and_style):
    stunet, style = stunet_and_style
    import copy

    for mode in ("new_channels", "all"):
        conditional = expand_for_conditioning(copy.deepcopy(stunet), mode)
        with torch.no_grad():
            weights = conditional.unet.conv_in.conditioning.weight if mode == "new_channels" \
                else conditional.unet.conv_in.weight[:, 3:]
            weights.normal_()
            extra_before = weights.clone()
        result = interpolate_spatial_weights(conditional, style, 1.0)
        conv_in = result.unet.conv_in
        rgb = conv_in.weight.detach()[:, :3]
        extra = (conv_in.conditioning.weight if mode == "new_channels" else conv_in.weight[:, 3:]).detach()
        assert torch.equal(rgb, style["conv_in.weight"])
        assert torch.equal(extra, extra_before)


def test_bad_alpha_and_foreign_style_weights_are_rejected(stunet_and_style):
    stunet, style = stunet_and_style
    for alpha in (-0.1, 1.5):
        with pytest.raises(ConfigError, match="alpha"):
            interpolate_spatial_weights(stunet, style, alpha)
    foreign = build_unet("sd_tiny").state_dict()
    with pytest.raises(ConfigError, match="same T2I model"):
        interpolate_spatial_weights(stunet, foreign, 0.5)


def test_style_weights_load_from_an_export_folder(tmp_path, stunet_and_style):
    _, style = stunet_and_style
    unet = build_unet("if_stage1_tiny")
    unet.load_state_dict(style)
    save_unet(unet, tmp_path / "style" / "unet")
    loaded = load_style_unet_state_dict(str(tmp_path / "style"))
    assert all(torch.equal(loaded[k], v) for k, v in style.items())
    with pytest.raises(InputFileError, match="not found"):
        load_style_unet_state_dict(str(tmp_path / "missing"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputFileError, match="no diffusers U-Net weights"):
        load_style_unet_state_dict(str(tmp_path / "empty"))


@pytest.mark.parametrize("kind", ["palette", "posterize", "sketch"])
def test_styles_are_deterministic_per_frame_and_stay_in_range(kind):
    style = StyleTransform(kind)
    video = torch.rand(2, 3, 4, 8, 8) * 2 - 1
    styled = style(video)
    assert styled.shape == video.shape and styled.min() >= -1 and styled.max() <= 1
    assert torch.equal(styled, style(video))
    # Per frame: styling frame 2 alone gives frame 2 of the styled clip (no motion is created).
    assert torch.allclose(style(video[:, :, 2]), styled[:, :, 2])
    assert not torch.allclose(styled, video, atol=0.05)


def test_palette_style_uses_only_the_palette_levels():
    style = StyleTransform("palette", levels=4)
    styled = style(torch.rand(1, 3, 2, 16, 16) * 2 - 1)
    colours = {tuple(round(c, 4) for c in pixel) for pixel in styled.permute(0, 2, 3, 4, 1).reshape(-1, 3).tolist()}
    assert len(colours) <= 4
