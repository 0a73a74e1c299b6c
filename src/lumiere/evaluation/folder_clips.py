"""The clips of ``evaluation=folder``: video files or WebDataset shards cut into 16-frame windows.

A side (the real set, or the generated one) is one location:

- a folder of video files (``.mp4 .webm .avi .mkv .mov .gif``, and uint8 (T, H, W, 3) ``.npy``),
  read recursively in sorted order; hidden files and folders (``.*``, e.g. generate.py's staging
  folders) are not read. When one name exists with several suffixes (generate.py writes every
  clip as ``.mp4`` and ``.gif``; the evaluation's own clips as ``.npy`` and ``.mp4``) only the
  first of ``VIDEO_SUFFIXES`` is read, and generate.py's side-by-side GIFs (``all.gif``,
  ``cascade.gif`` next to a ``prompts.txt``) are not clips. Files left out are counted.
- WebDataset shards in the project's format (``lumiere.data.shards``): a folder of ``*.tar``, a
  ``.tar`` file, a glob or a brace pattern. The video of a sample is its first of ``mp4 webm
  mkv mov avi`` entries.

Every video is decoded with the project's decoders (``lumiere.data.decoders``) into windows of
``CLIP_FRAMES`` frames taken every ``stride`` source frames (stride 1, or the one that brings the
source to ``target_fps``): the first window (``windows=first``), or every non-overlapping one
(``windows=all``). Both sides go through the same code, so they are windowed the same way.
A video that gives no window (undecodable, or shorter than a window) is an error naming it, or
with ``unusable_videos=skip`` left out and counted by reason.
"""

from __future__ import annotations

import glob
import os
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from lumiere.errors import ConfigError, InputFileError
from lumiere.evaluation.features import FVD_FRAMES

CLIP_FRAMES = FVD_FRAMES  # the I3D FVD and the C3D IS both read 16 frames
# Preference order when one name exists with several suffixes: lossless first.
VIDEO_SUFFIXES = (".npy", ".mp4", ".webm", ".avi", ".mkv", ".mov", ".gif")
CONTACT_SHEETS = ("all.gif", "cascade.gif")  # generate.py: every clip of a batch side by side
WINDOW_POLICIES = ("first", "all")
UNUSABLE_POLICIES = ("error", "skip")
MAX_NAMED = 3  # unusable videos named in the table notes


@dataclass(frozen=True)
class WindowOptions:
    """How every video of both sides becomes clips."""

    windows: str = "first"
    target_fps: float | None = None
    unusable_videos: str = "error"
    decoder: str = "pyav"


@dataclass
class VideoSource:
    """One side's location and what was found there: video files or shard files."""

    side: str                    # "real" or "generated" (named in messages and notes)
    location: str
    kind: str                    # "files" or "shards"
    paths: list[Path]
    left_out: dict[str, int] = field(default_factory=dict)  # files not read, by reason

    def identity(self) -> list[list]:
        """(path, size, mtime) of every file read: a change to the set changes this."""
        listing = []
        for path in self.paths:
            stat = path.stat()
            listing.append([str(path.resolve()), stat.st_size, stat.st_mtime_ns])
        return listing


@dataclass
class SideCounts:
    """What one side's videos gave: clips per video, unusable videos by reason, frame rates."""

    videos: int = 0
    clips: int = 0
    unusable: Counter = field(default_factory=Counter)
    unusable_names: list[str] = field(default_factory=list)
    without_fps: int = 0         # .npy clips (no frame rate): read at stride 1
    source_fps: Counter = field(default_factory=Counter)

    def to_dict(self) -> dict:
        return {"videos": self.videos, "clips": self.clips, "unusable": dict(self.unusable),
                "unusable_names": self.unusable_names, "without_fps": self.without_fps,
                "source_fps": {f"{fps:g}": count for fps, count in sorted(self.source_fps.items())}}


# ---------------------------------------------------------------------------------------------- discovery
def _is_shard_pattern(location: str) -> bool:
    return location.endswith(".tar") or "::" in location or any(ch in location for ch in "*?[{")


