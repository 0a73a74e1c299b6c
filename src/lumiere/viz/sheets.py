"""Sample sheets: one PNG with a row of frames per sample and its caption above, for README/W&B."""

from __future__ import annotations

import os
import textwrap
from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont
from torch import Tensor

from lumiere.errors import ConfigError
from lumiere.viz.video import atomic_path, auto_scale, to_uint8, upscale_nearest

GAP = 4           # pixels between frames and between rows
LINE_HEIGHT = 12  # caption line height of PIL's default bitmap font
BACKGROUND = (255, 255, 255)


def frame_indices(num_frames: int, num_shown: int) -> list[int]:
    """`num_shown` frame indices spread evenly from the first to the last frame."""
    if num_shown < 1:
        raise ConfigError(f"num_frames_shown must be >= 1, got {num_shown}")
    if num_shown >= num_frames:
        return list(range(num_frames))
    return torch.linspace(0, num_frames - 1, num_shown).round().long().tolist()


def save_sample_sheet(
    path: str | os.PathLike,
    videos: Tensor,
    captions: Sequence[str] | None = None,
    num_frames_shown: int = 8,
    scale: int | None = None,
) -> str:
    """Save videos (B, C, T, H, W) in [-1, 1] as a grid: rows = samples, columns = frames.

    Each row has its caption above it (wrapped to the row's width). Small frames are upscaled
    (nearest) so the shorter side reaches 128 px unless `scale` is given.
    """
    if videos.ndim == 4:
        videos = videos.unsqueeze(0)
    if videos.ndim != 5:
        raise ConfigError(f"save_sample_sheet expects videos (B, C, T, H, W), got shape {tuple(videos.shape)}")
    captions = list(captions) if captions is not None else [""] * videos.shape[0]
    if len(captions) != videos.shape[0]:
        raise ConfigError(f"got {len(captions)} captions for {videos.shape[0]} videos")
    indices = frame_indices(videos.shape[2], num_frames_shown)
    height, width = videos.shape[3:]
    factor = auto_scale(height, width, scale)
    cell_h, cell_w = height * factor, width * factor
    sheet_w = len(indices) * cell_w + (len(indices) + 1) * GAP
    chars_per_line = max(8, sheet_w // 6)  # the default font is about 6 px per character
    wrapped = [textwrap.wrap(caption, chars_per_line)[:3] if caption else [] for caption in captions]

    rows = []
    for video, lines in zip(videos, wrapped):
        frames = upscale_nearest(to_uint8(video[:, indices]), factor)  # (N, h, w, 3)
        text_h = len(lines) * LINE_HEIGHT + (GAP if lines else 0)
        row = np.full((text_h + cell_h + GAP, sheet_w, 3), BACKGROUND, dtype=np.uint8)
        for column, frame in enumerate(frames):
            left = GAP + column * (cell_w + GAP)
            row[text_h:text_h + cell_h, left:left + cell_w] = frame
        image = Image.fromarray(row)
        draw = ImageDraw.Draw(image)
        font = ImageFont.load_default()
        for number, line in enumerate(lines):
            draw.text((GAP, GAP // 2 + number * LINE_HEIGHT), line, fill=(0, 0, 0), font=font)
        rows.append(np.asarray(image))
    sheet = np.concatenate([np.full((GAP, sheet_w, 3), BACKGROUND, dtype=np.uint8)] + rows, axis=0)
    with atomic_path(path) as temporary:
        Image.fromarray(sheet).save(temporary, format="PNG")
    return os.fspath(path)
