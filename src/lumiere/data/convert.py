"""Convert real videos into the project's shard format (Sec. 5 data; Sec. 5.2 UCF101).

Two inputs:

* a folder of videos plus a caption file (CSV with a header, or JSON: a list of objects or a
  ``{video: caption}`` map); the video column may hold a relative path or a video id (matched
  to a file stem anywhere under the folder), e.g. WebVid's ``videoid,name`` CSV;
* a UCF101-style folder of class folders (``UCF-101/ApplyEyeMakeup/v_..._g08_c01.avi``): the
  class name, CamelCase split into words, makes the caption ("a video of a person apply eye
  makeup") and the labels ``{"class": ..., "class_index": ...}``; ``--split-file`` takes an
  official ``trainlist01.txt`` / ``testlist01.txt`` to convert one split.

Each video is decoded with PyAV, optionally resized (short side), centre-cropped, resampled to
a frame rate (nearest frame in time, so frames repeat or drop when the rates do not divide)
and cut to ``max_frames``, then re-encoded as H.264 (:func:`~lumiere.data.codec.encode_h264`)
into WebDataset shards with ``mp4``/``txt``/``json`` entries. Unreadable files are skipped and
reported, and so are the files it leaves out without reading them: a summary block
(:mod:`lumiere.data.convert_report`: files no caption row names, videos under ``--min-frames``,
images named as videos, how many converted videos hold an 80-frame clip) and
``convert_report.json``. Shards written by video2dataset need no conversion: point the data
module at them.

CLI::

    python -m lumiere.data.convert --ucf101 /path/UCF-101 --out data/ucf101/train \
        --split-file /path/ucfTrainTestlist/trainlist01.txt --resize 128 --crop 128 --fps 16
    python -m lumiere.data.convert --videos /path/videos --captions captions.csv --out data/myset
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing
import os
import sys
from collections import Counter
from collections.abc import Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from lumiere.data.convert_inputs import (  # noqa: F401  (re-exported: the converter's public names)
    CAPTION_COLUMNS,
    UCF101_TEMPLATE,
    VIDEO_COLUMNS,
    VIDEO_EXTENSIONS,
    VideoItem,
    folder_items,
    list_videos,
    split_camel_case,
    ucf101_caption,
    ucf101_items,
)
from lumiere.data.convert_report import DEFAULT_CLIP_FPS, DEFAULT_CLIP_FRAMES, LISTED_IN_REPORT, clip_check, format_report, unnamed_videos
from lumiere.errors import ConfigError, InputFileError, LumiereError

REPORT_NAME = "convert_report.json"


@dataclass(frozen=True)
class ConvertOptions:
    """How each video is transformed before re-encoding."""

    resize: int | None = None  # short side in pixels (aspect kept, sizes rounded to even)
    crop: int | None = None  # centre square crop in pixels, after resizing
    fps: float | None = None  # output frame rate (nearest source frame in time)
    max_frames: int | None = None  # keep at most this many frames from the start
    min_frames: int = 2  # skip videos shorter than this (after resampling); at least 2: one frame is an image
    crf: int = 18

    def __post_init__(self) -> None:
        if self.min_frames >= 1:  # 0 or less is a mistake that validate() names
            object.__setattr__(self, "min_frames", max(2, int(self.min_frames)))

    def validate(self) -> None:
        for name in ("resize", "crop", "max_frames"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ConfigError(f"{name} must be positive, got {value}")
        if self.crop is not None and self.crop % 2:
            raise ConfigError(f"crop must be even (H.264 yuv420p), got {self.crop}")
        if self.fps is not None and self.fps <= 0:
            raise ConfigError(f"fps must be positive, got {self.fps}")
        if self.min_frames < 1:
            raise ConfigError(f"min_frames must be >= 1, got {self.min_frames}")


class SkipVideo(Exception):
    def __init__(self, reason: str, detail: str):
        super().__init__(detail)
        self.reason = reason


# ----------------------------------------------------------------------------------------------
# Transcoding one video
# ----------------------------------------------------------------------------------------------


# Demuxers of still images (FFmpeg's image2 and its *_pipe readers): a PNG renamed .mp4 opens as one.
def _is_image_container(format_name: str) -> bool:
    return any(name == "image2" or name.endswith("_pipe") for name in format_name.split(","))


def _even(value: float) -> int:
    return max(2, int(round(value / 2.0)) * 2)


def transcode(item: VideoItem, options: ConvertOptions) -> tuple[bytes, dict[str, Any]]:
    """Decode, transform and re-encode one video. Raises :class:`SkipVideo` with a reason."""
    import av

    from lumiere.data.codec import encode_h264
    from lumiere.data.decoders import classify_undecodable, quiet_native_logging

    quiet_native_logging("pyav")  # once per process: a broken file is reported as skipped, not logged

    if not item.caption:
        raise SkipVideo("missing_caption", "empty caption")
    try:
        data = Path(item.path).read_bytes()
    except FileNotFoundError:
        raise SkipVideo("missing_file", "file not found") from None
    except OSError as error:
        raise SkipVideo("unreadable", str(error)) from None
    if not data:
        raise SkipVideo("empty", "zero-byte file")

    frames: list[np.ndarray] = []
    try:
        with av.open(item.path, mode="r") as container:
            if not container.streams.video:
                # streams but none of them video (audio-only): not a video; no streams: damaged
                reason = "not_video" if len(container.streams) else classify_undecodable(data)
                raise SkipVideo(reason, "no video stream")
            if _is_image_container(container.format.name):
                raise SkipVideo("image", f"an image ({container.format.name}), not a video")
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            rate = stream.average_rate or stream.guessed_rate
            source_fps = float(rate) if rate else 0.0
            if options.fps is not None and source_fps <= 0:
                raise SkipVideo("corrupt", "unknown source frame rate, cannot resample")
            out_fps = options.fps if options.fps is not None else (source_fps or 25.0)
            next_output = 0  # output frame k shows the source frame nearest in time: floor(k * src / out + 1/2)
            size = None
            source_frames, cut = 0, False
            for source_index, frame in enumerate(container.decode(stream)):
                source_frames = source_index + 1
                if size is None:
                    width, height = frame.width, frame.height
                    if options.resize is not None:
                        scale = options.resize / min(width, height)
                        width, height = _even(width * scale), _even(height * scale)
                    if options.crop is not None and options.crop > min(width, height):
                        raise SkipVideo("too_small", f"{width}x{height} is smaller than the {options.crop} crop")
                    size = (_even(width) if options.crop is None else width, _even(height) if options.crop is None else height)
                repeats = 1
                if options.fps is not None:
                    repeats = 0
                    while math.floor((next_output + repeats) * source_fps / out_fps + 0.5) == source_index:
                        repeats += 1
                    if repeats == 0:
                        continue
                image = frame.reformat(width=size[0], height=size[1], format="rgb24", interpolation="AREA").to_ndarray()
                if options.crop is not None:
                    top, left = (size[1] - options.crop) // 2, (size[0] - options.crop) // 2
                    image = image[top : top + options.crop, left : left + options.crop]
                for _ in range(repeats):
                    frames.append(image)
                next_output += repeats
                if options.max_frames is not None and len(frames) >= options.max_frames:
                    frames = frames[: options.max_frames]
                    cut = True
                    break
    except SkipVideo:
        raise
    except Exception as error:  # av.FFmpegError and friends
        reason = classify_undecodable(data)
        raise SkipVideo(reason, str(error).splitlines()[0][:160] if str(error) else type(error).__name__) from None
    if source_frames == 1 and not cut:
        raise SkipVideo("image", "a single frame: an image, not a video")
    if len(frames) < options.min_frames:
        raise SkipVideo("too_few_frames", f"{len(frames)} frames, need {options.min_frames}")
    clip = np.stack(frames)
    meta = {
        "caption": item.caption,
        "labels": item.labels,
        "fps": float(out_fps),
        "num_frames": int(clip.shape[0]),
        "width": int(clip.shape[2]),
        "height": int(clip.shape[1]),
        "source": os.path.basename(item.path),
        "source_fps": source_fps,
    }
    return encode_h264(clip, out_fps, crf=options.crf), meta


def _transcode_or_skip(args: tuple[VideoItem, ConvertOptions]) -> tuple[VideoItem, bytes | None, dict[str, Any]]:
    item, options = args
    try:
        video, meta = transcode(item, options)
        return item, video, meta
    except SkipVideo as skip:
        return item, None, {"reason": skip.reason, "error": str(skip)}


# ----------------------------------------------------------------------------------------------
# Writing shards
# ----------------------------------------------------------------------------------------------


def convert_items(
    items: list[VideoItem],
    out_dir: str | Path,
    options: ConvertOptions,
    *,
    source: str,
    prefix: str = "shard",
    shard_max_bytes: int = 256 * 2**20,
    shard_max_count: int = 1000,
    workers: int = 1,
    overwrite: bool = False,
    progress: bool = True,
    unnamed: list[str] | None = None,
    clip_frames: int = DEFAULT_CLIP_FRAMES,
    clip_fps: float | None = None,
) -> dict[str, Any]:
    """Transcode ``items`` into ``out_dir/<prefix>-000000.tar``, ... and return the report (also
    written to ``out_dir/convert_report.json``; a ``manifest.json`` records the config).

    ``unnamed``: input files left out because no caption row names them (reported, first few
    listed). The report's clip check counts the converted videos long enough for a
    ``clip_frames``-frame clip at ``clip_fps`` (None: the output ``fps``, else 16)."""
    from tqdm.auto import tqdm

    from lumiere.data.shards import ShardSink, prepare_output_dir, write_manifest

    options.validate()
    if workers < 1:
        raise ConfigError(f"workers must be >= 1, got {workers}")
    if clip_frames < 1 or (clip_fps is not None and clip_fps <= 0):
        raise ConfigError(f"clip_frames must be >= 1 and clip_fps positive, got {clip_frames}, {clip_fps}")
    clip_fps = float(clip_fps or options.fps or DEFAULT_CLIP_FPS)
    out_dir = Path(out_dir)
    _check_output_location(out_dir)
    config = {
        "converter": "lumiere.data.convert",
        "source": source,
        "num_inputs": len(items),
        "options": asdict(options),
        "prefix": prefix,
        "shard_max_bytes": int(shard_max_bytes),
        "shard_max_count": int(shard_max_count),
    }
    try:
        existing = prepare_output_dir(out_dir, config, ["."], overwrite=overwrite)
        if existing is not None:
            report_path = out_dir / REPORT_NAME
            return json.loads(report_path.read_text()) if report_path.is_file() else existing
        write_manifest(out_dir, {"config": config, "complete": False})
    except OSError as error:
        raise InputFileError(f"cannot write into the output folder {out_dir}: {error.strerror or error}") from None

    skipped: list[dict[str, str]] = []
    converted: list[dict[str, Any]] = []
    jobs: Iterable = ((item, options) for item in items)
    try:
        with ShardSink(out_dir, prefix=prefix, max_bytes=shard_max_bytes, max_count=shard_max_count) as sink:
            # spawn: forking a caller that runs threads (torch, Lightning) can deadlock the children
            executor = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) if workers > 1 else None
            try:
                results: Iterator = executor.map(_transcode_or_skip, jobs, chunksize=4) if executor else map(_transcode_or_skip, jobs)
                for item, video, meta in tqdm(results, total=len(items), desc="converting", unit="video", disable=not progress):
                    if video is None:
                        skipped.append({"path": item.path, **meta})
                        continue
                    sink.write({"__key__": item.key, "mp4": video, "txt": item.caption, "json": json.dumps(meta).encode("utf-8")})
                    converted.append(meta)
            finally:
                if executor is not None:
                    executor.shutdown()
    except OSError as error:  # a full disk, a folder removed underneath
        raise InputFileError(f"writing shards into {out_dir} failed: {error.strerror or error}; the folder holds an "
                             "unfinished dataset (manifest complete: false): convert again") from None
    summary = sink.summary(root=out_dir)
    reasons = Counter(entry["reason"] for entry in skipped)
    report = {
        "source": source,
        "converted": summary["num_samples"],
        "skipped": len(skipped),
        "skipped_by_reason": dict(reasons),
        "skipped_files": skipped,
        "unnamed": {"count": len(unnamed or []), "files": list(unnamed or [])[:LISTED_IN_REPORT]},
        "clip_check": clip_check(converted, clip_frames, clip_fps),
        "shards": summary["shards"],
        "options": asdict(options),
    }
    _write_text_atomic(out_dir / REPORT_NAME, json.dumps(report, indent=2))
    write_manifest(out_dir, {"config": config, "complete": True, "splits": {"all": summary}})
    return report


def _check_output_location(out_dir: Path) -> None:
    """Refuse an output folder that cannot be created: a file on its path, or a read-only parent."""
    if out_dir.exists():
        return  # prepare_output_dir judges an existing path
    ancestor = out_dir.parent
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise ConfigError(f"output folder {out_dir} cannot be created: {ancestor} is a file")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise InputFileError(f"output folder {out_dir} cannot be created: {ancestor} is not writable")


def _write_text_atomic(path: Path, text: str) -> None:
    """Write through a temporary file in the same folder and rename it: no half-written file."""
    temporary = path.with_name(f".{path.name}.partial")
    try:
        temporary.write_text(text)
        os.replace(temporary, path)
    except OSError as error:
        temporary.unlink(missing_ok=True)
        raise InputFileError(f"could not write {path}: {error.strerror or error}") from None


def convert_ucf101(root: str | Path, out_dir: str | Path, *, split_file: str | Path | None = None, template: str = UCF101_TEMPLATE, **kwargs) -> dict[str, Any]:
    """Convert a UCF101-style class-folder tree (see :func:`ucf101_items`)."""
    options = kwargs.pop("options", ConvertOptions())
    items = ucf101_items(root, split_file=split_file, template=template)
    source = f"ucf101:{Path(root).expanduser().resolve()}" + (f" split:{Path(split_file).name}" if split_file else "")
    return convert_items(items, out_dir, options, source=source, **kwargs)


def convert_videos(videos: str | Path, captions: str | Path, out_dir: str | Path, *, video_column: str | None = None,
                   caption_column: str | None = None, **kwargs) -> dict[str, Any]:
    """Convert a folder of videos described by a caption CSV/JSON (see :func:`folder_items`)."""
    options = kwargs.pop("options", ConvertOptions())
    items = folder_items(videos, captions, video_column=video_column, caption_column=caption_column)
    root = Path(videos).expanduser()
    unnamed = unnamed_videos(list_videos(root), (item.path for item in items), root)
    source = f"videos:{root.resolve()} captions:{Path(captions).name}"
    return convert_items(items, out_dir, options, source=source, unnamed=unnamed, **kwargs)


def main(argv: list[str] | None = None) -> int:
    from lumiere.data.shards import parse_bytes

    parser = argparse.ArgumentParser(prog="python -m lumiere.data.convert", description="Convert videos into WebDataset shards (mp4/txt/json).")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--ucf101", help="UCF101-style folder of class folders")
    source.add_argument("--videos", help="folder of videos (with --captions)")
    parser.add_argument("--captions", help="caption CSV (with header) or JSON for --videos")
    parser.add_argument("--video-column", help="CSV/JSON column with the video path or id")
    parser.add_argument("--caption-column", help="CSV/JSON column with the caption")
    parser.add_argument("--split-file", help="UCF101 split list (e.g. trainlist01.txt) to convert only that split")
    parser.add_argument("--caption-template", default=UCF101_TEMPLATE, help="UCF101 caption; {} is the class in words")
    parser.add_argument("--out", required=True, help="output folder for the shards")
    parser.add_argument("--resize", type=int, help="resize so the short side has this many pixels")
    parser.add_argument("--crop", type=int, help="centre square crop (pixels, even) after resizing")
    parser.add_argument("--fps", type=float, help="resample to this frame rate")
    parser.add_argument("--max-frames", type=int, help="keep at most this many frames")
    parser.add_argument("--min-frames", type=int, default=2, help="skip videos with fewer frames (at least 2: one frame is an image)")
    parser.add_argument("--clip-frames", type=int, default=DEFAULT_CLIP_FRAMES,
                        help="report how many converted videos hold a clip of this many frames (default: the paper's 80)")
    parser.add_argument("--clip-fps", type=float, help="... at this frame rate (default: --fps, else 16)")
    parser.add_argument("--crf", type=int, default=18)
    parser.add_argument("--prefix", default="shard", help="shard file name prefix")
    parser.add_argument("--shard-max-bytes", type=parse_bytes, default=256 * 2**20)
    parser.add_argument("--shard-max-count", type=int, default=1000)
    parser.add_argument("--workers", type=int, default=1, help="parallel transcoding processes")
    parser.add_argument("--overwrite", action="store_true")
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)
    options = ConvertOptions(resize=args.resize, crop=args.crop, fps=args.fps, max_frames=args.max_frames, min_frames=args.min_frames, crf=args.crf)
    common = dict(
        options=options,
        prefix=args.prefix,
        shard_max_bytes=args.shard_max_bytes,
        shard_max_count=args.shard_max_count,
        workers=args.workers,
        overwrite=args.overwrite,
        progress=not args.quiet,
        clip_frames=args.clip_frames,
        clip_fps=args.clip_fps,
    )
    try:
        if args.ucf101:
            report = convert_ucf101(args.ucf101, args.out, split_file=args.split_file, template=args.caption_template, **common)
        else:
            if not args.captions:
                raise ConfigError("--videos needs --captions (a CSV or JSON of video, caption)")
            report = convert_videos(args.videos, args.captions, args.out, video_column=args.video_column, caption_column=args.caption_column, **common)
    except LumiereError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(format_report(report) + f"\nreport: {Path(args.out) / REPORT_NAME}")
    return 0 if report["converted"] else 1


if __name__ == "__main__":
    sys.exit(main())
