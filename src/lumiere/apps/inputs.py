"""User inputs of the applications: images, videos, masks and boxes, checked with one-line errors.

Files: images are png/jpg (anything PIL reads), videos mp4 (anything PyAV decodes), masks png
(one frame, used for every frame) or mp4 (one mask per frame). Every problem is reported as an
`InputFileError` / `ConfigError` naming the file: missing, unreadable, a mask whose size or
length differs from its video, a mask that is not binary.

User masks mark the region to *generate* (white = inpaint / animate), the usual convention of
inpainting tools; the model's M is the complement (M = 1 on kept pixels, `lumiere.apps.masks`).

Outpainting: `pad` is four non-negative pixel counts, and the padded square canvas is bounded
(`check_canvas`: at most 8x the video's longer side, at most 2^30 pixels over the clip).

Binary check: a png mask must hold only black and white (0 and 255, after conversion to grey).
An mp4 mask has passed through lossy H.264, which blurs edges and adds small errors, so it is
accepted when at least 99% of its pixels lie within 0.2 of 0 or 1, and then thresholded at 0.5.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence

import torch
from torch import Tensor

from lumiere.apps.masks import check_box, region_from_box
from lumiere.errors import ConfigError, InputFileError
from lumiere.viz import read_image, read_video

VIDEO_EXTENSIONS = (".mp4", ".mov", ".mkv", ".webm", ".avi", ".gif")
# Outpainting canvas bounds: the square canvas side is at most 8x the video's longer side, and the
# canvas holds at most 2^30 pixels over all frames (a 12 GiB float canvas).
MAX_CANVAS_FACTOR = 8
MAX_CANVAS_PIXELS = 2**30
LOSSY_TOLERANCE = 0.2
LOSSY_MIN_CLEAN_FRACTION = 0.99


def load_image(path: str) -> Tensor:
    """An RGB image (3, H, W) in [-1, 1]."""
    return read_image(path)


def load_video(path: str) -> Tensor:
    """An RGB video (3, T, H, W) in [-1, 1]."""
    return read_video(path)


def check_binary(grey: Tensor, path: str, lossy: bool) -> Tensor:
    """Values in [0, 1] -> a {0, 1} mask, or InputFileError if they are not (close to) binary."""
    distance = torch.minimum(grey, 1.0 - grey)
    if not lossy:
        if bool((distance > 1e-6).any()):
            raise InputFileError(f"mask {path} is not binary: use only black (keep) and white (generate) pixels")
        return grey.round()
    clean = float((distance <= LOSSY_TOLERANCE).float().mean())
    if clean < LOSSY_MIN_CLEAN_FRACTION:
        raise InputFileError(f"mask {path} is not binary: only {clean:.1%} of its pixels are near black or white")
    return (grey > 0.5).float()


def load_region(path: str) -> Tensor:
    """A user mask file as a region map (T', H, W) in {0, 1}, 1 = generate; T' = 1 for an image."""
    if not os.path.isfile(path):
        raise InputFileError(f"mask file not found: {path}")
    lossy = path.lower().endswith(VIDEO_EXTENSIONS)
    pixels = read_video(path) if lossy else read_image(path)[:, None]  # (3, T', H, W) in [-1, 1]
    grey = ((pixels.mean(dim=0) + 1.0) / 2.0).clamp(0, 1)
    return check_binary(grey, path, lossy)


def region_for(height: int, width: int, *, mask_path: str | None = None, box: Sequence[int] | None = None,
               num_frames: int | None = None, invert: bool = False, what: str = "input") -> Tensor:
    """The region to generate (T' , H, W) from a mask file or a box, checked against the input's size and length.

    T' is 1 (the same region on every frame) or `num_frames` (an mp4 mask).
    """
    if (mask_path is None) == (box is None):
        raise ConfigError("give exactly one of mask=PATH or box=[x0,y0,x1,y1]")
    if box is not None:
        region = region_from_box(height, width, check_box(list(box), height, width))[None]
    else:
        region = load_region(mask_path)
        if tuple(region.shape[-2:]) != (height, width):
            raise InputFileError(f"mask {mask_path} is {region.shape[-1]}x{region.shape[-2]} but the {what} is "
                                 f"{width}x{height}")
        if region.shape[0] != 1 and region.shape[0] != num_frames:
            raise InputFileError(f"mask {mask_path} has {region.shape[0]} frames but the {what} has "
                                 f"{num_frames if num_frames is not None else 1}")
    if invert:
        region = 1.0 - region
    if not bool(region.any()):
        raise ConfigError("the region to generate is empty (an all-black mask)")
    return region


def keep_mask_from_region(region: Tensor) -> Tensor:
    """Region to generate (T', H, W) -> the model's mask M (1, 1, T', H, W), 1 = keep."""
    return (1.0 - region)[None, None]


def _is_whole(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) \
        and int(value) == value


def check_pad(pad: Sequence[int]) -> list[int]:
    """Outpainting padding: one count for every side, or (top, bottom, left, right)."""
    values = [pad] if isinstance(pad, (int, float, str)) else list(pad)
    if len(values) == 1:
        values = values * 4
    if len(values) != 4 or not all(_is_whole(v) and v >= 0 for v in values) or sum(values) == 0:
        raise ConfigError(f"pad must be one or four non-negative integers (top, bottom, left, right), not all 0; "
                          f"got {list(values)}")
    return [int(v) for v in values]


def check_canvas(frames: int, height: int, width: int, pad: Sequence[int]) -> int:
    """The side of the square outpainting canvas of a (frames, height, width) video padded by `pad`; a
    ConfigError if it exceeds MAX_CANVAS_FACTOR x the video's longer side (the video would shrink to a
    few pixels of the model's frame) or MAX_CANVAS_PIXELS frame pixels over the clip (memory)."""
    top, bottom, left, right = pad
    side = max(height + top + bottom, width + left + right)
    limit = MAX_CANVAS_FACTOR * max(height, width)
    if side > limit:
        raise ConfigError(f"pad {list(pad)} makes a {side} px canvas for a {width}x{height} video; outpainting allows "
                          f"at most {MAX_CANVAS_FACTOR}x the video's longer side ({limit} px)")
    if frames * side * side > MAX_CANVAS_PIXELS:
        raise ConfigError(f"pad {list(pad)} makes a canvas of {frames} frames of {side}x{side} px, over the "
                          f"{MAX_CANVAS_PIXELS:,} pixel budget of outpainting; downscale or shorten the video")
    return side
