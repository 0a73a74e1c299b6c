"""Caption and frame conditioning for the temporal blocks: the CPU demo's one extension (not in the paper).

What it is. ``TemporalConditioning`` gives every temporal block of the STUNet a per-frame embedding,
read as a scale and shift of the block's normalised features (FiLM, the way diffusion ResNets read
the time step), and optionally as a smooth spatial map. The embedding is the U-Net's time embedding
plus a trainable pooling of the caption's text states; optionally plus an embedding of each frame's
time in the clip, and the product of the two. One module, passed to ``STUNet`` as
``temporal_conditioning`` (a factory taking the U-Net's widths; ``None`` is the paper):

- ``pooling``: ``"mean"``, the masked mean of the (layer-normalised) text states; or ``"whitened"``,
  that mean whitened over the training captions (BERT-whitening, Su et al. 2021: minus their mean,
  times the inverse square root of their covariance), fitted once before the first training step
  (:meth:`TemporalConditioning.fit_on_captions`) and saved with the checkpoint, so that a word in
  which the captions rarely differ reaches the blocks at the scale of the others;
- ``frame_embedding``: where each frame of a level sits in the clip, so the modulation can depend on
  caption and frame jointly ("moving right", early in the clip: on the left);
- ``caption_frame_product``: also the elementwise product caption x frame embedding, that joint
  dependence as one feature;
- ``layout_frequencies`` (k > 0): the embedding also writes a smooth k x k-cosine spatial map, so it
  can say *where* as well as *what* (FiLM alone shifts every pixel of a frame alike).

Every path ends in a zero-initialised projection inside the blocks' modulation, and each block is
still residual with a zero-initialised output, so App. B's equalities at initialisation hold with
this module too.

Why the paper does not need it. In Lumiere the temporal blocks sit inside a large T2I U-Net whose
spatial features already carry the caption through its cross-attention. The CPU demo inflates a
tiny T2I trained for minutes on still frames: its features carry the caption's colour and shape but
almost nothing of a motion word ("moving left"), which a still image cannot show, so its temporal
blocks had no way to learn the prompted direction. What each part of this module changed is
measured in docs/experiments.md ("What limits prompt-following at toy scale", "What each option measured").

Dimension legend (einops): b batch, t frames (at the current level), c channels, h height,
w width, l text tokens, d width.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from lumiere.errors import ConfigError
from lumiere.models.temporal import sinusoidal_encoding

log = logging.getLogger(__name__)

POOLINGS = ("mean", "whitened")


class CaptionPooling(nn.Module):
    """The caption for the temporal blocks: a masked mean of the text states, then an MLP to the embedding width.

    A trainable path of its own, because the frozen T2I's pooled text was trained on still images and
    need not keep the words that only motion shows. With ``pooling="whitened"`` the mean of the
    unscaled normalised states is whitened over the training captions before the MLP (fitted by
    :meth:`fit_whitening`; the identity until then)."""

    # Ridge added to the covariance's eigenvalues, relative to the largest: caps the gain of directions
    # in which the training captions hardly vary (a templated caption set spans only a few dimensions).
    WHITENING_RIDGE = 1e-3

    def __init__(self, text_dim: int, emb_dim: int, pooling: str = "mean"):
        super().__init__()
        if pooling not in POOLINGS:
            raise ConfigError(f"temporal_conditioning pooling must be one of {POOLINGS}, got {pooling!r}")
        self.pooling = pooling
        self.norm = nn.LayerNorm(text_dim) if pooling == "mean" else None
        if pooling == "whitened":  # identity until fitted; saved with the module's state
            self.register_buffer("whitening_mean", torch.zeros(text_dim))
            self.register_buffer("whitening_matrix", torch.eye(text_dim))
            self.register_buffer("whitening_fitted", torch.tensor(False))
        self.mlp = nn.Sequential(nn.Linear(text_dim, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))

    @staticmethod
    def _masked_mean(states: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        weights = torch.ones_like(states[..., :1]) if mask is None else mask.to(states.dtype).unsqueeze(-1)
        return (states * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1.0)  # padding tokens read as zeros

    @property
    def needs_whitening(self) -> bool:
        return self.pooling == "whitened" and not bool(self.whitening_fitted)

    def pooled_for_whitening(self, text: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """(n, l, d) text states -> the (n, d) float32 vectors the whitening is fitted on and applied to.
        No learned affine here: the whitening is fitted once, on these exact values."""
        return self._masked_mean(F.layer_norm(text.float(), text.shape[-1:]), mask)

    @torch.no_grad()
    def fit_whitening(self, pooled: torch.Tensor) -> dict[str, float]:
        """Fit the whitening on (n, d) vectors from :meth:`pooled_for_whitening`; returns the spectrum's summary."""
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
        if self.pooling == "mean":
            return self.mlp(self._masked_mean(self.norm(text), mask))
        # In float32 whatever the precision: under bf16 autocast the matmul rounds away much of the
        # directions the whitening amplifies, and a half-precision copy would otherwise mix dtypes here.
        with torch.autocast(text.device.type, enabled=False):
            whitened = (self.pooled_for_whitening(text, mask) - self.whitening_mean.float()) @ self.whitening_matrix.float()
        return self.mlp(whitened.to(self.mlp[0].weight.dtype))