def find_video_source(location: str | os.PathLike | None, side: str, key: str) -> VideoSource:
    """The video files or shards at ``location``; ``key`` (e.g. ``evaluation.real``) is named in errors."""
    from lumiere.data.shards import expand_shards

    if location is None or not str(location).strip():
        raise ConfigError(f"{key} is not set: set {key}=PATH (a folder of videos or of .tar shards)")
    location = os.path.expanduser(str(location))
    if _is_shard_pattern(location) and not os.path.isdir(location):
        return VideoSource(side, location, "shards", [Path(p) for p in expand_shards(location)])
    root = Path(location)
    if not root.exists():
        raise InputFileError(f"{key}: {root} not found")
    if root.is_file():
        raise InputFileError(f"{key}: {root} is a file; give the folder that holds the videos (or .tar shards)")
    files, left_out, hidden = _video_files(root)
    shards = sorted(glob.glob(os.path.join(root, "*.tar")))
    if files and shards:
        raise InputFileError(f"{key}: {root} holds both video files and .tar shards: point {key} at one kind")
    if shards:
        return VideoSource(side, location, "shards", [Path(p) for p in shards])
    if not files:
        others = sum(left_out.values()) + hidden
        found = f" (only {others} other file(s))" if others else " (the folder is empty)"
        raise InputFileError(f"{key}: no video files ({' '.join(VIDEO_SUFFIXES)}) or .tar shards in {root}{found}")
    return VideoSource(side, location, "files", files, left_out)


def _video_files(root: Path) -> tuple[list[Path], dict[str, int], int]:
    """Video files under ``root`` (one per name), the files left out by reason, and hidden ones."""
    chosen: dict[tuple[Path, str], Path] = {}
    left_out: Counter = Counter()
    hidden = 0
    for path in sorted(root.rglob("*")):
        relative = path.relative_to(root)
        if any(part.startswith(".") for part in relative.parts):
            hidden += path.is_file()
            continue
        if not path.is_file():
            continue
        suffix = path.suffix.lower()
        if suffix not in VIDEO_SUFFIXES:
            left_out["not a video file"] += 1
        elif path.name in CONTACT_SHEETS and (path.parent / "prompts.txt").is_file():
            left_out["generate.py side-by-side GIF"] += 1
        else:
            name = (path.parent, path.stem)
            if name in chosen:
                left_out["same name, another suffix"] += 1
                if VIDEO_SUFFIXES.index(suffix) < VIDEO_SUFFIXES.index(chosen[name].suffix.lower()):
                    chosen[name] = path
            else:
                chosen[name] = path
    return sorted(chosen.values()), dict(left_out), hidden


# ---------------------------------------------------------------------------------------------- decoding
def window_indices(num_source_frames: int, stride: int, windows: str) -> list[list[int]]:
    """Source frame indices of each window: the first one, or every non-overlapping one."""
    from lumiere.data.decoders import TooFewFramesError, clip_span

    span = clip_span(CLIP_FRAMES, stride)
    if num_source_frames < span:
        raise TooFewFramesError(num_source_frames, span)
    starts = [0] if windows == "first" else range(0, num_source_frames - span + 1, span)
    return [list(range(start, start + span, stride)) for start in starts]


def decode_windows(data: bytes, options: WindowOptions) -> tuple[list[torch.Tensor], float]:
    """The windows of encoded video bytes as uint8 (CLIP_FRAMES, H, W, 3), and the source fps."""
    from lumiere.data.decoders import VideoDecodeError, decode_frames, probe_video, stride_for_fps

    try:
        probe = probe_video(data, backend=options.decoder)
    except VideoDecodeError as error:  # decode_frames falls back to PyAV where decord fails (GIF): so does the probe
        if options.decoder == "pyav" or error.reason == "empty":
            raise
        probe = probe_video(data, backend="pyav")
    stride = stride_for_fps(probe["fps"], options.target_fps) if options.target_fps else 1
    groups = window_indices(probe["num_frames"], stride, options.windows)
    frames, _ = decode_frames(data, [index for group in groups for index in group], backend=options.decoder)
    return list(frames.split(CLIP_FRAMES)), float(probe["fps"] or 0.0)


