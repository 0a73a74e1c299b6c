"""Video and image files: tensors in [-1, 1] to mp4/gif and back.

Writers put the file in place atomically (a temporary file in the same folder, renamed when
complete), so an interrupted or failed write never leaves a half-written video behind.
"""

from __future__ import annotations

import math
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from fractions import Fraction

import av
import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch import Tensor

from lumiere.errors import ConfigError, InputFileError
from lumiere.utils import apply_default_file_mode

MIN_VISIBLE_SIDE = 128  # small clips are upscaled (nearest) until their shorter side reaches this


# ----------------------------------------------------------------------------- conversion
def to_uint8(video: Tensor | np.ndarray) -> np.ndarray:
    """(C, T, H, W) or (B, C, T, H, W) in [-1, 1] -> uint8 frames (T, H, W, 3).

    A batch is laid out side by side (samples along the width). One channel is shown as grey.
    """
    if isinstance(video, np.ndarray):
        video = torch.from_numpy(video)
    video = video.detach().float().cpu()
    if video.ndim == 5:
        video = torch.cat(list(video), dim=-1)  # B samples side by side: (C, T, H, B*W)
    if video.ndim != 4:
        raise ConfigError(f"expected a video (C, T, H, W) or (B, C, T, H, W), got shape {tuple(video.shape)}")
    if video.shape[0] == 1:
        video = video.expand(3, *video.shape[1:])
    if video.shape[0] != 3:
        raise ConfigError(f"expected 1 or 3 channels, got {video.shape[0]}")
    pixels = ((video.clamp(-1.0, 1.0) + 1.0) * 127.5).round().to(torch.uint8)
    return pixels.permute(1, 2, 3, 0).contiguous().numpy()


def _frames(video: Tensor | np.ndarray) -> np.ndarray:
    """uint8 (T, H, W, 3) frames from a [-1, 1] tensor, or passed through if already uint8 frames."""
    if isinstance(video, np.ndarray) and video.dtype == np.uint8:
        if video.ndim != 4 or video.shape[-1] != 3:
            raise ConfigError(f"uint8 frames must have shape (T, H, W, 3), got {video.shape}")
        return video
    return to_uint8(video)


def auto_scale(height: int, width: int, scale: int | None) -> int:
    """An explicit integer scale, or the smallest one lifting the shorter side to MIN_VISIBLE_SIDE."""
    if scale is None:
        return max(1, math.ceil(MIN_VISIBLE_SIDE / max(1, min(height, width))))
    if scale < 1:
        raise ConfigError(f"scale must be a positive integer, got {scale}")
    return int(scale)


def upscale_nearest(frames: np.ndarray, scale: int) -> np.ndarray:
    """Nearest-neighbour upscaling of (..., H, W, C) frames: crisp pixels for tiny samples."""
    if scale == 1:
        return frames
    return frames.repeat(scale, axis=-3).repeat(scale, axis=-2)


# ----------------------------------------------------------------------------- atomic writes
@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[str]:
    """Yield a temporary path next to `path` (same extension); rename it to `path` on success."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    stem, extension = os.path.splitext(os.path.basename(path))
    handle, temporary = tempfile.mkstemp(prefix=f".{stem}.", suffix=f".partial{extension}", dir=folder)
    os.close(handle)
    try:
        yield temporary
        apply_default_file_mode(temporary)
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.remove(temporary)
        raise


# ----------------------------------------------------------------------------- writers
def write_mp4(path: str | os.PathLike, video: Tensor | np.ndarray, fps: float = 16, crf: int = 18) -> str:
    """H.264 (libx264, yuv420p) mp4 of a [-1, 1] video (or uint8 frames); returns the path.

    yuv420p needs even sizes: an odd height or width is padded by repeating the last row or
    column, so the file (and `read_video`) has the padded size.
    """
    frames = _frames(video)
    pad_h, pad_w = frames.shape[1] % 2, frames.shape[2] % 2
    if pad_h or pad_w:
        frames = np.pad(frames, ((0, 0), (0, pad_h), (0, pad_w), (0, 0)), mode="edge")
    if fps <= 0:
        raise ConfigError(f"fps must be positive, got {fps}")
    with atomic_path(path) as temporary:
        with av.open(temporary, mode="w", format="mp4") as container:
            stream = container.add_stream("libx264", rate=Fraction(fps).limit_denominator(1001))
            stream.width, stream.height = frames.shape[2], frames.shape[1]
            stream.pix_fmt = "yuv420p"
            stream.options = {"crf": str(crf)}
            for frame in frames:
                for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                    container.mux(packet)
            for packet in stream.encode():  # flush the encoder's delayed frames
                container.mux(packet)
    return os.fspath(path)


def write_gif(path: str | os.PathLike, video: Tensor | np.ndarray, fps: float = 16, scale: int | None = None) -> str:
    """Looping GIF of a [-1, 1] video (or uint8 frames); returns the path.

    `scale=None` upscales small clips (nearest neighbour) so their shorter side reaches 128 px:
    a 32x32 sample is then visible in a browser or README.
    """
    frames = _frames(video)
    if fps <= 0:
        raise ConfigError(f"fps must be positive, got {fps}")
    frames = upscale_nearest(frames, auto_scale(frames.shape[1], frames.shape[2], scale))
    images = [Image.fromarray(frame) for frame in frames]
    with atomic_path(path) as temporary:
        images[0].save(temporary, format="GIF", save_all=True, append_images=images[1:],
                       duration=max(20, round(1000 / fps)), loop=0)
    return os.fspath(path)


def save_png(path: str | os.PathLike, image: np.ndarray) -> str:
    """Write a uint8 (H, W, 3) array as PNG, atomically."""
    with atomic_path(path) as temporary:
        Image.fromarray(image).save(temporary, format="PNG")
    return os.fspath(path)


# ----------------------------------------------------------------------------- readers
def read_video(path: str | os.PathLike) -> Tensor:
    """Decode every frame of a video file (PyAV) to (C, T, H, W) float32 in [-1, 1]."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise InputFileError(f"video file not found: {path}")
    try:
        with av.open(path) as container:
            if not container.streams.video:
                raise InputFileError(f"{path} has no video stream")
            frames = [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]
    except av.FFmpegError as error:
        raise InputFileError(f"cannot decode video {path}: {error}") from error
    if not frames:
        raise InputFileError(f"{path} has no decodable frames")
    pixels = torch.from_numpy(np.stack(frames))  # (T, H, W, 3) uint8
    return pixels.permute(3, 0, 1, 2).float() / 127.5 - 1.0


def read_image(path: str | os.PathLike) -> Tensor:
    """Read an image file (PIL) as RGB (C, H, W) float32 in [-1, 1]."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise InputFileError(f"image file not found: {path}")
    try:
        with Image.open(path) as image:
            pixels = np.asarray(image.convert("RGB"))
    except (UnidentifiedImageError, OSError) as error:
        raise InputFileError(f"cannot read image {path}: {error}") from error
    return torch.from_numpy(pixels.copy()).permute(2, 0, 1).float() / 127.5 - 1.0
