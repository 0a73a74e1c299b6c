"""The conditioning pair <C, M> of each application of the conditional model (paper Sec. 4.2).

C is the masked conditioning video: the known pixels, and 0 everywhere else. In the [-1, 1]
range 0 is mid-grey, the mean of the data, so "unknown" carries no colour bias; M tells the
model which zeros are real content. Every function returns `(cond_video (B, 3, T, H, W),
mask (B, 1, T, H, W))` at the resolution of its inputs; `fit_to_model` then brings both to the
model's square resolution (bilinear for C, nearest for M, so M stays binary).

- image-to-video: C = the image followed by blank frames, M = 1 on frame 0 only;
- inpainting: C = the video where kept, M = 1 where content is kept;
- outpainting: the video padded onto a larger (square) canvas, M = 0 on the padding;
- cinemagraphs: C = the image on every frame, M = 1 on frame 0 and outside the animated region.

Images are (B, 3, H, W) or one-frame videos (B, 3, 1, H, W); region maps are (H, W) or
(B, 1, H, W) with 1 = the region to generate / animate.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor

from lumiere.apps.masks import first_frame_mask, static_region_mask
from lumiere.errors import ConfigError


# ---------------------------------------------------------------------------- shapes
def as_image_batch(image: Tensor) -> Tensor:
    """(3, H, W), (B, 3, H, W) or (B, 3, 1, H, W) -> (B, 3, H, W)."""
    if image.ndim == 3:
        image = image[None]
    if image.ndim == 5:
        if image.shape[2] != 1:
            raise ConfigError(f"expected an image, got a video of {image.shape[2]} frames")
        image = image[:, :, 0]
    if image.ndim != 4 or image.shape[1] != 3:
        raise ConfigError(f"expected an RGB image (B, 3, H, W), got shape {tuple(image.shape)}")
    return image


def as_region_batch(region: Tensor, batch: int) -> Tensor:
    """(H, W), (1, H, W) or (B, 1, H, W) region map -> (B, H, W) float in {0, 1}."""
    if region.ndim == 2:
        region = region[None]
    if region.ndim == 4:
        region = region[:, 0]
    if region.ndim != 3:
        raise ConfigError(f"expected a region map (H, W), got shape {tuple(region.shape)}")
    return region.float().expand(batch, *region.shape[-2:])


def masked_video(video: Tensor, mask: Tensor) -> Tensor:
    """C = video * M: known pixels kept, unknown ones set to 0 (mid-grey in [-1, 1])."""
    return video * mask


def check_pair(cond_video: Tensor, mask: Tensor) -> None:
    """Raise ConfigError unless C (B, 3, T, H, W) and M (B, 1, T, H, W) agree."""
    if cond_video.ndim != 5 or cond_video.shape[1] != 3:
        raise ConfigError(f"the conditioning video must be (B, 3, T, H, W), got {tuple(cond_video.shape)}")
    expected = (cond_video.shape[0], 1, *cond_video.shape[2:])
    if tuple(mask.shape) != expected:
        raise ConfigError(f"the mask must be {expected} to match the conditioning video, got {tuple(mask.shape)}")


# ---------------------------------------------------------------------------- applications
def image_to_video_conditioning(image: Tensor, num_frames: int) -> tuple[Tensor, Tensor]:
    """C = the first frame followed by blank frames; M = 1 on the first frame only."""
    image = as_image_batch(image)
    batch, _, height, width = image.shape
    mask = first_frame_mask(num_frames, height, width).expand(batch, -1, -1, -1, -1).clone()
    video = image[:, :, None].expand(-1, -1, num_frames, -1, -1)
    return masked_video(video, mask), mask


def inpainting_conditioning(video: Tensor, keep_mask: Tensor) -> tuple[Tensor, Tensor]:
    """C = the video where M = 1; `keep_mask` is (B or 1, 1, T or 1, H, W), broadcast over batch and time."""
    if video.ndim != 5 or video.shape[1] != 3:
        raise ConfigError(f"expected a video (B, 3, T, H, W), got shape {tuple(video.shape)}")
    if keep_mask.ndim != 5 or keep_mask.shape[1] != 1 or keep_mask.shape[-2:] != video.shape[-2:]:
        raise ConfigError(f"the mask {tuple(keep_mask.shape)} does not fit the video {tuple(video.shape)}")
    mask = keep_mask.float().expand(video.shape[0], 1, *video.shape[2:]).clone()
    return masked_video(video, mask), mask


def outpainting_conditioning(video: Tensor, border: Sequence[int], square: bool = True) -> tuple[Tensor, Tensor]:
    """Pad the canvas by (top, bottom, left, right) pixels and mark the padding as unknown.

    With `square=True` the canvas is padded further, evenly, to a square, because the base
    model generates square frames; the extra padding is generated too.
    """
    if video.ndim != 5 or video.shape[1] != 3:
        raise ConfigError(f"expected a video (B, 3, T, H, W), got shape {tuple(video.shape)}")
    if len(border) != 4 or any(int(b) < 0 for b in border):
        raise ConfigError(f"outpainting padding is four non-negative pixel counts (top, bottom, left, right), "
                          f"got {list(border)}")
    top, bottom, left, right = (int(b) for b in border)
    height, width = video.shape[-2:]
    if square:
        canvas_h, canvas_w = height + top + bottom, width + left + right
        side = max(canvas_h, canvas_w)
        extra_h, extra_w = side - canvas_h, side - canvas_w
        top, bottom = top + extra_h // 2, bottom + extra_h - extra_h // 2
        left, right = left + extra_w // 2, right + extra_w - extra_w // 2
    if top + bottom + left + right == 0:
        raise ConfigError("outpainting needs a non-zero padding (the canvas would not grow)")
    # F.pad pads the last dims first: (left, right) for W, (top, bottom) for H.
    padded = F.pad(video, (left, right, top, bottom), value=0.0)
    mask = F.pad(torch.ones(video.shape[0], 1, *video.shape[2:]), (left, right, top, bottom), value=0.0)
    return masked_video(padded, mask), mask


def cinemagraph_conditioning(image: Tensor, region: Tensor, num_frames: int) -> tuple[Tensor, Tensor]:
    """C = the image duplicated over the clip; M = 1 on frame 0 and outside `region` (1 = animate) elsewhere."""
    image = as_image_batch(image)
    batch = image.shape[0]
    regions = as_region_batch(region, batch)
    if regions.shape[-2:] != image.shape[-2:]:
        raise ConfigError(f"the region map is {tuple(regions.shape[-2:])} but the image is {tuple(image.shape[-2:])}")
    mask = torch.stack([static_region_mask(num_frames, r) for r in regions])
    video = image[:, :, None].expand(-1, -1, num_frames, -1, -1)
    return masked_video(video, mask), mask


# ---------------------------------------------------------------------------- resolution
def resize_video(video: Tensor, size: int, mode: str = "bilinear") -> Tensor:
    """(B, C, T, h, w) -> (B, C, T, size, size), frame by frame.

    Dimension legend: b batch, c channels, t frames, h height, w width.
    """
    if tuple(video.shape[-2:]) == (size, size):
        return video
    frames = rearrange(video, "b c t h w -> (b t) c h w")
    if mode == "nearest":
        frames = F.interpolate(frames, size=(size, size), mode="nearest")
    else:
        frames = F.interpolate(frames, size=(size, size), mode=mode, align_corners=False, antialias=True)
    return rearrange(frames, "(b t) c h w -> b c t h w", b=video.shape[0])


def center_square(video: Tensor) -> Tensor:
    """Crop the largest centred square of (..., H, W)."""
    height, width = video.shape[-2:]
    side = min(height, width)
    top, left = (height - side) // 2, (width - side) // 2
    return video[..., top:top + side, left:left + side]


def fit_to_model(cond_video: Tensor, mask: Tensor, size: int) -> tuple[Tensor, Tensor]:
    """Centre-crop <C, M> to a square and resize to the model resolution (M with nearest, so it stays binary).

    C is resized as a normalized convolution, resize(C) / resize(M): the grey zeros of unknown
    pixels do not darken the known pixels next to them; then C = C * M with the resized M.
    """
    check_pair(cond_video, mask)
    cond_video, mask = center_square(cond_video), center_square(mask)
    if tuple(mask.shape[-2:]) == (size, size):
        return cond_video, mask
    coverage = resize_video(mask, size)
    resized = resize_video(cond_video, size) / coverage.clamp(min=1e-3)
    mask = resize_video(mask, size, mode="nearest")
    return masked_video(resized.clamp(-1, 1), mask), mask
