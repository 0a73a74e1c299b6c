"""Shared helpers for the data tests: tiny synthetic datasets and hand-made shards.

Import what you need (``from data_fixtures import ...``); the datasets are generated once per
test session and cached by their parameters.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import numpy as np
import webdataset as wds

from lumiere.data.codec import encode_h264
from lumiere.data.synthetic import generate_synthetic_benchmark

_CACHE: dict[tuple, Path] = {}
TINY = dict(num_frames=16, fps=16.0, size=32)


def tiny_synthetic(num_train: int = 12, num_val: int = 4, hr_size: int | None = 64, min_shards: int = 4, seed: int = 0) -> Path:
    """A tiny synthetic benchmark (16 frames at 16 fps, 32 px), generated once per session."""
    key = (num_train, num_val, hr_size, min_shards, seed)
    if key not in _CACHE:
        root = Path(tempfile.mkdtemp(prefix="lumiere-data-test-")) / "synthetic"
        generate_synthetic_benchmark(
            root, num_train=num_train, num_val=num_val, num_test=0, hr_size=hr_size,
            min_shards=min_shards, seed=seed, progress=False, **TINY,
        )
        _CACHE[key] = root
    return _CACHE[key]


def moving_bar_frames(num_frames: int, height: int = 32, width: int = 32) -> np.ndarray:
    """A bright bar moving one column per frame: every frame differs from its neighbours."""
    frames = np.full((num_frames, height, width, 3), 30, dtype=np.uint8)
    for t in range(num_frames):
        frames[t, :, (2 * t) % width : (2 * t) % width + 3] = (230, 200, 40)
    return frames


def good_sample(key: str, num_frames: int = 16, caption: str | None = "a bar moving right", fps: float = 16.0) -> dict:
    sample = {"__key__": key, "mp4": encode_h264(moving_bar_frames(num_frames), fps)}
    meta = {"fps": fps, "num_frames": num_frames, "width": 32, "height": 32, "labels": {}}
    if caption is not None:
        sample["txt"] = caption
    sample["json"] = json.dumps(meta).encode()
    return sample


def bad_samples(num_frames_needed: int) -> dict[str, dict]:
    """One sample per kind of bad data, keyed by the skip reason it must produce."""
    clip = encode_h264(moving_bar_frames(16), 16.0)
    return {
        "truncated": {"__key__": "bad_truncated", "mp4": clip[: len(clip) // 2], "txt": "cut in half"},
        "empty": {"__key__": "bad_empty", "mp4": b"", "txt": "zero bytes"},
        "not_video": {"__key__": "bad_notvideo", "mp4": b"this is a text file, not a video\n" * 20, "txt": "garbage"},
        "missing_caption": {"__key__": "bad_nocaption", "mp4": clip, "json": json.dumps({"fps": 16}).encode()},
        "too_short": {
            "__key__": "bad_short",
            "mp4": encode_h264(moving_bar_frames(max(1, num_frames_needed // 2)), 16.0),
            "txt": "too short",
        },
    }


def write_shard(path: Path, samples: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with wds.TarWriter(str(path)) as writer:
        for sample in samples:
            writer.write(sample)
    return path


def write_numbered_shards(directory: Path, num_shards: int, per_shard: int, num_frames: int = 8) -> list[str]:
    """``num_shards`` shards of ``per_shard`` good samples with globally unique keys."""
    paths = []
    for s in range(num_shards):
        samples = [good_sample(f"s{s:02d}_{i:03d}", num_frames=num_frames) for i in range(per_shard)]
        paths.append(str(write_shard(directory / f"part-{s:06d}.tar", samples)))
    return paths


def write_avi(path: Path, num_frames: int = 30, width: int = 64, height: int = 48, fps: int = 25) -> Path:
    """An MPEG-4 Part 2 AVI (the codec UCF101 ships in)."""
    import av

    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w", format="avi") as container:
        stream = container.add_stream("mpeg4", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for frame in moving_bar_frames(num_frames, height, width):
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def indexed_frames(num_frames: int, size: int = 32) -> np.ndarray:
    """Frames whose index can be read back after H.264: the top half's grey level codes
    ``t // 16``, the bottom half's ``t % 16`` (steps of 15 levels, far above crf 18's error on
    flat areas). Up to 256 frames; :func:`frame_indices` decodes them."""
    if num_frames > 256:
        raise ValueError("indexed_frames codes at most 256 frames")
    frames = np.empty((num_frames, size, size, 3), dtype=np.uint8)
    for t in range(num_frames):
        frames[t, : size // 2] = 10 + 15 * (t // 16)
        frames[t, size // 2 :] = 10 + 15 * (t % 16)
    return frames


def frame_indices(frames) -> list[int]:
    """The source indices of frames made by :func:`indexed_frames`: uint8 (T, H, W, 3) or a
    float video (3, T, H, W) in [-1, 1]."""
    array = np.asarray(frames, dtype=np.float64)
    if array.shape[-1] != 3:  # (3, T, H, W) in [-1, 1] -> (T, H, W, 3) in [0, 255]
        array = (np.moveaxis(array, 0, -1) + 1.0) * 127.5
    size = array.shape[1]
    top = array[:, 2 : size // 2 - 2].mean(axis=(1, 2, 3))  # away from the blurred seam
    bottom = array[:, size // 2 + 2 : size - 2].mean(axis=(1, 2, 3))
    return [int(round((a - 10) / 15)) * 16 + int(round((b - 10) / 15)) for a, b in zip(top, bottom)]


def indexed_sample(key: str, num_frames: int, fps: float = 16.0, size: int = 32) -> dict:
    """A shard sample of :func:`indexed_frames` with a caption and json metadata."""
    meta = {"fps": fps, "num_frames": num_frames, "width": size, "height": size}
    return {"__key__": key, "mp4": encode_h264(indexed_frames(num_frames, size), fps), "txt": f"video {key}",
            "json": json.dumps(meta).encode()}
