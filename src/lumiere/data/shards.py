"""WebDataset shard plumbing shared by the generator, the converter and the data module.

Shard sample format (docs/architecture.md): ``mp4`` (H.264 clip), optional ``hr.mp4`` (the
same clip at a higher resolution), ``txt`` (caption) and ``json`` (``caption``, ``labels``,
``fps``, ``num_frames``, ``width``, ``height``, ...). Shards made by video2dataset use the same
keys and are read as they are.

A dataset root written by this package holds ``manifest.json`` with the config that made it
and the shard list with sample counts; writing into a root that holds another config's data
is refused unless asked to overwrite.
"""

from __future__ import annotations

import glob
import json
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from lumiere.errors import ConfigError, InputFileError

MANIFEST_NAME = "manifest.json"
VIDEO_KEYS = ("mp4", "webm", "mkv", "mov", "avi")  # first present is the base clip


# ----------------------------------------------------------------------------------------------
# Shard lists: directory, glob, brace pattern or URL -> list of shard paths
# ----------------------------------------------------------------------------------------------


def _is_url(spec: str) -> bool:
    return "://" in spec or spec.startswith("pipe:")


def expand_shards(spec: str | Iterable[str]) -> list[str]:
    """Resolve a shard spec to an ordered list of shards.

    Accepts a directory (its ``*.tar`` files), a glob (``data/train-*.tar``), a brace pattern
    (``data/train-{000000..000015}.tar``), several of these joined with ``::`` or given as a
    list, and URLs (``https://``, ``s3://``, ``pipe:``), which are passed through unchecked.
    Raises :class:`InputFileError` when a local part matches nothing.
    """
    import braceexpand

    parts = [spec] if isinstance(spec, (str, os.PathLike)) else list(spec)
    result: list[str] = []
    for part in parts:
        for piece in str(part).split("::"):
            piece = piece.strip()
            if not piece:
                continue
            if _is_url(piece):
                result.extend(braceexpand.braceexpand(piece))
                continue
            for path in braceexpand.braceexpand(os.path.expanduser(piece)):
                if os.path.isdir(path):
                    found = sorted(glob.glob(os.path.join(path, "*.tar")))
                    if not found:
                        raise InputFileError(f"no .tar shards in directory {path}")
                    result.extend(found)
                elif any(ch in path for ch in "*?["):
                    found = sorted(glob.glob(path))
                    if not found:
                        raise InputFileError(f"no shards match {path}")
                    result.extend(found)
                elif os.path.isfile(path):
                    result.append(path)
                else:
                    raise InputFileError(f"shard not found: {path}")
    unique = list(dict.fromkeys(result))
    if not unique:
        raise InputFileError(f"no shards in {spec!r}")
    return unique


# ----------------------------------------------------------------------------------------------
# Reading sample fields
# ----------------------------------------------------------------------------------------------


def sample_meta(sample: dict[str, Any]) -> dict[str, Any]:
    """The sample's json as a dict ({} when absent). Raises ValueError on malformed json."""
    raw = sample.get("json")
    if raw is None:
        return {}
    meta = json.loads(raw.decode("utf-8") if isinstance(raw, (bytes, bytearray)) else raw)
    if not isinstance(meta, dict):
        raise ValueError("sample json is not an object")
    return meta


def sample_caption(sample: dict[str, Any], meta: dict[str, Any]) -> str | None:
    """Caption from ``txt``, else from the json's ``caption`` field (video2dataset layout)."""
    raw = sample.get("txt")
    if raw is not None:
        text = raw.decode("utf-8", errors="replace") if isinstance(raw, (bytes, bytearray)) else str(raw)
        if text.strip():
            return text.strip()
    caption = meta.get("caption")
    if isinstance(caption, str) and caption.strip():
        return caption.strip()
    return None


def shard_captions(shards: Iterable[str]) -> Iterator[str]:
    """Every caption of ``shards`` in shard order, without decoding a video (a sample with a bad json
    or no caption is passed over, as the loader skips it)."""
    import webdataset as wds

    for shard in shards:
        for sample in wds.tarfile_to_samples(handler=wds.warn_and_continue)(iter([{"url": shard}])):
            try:
                caption = sample_caption(sample, sample_meta(sample))
            except (ValueError, UnicodeDecodeError):
                continue
            if caption is not None:
                yield caption


def sample_video_bytes(sample: dict[str, Any]) -> bytes | None:
    for key in VIDEO_KEYS:
        if key in sample:
            return sample[key]
    return None


