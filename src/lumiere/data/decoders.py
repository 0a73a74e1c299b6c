"""Clip decoding from in-memory video bytes: decord or PyAV behind one interface.

Training samples are fixed-length clips (Sec. 5: 80 frames at 16 fps). A clip is
``num_frames`` frames taken every ``stride`` source frames, starting at an offset chosen by a
policy ("random" for training, "center" for evaluation, "start"). The stride either is given
or follows from a target frame rate: ``stride = max(1, round(source_fps / target_fps))``, so the
clip plays at ``source_fps / stride`` (reported as ``fps``), which can miss the target (25 fps
read every 2 frames is 12.5 fps).

One video can give several clips (:func:`clip_windows`): ``clips`` random windows, or every
non-overlapping window in order (``"all"``). A video shorter than the span is skipped
(:class:`TooFewFramesError`) unless ``short_videos`` fills the clip: ``"loop"`` repeats the
frames the video has, ``"pad"`` repeats its last one.

Both backends raise :class:`VideoDecodeError` (with a ``reason``) for any input they cannot
decode, and :class:`TooFewFramesError` when the video is shorter than the requested span
``(num_frames - 1) * stride + 1``; decord's ``DECORDError``/``RuntimeError`` and PyAV's
``FFmpegError`` never leak out.

decord notes (notes/facts.md Sec. 2): a ``VideoReader`` is created per sample, inside the
DataLoader worker (never before the fork), with ``num_threads=1``. The decoders' native logging is
silenced once per process when the first reader of a backend is created
(:func:`quiet_native_logging`): FFmpeg's messages (decord's own copy of FFmpeg, and PyAV's) and
decord's "ERROR opening: <name>" line, which for in-memory bytes prints the bytes themselves (a
text file stored as a video printed hundreds of lines). A bad sample is reported by the loader's
skip counts instead. Bytes without a recognised container signature are never handed to decord:
PyAV reads whatever FFmpeg knows and fails cleanly otherwise. decord 0.6 also fails on some
valid H.264 clips whose width is not a multiple of its row alignment (16, 24 and 48 pixels wide
raise a size-mismatch ``DECORDError``); the decord backend therefore retries such a clip with
PyAV before declaring it bad.
"""

from __future__ import annotations

import io
import os
import sys
import threading
from collections.abc import Callable, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch

from lumiere.data.clip_windows import (  # noqa: F401  (re-exported: the decoders' public names)
    ALL_WINDOWS,
    OFFSET_POLICIES,
    SHORT_VIDEO_POLICIES,
    _resolve_stride,
    choose_start,
    clip_span,
    clip_windows,
    stride_for_fps,
)
from lumiere.data.video_errors import (  # noqa: F401
    TooFewFramesError,
    VideoDecodeError,
    _decode_error,
    classify_undecodable,
    sniff_container,
)
from lumiere.errors import ConfigError

BACKENDS = ("decord", "pyav")
_READ_BUDGET_BYTES = 256 * 2**20  # source frames decoded at once when a video gives many clips


# ----------------------------------------------------------------------------------------------
# Backends: each opens bytes and returns frames at given indices as uint8 (N, H, W, 3)
# ----------------------------------------------------------------------------------------------


_QUIETED: set[str] = set()  # backends whose native logging this process has silenced


def quiet_native_logging(backend: str) -> None:
    """Silence a backend's native (FFmpeg) logging, once per process (the state is inherited by
    forked DataLoader workers; spawned ones call this again with their first reader).

    decord: ``decord.logging.set_level(QUIET)`` (its bundled FFmpeg's ``av_log`` level). PyAV
    ignores FFmpeg's log by default (``av.logging`` level None); setting None again re-installs
    that callback in case something restored FFmpeg's printer. A level a user chose (e.g.
    ``av.logging.set_level(av.logging.VERBOSE)`` while debugging) is kept: it logs through Python's
    ``logging``, not onto the terminal byte by byte.
    """
    if backend in _QUIETED:
        return
    if backend == "decord":
        import decord  # lazy: importing decord in the parent before workers fork is asking for trouble

        decord.logging.set_level(decord.logging.QUIET)
    elif backend == "pyav":
        import av.logging

        if av.logging.get_level() is None:
            av.logging.set_level(None)
    _QUIETED.add(backend)


