"""Inputs of the converter (:mod:`lumiere.data.convert`): the videos to convert, each with its
caption, key and labels, from a folder plus a caption CSV/JSON or from a UCF101-style tree of
class folders. Nothing here decodes a video."""

from __future__ import annotations

import csv
import io
import json
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lumiere.errors import InputFileError

VIDEO_EXTENSIONS = (".mp4", ".avi", ".mkv", ".webm", ".mov", ".m4v", ".mpg", ".mpeg", ".flv", ".wmv", ".gif")
UCF101_TEMPLATE = "a video of a person {}"
VIDEO_COLUMNS = ("path", "video", "video_path", "video_id", "videoid", "file", "filename", "id")
CAPTION_COLUMNS = ("caption", "text", "name", "title", "description")


@dataclass
class VideoItem:
    """One input video with its caption and labels."""

    path: str
    caption: str
    key: str
    labels: dict[str, Any] = field(default_factory=dict)


# ----------------------------------------------------------------------------------------------
# Captions
# ----------------------------------------------------------------------------------------------


def split_camel_case(name: str) -> str:
    """``ApplyEyeMakeup`` -> ``apply eye makeup``; ``YoYo`` -> ``yo yo``; ``PlayingDaf`` -> ``playing daf``."""
    words = re.findall(r"[A-Z]+(?=[A-Z][a-z])|[A-Z]?[a-z]+|[A-Z]+|\d+", name)
    return " ".join(word.lower() for word in words) if words else name.lower()


def ucf101_caption(class_name: str, template: str = UCF101_TEMPLATE) -> str:
    """Caption of a UCF101 clip from its class folder name."""
    return template.format(split_camel_case(class_name))


def _sanitise_key(text: str) -> str:
    """WebDataset keys end at the first dot and must not hold slashes."""
    return re.sub(r"[^A-Za-z0-9_-]+", "_", text).strip("_") or "video"


def _unique_keys(items: list[VideoItem]) -> list[VideoItem]:
    seen: Counter[str] = Counter()
    for item in items:
        base = item.key
        seen[base] += 1
        if seen[base] > 1:
            item.key = f"{base}_{seen[base] - 1}"
    return items


def list_videos(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in VIDEO_EXTENSIONS)


def _require_folder(path: str | Path, what: str) -> Path:
    folder = Path(path).expanduser()
    if folder.exists() and not folder.is_dir():
        raise InputFileError(f"{what} folder {folder} is a file, not a folder")
    if not folder.is_dir():
        raise InputFileError(f"{what} folder not found: {folder}")
    return folder


_UTF8_BOM = b"\xef\xbb\xbf"


def _read_text(path: Path, what: str) -> str:
    """A text file decoded as UTF-8 (a leading byte-order mark is dropped); a one-line
    :class:`InputFileError` naming the byte offset and line of the first byte that is not UTF-8."""
    try:
        data = path.read_bytes()
    except OSError as error:
        raise InputFileError(f"cannot read {what} {path}: {error.strerror or error}") from None
    skip = len(_UTF8_BOM) if data.startswith(_UTF8_BOM) else 0
    try:
        return data[skip:].decode("utf-8")
    except UnicodeDecodeError as error:
        offset = skip + error.start
        line = data.count(b"\n", 0, offset) + 1
        raise InputFileError(
            f"{what} {path} is not UTF-8: byte 0x{data[offset]:02x} at byte offset {offset} (line {line}) "
            "cannot be decoded; save the file as UTF-8"
        ) from None


def ucf101_items(root: str | Path, *, split_file: str | Path | None = None, template: str = UCF101_TEMPLATE) -> list[VideoItem]:
    """Items of a UCF101-style folder (one sub-folder per class), optionally one official split."""
    root = _require_folder(root, "UCF101")
    classes = sorted(d.name for d in root.iterdir() if d.is_dir())
    if not classes:
        raise InputFileError(f"no class folders in {root}")
    class_index = {name: i for i, name in enumerate(classes)}
    if split_file is not None:
        split_path = Path(split_file).expanduser()
        if split_path.is_dir():
            raise InputFileError(f"split file {split_path} is a folder; give the list file (e.g. trainlist01.txt)")
        if not split_path.is_file():
            raise InputFileError(f"split file not found: {split_path}")
        relative = [line.split()[0] for line in _read_text(split_path, "split file").splitlines() if line.strip()]
        paths = [root / rel for rel in relative]  # missing ones are reported as skipped
    else:
        paths = list_videos(root)
    if not paths:
        raise InputFileError(f"no videos in {root}")
    items = []
    for path in paths:
        class_name = path.parent.name
        items.append(
            VideoItem(
                path=str(path),
                caption=ucf101_caption(class_name, template),
                key=_sanitise_key(path.stem),
                labels={"class": class_name, "class_index": class_index.get(class_name, -1)},
            )
        )
    return _unique_keys(items)


def _read_caption_table(path: Path) -> list[dict[str, Any]]:
    if path.is_dir():
        raise InputFileError(f"caption file {path} is a folder; give the CSV or JSON file")
    if not path.is_file():
        raise InputFileError(f"caption file not found: {path}")
    text = _read_text(path, "caption file")
    if path.suffix.lower() == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as error:
            raise InputFileError(f"caption file {path} is not valid json: {error}") from error
        if isinstance(data, dict):
            return [{"video": key, "caption": value} for key, value in data.items()]
        if isinstance(data, list) and all(isinstance(row, dict) for row in data):
            return data
        raise InputFileError(f"caption json {path} must be a list of objects or a {{video: caption}} map")
    reader = csv.DictReader(io.StringIO(text, newline=""))
    try:
        return list(reader)
    except csv.Error as error:
        raise InputFileError(f"caption file {path} is not a valid CSV (line {reader.line_num}): {error}") from None


def folder_items(
    videos: str | Path,
    captions: str | Path,
    *,
    video_column: str | None = None,
    caption_column: str | None = None,
) -> list[VideoItem]:
    """Items of a folder of videos described by a caption CSV/JSON."""
    root = _require_folder(videos, "videos")
    rows = _read_caption_table(Path(captions).expanduser())
    if not rows:
        raise InputFileError(f"no rows in caption file {captions}")
    columns = [c for c in rows[0].keys() if c is not None]  # None: the fields past the header's end
    video_column = video_column or next((c for c in VIDEO_COLUMNS if c in columns), None)
    caption_column = caption_column or next((c for c in CAPTION_COLUMNS if c in columns and c != video_column), None)
    if video_column is None or caption_column is None or video_column not in columns or caption_column not in columns:
        raise InputFileError(
            f"caption file {captions} needs a video column ({'/'.join(VIDEO_COLUMNS)}) and a caption column "
            f"({'/'.join(CAPTION_COLUMNS)}); it has {', '.join(map(str, columns)) or 'no named columns'} "
            "(see --video-column/--caption-column)"
        )
    by_stem: dict[str, Path] = {}
    for path in list_videos(root):
        by_stem.setdefault(path.stem, path)
    if not by_stem:
        raise InputFileError(f"no videos in {root}")
    items = []
    for row in rows:
        reference = str(row.get(video_column) or "").strip()
        direct = root / reference
        path = direct if reference and direct.is_file() else by_stem.get(Path(reference).stem, direct)
        caption = str(row.get(caption_column) or "").strip()
        items.append(VideoItem(path=str(path), caption=caption, key=_sanitise_key(Path(reference).stem or reference)))
    return _unique_keys(items)
