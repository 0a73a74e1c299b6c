"""The converter's report (:mod:`lumiere.data.convert`): what it converted, everything it left out
and why, and how many converted videos are long enough for a training clip.

Left out, each counted with its first few files named:

* video files under ``--videos`` that no caption row names (never read);
* videos shorter than ``--min-frames`` after resampling (``too_few_frames``; a single frame is
  never a video, so the minimum is at least 2);
* images named as videos (``image``: an image container such as a PNG renamed ``.mp4``, or a
  single decoded frame);
* every other skip reason (``missing_file``, ``corrupt``, ...).

The clip check counts the converted videos that hold one ``clip_frames``-frame clip at
``clip_fps`` the way the data module reads it: every ``stride = max(1, round(fps / clip_fps))``-th
frame, so a clip spans ``(clip_frames - 1) * stride + 1`` frames.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

DEFAULT_CLIP_FRAMES = 80  # the paper's clip (Sec. 5: 80 frames at 16 fps)
DEFAULT_CLIP_FPS = 16.0   # the data configs' target_fps, used when the converter keeps the source rate
LISTED_IN_REPORT = 20     # file names kept per category in convert_report.json
SHOWN_IN_SUMMARY = 3      # file names printed per category in the summary block


def unnamed_videos(all_videos: Iterable[Path], named: Iterable[str], root: Path) -> list[str]:
    """Paths (relative to ``root``) of the video files that no caption row names, sorted."""
    named_files = {Path(path).resolve() for path in named}
    return sorted(str(path.relative_to(root)) for path in all_videos if path.resolve() not in named_files)


def clip_span(clip_frames: int, video_fps: float, clip_fps: float) -> int:
    """Frames of a video at ``video_fps`` that one ``clip_frames``-frame clip at ``clip_fps`` spans."""
    from lumiere.data.decoders import stride_for_fps

    stride = stride_for_fps(video_fps, clip_fps) if video_fps > 0 else 1
    return (clip_frames - 1) * stride + 1


def clip_check(converted: list[dict[str, Any]], clip_frames: int, clip_fps: float) -> dict[str, Any]:
    """How many converted videos (their ``num_frames`` and ``fps``) hold one clip; the shortest of
    those that do not, with the frames it has and needs."""
    short = []
    for meta in converted:
        needed = clip_span(clip_frames, float(meta["fps"]), clip_fps)
        if int(meta["num_frames"]) < needed:
            short.append({"source": meta["source"], "frames": int(meta["num_frames"]), "needed": needed})
    short.sort(key=lambda entry: entry["frames"])
    return {"clip_frames": int(clip_frames), "clip_fps": float(clip_fps), "converted": len(converted),
            "long_enough": len(converted) - len(short), "too_short": short[:LISTED_IN_REPORT]}


def _names(files: list[str], count: int) -> str:
    shown = ", ".join(files[:SHOWN_IN_SUMMARY])
    return shown + (f", ... ({count - SHOWN_IN_SUMMARY} more)" if count > SHOWN_IN_SUMMARY else "")


def _skipped_names(report: dict[str, Any], reason: str) -> list[str]:
    return [Path(entry["path"]).name + (f" ({entry['error']})" if reason == "too_few_frames" else "")
            for entry in report.get("skipped_files", []) if entry.get("reason") == reason]


def format_report(report: dict[str, Any]) -> str:
    """The summary block the command prints: one headline, then one line per kind of file left out
    and the clip check. Reports written before these fields existed print their headline only."""
    lines = [f"converted {report['converted']} videos into {len(report['shards'])} shards, skipped {report['skipped']}"]
    if report["skipped"]:
        lines[0] += " (" + ", ".join(f"{reason}={count}" for reason, count in sorted(report["skipped_by_reason"].items())) + ")"
    unnamed = report.get("unnamed")
    if unnamed and unnamed["count"]:
        lines.append(f"  not named by any caption row, not converted: {unnamed['count']} file(s): "
                     f"{_names(unnamed['files'], unnamed['count'])}")
    counts = report.get("skipped_by_reason", {})
    if counts.get("too_few_frames"):
        minimum = report.get("options", {}).get("min_frames")
        lines.append(f"  shorter than {minimum} frames (--min-frames): {counts['too_few_frames']}: "
                     f"{_names(_skipped_names(report, 'too_few_frames'), counts['too_few_frames'])}")
    if counts.get("image"):
        lines.append(f"  images, not videos: {counts['image']}: {_names(_skipped_names(report, 'image'), counts['image'])}")
    check = report.get("clip_check")
    if check:
        line = (f"  long enough for a clip of {check['clip_frames']} frames at {check['clip_fps']:g} fps: "
                f"{check['long_enough']} of {check['converted']} converted")
        if check["too_short"]:
            shortest = check["too_short"][0]
            line += f" (shortest: {shortest['source']}, {shortest['frames']} frames of the {shortest['needed']} needed)"
        lines.append(line)
    return "\n".join(lines)