def npy_windows(path: Path, options: WindowOptions) -> list[torch.Tensor]:
    """The windows of a uint8 (T, H, W, 3) ``.npy`` clip (no frame rate: every frame, stride 1)."""
    from lumiere.data.decoders import VideoDecodeError

    try:
        frames = np.load(path, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError) as error:
        raise VideoDecodeError(f"not a numpy array file ({str(error).splitlines()[0]})", reason="corrupt") from None
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
        raise VideoDecodeError(f"holds {frames.dtype} {frames.shape}, expected uint8 (T, H, W, 3)", reason="corrupt")
    return [torch.from_numpy(np.array(frames[group[0]:group[-1] + 1]))  # a copy: the file is memory-mapped
            for group in window_indices(frames.shape[0], 1, options.windows)]


def _encoded_videos(source: VideoSource) -> Iterator[tuple[str, bytes | Path | None]]:
    """(name, bytes) of every video of the source; a ``.npy`` file is given as its path."""
    if source.kind == "files":
        for path in source.paths:
            if path.suffix.lower() == ".npy":
                yield str(path), path
                continue
            try:
                yield str(path), path.read_bytes()
            except OSError as error:
                raise InputFileError(f"cannot read {source.side} video {path}: {error.strerror or error}") from None
        return
    import tarfile

    import webdataset as wds

    from lumiere.data.shards import sample_video_bytes

    for shard in source.paths:
        samples = wds.tarfile_to_samples(handler=wds.reraise_exception)(iter([{"url": str(shard)}]))
        try:
            for sample in samples:
                yield f"{shard}::{sample.get('__key__')}", sample_video_bytes(sample)
        except (OSError, ValueError, tarfile.TarError) as error:
            raise InputFileError(f"cannot read {source.side} shard {shard}: {str(error).splitlines()[0]}") from None


def iter_clips(source: VideoSource, options: WindowOptions, counts: SideCounts) -> Iterator[torch.Tensor]:
    """Every window of every video of ``source`` as uint8 (CLIP_FRAMES, H, W, 3), counting into ``counts``."""
    from lumiere.data.decoders import VideoDecodeError

    for name, video in _encoded_videos(source):
        counts.videos += 1
        try:
            if video is None:
                raise VideoDecodeError("the sample holds no video entry (mp4, webm, ...)", reason="missing_video")
            if isinstance(video, Path):
                clips = npy_windows(video, options)
                counts.without_fps += 1
            else:
                clips, fps = decode_windows(video, options)
                counts.source_fps[round(fps, 3)] += 1
        except VideoDecodeError as error:
            _unusable(source, options, counts, name, error)
            continue
        counts.clips += len(clips)
        yield from clips
    if counts.clips == 0:
        reasons = ", ".join(f"{n} {reason}" for reason, n in sorted(counts.unusable.items()))
        raise InputFileError(f"none of the {counts.videos} {source.side} videos in {source.location} gives a "
                             f"{CLIP_FRAMES}-frame clip ({reasons})")


def _unusable(source: VideoSource, options: WindowOptions, counts: SideCounts, name: str, error) -> None:
    counts.unusable[error.reason] += 1
    if len(counts.unusable_names) < MAX_NAMED:
        counts.unusable_names.append(f"{name} ({error.reason})")
    from lumiere.data.decoders import TooFewFramesError

    if options.unusable_videos == "error":
        what = str(error)
        if isinstance(error, TooFewFramesError):
            what = (f"has {error.available} frames, a {CLIP_FRAMES}-frame clip"
                    + (f" at {options.target_fps:g} fps" if options.target_fps else "") + f" needs {error.required}")
        raise InputFileError(f"{source.side} video {name} {what}: remove it, or set evaluation.unusable_videos=skip "
                             "to leave such videos out (counted in the table)")


def clip_batches(clips: Iterable[torch.Tensor], batch_size: int) -> Iterator[torch.Tensor]:
    """uint8 (T, H, W, 3) clips -> float (B, 3, T, H, W) batches in [-1, 1], one size per batch
    (clips of several sizes wait in one buffer per size; each is resized by the metric)."""
    buffers: dict[tuple[int, ...], list[torch.Tensor]] = {}
    for clip in clips:
        buffer = buffers.setdefault(tuple(clip.shape), [])
        buffer.append(clip)
        if len(buffer) == batch_size:
            yield _to_video_batch(buffer)
            buffer.clear()
    for buffer in buffers.values():
        if buffer:
            yield _to_video_batch(buffer)


def _to_video_batch(clips: list[torch.Tensor]) -> torch.Tensor:
    return torch.stack(clips).permute(0, 4, 1, 2, 3).float() / 127.5 - 1.0