_STDERR_LOCK = threading.Lock()
_STDERR_HOLDERS = 0
_STDERR_SAVED: int | None = None


@contextmanager
def _native_stderr_silenced():
    """Point file descriptor 2 at /dev/null while native code runs that logs past every level
    setting (decord's dmlc ``LOG`` lines). Python's ``sys.stderr`` is flushed first; nested or
    concurrent uses share one redirection, restored when the last one leaves. Only the opening of
    a reader (milliseconds) is covered: what another thread of the process writes to stderr in
    that window is lost, which in a DataLoader worker (one decoding thread) is nothing."""
    global _STDERR_HOLDERS, _STDERR_SAVED
    with _STDERR_LOCK:
        if _STDERR_HOLDERS == 0:
            try:
                sys.stderr.flush()
            except (AttributeError, OSError, ValueError):
                pass
            try:
                saved = os.dup(2)
                devnull = os.open(os.devnull, os.O_WRONLY)
                try:
                    os.dup2(devnull, 2)
                finally:
                    os.close(devnull)
                _STDERR_SAVED = saved
            except OSError:  # no fd 2 (a daemon): nothing to silence
                _STDERR_SAVED = None
        _STDERR_HOLDERS += 1
    try:
        yield
    finally:
        with _STDERR_LOCK:
            _STDERR_HOLDERS -= 1
            if _STDERR_HOLDERS == 0 and _STDERR_SAVED is not None:
                os.dup2(_STDERR_SAVED, 2)
                os.close(_STDERR_SAVED)
                _STDERR_SAVED = None


class _DecordReader:
    """decord ``VideoReader`` over the in-memory bytes; random access with ``get_batch``."""

    name = "decord"

    def __init__(self, data: bytes):
        import decord  # lazy: importing decord in the parent before workers fork is asking for trouble

        quiet_native_logging("decord")
        # decord logs a failed open as "ERROR opening: <name>, <reason>" whatever the level, and
        # for bytes the name is the data itself
        with _native_stderr_silenced():
            self._reader = decord.VideoReader(io.BytesIO(data), num_threads=1)
            self.num_frames = len(self._reader)
            self.fps = float(self._reader.get_avg_fps())

    def get(self, indices: Sequence[int]) -> np.ndarray:
        return self._reader.get_batch(list(indices)).asnumpy()


class _PyAVReader:
    """PyAV: decode sequentially from the first frame and keep the requested indices."""

    name = "pyav"

    def __init__(self, data: bytes):
        import av

        quiet_native_logging("pyav")
        self._data = data
        with av.open(io.BytesIO(data), mode="r") as container:
            if not container.streams.video:
                # streams but none of them video (audio only): not a video; no streams at all: a
                # damaged container (an mp4 cut before its moov box is "truncated")
                reason = "not_video" if len(container.streams) else classify_undecodable(data)
                raise VideoDecodeError(f"no video stream in the file ({reason})", reason=reason)
            stream = container.streams.video[0]
            rate = stream.average_rate or stream.guessed_rate or stream.base_rate
            self.fps = float(rate) if rate else 0.0
            frames = int(stream.frames or 0)
            if frames <= 0:  # no frame count in the header: count packets (demux only, no decode)
                frames = sum(1 for packet in container.demux(stream) if packet.size)
        self.num_frames = frames

    def get(self, indices: Sequence[int]) -> np.ndarray:
        import av

        wanted = set(int(i) for i in indices)
        if not wanted:
            raise ConfigError("no frame indices requested")
        last = max(wanted)
        keep: dict[int, np.ndarray] = {}
        decoded = 0
        with av.open(io.BytesIO(self._data), mode="r") as container:
            stream = container.streams.video[0]
            stream.thread_count = 1
            for frame in container.decode(stream):
                if decoded in wanted:
                    keep[decoded] = frame.to_ndarray(format="rgb24")
                decoded += 1
                if decoded > last:
                    break
        if decoded <= last:
            # the header promised more frames than the stream holds
            raise _decode_error(self._data, "pyav", f"stream ended after {decoded} frames")
        return np.stack([keep[int(i)] for i in indices])


