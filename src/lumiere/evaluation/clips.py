"""Clips of the synthetic benchmark, held in memory for evaluation (paper Sec. 5.2 stand-in).

The evaluation compares sets of a few dozen to a few hundred short clips, so every set is read
once into a ``ClipSet``: uint8 videos (N, 3, T, H, W) (a quarter of the float memory), the
captions, and the attribute labels as strings. Clips are read in shard order with the
data module's deterministic (centre) temporal crop, so the same settings give the same clips
in every run.

Label strings become ids through ``lumiere.data.ATTRIBUTE_VOCAB``; a missing or unknown label
becomes ``IGNORE_LABEL`` (-1), which the classifier's loss and the accuracy counts skip.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from tqdm.auto import tqdm

from lumiere.errors import ConfigError, InputFileError
from lumiere.metrics.domain_classifier import IGNORE_LABEL

# Tensor dimension legend: n clips, c channels, t time, h height, w width.

SPLITS = ("train", "val", "test")


def attribute_vocab() -> dict[str, list[str]]:
    """The benchmark's attribute vocabulary (head name -> label strings), from ``lumiere.data``."""
    from lumiere.data import ATTRIBUTE_VOCAB

    return {name: list(values) for name, values in ATTRIBUTE_VOCAB.items()}


def label_ids(labels: Mapping[str, Sequence[str | None]], vocab: Mapping[str, Sequence[str]], count: int) -> dict[str, torch.Tensor]:
    """``{head: [label strings]}`` -> ``{head: LongTensor (count,)}``; missing or unknown -> -1."""
    ids = {}
    for head, options in vocab.items():
        values = list(labels.get(head, [None] * count))
        if len(values) != count:
            raise ConfigError(f"head '{head}' has {len(values)} labels for {count} clips")
        index = {value: i for i, value in enumerate(options)}
        ids[head] = torch.tensor([index.get(value, IGNORE_LABEL) for value in values], dtype=torch.long)
    return ids


def to_uint8(videos: torch.Tensor) -> torch.Tensor:
    """[-1, 1] float -> uint8 [0, 255] (exact for videos decoded from 8-bit files)."""
    return ((videos.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)


def to_float(videos: torch.Tensor) -> torch.Tensor:
    """uint8 [0, 255] -> float32 [-1, 1]; float input is returned as it is."""
    if videos.dtype != torch.uint8:
        return videos
    return videos.to(torch.float32) / 127.5 - 1.0


@dataclass
class ClipSet:
    """N clips with their captions and labels; ``videos`` is uint8 (N, 3, T, H, W)."""

    videos: torch.Tensor
    captions: list[str]
    labels: dict[str, list[str | None]] = field(default_factory=dict)
    keys: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return int(self.videos.shape[0])

    def take(self, count: int | None) -> ClipSet:
        """The first ``count`` clips (all when ``count`` is None)."""
        if count is None or count >= len(self):
            return self
        return ClipSet(self.videos[:count], self.captions[:count], {k: v[:count] for k, v in self.labels.items()},
                       self.keys[:count])

    def label_ids(self, vocab: Mapping[str, Sequence[str]]) -> dict[str, torch.Tensor]:
        return label_ids(self.labels, vocab, len(self))

    def batches(self, batch_size: int) -> Iterator[tuple[torch.Tensor, slice]]:
        """Float (B, 3, T, H, W) batches in [-1, 1] with the slice of clips they hold."""
        for start in range(0, len(self), batch_size):
            part = slice(start, min(start + batch_size, len(self)))
            yield to_float(self.videos[part]), part


def split_dir(data_dir: str | os.PathLike, split: str) -> Path:
    """``<data_dir>/<split>``, which must hold shards."""
    if split not in SPLITS:
        raise ConfigError(f"split must be one of {SPLITS}, got {split!r}")
    path = Path(data_dir) / split
    if not path.is_dir() or not any(path.glob("*.tar")):
        raise InputFileError(f"no shards in {path}: generate the benchmark with `python -m lumiere.data.synthetic --out {data_dir}`")
    return path


def data_fingerprint(data_dir: str | os.PathLike, splits: Sequence[str]) -> str:
    """Digest of the shard names and sizes of ``splits``: a cache made from other data is stale."""
    entries = []
    for split in splits:
        for shard in sorted(split_dir(data_dir, split).glob("*.tar")):
            entries.append([split, shard.name, shard.stat().st_size])
    return hashlib.sha256(json.dumps(entries).encode()).hexdigest()[:16]


def load_clips(
    data_dir: str | os.PathLike,
    splits: Sequence[str],
    num_frames: int,
    resolution: int,
    target_fps: float | None,
    max_clips: int | None = None,
    batch_size: int = 16,
    progress: bool = True,
    desc: str | None = None,
) -> ClipSet:
    """Read up to ``max_clips`` clips of ``splits`` (in order) at ``num_frames`` x ``resolution``.

    Clips are sampled at ``target_fps`` (the frame rate the base model was trained on) with the
    centre temporal crop; clips too short for ``num_frames`` at that rate are skipped by the data
    module and counted in its warnings.
    """
    from lumiere.data import VideoDataModule

    if max_clips is not None and max_clips < 1:
        raise ConfigError(f"max_clips must be at least 1 or null, got {max_clips}")
    shards = [str(split_dir(data_dir, split)) for split in splits]
    module = VideoDataModule(test_shards=shards, num_frames=num_frames, target_fps=target_fps,
                             resolution=resolution, batch_size=batch_size, num_workers=0,
                             temporal_crop="center", decoder="pyav" if _no_decord() else "decord")
    videos, captions, keys = [], [], []
    labels: dict[str, list] = {}
    bar = tqdm(total=max_clips, desc=desc or f"reading {'+'.join(splits)} clips", unit="clip", disable=not progress)
    for batch in module.test_dataloader():
        if "video" not in batch:  # a batch of skip reports only
            continue
        count = batch["video"].shape[0]
        if max_clips is not None:
            count = min(count, max_clips - len(captions))
        seen = len(captions)
        videos.append(to_uint8(batch["video"][:count]))
        captions.extend(batch["caption"][:count])
        keys.extend(batch["key"][:count])
        for name in set(labels) | set(batch["labels"]):
            values = batch["labels"].get(name, [None] * count)[:count]
            labels.setdefault(name, [None] * seen).extend(values)
        bar.update(count)
        if max_clips is not None and len(captions) >= max_clips:
            break
    bar.close()
    if not captions:
        raise InputFileError(f"no clips of {num_frames} frames at {target_fps} fps in {', '.join(shards)}")
    return ClipSet(torch.cat(videos), captions, labels, keys)


def _no_decord() -> bool:
    try:
        import decord  # noqa: F401
    except ImportError:
        return True
    return False
