"""Synthetic styles for the stylized-generation demo (paper Sec. 4.1).

The paper interpolates towards T2I models fine-tuned on a style image (StyleDrop styles such as
"watercolor" or "line drawing"). No such model exists here, so the demo makes its own: the
stage-0 T2I model is fine-tuned on training frames passed through a fixed, deterministic
`StyleTransform` (`lumiere.training.style_finetune`). The transforms are chosen to be easy to see
and to tell apart from the unstyled benchmark:

- `"palette"`: luminance posterized to a few levels and mapped onto a fixed colour ramp
  (a vector-art / duotone look);
- `"posterize"`: every RGB channel quantized to a few levels (flat colour regions);
- `"sketch"`: dark Sobel edges of the luminance on paper white (a line-drawing look).

Input and output are videos (B, 3, T, H, W) (or images (B, 3, H, W)) in [-1, 1]; every frame is
transformed alone, so the transform never creates motion.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor

from lumiere.errors import ConfigError

STYLE_KINDS = ("palette", "posterize", "sketch")
# Dark violet -> magenta -> orange -> pale yellow: a ramp no synthetic background colour has.
DEFAULT_PALETTE = ((0.15, 0.05, 0.30), (0.75, 0.15, 0.45), (0.98, 0.55, 0.15), (1.0, 0.95, 0.70))
LUMA = (0.299, 0.587, 0.114)


def luminance(frames: Tensor) -> Tensor:
    """(N, 3, H, W) in [0, 1] -> (N, 1, H, W) Rec. 601 luma."""
    weights = torch.tensor(LUMA, dtype=frames.dtype, device=frames.device).view(1, 3, 1, 1)
    return (frames * weights).sum(dim=1, keepdim=True)


class StyleTransform:
    """A deterministic per-frame colour/texture transform of videos in [-1, 1]."""

    def __init__(self, kind: str = "palette", levels: int = 4,
                 palette: Sequence[Sequence[float]] = DEFAULT_PALETTE, edge_gain: float = 4.0) -> None:
        if kind not in STYLE_KINDS:
            raise ConfigError(f"unknown style {kind!r}; choose one of {list(STYLE_KINDS)}")
        if levels < 2:
            raise ConfigError(f"a style needs at least 2 levels, got {levels}")
        palette_tensor = torch.tensor([list(colour) for colour in palette], dtype=torch.float32)
        if palette_tensor.ndim != 2 or palette_tensor.shape[1] != 3 or len(palette_tensor) < 2:
            raise ConfigError("a palette is a list of at least two RGB colours in [0, 1]")
        self.kind = kind
        self.levels = int(levels)
        self.palette = palette_tensor.clamp(0, 1)
        self.edge_gain = float(edge_gain)

    def __repr__(self) -> str:
        return f"StyleTransform(kind={self.kind!r}, levels={self.levels})"

    # -- the styles, on frames (N, 3, H, W) in [0, 1] ----------------------------------------
    def _palette(self, frames: Tensor) -> Tensor:
        # Posterize the luma to `levels` steps, then read the colour ramp at each step.
        steps = (luminance(frames) * self.levels).floor().clamp(max=self.levels - 1) / (self.levels - 1)
        position = steps * (len(self.palette) - 1)  # (N, 1, H, W) in [0, len-1]
        lower = position.floor().long().clamp(max=len(self.palette) - 2)
        fraction = position - lower
        palette = self.palette.to(frames.device, frames.dtype)
        low_colour = rearrange(palette[lower[:, 0]], "n h w c -> n c h w")
        high_colour = rearrange(palette[lower[:, 0] + 1], "n h w c -> n c h w")
        return low_colour + fraction * (high_colour - low_colour)

    def _posterize(self, frames: Tensor) -> Tensor:
        return ((frames * self.levels).floor().clamp(max=self.levels - 1) + 0.5) / self.levels

    def _sketch(self, frames: Tensor) -> Tensor:
        luma = luminance(frames)
        sobel_x = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]], dtype=frames.dtype,
                               device=frames.device)
        kernels = torch.stack([sobel_x, sobel_x.T])[:, None]  # (2, 1, 3, 3)
        gradients = F.conv2d(F.pad(luma, (1, 1, 1, 1), mode="replicate"), kernels)
        edges = (gradients.pow(2).sum(dim=1, keepdim=True).sqrt() * self.edge_gain / 4.0).clamp(0, 1)
        paper = torch.tensor((0.96, 0.94, 0.88), dtype=frames.dtype, device=frames.device).view(1, 3, 1, 1)
        ink = torch.tensor((0.10, 0.10, 0.15), dtype=frames.dtype, device=frames.device).view(1, 3, 1, 1)
        return paper + edges * (ink - paper)

    def __call__(self, video: Tensor) -> Tensor:
        """Style a video (B, 3, T, H, W) or an image batch (B, 3, H, W) in [-1, 1]; same shape out.

        Dimension legend: b batch, c channels, t frames, h height, w width.
        """
        if video.ndim not in (4, 5) or video.shape[1] != 3:
            raise ConfigError(f"StyleTransform expects RGB (B, 3, [T,] H, W), got shape {tuple(video.shape)}")
        is_video = video.ndim == 5
        frames = rearrange(video, "b c t h w -> (b t) c h w") if is_video else video
        frames = ((frames.float() + 1.0) / 2.0).clamp(0, 1)
        styled = {"palette": self._palette, "posterize": self._posterize, "sketch": self._sketch}[self.kind](frames)
        styled = (styled * 2.0 - 1.0).to(video.dtype)
        if is_video:
            styled = rearrange(styled, "(b t) c h w -> b c t h w", b=video.shape[0])
        return styled