_READERS = {"decord": _DecordReader, "pyav": _PyAVReader}


def _open(data: bytes, backend: str):
    if backend not in _READERS:
        raise ConfigError(f"decoder backend must be one of {BACKENDS}, got {backend!r}")
    if len(data) == 0:
        raise VideoDecodeError("zero-byte video", reason="empty")
    try:
        reader = _READERS[backend](data)
    except VideoDecodeError:
        raise
    except Exception as error:  # DECORDError, RuntimeError, av.FFmpegError, ...
        raise _decode_error(data, backend, error) from error
    if reader.num_frames <= 0:
        raise VideoDecodeError(f"{backend} found no frames in the video", reason=classify_undecodable(data))
    return reader


def _read(reader, data: bytes, indices: Sequence[int]) -> np.ndarray:
    try:
        frames = reader.get(indices)
    except VideoDecodeError:
        raise
    except Exception as error:
        raise _decode_error(data, reader.name, error) from error
    if frames.ndim != 4 or frames.shape[0] != len(indices) or frames.shape[-1] != 3:
        raise VideoDecodeError(
            f"{reader.name} returned frames of shape {frames.shape} for {len(indices)} indices",
            reason="corrupt",
        )
    return frames


def _first_backend(data: bytes, backend: str) -> str:
    """PyAV instead of decord for bytes without a container signature decord could open: decord
    would print them while failing; PyAV reads any format FFmpeg knows, or fails cleanly."""
    if backend == "decord" and data and sniff_container(data) is None:
        return "pyav"
    return backend


def _with_fallback(data: bytes, backend: str, work):
    """Run ``work(reader)``; a decord failure on bytes that PyAV can read falls back to PyAV."""
    backend = _first_backend(data, backend)
    try:
        return work(_open(data, backend)), backend
    except TooFewFramesError:
        raise
    except VideoDecodeError as error:
        if backend != "decord" or error.reason == "empty":
            raise
        try:
            return work(_open(data, "pyav")), "pyav"
        except TooFewFramesError:
            raise
        except VideoDecodeError:
            raise error from None


# ----------------------------------------------------------------------------------------------
# Public API
# ----------------------------------------------------------------------------------------------


def probe_video(video_bytes: bytes, *, backend: str = "decord") -> dict[str, Any]:
    """Frame count and frame rate of a video (opens it, decodes nothing)."""
    backend = _first_backend(video_bytes, backend)
    reader = _open(video_bytes, backend)
    return {"num_frames": reader.num_frames, "fps": reader.fps, "backend": backend}


