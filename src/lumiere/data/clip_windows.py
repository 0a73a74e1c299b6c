"""Which source frames make a clip: the stride for a target frame rate, the span of a clip, its
offset policy and the windows of the clip policies (one random clip, N per video, every
non-overlapping window), with the short-video policies (skip, loop, pad)."""

from __future__ import annotations

import numpy as np

from lumiere.data.video_errors import TooFewFramesError
from lumiere.errors import ConfigError

OFFSET_POLICIES = ("random", "center", "start")
SHORT_VIDEO_POLICIES = ("skip", "loop", "pad")
ALL_WINDOWS = "all"


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


def clip_windows(
    num_source_frames: int,
    *,
    num_frames: int,
    stride: int,
    clips: int | str = 1,
    offset: str = "random",
    short_videos: str = "skip",
    rng: np.random.Generator | None = None,
) -> list[list[int]]:
    """Source frame indices of each clip to take from a video of ``num_source_frames`` frames.

    ``clips`` = N: N windows, each placed by ``offset`` ("random": N independent draws, the
    first one the same draw a single clip makes; "center"/"start" with N > 1: spread evenly,
    deterministic). ``clips="all"``: every non-overlapping window from the first frame on, in
    order; window k starts at ``k * num_frames * stride``, so the windows together are the
    video sampled every ``stride`` frames (a tail shorter than a window is left out).

    A video shorter than the span ``(num_frames - 1) * stride + 1`` raises
    :class:`TooFewFramesError` with ``short_videos="skip"``; otherwise it gives one clip made of
    its frames taken every ``stride`` frames, filled by repeating them cyclically ("loop") or
    by repeating the last one ("pad")."""
    if short_videos not in SHORT_VIDEO_POLICIES:
        raise ConfigError(f"short_videos must be one of {SHORT_VIDEO_POLICIES}, got {short_videos!r}")
    span = clip_span(num_frames, stride)
    if num_source_frames < span:
        if short_videos == "skip" or num_source_frames < 1:
            raise TooFewFramesError(num_source_frames, span)
        available = list(range(0, num_source_frames, stride))
        if short_videos == "loop":
            return [[available[i % len(available)] for i in range(num_frames)]]
        return [[available[min(i, len(available) - 1)] for i in range(num_frames)]]
    if clips == ALL_WINDOWS:
        starts = list(range(0, num_source_frames - span + 1, num_frames * stride))
    elif not isinstance(clips, int) or isinstance(clips, bool) or clips < 1:
        raise ConfigError(f"clips must be a positive int or {ALL_WINDOWS!r}, got {clips!r}")
    elif offset == "random" or clips == 1:
        starts = [choose_start(num_source_frames, span, offset, rng) for _ in range(clips)]
    else:
        if offset not in OFFSET_POLICIES:
            raise ConfigError(f"offset must be one of {OFFSET_POLICIES}, got {offset!r}")
        slack = num_source_frames - span
        if offset == "center":  # the centres of `clips` equal parts of the possible starts
            starts = [slack * (2 * k + 1) // (2 * clips) for k in range(clips)]
        else:  # "start": from the first possible start to the last
            starts = [slack * k // (clips - 1) for k in range(clips)]
    return [list(range(start, start + span, stride)) for start in starts]
