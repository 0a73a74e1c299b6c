"""Temporal blocks inserted into a frozen text-to-image U-Net (paper Sec. 3.1, Fig. 4, App. B).

Four modules, each a residual addition to the 2D net, or exactly frame striding / duplication, at
initialisation:

- ``TemporalDownsample`` / ``TemporalUpsample``: the temporal resizing modules that follow every
  pre-trained spatial resizing module (Fig. 4a). App. B: a 1D temporal convolution initialised to
  the identity followed by a stride of 2 (down), or frame duplication followed by an
  identity-initialised 1D convolution (up). At initialisation they are exactly temporal striding
  and nearest-neighbour frame duplication; ``init="he"`` gives the standard initialisation of the
  Fig. 12 ablation instead.
- ``FactorizedSpaceTimeConvBlock``: the (2+1)D convolution that follows the pre-trained layers at
  every level but the coarsest (Fig. 4b).
- ``TemporalAttentionBlock``: attention across frames, used at the coarsest level (Fig. 4c).

The two inflation blocks end in a zero-initialised linear projection added to their input, so at
initialisation each is the identity (App. B, "inflation block ... residual structure").

All modules take frame-folded 2D feature maps ``x: ((b t), c, h, w)`` plus ``num_frames = t``, the
layout the pre-trained 2D layers work in, and return the same layout (with ``t`` halved or doubled
for the resampling modules). ``TemporalAttentionBlock`` also takes its own token layout
``((b h w), t, c)`` and returns it, so that consecutive attention blocks convert once
(``lumiere.models.temporal_layout.TemporalStack``); ``frames_to_tokens`` / ``tokens_to_frames``
are the two conversions.

The inflation blocks take one optional ``modulation`` module, applied to their normalised features
with a per-frame embedding. The paper has none (``None``); the CPU demo's extension
(``lumiere.models.temporal_conditioning``) supplies it.

Dimension legend (einops): b batch, t frames, c channels, h height, w width.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from lumiere.errors import ConfigError

RESAMPLING_INITS = ("identity", "he")


def _check_folded(x: torch.Tensor, num_frames: int) -> None:
    if x.ndim != 4 or num_frames < 1 or x.shape[0] % num_frames != 0:
        raise ValueError(f"expected frame-folded features ((b t), c, h, w) with t={num_frames}, got shape {tuple(x.shape)}")


def _check_tokens(x: torch.Tensor, num_frames: int) -> None:
    if x.ndim != 3 or x.shape[1] != num_frames:
        raise ValueError(f"expected temporal tokens ((b h w), t, c) with t={num_frames}, got shape {tuple(x.shape)}")


def frames_to_tokens(x: torch.Tensor, num_frames: int) -> torch.Tensor:
    """((b t), c, h, w) -> ((b h w), t, c): every pixel's frames as a sequence, materialised (one copy).

    Contiguous on purpose: with batch 1 the rearrangement alone is a strided view, and then every
    layer norm and linear layer of every attention block would copy it again inside its kernel."""
    return rearrange(x, "(b t) c h w -> (b h w) t c", t=num_frames).contiguous()


def tokens_to_frames(tokens: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """((b h w), t, c) -> ((b t), c, h, w), the inverse of :func:`frames_to_tokens` (one copy, for the same reason)."""
    return rearrange(tokens, "(b h w) t c -> (b t) c h w", h=height, w=width).contiguous()


def _check_kernel(kernel_size: int) -> None:
    if kernel_size < 1 or kernel_size % 2 == 0:
        raise ConfigError(f"temporal kernel size must be odd and >= 1 (centred 'same' padding), got {kernel_size}")


def _init_temporal_conv(conv: nn.Conv1d, init: str) -> None:
    """Identity (centre tap 1, other taps 0, bias 0; App. B) or He/Kaiming normal (Fig. 12 baseline)."""
    if init not in RESAMPLING_INITS:
        raise ConfigError(f"temporal resampling init must be one of {RESAMPLING_INITS}, got {init!r}")
    with torch.no_grad():
        if init == "identity":
            conv.weight.zero_()
            centre = conv.kernel_size[0] // 2
            conv.weight[:, :, centre] = torch.eye(conv.out_channels, conv.in_channels)
        else:
            nn.init.kaiming_normal_(conv.weight, mode="fan_in", nonlinearity="relu")
        conv.bias.zero_()


def _temporal_conv1d(conv: nn.Conv1d, x: torch.Tensor, num_frames: int, repeat_frames: int = 1) -> torch.Tensor:
    """Apply a Conv1d along time at every pixel: ((b t), c, h, w) -> ((b t'), c', h, w).

    The conv runs as a (k x 1) 2D conv over a (b, c, t, (h w)) view: the same arithmetic as the
    Conv1d, but the layout change keeps runs of h*w contiguous values (a cheap copy) instead of
    transposing every pixel's frames into the innermost dimension.
    ``repeat_frames`` duplicates every frame first (nearest-neighbour temporal upsampling).
    """
    h, w = x.shape[-2:]
    video = rearrange(x, "(b t) c h w -> b c t (h w)", t=num_frames)
    if repeat_frames > 1:
        video = video.repeat_interleave(repeat_frames, dim=2)
    video = F.conv2d(video, conv.weight.unsqueeze(-1), conv.bias, stride=(conv.stride[0], 1), padding=(conv.padding[0], 0))
    return rearrange(video, "b c t (h w) -> (b t) c h w", h=h, w=w)


def _zero_init(layer: nn.Module) -> nn.Module:
    nn.init.zeros_(layer.weight)
    nn.init.zeros_(layer.bias)
    return layer


def _group_norm(channels: int, max_groups: int = 32) -> nn.GroupNorm:
    """GroupNorm with the largest group count <= max_groups that divides the channels."""
    return nn.GroupNorm(math.gcd(channels, max_groups), channels, eps=1e-6)


def _check_modulation(block: nn.Module, emb: torch.Tensor | None) -> None:
    if (block.modulation is None) != (emb is None):
        want = "needs" if block.modulation is not None else "was built without"
        raise ConfigError(f"{type(block).__name__} {want} a conditioning embedding (temporal_conditioning)")


# ----------------------------------------------------------------------------------------------
# Temporal down- and up-sampling (Fig. 4a, App. B)
# ----------------------------------------------------------------------------------------------


class TemporalDownsample(nn.Module):
    """Temporal downsampling of App. B: identity-initialised 1D conv, then keep frames 0, 2, 4, ... (Fig. 4a)."""

    def __init__(self, channels: int, kernel_size: int = 3, init: str = "identity"):
        super().__init__()
        _check_kernel(kernel_size)
        # A stride-2 conv computes the conv's output only at the kept frames: the same result as
        # "conv then stride", without computing the discarded half.
        self.conv = nn.Conv1d(channels, channels, kernel_size, stride=2, padding=kernel_size // 2)
        _init_temporal_conv(self.conv, init)

    def forward(self, x: torch.Tensor, num_frames: int) -> torch.Tensor:
        _check_folded(x, num_frames)
        if num_frames % 2 != 0:
            raise ConfigError(f"temporal downsampling needs an even frame count, got {num_frames}")
        return _temporal_conv1d(self.conv, x, num_frames)


class TemporalUpsample(nn.Module):
    """Temporal upsampling of App. B: frame duplication, then an identity-initialised 1D conv (Fig. 4a)."""

    def __init__(self, channels: int, kernel_size: int = 3, init: str = "identity"):
        super().__init__()
        _check_kernel(kernel_size)
        self.conv = nn.Conv1d(channels, channels, kernel_size, padding=kernel_size // 2)
        _init_temporal_conv(self.conv, init)

    def forward(self, x: torch.Tensor, num_frames: int) -> torch.Tensor:
        _check_folded(x, num_frames)
        return _temporal_conv1d(self.conv, x, num_frames, repeat_frames=2)  # frame i -> frames 2i, 2i+1, then conv


# ----------------------------------------------------------------------------------------------
# Inflation blocks (Fig. 4b, 4c, App. B)
# ----------------------------------------------------------------------------------------------


class FactorizedSpaceTimeConvBlock(nn.Module):
    """(2+1)D factorized space-time convolution with a zero-initialised output projection (Fig. 4b, App. B)."""

    def __init__(self, channels: int, spatial_kernel: int = 3, temporal_kernel: int = 3, modulation: nn.Module | None = None):
        super().__init__()
        _check_kernel(spatial_kernel)
        _check_kernel(temporal_kernel)
        self.spatial_norm = _group_norm(channels)
        self.spatial_conv = nn.Conv2d(channels, channels, spatial_kernel, padding=spatial_kernel // 2)
        self.temporal_norm = _group_norm(channels)
        self.temporal_conv = nn.Conv1d(channels, channels, temporal_kernel, padding=temporal_kernel // 2)
        self.modulation = modulation  # None in the paper
        # The "linear projection" of App. B: a 1x1 map initialised to zero, so the block starts as the
        # identity and the inflated net starts from the pre-trained text-to-image net.
        self.proj_out = _zero_init(nn.Conv2d(channels, channels, 1))

    def forward(self, x: torch.Tensor, num_frames: int, emb: torch.Tensor | None = None) -> torch.Tensor:
        _check_folded(x, num_frames)
        _check_modulation(self, emb)
        h = self.temporal_norm(self.spatial_conv(F.silu(self.spatial_norm(x))))
        if self.modulation is not None:
            h = self.modulation(h, emb)
        h = _temporal_conv1d(self.temporal_conv, F.silu(h), num_frames)
        return x + self.proj_out(h)


def sinusoidal_encoding(positions: torch.Tensor, channels: int, dtype=None) -> torch.Tensor:
    """Sinusoidal encoding of (possibly fractional) positions (n,), shape (n, c) (Vaswani et al.; sin half, cos half)."""
    half = channels // 2
    frequency = torch.exp(-math.log(10_000.0) * torch.arange(half, device=positions.device, dtype=torch.float32) / max(half, 1))
    angles = positions.to(torch.float32)[:, None] * frequency[None]
    encoding = torch.cat([angles.sin(), angles.cos()], dim=1)
    if channels % 2:  # odd width: pad one zero column
        encoding = F.pad(encoding, (0, 1))
    return encoding.to(dtype=dtype or torch.float32)


def frame_position_encoding(num_frames: int, channels: int, device=None, dtype=None) -> torch.Tensor:
    """Sinusoidal encoding of the frame index, shape (t, c)."""
    return sinusoidal_encoding(torch.arange(num_frames, device=device), channels, dtype)


class TemporalAttentionBlock(nn.Module):
    """Self-attention across frames at every pixel with a frame position encoding and zero-initialised output (Fig. 4c, App. B)."""

    def __init__(self, channels: int, num_heads: int = 1, modulation: nn.Module | None = None):
        super().__init__()
        if num_heads < 1 or channels % num_heads != 0:
            raise ConfigError(f"temporal attention: {channels} channels cannot be split into {num_heads} heads")
        self.num_heads = num_heads
        self.norm = nn.LayerNorm(channels)
        self.to_qkv = nn.Linear(channels, 3 * channels)
        self.modulation = modulation  # None in the paper
        self.proj_out = _zero_init(nn.Linear(channels, channels))  # identity block at init

    def forward(self, x: torch.Tensor, num_frames: int, emb: torch.Tensor | None = None) -> torch.Tensor:
        """x: frame-folded ((b t), c, h, w), or tokens ((b h w), t, c) (no modulation); returns x's layout."""
        _check_modulation(self, emb)
        if x.ndim == 3:
            _check_tokens(x, num_frames)
            if self.modulation is not None:  # the modulation reads frame-folded maps: it needs h and w
                raise ValueError("a modulated TemporalAttentionBlock takes frame-folded features ((b t), c, h, w), not tokens")
            return self._attend(x, num_frames)
        _check_folded(x, num_frames)
        h, w = x.shape[-2:]
        return tokens_to_frames(self._attend(frames_to_tokens(x, num_frames), num_frames, emb, (h, w)), h, w)

    def _attend(self, tokens: torch.Tensor, num_frames: int, emb: torch.Tensor | None = None,
                spatial_size: tuple[int, int] | None = None) -> torch.Tensor:
        """The residual attention on tokens ((b h w), t, c); ``spatial_size`` (h, w) only for the modulation."""
        normed = self.norm(tokens)
        if self.modulation is not None:  # the modulation reads frame-folded maps
            frames = tokens_to_frames(normed, *spatial_size)
            normed = frames_to_tokens(self.modulation(frames, emb), num_frames)
        # The position encoding is added after the norm so every frame sees where it sits in the clip
        # (attention alone is permutation-invariant over frames).
        normed = normed + frame_position_encoding(num_frames, normed.shape[-1], normed.device, normed.dtype)
        q, k, v = rearrange(self.to_qkv(normed), "n t (three heads d) -> three n heads t d", three=3, heads=self.num_heads)
        attended = rearrange(F.scaled_dot_product_attention(q, k, v), "n heads t d -> n t (heads d)")
        return tokens + self.proj_out(attended)