def decode_windows(
    video_bytes: bytes,
    windows: Sequence[Sequence[int]] | Callable[[int, float], Sequence[Sequence[int]]],
    *,
    backend: str = "decord",
    transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> tuple[list[torch.Tensor], dict[str, Any]]:
    """Decode several clips of one video, opening it once: ``windows`` holds each clip's frame
    indices, or is a function of the video's (frame count, frame rate) returning them.

    Each clip is uint8 (len(window), H, W, 3), passed through ``transform`` (e.g. a resize) as
    soon as it is read. Windows are read in groups of at most about 256 MB of source frames, so
    every window of a long high-resolution video never sits in memory at once.
    Returns the clips and ``info`` with ``source_fps``, ``num_source_frames``, ``windows`` and
    ``backend``."""
    info: dict[str, Any] = {}

    def work(reader) -> list[torch.Tensor]:
        plan = windows(reader.num_frames, reader.fps) if callable(windows) else windows
        plan = [[int(i) for i in window] for window in plan]
        if not plan or not all(plan):
            raise ConfigError("decode_windows needs at least one non-empty window")
        lowest, highest = min(min(w) for w in plan), max(max(w) for w in plan)
        if lowest < 0 or highest >= reader.num_frames:
            raise TooFewFramesError(reader.num_frames, highest + 1)
        info.update(source_fps=reader.fps, num_source_frames=reader.num_frames, windows=plan)
        clips: list[torch.Tensor] = []
        frame_bytes, position = None, 0
        while position < len(plan):
            group, union = [plan[position]], set(plan[position])
            position += 1
            limit = _READ_BUDGET_BYTES // frame_bytes if frame_bytes else 0  # first group: one window
            while position < len(plan) and len(union | set(plan[position])) <= limit:
                union |= set(plan[position])
                group.append(plan[position])
                position += 1
            unique = sorted(union)
            frames = _read(reader, video_bytes, unique)
            frame_bytes = max(1, frames[0].nbytes)
            row = {index: k for k, index in enumerate(unique)}
            for window in group:
                # the common case (one window of increasing indices) keeps the decoded array
                picked = frames if window == unique else frames[[row[i] for i in window]]
                clip = torch.from_numpy(np.ascontiguousarray(picked))
                clips.append(transform(clip) if transform is not None else clip)
        return clips

    clips, used = _with_fallback(video_bytes, backend, work)
    info["backend"] = used
    return clips, info


def decode_clips(
    video_bytes: bytes,
    *,
    num_frames: int,
    backend: str = "decord",
    frame_stride: int | None = None,
    target_fps: float | None = None,
    clips: int | str = 1,
    offset: str = "random",
    short_videos: str = "skip",
    rng: np.random.Generator | None = None,
    transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> tuple[list[torch.Tensor], dict[str, Any]]:
    """Decode the clips :func:`clip_windows` picks from MP4 (or any FFmpeg-readable) bytes.

    Returns the clips (uint8 (num_frames, H, W, 3) each, through ``transform``) and ``info`` with
    ``source_fps``, ``stride``, ``fps`` (= source_fps / stride, the rate the clips play at),
    ``windows`` (each clip's source indices), ``filled`` (whether a short video was looped or
    padded), ``num_source_frames`` and ``backend``. Raises :class:`VideoDecodeError` /
    :class:`TooFewFramesError`."""
    if num_frames < 1:
        raise ConfigError(f"num_frames must be >= 1, got {num_frames}")
    chosen: dict[str, Any] = {}

    def plan(num_source: int, source_fps: float) -> list[list[int]]:
        stride = _resolve_stride(frame_stride, target_fps, source_fps)
        chosen.update(stride=stride, filled=num_source < clip_span(num_frames, stride))
        return clip_windows(num_source, num_frames=num_frames, stride=stride, clips=clips, offset=offset,
                            short_videos=short_videos, rng=rng)

    decoded, info = decode_windows(video_bytes, plan, backend=backend, transform=transform)
    info.update(chosen)
    info["fps"] = info["source_fps"] / info["stride"] if info["source_fps"] else 0.0
    return decoded, info


def decode_clip(
    video_bytes: bytes,
    *,
    num_frames: int,
    backend: str = "decord",
    frame_stride: int | None = None,
    target_fps: float | None = None,
    offset: str = "random",
    rng: np.random.Generator | None = None,
) -> tuple[torch.Tensor, dict[str, Any]]:
    """Decode one clip of ``num_frames`` frames (:func:`decode_clips` with one window).

    Returns ``frames`` (uint8 tensor, (T, H, W, 3)) and ``info`` with ``source_fps``, ``stride``,
    ``fps`` (= source_fps / stride), ``start``, ``indices`` and ``num_source_frames``.
    Raises :class:`VideoDecodeError` / :class:`TooFewFramesError`.
    """
    clips, info = decode_clips(video_bytes, num_frames=num_frames, backend=backend, frame_stride=frame_stride,
                               target_fps=target_fps, offset=offset, rng=rng)
    info.update(indices=info["windows"][0], start=info["windows"][0][0])
    return clips[0], info


def decode_frames(
    video_bytes: bytes,
    indices: Sequence[int] | Callable[[int], Sequence[int]],
    *,
    backend: str = "decord",
) -> tuple[torch.Tensor, dict[str, Any]]:
    """Decode the frames at explicit ``indices`` (e.g. the high-resolution twin of a clip).

    ``indices`` may also be a function of the video's frame count returning the indices (e.g.
    random single frames for the text-to-image stage), so the video is opened only once.
    Returns uint8 (N, H, W, 3) and ``info`` with ``source_fps``, ``num_source_frames`` and
    ``indices``."""
    window = (lambda num_source, _fps: [indices(num_source)]) if callable(indices) else [indices]
    clips, info = decode_windows(video_bytes, window, backend=backend)
    info["indices"] = info.pop("windows")[0]
    return clips[0], info