class FrameTimeEmbedding(nn.Module):
    """Where each frame of the current level sits in the clip, as an embedding of the clip time.

    With temporal downsampling a level's frame i stands for input frames [i s, (i + 1) s) (s = T / t);
    it is encoded at their centre, in input-frame units, so every level agrees on what "frame 6 of
    the clip" means."""

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


class SpatialLayoutShift(nn.Module):
    """A per-frame spatial map from the embedding: a sum of the k x k lowest 2D cosines (a DCT-II basis
    over the feature map, so the same layout at every resolution) with per-channel coefficients read
    linearly from the embedding. The projection starts at zero: no shift."""

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


class FeatureModulation(nn.Module):
    """What one temporal block reads of the embedding: FiLM (scale and shift per channel), plus the layout map.

    The scale/shift projection is not zero at initialisation; the block it sits in still starts as
    the identity through its own zero-initialised output projection."""

    def __init__(self, emb_dim: int, channels: int, layout_frequencies: int = 0):
        super().__init__()
        self.film = nn.Linear(emb_dim, 2 * channels)
        self.layout = SpatialLayoutShift(emb_dim, channels, layout_frequencies) if layout_frequencies else None

    def forward(self, h: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        """h: ((b t), c, h, w) normalised features; emb: ((b t), emb_dim)."""
        if emb.shape[0] != h.shape[0]:
            raise ValueError(f"embedding for {emb.shape[0]} frames, features for {h.shape[0]}")
        scale, shift = self.film(F.silu(emb)).chunk(2, dim=-1)
        h = h * (1 + scale[..., None, None]) + shift[..., None, None]
        if self.layout is not None:
            h = h + self.layout(emb, *h.shape[-2:])
        return h


class PerFrameEmbedding:
    """The embedding of one forward pass, per frame at any level's frame count, in frame-major (b t) order."""

    def __init__(self, conditioning: TemporalConditioning, per_video: torch.Tensor, caption: torch.Tensor, clip_frames: int):
        self._conditioning = conditioning
        self._per_video = per_video  # (b, d): time + caption
        self._caption = caption  # (b, d)
        self._clip_frames = clip_frames
        self._cache: dict[int, torch.Tensor] = {}

    def at(self, num_frames: int) -> torch.Tensor:
        """((b t), d) for a level with ``num_frames`` frames."""
        if num_frames not in self._cache:
            c = self._conditioning
            emb = self._per_video.repeat_interleave(num_frames, dim=0)  # t copies of video b side by side: (b t)
            if c.frame_embedding is not None:
                batch = self._per_video.shape[0]
                frames = c.frame_embedding(num_frames, self._clip_frames, emb.device, emb.dtype).repeat(batch, 1)
                emb = emb + frames
                if c.caption_frame_product:
                    emb = emb + self._caption.repeat_interleave(num_frames, dim=0) * frames
            self._cache[num_frames] = emb
        return self._cache[num_frames]


class TemporalConditioning(nn.Module):
    """The temporal blocks' caption-and-frame conditioning (not in the paper; see the module docstring)."""

    def __init__(
        self,
        text_dim: int,  # width of the text states (set by the STUNet from its U-Net)
        emb_dim: int,  # width of the U-Net's time embedding (set by the STUNet)
        pooling: str = "mean",  # "mean" | "whitened" (fitted on the training captions before the first step)
        frame_embedding: bool = False,  # add each frame's time in the clip
        caption_frame_product: bool = False,  # and caption x frame embedding (needs frame_embedding)
        layout_frequencies: int = 0,  # k > 0: also a smooth k x k-cosine spatial map in every block
    ):
        super().__init__()
        if caption_frame_product and not frame_embedding:
            raise ConfigError("temporal_conditioning: caption_frame_product multiplies the caption by the frame embedding; "
                              "it needs frame_embedding=true")
        if layout_frequencies < 0:
            raise ConfigError(f"temporal_conditioning: layout_frequencies={layout_frequencies}; use 0 (off) or k >= 1")
        self.emb_dim = emb_dim
        self.layout_frequencies = layout_frequencies
        self.caption_frame_product = caption_frame_product
        self.caption = CaptionPooling(text_dim, emb_dim, pooling)
        self.frame_embedding = FrameTimeEmbedding(emb_dim) if frame_embedding else None

    def block_modulation(self, channels: int) -> FeatureModulation:
        """A new modulation for one temporal block with ``channels`` features (it lives in that block)."""
        return FeatureModulation(self.emb_dim, channels, self.layout_frequencies)

    def forward(self, time_emb: torch.Tensor, text: torch.Tensor, mask: torch.Tensor | None, clip_frames: int) -> PerFrameEmbedding:
        """time_emb: (b, d) the U-Net's time embedding; text: (b, l, d_text) states -> the per-frame embedding."""
        caption = self.caption(text, mask)
        return PerFrameEmbedding(self, time_emb + caption, caption, clip_frames)

    # -- before training ----------------------------------------------------------------------------

    @property
    def needs_fit(self) -> bool:
        """True while whitened pooling has not been fitted on training captions."""
        return self.caption.needs_whitening

    def prepare(self, datamodule, encode: Callable[[list[str]], tuple[torch.Tensor, torch.Tensor]]) -> None:
        """Before the first training step: fit what needs the training captions (a resumed run has it already)."""
        if not self.needs_fit:
            return
        if not hasattr(datamodule, "train_captions"):
            raise ConfigError("temporal_conditioning pooling='whitened' is fitted on the training captions: train with a "
                              "VideoDataModule (or a data module with train_captions())")
        self.fit_on_captions(datamodule.train_captions(), encode)

    @torch.no_grad()
    def fit_on_captions(self, captions: Sequence[str], encode: Callable[[list[str]], tuple[torch.Tensor, torch.Tensor]],
                        chunk_size: int = 64) -> dict[str, float]:
        """Fit the whitened pooling on training captions, encoded by ``encode(captions) -> (states, mask)``
        in chunks (only the pooled (n, d) vectors are kept, not every caption's token states)."""
        captions = list(captions)
        pooled = torch.cat([self.caption.pooled_for_whitening(*encode(captions[i:i + chunk_size]))
                            for i in range(0, len(captions), chunk_size)]) if captions else torch.zeros(0, 1)
        summary = self.caption.fit_whitening(pooled)
        log.info("whitened the temporal blocks' caption pooling on %d training captions (%d dimensions above the ridge)",
                 int(summary["captions"]), int(summary["dims_above_ridge"]))
        return summary
