"""Temporal blocks inserted into a frozen text-to-image U-Net (paper Sec. 3.1, Fig. 4, App. B).

Four modules, each a residual (or nearest-neighbour at initialisation) addition to the 2D net:

- ``TemporalDownsample`` / ``TemporalUpsample``: the temporal resizing modules that follow every
  pre-trained spatial resizing module (Fig. 4a). App. B: a 1D temporal convolution initialised to
  the identity followed by a stride of 2 (down), or frame duplication followed by an
  identity-initialised 1D convolution (up). At initialisation they are exactly temporal striding
  and nearest-neighbour frame duplication; ``init="he"`` gives the standard initialisation of the
  Fig. 12 ablation instead.
- ``FactorizedSpaceTimeConvBlock``: the (2+1)D convolution that follows the pre-trained layers at
  every level but the coarsest (Fig. 4b).
- ``TemporalAttentionBlock``: attention across frames, used at the coarsest level (Fig. 4c).

The two inflation blocks end in a zero-initialised linear projection added to their input, so
at initialisation each is the identity (App. B, "inflation block ... residual structure").
Optionally (``emb_dim``) they also read a per-frame conditioning embedding (the U-Net's time
embedding plus a trainable pooling of the caption, ``PooledTextEmbedding``) as a scale and shift
of their normalised features, the way diffusion ResNet blocks do. The paper does not say its
temporal blocks see the caption; the option exists because a small frozen T2I passes little of a
caption's motion words to its features (see ``STUNet(temporal_conditioning=...)``).

All modules take frame-folded 2D feature maps ``x: ((b t), c, h, w)`` plus ``num_frames = t``, the
layout the pre-trained 2D layers work in, and return the same layout (with ``t`` halved or
doubled for the resampling modules).

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
        raise ValueError(
            f"expected frame-folded features ((b t), c, h, w) with t={num_frames}, got shape {tuple(x.shape)}"
        )


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


def _check_kernel(kernel_size: int) -> None:
    if kernel_size < 1 or kernel_size % 2 == 0:
        raise ConfigError(f"temporal kernel size must be odd and >= 1 (centred 'same' padding), got {kernel_size}")


def _temporal_conv1d(conv: nn.Conv1d, x: torch.Tensor, num_frames: int, repeat_frames: int = 1) -> torch.Tensor:
    """Apply a Conv1d along time at every pixel: ((b t), c, h, w) -> ((b t'), c', h, w).

    The conv runs as a (k x 1) 2D conv over a (b, c, t, (h w)) view: the same arithmetic as the
    Conv1d, but the layout change keeps runs of h*w contiguous values (a cheap copy) instead of
    transposing every pixel's frames into the innermost dimension (about 1.8x faster on CPU).
    ``repeat_frames`` duplicates every frame first (nearest-neighbour temporal upsampling).
    """
    h, w = x.shape[-2:]
    video = rearrange(x, "(b t) c h w -> b c t (h w)", t=num_frames)
    if repeat_frames > 1:
        video = video.repeat_interleave(repeat_frames, dim=2)
    video = F.conv2d(
        video,
        conv.weight.unsqueeze(-1),
        conv.bias,
        stride=(conv.stride[0], 1),
        padding=(conv.padding[0], 0),
    )
    return rearrange(video, "b c t (h w) -> (b t) c h w", h=h, w=w)


class TemporalDownsample(nn.Module):
    """Temporal downsampling of App. B: identity-initialised 1D conv, then keep frames 0, 2, 4, ... (Fig. 4a)."""

    def __init__(self, channels: int, kernel_size: int = 3, init: str = "identity"):
        super().__init__()
        _check_kernel(kernel_size)
        # A stride-2 conv computes the conv's output only at the kept frames: same result as
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


def _group_norm(channels: int, max_groups: int = 32) -> nn.GroupNorm:
    """GroupNorm with the largest group count <= max_groups that divides the channels."""
    groups = math.gcd(channels, max_groups)
    return nn.GroupNorm(groups, channels, eps=1e-6)


class FactorizedSpaceTimeConvBlock(nn.Module):
    """(2+1)D factorized space-time convolution with a zero-initialised output projection (Fig. 4b, App. B)."""

    def __init__(
        self, channels: int, spatial_kernel: int = 3, temporal_kernel: int = 3, emb_dim: int | None = None, layout_frequencies: int = 0
    ):
        super().__init__()
        _check_kernel(spatial_kernel)
        _check_kernel(temporal_kernel)
        self.spatial_norm = _group_norm(channels)
        self.spatial_conv = nn.Conv2d(channels, channels, spatial_kernel, padding=spatial_kernel // 2)
        self.temporal_norm = _group_norm(channels)
        self.temporal_conv = nn.Conv1d(channels, channels, temporal_kernel, padding=temporal_kernel // 2)
        self.emb_modulation = EmbeddingModulation(emb_dim, channels) if emb_dim else None
        self.layout_shift = _layout_shift(emb_dim, channels, layout_frequencies)
        # The "linear projection" of App. B: a 1x1 map initialised to zero, so the block starts as
        # the identity and the inflated net starts from the pre-trained text-to-image net.
        self.proj_out = nn.Conv2d(channels, channels, 1)
        nn.init.zeros_(self.proj_out.weight)
        nn.init.zeros_(self.proj_out.bias)

    def forward(self, x: torch.Tensor, num_frames: int, emb: torch.Tensor | None = None) -> torch.Tensor:
        _check_folded(x, num_frames)
        _check_emb(self, emb, x)
        h = self.spatial_conv(F.silu(self.spatial_norm(x)))
        h = self.temporal_norm(h)
        if emb is not None:
            h = self.emb_modulation(h, emb)
            if self.layout_shift is not None:
                h = h + self.layout_shift(emb, *h.shape[-2:])
        h = _temporal_conv1d(self.temporal_conv, F.silu(h), num_frames)
        return x + self.proj_out(h)


class EmbeddingModulation(nn.Module):
    """Scale and shift of normalised features from the conditioning embedding (FiLM, as in the U-Net's ResNets)."""

    def __init__(self, emb_dim: int, channels: int):
        super().__init__()
        self.proj = nn.Linear(emb_dim, 2 * channels)

    def forward(self, h: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        """h: ((b t), c, ...) or ((b t), ..., c) with ``channels_last``; emb: ((b t), emb_dim)."""
        scale, shift = self.proj(F.silu(emb)).chunk(2, dim=-1)
        if h.ndim == 4:  # ((b t), c, h, w)
            scale, shift = scale[..., None, None], shift[..., None, None]
        return h * (1 + scale) + shift


class SpatialLayoutShift(nn.Module):
    """A per-frame spatial map from the conditioning embedding, added to the normalised features (not in the paper).

    FiLM (``EmbeddingModulation``) gives every pixel of a frame the same scale and shift, so on its own
    the caption can change *what* a temporal block does but not *where*: the place of a "moving right"
    object in frame f has to come from the frozen 2D features, which at high noise say little. This
    module writes a smooth layout instead: the map is a sum of the ``frequencies`` x ``frequencies``
    lowest 2D cosines (a DCT-II basis over the feature map, so the same layout at every resolution),
    with coefficients per channel read linearly from the embedding (caption, diffusion time and, with
    ``FrameTimeEmbedding``, the frame's time in the clip). Its projection starts at zero: no shift."""

    def __init__(self, emb_dim: int, channels: int, frequencies: int = 4):
        super().__init__()
        if frequencies < 1:
            raise ConfigError(f"temporal layout needs at least 1 frequency per axis, got {frequencies}")
        self.channels = channels
        self.frequencies = frequencies
        self.proj = nn.Linear(emb_dim, channels * frequencies * frequencies)
        nn.init.zeros_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)

    def basis(self, height: int, width: int, device=None, dtype=None) -> torch.Tensor:
        """(k, h, w), k = frequencies^2: cos(pi u (y + 1/2) / h) cos(pi v (x + 1/2) / w) for u, v < frequencies."""
        f = torch.arange(self.frequencies, device=device, dtype=torch.float32)
        rows = torch.cos(math.pi * f[:, None] * (torch.arange(height, device=device) + 0.5)[None] / height)  # (f, h)
        cols = torch.cos(math.pi * f[:, None] * (torch.arange(width, device=device) + 0.5)[None] / width)  # (f, w)
        return torch.einsum("uh,vw->uvhw", rows, cols).reshape(-1, height, width).to(dtype=dtype)

    def forward(self, emb: torch.Tensor, height: int, width: int) -> torch.Tensor:
        """emb: ((b t), emb_dim) -> the shift map ((b t), c, h, w)."""
        coefficients = self.proj(F.silu(emb)).view(emb.shape[0], self.channels, -1)  # (n, c, k)
        return torch.einsum("nck,khw->nchw", coefficients, self.basis(height, width, emb.device, coefficients.dtype))


class PooledTextEmbedding(nn.Module):
    """The caption for the temporal blocks: a pooling of the text states, then an MLP to the embedding width.

    A trainable path of its own, because the frozen T2I's pooled text was trained on still images
    and need not keep the words that only motion shows ("moving left"). ``pooling="mean"``: the
    masked mean of the (normalised) states. ``pooling="attention"``: a softmax-weighted mean whose
    weights a learned query sets from the states, so one word (the direction) can outweigh the
    other fifty bytes of the caption; its query starts at zero, where the weights are uniform and
    the pooling equals the mean. ``pooling="positional"``: the mean's MLP plus a linear map of the
    whole token sequence (padded or cut to ``num_tokens``; padding reads as zeros), so a word that
    changes a few tokens changes the embedding about as much as it changes those tokens. Averaging
    over all tokens shrinks such a word to a few percent of the embedding (a direction word: 6%
    after mean pooling, measured in the README), too little for the temporal blocks to learn from.
    ``pooling="whitened"``: the masked mean of the (unscaled) normalised states, whitened over the
    training captions (BERT-whitening, Su et al. 2021): minus their mean, times the inverse square
    root of their covariance (:meth:`fit_whitening`, before training). Every way in which the
    training captions differ then reaches the MLP at about unit scale, however little the text
    encoder separates it: in the demo's captions the direction word accounts for 1.6% of the mean
    pooling's variance and colour for 85% (README)."""

    POOLINGS = ("mean", "attention", "positional", "whitened")
    # Ridge added to the covariance's eigenvalues, relative to the largest: caps the gain of directions
    # in which the training captions hardly vary (a templated caption set spans only a few dimensions).
    WHITENING_RIDGE = 1e-3

    def __init__(self, text_dim: int, emb_dim: int, pooling: str = "mean", num_tokens: int = 112):
        super().__init__()
        if pooling not in self.POOLINGS:
            raise ConfigError(f"temporal text pooling must be one of {self.POOLINGS}, got {pooling!r}")
        if pooling == "positional" and num_tokens < 1:
            raise ConfigError(f"positional text pooling needs num_tokens >= 1, got {num_tokens}")
        self.pooling = pooling
        self.num_tokens = num_tokens
        self.norm = nn.LayerNorm(text_dim) if pooling != "whitened" else None
        if pooling == "attention":
            self.key = nn.Linear(text_dim, text_dim, bias=False)
            self.query = nn.Parameter(torch.zeros(text_dim))
        if pooling == "positional":
            self.sequence = nn.Linear(num_tokens * text_dim, emb_dim)
        if pooling == "whitened":  # identity until fitted; saved with the module's state
            self.register_buffer("whitening_mean", torch.zeros(text_dim))
            self.register_buffer("whitening_matrix", torch.eye(text_dim))
            self.register_buffer("whitening_fitted", torch.tensor(False))
        self.mlp = nn.Sequential(nn.Linear(text_dim, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))

    @staticmethod
    def _masked_mean(states: torch.Tensor, mask: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        weights = torch.ones_like(states[..., :1]) if mask is None else mask.to(states.dtype).unsqueeze(-1)
        masked = states * weights  # padding tokens read as zeros
        return masked.sum(dim=1) / weights.sum(dim=1).clamp(min=1.0), masked


    @property
    def needs_whitening(self) -> bool:
        return self.pooling == "whitened" and not bool(self.whitening_fitted)

    def pooled_for_whitening(self, text: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """(n, l, d) text states -> the (n, d) float32 vectors the whitening is fitted on and applied to.
        No learned affine here: the whitening is fitted once, on these exact values."""
        return self._masked_mean(F.layer_norm(text.float(), text.shape[-1:]), mask)[0]

    @torch.no_grad()
    def fit_whitening(self, text: torch.Tensor, mask: torch.Tensor | None = None) -> dict[str, float]:
        """Fit the whitening on the text states (n, l, d) of n training captions; returns the
        eigenvalue spectrum's summary (for the log)."""
        return self.fit_whitening_pooled(self.pooled_for_whitening(text, mask))

    @torch.no_grad()
    def fit_whitening_pooled(self, pooled: torch.Tensor) -> dict[str, float]:
        """Fit the whitening on (n, d) vectors from :meth:`pooled_for_whitening` (pool captions in
        chunks to fit on many without holding all their token states)."""
        if self.pooling != "whitened":
            raise ConfigError(f"fit_whitening needs pooling='whitened', this pooling is {self.pooling!r}")
        pooled = pooled.double()
        if pooled.shape[0] < 2:
            raise ConfigError(f"whitening the caption needs at least 2 training captions, got {pooled.shape[0]}")
        mean = pooled.mean(dim=0)
        centred = pooled - mean
        covariance = centred.T @ centred / (pooled.shape[0] - 1)
        eigenvalues, eigenvectors = torch.linalg.eigh(covariance)
        eigenvalues = eigenvalues.clamp(min=0.0)
        ridge = self.WHITENING_RIDGE * float(eigenvalues.max()) + 1e-12
        matrix = eigenvectors @ torch.diag((eigenvalues + ridge).rsqrt()) @ eigenvectors.T
        self.whitening_mean.copy_(mean.to(self.whitening_mean))
        self.whitening_matrix.copy_(matrix.to(self.whitening_matrix))
        self.whitening_fitted.fill_(True)
        return {"captions": float(pooled.shape[0]), "top_eigenvalue": float(eigenvalues.max()),
                "dims_above_ridge": float((eigenvalues > ridge).sum())}

    def forward(self, text: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """text: (b, l, d) states, mask: (b, l) True for real tokens -> (b, emb_dim)."""
        if self.pooling == "whitened":
            # In float32 whatever the precision: under bf16 autocast the matmul rounds away much of
            # the directions the whitening amplifies, and a half-precision copy of the module would
            # otherwise mix dtypes here.
            with torch.autocast(text.device.type, enabled=False):
                pooled = self.pooled_for_whitening(text, mask)
                whitened = (pooled - self.whitening_mean.float()) @ self.whitening_matrix.float()
            return self.mlp(whitened.to(self.mlp[0].weight.dtype))
        states = self.norm(text)
        if self.pooling in ("mean", "positional"):
            mean, masked = self._masked_mean(states, mask)
            pooled = self.mlp(mean)
            if self.pooling == "mean":
                return pooled
            sequence = masked[:, : self.num_tokens]
            sequence = F.pad(sequence, (0, 0, 0, self.num_tokens - sequence.shape[1]))  # (b, num_tokens, d)
            return pooled + self.sequence(sequence.flatten(1))
        scores = self.key(states) @ self.query / math.sqrt(states.shape[-1])  # (b, l)
        if mask is not None:
            scores = scores.masked_fill(~mask.bool(), float("-inf"))
        weights = torch.softmax(scores, dim=1).nan_to_num(0.0)  # a caption with no tokens pools to 0
        return self.mlp(torch.einsum("bl,bld->bd", weights, states))


def _layout_shift(emb_dim: int | None, channels: int, frequencies: int) -> SpatialLayoutShift | None:
    if not frequencies:
        return None
    if not emb_dim:
        raise ConfigError("a temporal layout shift is read from the conditioning embedding: it needs temporal_conditioning")
    return SpatialLayoutShift(emb_dim, channels, frequencies)


def _check_emb(module: nn.Module, emb: torch.Tensor | None, x: torch.Tensor) -> None:
    if (module.emb_modulation is None) != (emb is None):
        want = "needs" if module.emb_modulation is not None else "was built without"
        raise ConfigError(f"{type(module).__name__} {want} a conditioning embedding (temporal_conditioning)")
    if emb is not None and emb.shape[0] != x.shape[0]:
        raise ValueError(f"embedding for {emb.shape[0]} frames, features for {x.shape[0]}")


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


class FrameTimeEmbedding(nn.Module):
    """Where each frame of the current level sits in the clip, as an embedding added to the temporal blocks' conditioning.

    With temporal downsampling a level's frame i stands for input frames [i s, (i + 1) s) (s = T / t);
    it is encoded at their centre, in input-frame units, so every level agrees on what "frame 6 of
    the clip" means. Summed with the time and caption embeddings before the blocks' SiLU + linear
    scale/shift, it lets a block's modulation depend on (caption, frame) jointly, e.g. "moving right"
    and early in the clip: the object is on the left. A sum gives that joint dependence only through
    the one SiLU; ``STUNet(temporal_caption_frame_product=True)`` also adds caption * frame embedding."""

    def __init__(self, emb_dim: int):
        super().__init__()
        self.emb_dim = emb_dim
        self.mlp = nn.Sequential(nn.Linear(emb_dim, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))

    def forward(self, num_frames: int, clip_frames: int, device=None, dtype=None) -> torch.Tensor:
        """-> (num_frames, emb_dim) for a level with ``num_frames`` of the clip's ``clip_frames``."""
        stride = clip_frames / num_frames
        centres = torch.arange(num_frames, device=device, dtype=torch.float32) * stride + (stride - 1) / 2
        weight = self.mlp[0].weight
        return self.mlp(sinusoidal_encoding(centres, self.emb_dim, dtype=weight.dtype)).to(dtype or weight.dtype)


class TemporalAttentionBlock(nn.Module):
    """Self-attention across frames at every pixel with a frame position encoding and zero-initialised output (Fig. 4c, App. B)."""

    def __init__(self, channels: int, num_heads: int = 1, emb_dim: int | None = None, layout_frequencies: int = 0):
        super().__init__()
        if num_heads < 1 or channels % num_heads != 0:
            raise ConfigError(f"temporal attention: {channels} channels cannot be split into {num_heads} heads")
        self.num_heads = num_heads
        self.norm = nn.LayerNorm(channels)
        self.to_qkv = nn.Linear(channels, 3 * channels)
        self.emb_modulation = EmbeddingModulation(emb_dim, channels) if emb_dim else None
        self.layout_shift = _layout_shift(emb_dim, channels, layout_frequencies)
        self.proj_out = nn.Linear(channels, channels)  # zero-initialised: identity block at init
        nn.init.zeros_(self.proj_out.weight)
        nn.init.zeros_(self.proj_out.bias)

    def forward(self, x: torch.Tensor, num_frames: int, emb: torch.Tensor | None = None) -> torch.Tensor:
        _check_folded(x, num_frames)
        _check_emb(self, emb, x)
        h, w = x.shape[-2:]
        tokens = rearrange(x, "(b t) c h w -> (b h w) t c", t=num_frames)
        # The position encoding is added after the norm so every frame sees where it sits in the clip
        # (attention alone is permutation-invariant over frames).
        normed = self.norm(tokens)
        if emb is not None:  # ((b t), d) -> (b h w) t d: every pixel of a frame gets its frame's embedding
            per_token = rearrange(emb, "(b t) d -> b t d", t=num_frames).repeat_interleave(h * w, dim=0)
            normed = self.emb_modulation(normed, per_token)
            if self.layout_shift is not None:
                normed = normed + rearrange(self.layout_shift(emb, h, w), "(b t) c h w -> (b h w) t c", t=num_frames)
        normed = normed + frame_position_encoding(num_frames, normed.shape[-1], normed.device, normed.dtype)
        q, k, v = rearrange(self.to_qkv(normed), "n t (three heads d) -> three n heads t d", three=3, heads=self.num_heads)
        attended = F.scaled_dot_product_attention(q, k, v)
        attended = rearrange(attended, "n heads t d -> n t (heads d)")
        tokens = tokens + self.proj_out(attended)
        return rearrange(tokens, "(b h w) t c -> (b t) c h w", h=h, w=w)