# ----------------------------------------------------------------------------------------------
# Writing shards
# ----------------------------------------------------------------------------------------------


class ShardSink:
    """``webdataset.ShardWriter`` that also records each shard's sample count and size.

    Shards are ``<directory>/<prefix>-000000.tar``, ... and close when they reach
    ``max_bytes`` or ``max_count`` samples."""

    def __init__(self, directory: str | Path, *, prefix: str, max_bytes: int, max_count: int = 100_000):
        import webdataset as wds

        if max_bytes <= 0 or max_count <= 0:
            raise ConfigError(f"shard limits must be positive, got {max_bytes} bytes / {max_count} samples")
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self._writer = wds.ShardWriter(
            str(self.directory / f"{prefix}-%06d.tar"), maxcount=max_count, maxsize=max_bytes, verbose=0
        )
        self._counts: dict[str, int] = {}
        self.total = 0

    def write(self, sample: dict[str, Any]) -> None:
        self._writer.write(sample)
        name = self._writer.fname
        self._counts[name] = self._counts.get(name, 0) + 1
        self.total += 1

    def close(self) -> None:
        if self._writer is not None:
            name = self._writer.fname
            self._writer.close()
            self._writer = None
            if self.total == 0 and name and os.path.exists(name):
                os.remove(name)  # ShardWriter opens its first shard eagerly

    def __enter__(self) -> ShardSink:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def summary(self, root: str | Path) -> dict[str, Any]:
        shards = [
            {"path": os.path.relpath(name, root), "num_samples": count, "bytes": os.path.getsize(name)}
            for name, count in self._counts.items()
        ]
        return {"num_samples": self.total, "shards": shards}


def parse_bytes(text: str) -> int:
    """A shard size from the command line: ``64MB``, ``64MiB``, ``512k`` or a plain byte count."""
    units = {"k": 2**10, "m": 2**20, "g": 2**30}
    text = text.strip().lower().rstrip("ib").rstrip("b")
    if text and text[-1] in units:
        return int(float(text[:-1]) * units[text[-1]])
    return int(float(text))


# ----------------------------------------------------------------------------------------------
# Manifests
# ----------------------------------------------------------------------------------------------


def read_manifest(root: str | Path) -> dict[str, Any] | None:
    path = Path(root) / MANIFEST_NAME
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise InputFileError(f"unreadable manifest {path}: {error}") from error


def write_manifest(root: str | Path, manifest: dict[str, Any]) -> None:
    """Write ``manifest.json`` atomically (a crash leaves the old one or the new one)."""
    path = Path(root) / MANIFEST_NAME
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(manifest, indent=2, sort_keys=True))
    os.replace(tmp, path)


def _normalised(config: dict[str, Any]) -> dict[str, Any]:
    return json.loads(json.dumps(config))


def prepare_output_dir(
    root: str | Path, config: dict[str, Any], shard_dirs: Iterable[str], *, overwrite: bool
) -> dict[str, Any] | None:
    """Decide what to do with an output root before writing a dataset made by ``config``.

    Returns the existing manifest when the root already holds a complete dataset made by the
    same config (nothing to do). Raises :class:`ConfigError` when it holds another config's
    dataset, or shards without a manifest, unless ``overwrite``. Otherwise removes the old
    shards (``*.tar`` in ``shard_dirs``) and the manifest, and returns None.
    """
    root = Path(root)
    if root.exists() and not root.is_dir():
        raise ConfigError(f"output path {root} exists and is not a directory")
    manifest = read_manifest(root)
    config = _normalised(config)
    directories = [root / d for d in shard_dirs]
    old_shards = [p for d in directories for p in sorted(d.glob("*.tar"))] if root.exists() else []
    if manifest is not None:
        same = manifest.get("config") == config
        if same and manifest.get("complete"):
            listed = [root / s["path"] for split in manifest.get("splits", {}).values() for s in split.get("shards", [])]
            if all(p.is_file() for p in listed):
                return manifest
        elif not same and not overwrite:
            old = manifest.get("config", {})
            changed = sorted(k for k in set(old) | set(config) if old.get(k) != config.get(k))
            raise ConfigError(
                f"{root} holds a dataset made with another config (differs in {', '.join(changed)}); "
                "use --overwrite / overwrite=True to replace it"
            )
    elif old_shards and not overwrite:
        raise ConfigError(f"{root} holds shards without a {MANIFEST_NAME}; use --overwrite / overwrite=True to replace them")
    for path in old_shards:
        path.unlink()
    (root / MANIFEST_NAME).unlink(missing_ok=True)
    return None
