"""Where the evaluated model's clips come from: a base checkpoint, or a folder of generated videos.

A folder of generated videos holds the clips (mp4 or anything PyAV reads, or uint8 (T, H, W, 3)
``.npy``) and ``videos.jsonl``, one json object per clip::

    {"file": "0000.mp4", "caption": "a red circle moving right ...", "labels": {"shape": "circle", ...}}

``labels`` (the synthetic benchmark's attribute labels the caption was made from) is optional:
without it, prompt adherence is not computed. The evaluation writes the model's clips in this
format (``<run>/videos/model/``): a lossless ``.npy`` that ``file`` points to, so scoring the
folder again gives the same numbers, and an ``.mp4`` next to it for viewing.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from lumiere.errors import ConfigError, InputFileError
from lumiere.evaluation.clips import ClipSet, to_uint8

MANIFEST = "videos.jsonl"
# The checkpoint stages that sample text-to-video clips (the conditional one from text alone too).
TEXT_TO_VIDEO_STAGES = ("TextToVideoModule", "ConditionalVideoModule")
# Options of the loads in CheckpointGenerator that a caller (the evaluate task) sets for a block of
# code, so that they reach the generators the protocols build without passing through them.
_LOAD_OPTIONS: ContextVar[dict | None] = ContextVar("lumiere_checkpoint_load_options", default=None)


@contextmanager
def checkpoint_load_options(*, allow_frozen_mismatch: bool = False) -> Iterator[None]:
    """Within the block, every CheckpointGenerator that is not told otherwise loads its checkpoint
    with these options (see `lumiere.training.load_module_from_checkpoint`)."""
    token = _LOAD_OPTIONS.set({"allow_frozen_mismatch": bool(allow_frozen_mismatch)})
    try:
        yield
    finally:
        _LOAD_OPTIONS.reset(token)


def _optional_setting(value, name: str, *, integer: bool, minimum: float, requirement: str):
    """None, or a number >= minimum (an int if `integer`): 0 never silently means "the checkpoint's"."""
    if value is None:
        return None
    valid = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) \
        and value >= minimum and (not integer or int(value) == value)
    if not valid:
        raise ConfigError(f"{name} must be {requirement} (null: the checkpoint's setting), got {value!r}")
    return int(value) if integer else float(value)


class CheckpointGenerator:
    """Text-to-video sampling from a base (STUNet) or conditional stage checkpoint, with the EMA weights.

    ``__call__(prompts, seed)`` returns (B, 3, T, H, W) in [-1, 1]; every argument left None
    falls back to the checkpoint's own sampler settings. A checkpoint of another stage is refused
    before anything is built; so is one trained on other frozen weights, unless
    ``allow_frozen_mismatch`` (None: the enclosing ``checkpoint_load_options``, else False).
    """

    def __init__(self, ckpt_path: str, device: torch.device, num_frames: int | None = None,
                 num_inference_steps: int | None = None, guidance_scale: float | None = None,
                 scheduler: str | None = None, allow_frozen_mismatch: bool | None = None):
        from lumiere.training import load_module_from_checkpoint

        num_frames = _optional_setting(num_frames, "evaluation.num_frames", integer=True, minimum=1,
                                       requirement="a whole number >= 1")
        num_inference_steps = _optional_setting(num_inference_steps, "evaluation.sampling.num_inference_steps",
                                                integer=True, minimum=1, requirement="a whole number >= 1")
        guidance_scale = _optional_setting(guidance_scale, "evaluation.sampling.guidance_scale", integer=False,
                                           minimum=0.0, requirement="a number >= 0 (1: no guidance)")
        if allow_frozen_mismatch is None:
            allow_frozen_mismatch = (_LOAD_OPTIONS.get() or {}).get("allow_frozen_mismatch", False)
        self.ckpt_path = str(ckpt_path)
        self.module = load_module_from_checkpoint(self.ckpt_path, use_ema=True, expected=TEXT_TO_VIDEO_STAGES,
                                                  allow_frozen_mismatch=bool(allow_frozen_mismatch)).to(device)
        if not hasattr(self.module, "generate") or not hasattr(self.module, "val_num_frames"):
            raise InputFileError(f"{ckpt_path} is not a text-to-video base checkpoint")
        self.num_frames = int(num_frames or self.module.val_num_frames)
        self.module.check_num_frames(self.num_frames)
        self.resolution = int(self.module.sample_size)
        self.num_inference_steps, self.guidance_scale, self.scheduler = num_inference_steps, guidance_scale, scheduler

    @property
    def name(self) -> str:
        """A short label: the run folder and checkpoint file (``demo/last.ckpt``)."""
        path = Path(self.ckpt_path).resolve()
        parent = path.parent.parent.name if path.parent.name == "checkpoints" else path.parent.name
        return f"{parent}/{path.name}"

    def settings(self) -> dict:
        return {"ckpt_path": str(Path(self.ckpt_path).resolve()), "num_frames": self.num_frames,
                "num_inference_steps": self.num_inference_steps, "guidance_scale": self.guidance_scale,
                "scheduler": self.scheduler}

    def __call__(self, prompts: Sequence[str], seed: int) -> torch.Tensor:
        return self.module.generate(list(prompts), num_frames=self.num_frames, seed=seed,
                                    num_inference_steps=self.num_inference_steps,
                                    guidance_scale=self.guidance_scale, scheduler=self.scheduler,
                                    progress=False).float().cpu()


def generate_clips(generator: CheckpointGenerator, captions: Sequence[str], batch_size: int, seed: int,
                   progress: bool = True) -> torch.Tensor:
    """One clip per caption as uint8 (N, 3, T, H, W); batch ``k`` starting at clip ``i`` uses seed ``seed + i``."""
    if batch_size < 1:
        raise ConfigError(f"batch_size must be at least 1, got {batch_size}")
    chunks = []
    bar = tqdm(total=len(captions), desc="generating model clips", unit="clip", disable=not progress)
    for start in range(0, len(captions), batch_size):
        prompts = list(captions[start:start + batch_size])
        videos = generator(prompts, seed=seed + start)
        chunks.append(to_uint8(videos))
        bar.update(len(prompts))
    bar.close()
    return torch.cat(chunks)


def write_videos_dir(out_dir: str | os.PathLike, clips: ClipSet, fps: float, extra: Sequence[Mapping] | None = None) -> Path:
    """Write every clip as ``<index>.npy`` (lossless) and ``<index>.mp4``, and the ``videos.jsonl``
    manifest; returns the folder."""
    import numpy as np

    from lumiere.viz import write_mp4

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    lines = []
    for index in range(len(clips)):
        frames = clips.videos[index].permute(1, 2, 3, 0).contiguous().numpy()  # (T, H, W, C) uint8
        np.save(out_dir / f"{index:04d}.npy", frames, allow_pickle=False)
        write_mp4(out_dir / f"{index:04d}.mp4", frames, fps=fps)
        entry = {"file": f"{index:04d}.npy", "mp4": f"{index:04d}.mp4", "caption": clips.captions[index],
                 "labels": {head: values[index] for head, values in clips.labels.items()}}
        if extra is not None:
            entry.update(extra[index])
        lines.append(json.dumps(entry))
    partial = out_dir / (MANIFEST + ".partial")
    partial.write_text("\n".join(lines) + "\n")
    os.replace(partial, out_dir / MANIFEST)
    return out_dir


def read_videos_dir(videos_dir: str | os.PathLike, num_frames: int | None = None, progress: bool = True) -> ClipSet:
    """Read the clips listed in ``<videos_dir>/videos.jsonl`` (first ``num_frames`` frames of each)."""
    from lumiere.evaluation.ucf101_protocol import read_video_file

    videos_dir = Path(videos_dir)
    manifest = videos_dir / MANIFEST
    if not manifest.is_file():
        raise InputFileError(f"{manifest} not found: a generated-videos folder needs {MANIFEST} "
                             '(one {"file": ..., "caption": ..., "labels": {...}} per line)')
    entries = []
    for number, line in enumerate(manifest.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
        except json.JSONDecodeError as error:
            raise InputFileError(f"{manifest}:{number}: not json ({error})") from error
        if not isinstance(entry, dict) or not isinstance(entry.get("file"), str) or not isinstance(entry.get("caption"), str):
            raise InputFileError(f"{manifest}:{number}: needs string fields 'file' and 'caption'")
        entries.append(entry)
    if not entries:
        raise InputFileError(f"{manifest} lists no videos")
    videos, captions = [], []
    have_labels = all(isinstance(entry.get("labels"), dict) and entry["labels"] for entry in entries)
    labels: dict[str, list] = {}
    for entry in tqdm(entries, desc=f"reading {videos_dir.name}", unit="clip", disable=not progress):
        path = videos_dir / entry["file"]
        if not path.is_file():
            raise InputFileError(f"{path} (listed in {manifest}) not found")
        video = read_video_file(path, num_frames)  # (C, T, H, W) in [-1, 1]
        if num_frames is not None and video.shape[1] < num_frames:
            raise InputFileError(f"{entry['file']} has {video.shape[1]} frames, the evaluation uses {num_frames}")
        if videos and video.shape != videos[0].shape:
            raise InputFileError(f"{entry['file']} has shape {tuple(video.shape)}, the first clip {tuple(videos[0].shape)}: "
                                 "all generated clips must have the same frames and size")
        videos.append(to_uint8(video))
        captions.append(entry["caption"])
    if have_labels:
        heads = list(dict.fromkeys(head for entry in entries for head in entry["labels"]))
        labels = {head: [entry["labels"].get(head) for entry in entries] for head in heads}
    return ClipSet(torch.stack(videos), captions, labels, [entry["file"] for entry in entries])


# The sampling options an evaluation mode passes to `CheckpointGenerator` (evaluation.sampling).
SAMPLING_KEYS = ("num_inference_steps", "guidance_scale", "scheduler")


def settings_from_mapping(settings_class, config: dict[str, Any]):
    """An evaluation mode's settings dataclass from its config (`mode` dropped); an unknown key,
    or an unknown `sampling` key, is one line naming it."""
    config = dict(config)
    config.pop("mode", None)
    unknown = set(config) - set(settings_class.__dataclass_fields__)
    if unknown:
        raise ConfigError(f"unknown setting evaluation.{sorted(unknown)[0]}")
    unknown = set(config.get("sampling") or {}) - set(SAMPLING_KEYS)
    if unknown:
        raise ConfigError(f"unknown setting evaluation.sampling.{sorted(unknown)[0]}")
    return settings_class(**config)
