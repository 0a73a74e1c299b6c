"""Clip decoding from in-memory video bytes: decord or PyAV behind one interface.

Training samples are fixed-length clips (Sec. 5: 80 frames at 16 fps). A clip is
``num_frames`` frames taken every ``stride`` source frames, starting at an offset chosen by a
policy ("random" for training, "center" for evaluation, "start"). The stride either is given
or follows from a target frame rate: ``stride = max(1, round(source_fps / target_fps))``.

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
import struct
import sys
import threading
from collections.abc import Callable, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch

from lumiere.errors import ConfigError, InputFileError

BACKENDS = ("decord", "pyav")
OFFSET_POLICIES = ("random", "center", "start")


# ----------------------------------------------------------------------------------------------
# Errors
# ----------------------------------------------------------------------------------------------


class VideoDecodeError(InputFileError):
    """Video bytes that cannot be decoded. ``reason`` is one of
    ``empty | not_video | truncated | corrupt | too_few_frames``."""

    def __init__(self, message: str, reason: str = "corrupt"):
        super().__init__(message)
        self.reason = reason


class TooFewFramesError(VideoDecodeError):
    """The video decodes but holds fewer frames than the clip needs."""

    def __init__(self, available: int, required: int):
        super().__init__(
            f"video has {available} frames, the clip needs {required}", reason="too_few_frames"
        )
        self.available = available
        self.required = required


# ----------------------------------------------------------------------------------------------
# Classifying undecodable bytes (so skip reports say *why*)
# ----------------------------------------------------------------------------------------------

_ISO_BMFF_TOP_LEVEL = {b"ftyp", b"moov", b"mdat", b"free", b"skip", b"wide", b"pnot", b"styp", b"moof", b"uuid"}


def sniff_container(data: bytes) -> str | None:
    """Name the container family from the first bytes, or None when nothing video-like matches."""
    if len(data) >= 8 and data[4:8] in _ISO_BMFF_TOP_LEVEL:
        return "iso-bmff"  # mp4 / mov / 3gp
    if data[:4] == b"\x1a\x45\xdf\xa3":
        return "matroska"  # mkv / webm
    if data[:4] == b"RIFF" and data[8:12] == b"AVI ":
        return "avi"
    if data[:3] == b"FLV":
        return "flv"
    if data[:4] == b"OggS":
        return "ogg"
    if data[:4] == bytes.fromhex("3026b275"):
        return "asf"
    if data[:4] == b"\x00\x00\x01\xba":
        return "mpeg-ps"
    if data[:1] == b"\x47" and (len(data) < 189 or data[188:189] == b"\x47"):
        return "mpeg-ts"
    if data[:4] == b"\x00\x00\x00\x01" or data[:3] == b"\x00\x00\x01":
        return "annexb"  # raw H.264/H.265 elementary stream
    if data[:4] == b"GIF8":
        return "gif"
    return None


def _iso_bmff_is_truncated(data: bytes) -> bool:
    """Walk the top-level boxes: a box running past the end, or no ``moov`` box, means the file
    was cut short (an encoder writes ``moov`` last unless asked for faststart)."""
    position, end, seen_moov = 0, len(data), False
    while position + 8 <= end:
        size, box_type = struct.unpack(">I4s", data[position : position + 8])
        if size == 1:  # 64-bit "largesize" follows the type
            if position + 16 > end:
                return True
            size = struct.unpack(">Q", data[position + 8 : position + 16])[0]
        elif size == 0:  # box extends to the end of the file
            size = end - position
        if size < 8:
            return False  # malformed rather than cut short
        seen_moov |= box_type == b"moov"
        if position + size > end:
            return True
        position += size
    return position != end or not seen_moov


def classify_undecodable(data: bytes) -> str:
    """Why bytes failed to decode: ``empty``, ``not_video``, ``truncated`` or ``corrupt``."""
    if len(data) == 0:
        return "empty"
    container = sniff_container(data)
    if container is None:
        return "not_video"
    if container == "iso-bmff" and _iso_bmff_is_truncated(data):
        return "truncated"
    return "corrupt"


def _decode_error(data: bytes, backend: str, cause: BaseException | str) -> VideoDecodeError:
    reason = classify_undecodable(data)
    detail = str(cause).strip().splitlines()[0][:160] if str(cause).strip() else type(cause).__name__
    return VideoDecodeError(f"{backend} could not decode the video ({reason}): {detail}", reason=reason)


# ----------------------------------------------------------------------------------------------
# Frame index selection
# ----------------------------------------------------------------------------------------------


def stride_for_fps(source_fps: float, target_fps: float) -> int:
    """Source frames between two sampled frames so the clip plays at about ``target_fps``."""
    if target_fps <= 0:
        raise ConfigError(f"target_fps must be positive, got {target_fps}")
    if not source_fps or source_fps <= 0 or not np.isfinite(source_fps):
        return 1  # unknown source rate: keep every frame
    return max(1, int(round(source_fps / target_fps)))


def clip_span(num_frames: int, stride: int) -> int:
    """Source frames covered by ``num_frames`` frames taken every ``stride`` frames."""
    return (num_frames - 1) * stride + 1


def choose_start(
    num_source_frames: int, span: int, offset: str, rng: np.random.Generator | None
) -> int:
    """First source frame of a clip covering ``span`` frames, by offset policy."""
    if offset not in OFFSET_POLICIES:
        raise ConfigError(f"offset must be one of {OFFSET_POLICIES}, got {offset!r}")
    if num_source_frames < span:
        raise TooFewFramesError(num_source_frames, span)
    slack = num_source_frames - span
    if offset == "start" or slack == 0:
        return 0
    if offset == "center":
        return slack // 2
    rng = rng if rng is not None else np.random.default_rng()
    return int(rng.integers(0, slack + 1))


def _resolve_stride(frame_stride: int | None, target_fps: float | None, source_fps: float) -> int:
    if frame_stride is not None and target_fps is not None:
        raise ConfigError("give either frame_stride or target_fps, not both")
    if frame_stride is not None:
        if int(frame_stride) < 1:
            raise ConfigError(f"frame_stride must be >= 1, got {frame_stride}")
        return int(frame_stride)
    if target_fps is not None:
        return stride_for_fps(source_fps, float(target_fps))
    return 1


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
    """Decode a clip of ``num_frames`` frames from MP4 (or any FFmpeg-readable) bytes.

    Returns ``frames`` (uint8 tensor, (T, H, W, 3)) and ``info`` with ``source_fps``, ``stride``,
    ``fps`` (= source_fps / stride), ``start``, ``indices`` and ``num_source_frames``.
    Raises :class:`VideoDecodeError` / :class:`TooFewFramesError`.
    """
    if num_frames < 1:
        raise ConfigError(f"num_frames must be >= 1, got {num_frames}")
    info: dict[str, Any] = {}

    def work(reader) -> np.ndarray:
        stride = _resolve_stride(frame_stride, target_fps, reader.fps)
        span = clip_span(num_frames, stride)
        start = choose_start(reader.num_frames, span, offset, rng)
        indices = list(range(start, start + span, stride))
        frames = _read(reader, video_bytes, indices)
        info.update(
            source_fps=reader.fps,
            stride=stride,
            fps=reader.fps / stride if reader.fps else 0.0,
            start=start,
            indices=indices,
            num_source_frames=reader.num_frames,
        )
        return frames

    frames, used = _with_fallback(video_bytes, backend, work)
    info["backend"] = used
    return torch.from_numpy(np.ascontiguousarray(frames)), info


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
    info: dict[str, Any] = {}

    def work(reader) -> np.ndarray:
        chosen = [int(i) for i in (indices(reader.num_frames) if callable(indices) else indices)]
        if not chosen:
            raise ConfigError("decode_frames needs at least one index")
        if min(chosen) < 0 or max(chosen) >= reader.num_frames:
            raise TooFewFramesError(reader.num_frames, max(chosen) + 1)
        info.update(source_fps=reader.fps, num_source_frames=reader.num_frames, indices=chosen)
        return _read(reader, video_bytes, chosen)

    frames, used = _with_fallback(video_bytes, backend, work)
    info["backend"] = used
    return torch.from_numpy(np.ascontiguousarray(frames)), info
