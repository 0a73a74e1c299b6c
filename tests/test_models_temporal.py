"""Temporal blocks of the STUNet (Fig. 4, App. B): initialisation behaviour and frame awareness."""

from __future__ import annotations

import pytest
import torch
from einops import rearrange

from lumiere.errors import ConfigError
from lumiere.models import FactorizedSpaceTimeConvBlock, TemporalAttentionBlock, TemporalDownsample, TemporalUpsample

B, C, T, H, W = 2, 8, 6, 5, 4


@pytest.fixture
def video():
    return torch.randn(B, C, T, H, W, generator=torch.Generator().manual_seed(0))


def _fold(video):
    return rearrange(video, "b c t h w -> (b t) c h w")


def _unfold(x, b=B):
    return rearrange(x, "(b t) c h w -> b c t h w", b=b)


@pytest.mark.parametrize("kernel_size", [1, 3, 5])
def test_identity_initialised_downsample_is_exactly_frame_striding(video, kernel_size):
    down = TemporalDownsample(C, kernel_size=kernel_size)
    out = _unfold(down(_fold(video), T))
    assert out.shape == (B, C, T // 2, H, W)
    assert torch.equal(out, video[:, :, ::2])


@pytest.mark.parametrize("kernel_size", [1, 3, 5])
def test_identity_initialised_upsample_is_exactly_frame_duplication(video, kernel_size):
    up = TemporalUpsample(C, kernel_size=kernel_size)
    out = _unfold(up(_fold(video), T))
    assert out.shape == (B, C, 2 * T, H, W)
    assert torch.equal(out, video.repeat_interleave(2, dim=2))


def test_he_initialised_resampling_mixes_frames(video):
    torch.manual_seed(0)
    down, up = TemporalDownsample(C, init="he"), TemporalUpsample(C, init="he")
    assert not torch.allclose(_unfold(down(_fold(video), T)), video[:, :, ::2], atol=1e-3)
    assert not torch.allclose(_unfold(up(_fold(video), T)), video.repeat_interleave(2, dim=2), atol=1e-3)
    with pytest.raises(ConfigError, match="init"):
        TemporalDownsample(C, init="xavier")


def test_downsample_rejects_odd_frame_count(video):
    with pytest.raises(ConfigError, match="even"):
        TemporalDownsample(C)(_fold(video[:, :, :5]), 5)


@pytest.mark.parametrize("block", [FactorizedSpaceTimeConvBlock(C), TemporalAttentionBlock(C, num_heads=2)], ids=["conv", "attention"])
def test_inflation_blocks_are_identity_at_init(video, block):
    x = _fold(video)
    assert torch.equal(block(x, T), x)


def _with_random_projection(block, seed=0):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        block.proj_out.weight.copy_(0.3 * torch.randn(block.proj_out.weight.shape, generator=g))
    return block


def test_factorized_conv_block_mixes_neighbouring_frames_only(video):
    block = _with_random_projection(FactorizedSpaceTimeConvBlock(C, temporal_kernel=3))
    changed = video.clone()
    # perturb frame 0 (not by a constant, which the per-frame GroupNorm would remove):
    # a 3-tap temporal conv carries the change to frame 1, not to frame 2
    changed[:, :, 0] += torch.randn(B, C, H, W, generator=torch.Generator().manual_seed(1))
    # GroupNorm statistics are per frame, so frames beyond the kernel's reach see no change at all.
    delta = _unfold(block(_fold(changed), T)) - _unfold(block(_fold(video), T))
    assert delta[:, :, 1].abs().max() > 1e-4
    assert torch.allclose(delta[:, :, 2:], torch.zeros_like(delta[:, :, 2:]), atol=1e-6)


def test_temporal_attention_knows_frame_order(video):
    """With the frame position encoding, reversing the frames does not just reverse the output."""
    torch.manual_seed(0)
    block = _with_random_projection(TemporalAttentionBlock(C, num_heads=2))
    forward = _unfold(block(_fold(video), T))
    reversed_in = _unfold(block(_fold(video.flip(2)), T))
    assert (reversed_in.flip(2) - forward).abs().max() > 1e-4
    # ... and every frame attends to the others: changing frame 0 changes the last frame's output.
    changed = video.clone()
    changed[:, :, 0] += torch.randn(B, C, H, W, generator=torch.Generator().manual_seed(1))
    assert (_unfold(block(_fold(changed), T))[:, :, -1] - forward[:, :, -1]).abs().max() > 1e-5


def test_temporal_attention_rejects_bad_head_count():
    with pytest.raises(ConfigError, match="heads"):
        TemporalAttentionBlock(6, num_heads=4)
