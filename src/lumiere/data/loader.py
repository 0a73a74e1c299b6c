"""Batching and bad-sample bookkeeping on the main-process side of the DataLoader.

A batch (docs/architecture.md): ``video`` (B, 3, T, H, W) float32 in [-1, 1], optional
``video_hr``, ``caption`` list[str], ``frame_stride`` LongTensor (B,), ``fps`` FloatTensor (B,),
``labels`` dict[str, list], ``key`` list[str].

Workers cannot share Python counters, so each example carries the skips its worker saw since
the previous example (see :mod:`lumiere.data.dataset`); :func:`collate_examples` gathers them
per batch and :class:`VideoDataLoader` strips them off and adds them to a :class:`SkipTracker`.
Every example reaches the main process exactly once, so the sum is exact.

Resuming mid-epoch. The stream of an epoch depends only on (seed, epoch, rank, worker layout)
(see :mod:`lumiere.data.dataset`), so :class:`VideoDataLoader` is resumable by replay: its
``state_dict()`` records the epoch and how many batches of it were consumed, Lightning stores it
in the checkpoint (``fit_loop`` saves the state of a train loader that has ``state_dict`` /
``load_state_dict``) and hands it back on resume, and the next pass of that epoch regenerates and
drops those batches before yielding the first unseen one.
"""

from __future__ import annotations

import functools
import logging
import warnings
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch.utils.data import DataLoader, get_worker_info

from lumiere.data.dataset import REPORT_ONLY_KEY, SKIP_REASONS, SKIPPED_KEY, frames_into_video
from lumiere.errors import ConfigError

log = logging.getLogger("lumiere")


def stack_clips(frames: list[torch.Tensor], *, as_uint8: bool = False) -> torch.Tensor:
    """uint8 clips [(T, H, W, 3)] -> float32 batch (B, 3, T, H, W) in [-1, 1], or, with
    ``as_uint8``, the uint8 clips stacked as they are, (B, T, H, W, 3), for
    :func:`to_model_range` to finish on the accelerator (a plain copy here; the transpose to
    planar happens there).

    Inside a DataLoader worker the batch is allocated in shared memory (as ``default_collate``
    does), so it reaches the main process without another copy."""
    shapes = {tuple(f.shape) for f in frames}
    if len(shapes) != 1:
        raise ConfigError(f"clips in a batch differ in shape {sorted(shapes)}; set resolution to resize them")
    num_frames, height, width, _ = frames[0].shape
    shape = (len(frames), num_frames, height, width, 3) if as_uint8 else (len(frames), 3, num_frames, height, width)
    dtype = torch.uint8 if as_uint8 else torch.float32
    if get_worker_info() is not None:
        numel = len(frames) * 3 * num_frames * height * width
        storage = torch.empty(0, dtype=dtype)._typed_storage()._new_shared(numel, device="cpu")
        out = torch.empty(0, dtype=dtype).new(storage).view(shape)
    else:
        out = torch.empty(shape, dtype=dtype)
    if as_uint8:
        return torch.stack(frames, out=out)
    for index, clip in enumerate(frames):
        frames_into_video(clip, out[index])
    return out


def to_model_range(video: torch.Tensor) -> torch.Tensor:
    """A uint8 batch (B, T, H, W, 3) from a ``uint8_video`` loader -> float32 (B, 3, T, H, W)
    in [-1, 1], contiguous, on the tensor's device; float input is returned as it is."""
    if video.dtype != torch.uint8:
        return video
    planar = video.permute(0, 4, 1, 2, 3).to(torch.float32, memory_format=torch.contiguous_format)
    return planar.mul_(2.0 / 255.0).sub_(1.0)


def collate_examples(examples: list[dict[str, Any]], as_uint8: bool = False) -> dict[str, Any]:
    """Build the batch: videos (float in [-1, 1], or uint8 if ``as_uint8``), strings and labels
    as lists, the workers' skip reports under ``__skipped__``."""
    skipped = [event for item in examples for event in item.get(SKIPPED_KEY, ())]
    real = [item for item in examples if not item.get(REPORT_ONLY_KEY)]
    batch: dict[str, Any] = {SKIPPED_KEY: skipped}
    if not real:
        return batch
    batch["video"] = stack_clips([item["frames"] for item in real], as_uint8=as_uint8)
    if "frames_hr" in real[0]:
        batch["video_hr"] = stack_clips([item["frames_hr"] for item in real], as_uint8=as_uint8)
    batch["caption"] = [item["caption"] for item in real]
    batch["frame_stride"] = torch.tensor([item["frame_stride"] for item in real], dtype=torch.long)
    batch["fps"] = torch.tensor([item["fps"] for item in real], dtype=torch.float32)
    label_names = list(dict.fromkeys(name for item in real for name in item["labels"]))
    batch["labels"] = {name: [item["labels"].get(name) for item in real] for name in label_names}
    batch["key"] = [item["key"] for item in real]
    return batch


class SkipTracker:
    """Skip events (every time a bad sample is met) and distinct bad samples, per reason."""

    MAX_REMEMBERED = 100_000  # distinct sample ids kept; beyond that only events are counted

    def __init__(self) -> None:
        self.events: Counter[str] = Counter()
        self._seen: dict[str, set[str]] = {}
        self._remembered = 0

    def record(self, events: list[tuple[str, str]]) -> None:
        for reason, sample_id in events:
            self.events[reason] += 1
            seen = self._seen.setdefault(reason, set())
            if sample_id not in seen and self._remembered < self.MAX_REMEMBERED:
                seen.add(sample_id)
                self._remembered += 1

    def counts(self) -> dict[str, int]:
        """Skip events per reason (a bad sample met in three epochs counts three times)."""
        return dict(self.events)

    def distinct_counts(self) -> dict[str, int]:
        """Distinct bad samples per reason."""
        return {reason: len(ids) for reason, ids in self._seen.items() if ids}


def merge_counts(*counts: dict[str, int]) -> dict[str, int]:
    total: Counter[str] = Counter()
    for item in counts:
        total.update(item)
    ordered = [r for r in SKIP_REASONS if total.get(r)] + sorted(r for r in total if r not in SKIP_REASONS and total[r])
    return {reason: int(total[reason]) for reason in ordered}


class VideoDataLoader(DataLoader):
    """A ``DataLoader`` over a :class:`~lumiere.data.dataset.VideoShardDataset` that

    * tells the dataset which epoch it is (shard shuffling) before each pass,
    * strips the skip reports off the batches into :attr:`skips`, dropping report-only batches,
    * has a length only when the epoch length is fixed (``num_batches``),
    * can resume mid-epoch (``state_dict`` / ``load_state_dict``, see the module docstring):
      ``consumed_fn`` tells how many batches of the current epoch the consumer has taken (a
      training loop that fetches ahead has taken fewer than the loader handed out); without it
      the loader counts the batches it handed out.

    With ``uint8_video`` the videos stay uint8 in [0, 255], laid out (B, T, H, W, 3): a quarter of
    the bytes through shared memory and to the accelerator; :func:`to_model_range` finishes them
    there (``VideoDataModule.on_after_batch_transfer``)."""

    def __init__(
        self,
        dataset,
        batch_size: int = 1,
        num_workers: int = 0,
        *,
        num_batches: int | None = None,
        epoch_fn: Callable[[], int | None] | None = None,
        consumed_fn: Callable[[], int | None] | None = None,
        uint8_video: bool = False,
        **kwargs,
    ):
        self.uint8_video = bool(uint8_video)
        kwargs.setdefault("collate_fn", functools.partial(collate_examples, as_uint8=self.uint8_video))
        if num_workers > 0:
            kwargs.setdefault("prefetch_factor", 2)
        super().__init__(dataset, batch_size=batch_size, num_workers=num_workers, **kwargs)
        self.num_batches = num_batches
        self.epoch_fn = epoch_fn
        self.consumed_fn = consumed_fn
        self.skips = SkipTracker()
        self._passes = 0
        self._epoch = 0  # epoch of the current (or last) pass
        self._handed_out = 0  # batches of that pass handed out (or replayed on resume)
        self._resume_state: dict[str, int] | None = None

    def __len__(self) -> int:
        if self.num_batches is None:
            raise TypeError("this loader streams one pass over its shards; its length is unknown")
        return self.num_batches

    # -- resumable stream ---------------------------------------------------------------------

    def _layout(self) -> dict[str, int]:
        """What the order of batches depends on besides (seed, epoch)."""
        return {"batch_size": int(self.batch_size), "num_workers": int(self.num_workers),
                "world_size": int(getattr(self.dataset, "world_size", 1))}

    def state_dict(self) -> dict[str, int]:
        """Position in the stream: the epoch and the batches of it consumed so far."""
        consumed = self.consumed_fn() if self.consumed_fn is not None else None
        return {"epoch": int(self._epoch), "batches": int(self._handed_out if consumed is None else consumed),
                **self._layout()}

    def load_state_dict(self, state: dict[str, int]) -> None:
        """Resume at ``state``: the next pass over ``state["epoch"]`` skips its consumed batches."""
        self._resume_state = dict(state)

    def _batches_to_skip(self, epoch: int) -> int:
        state, self._resume_state = self._resume_state, None
        if not state or int(state.get("epoch", -1)) != epoch or int(state.get("batches", 0)) <= 0:
            return 0
        changed = {k: (state[k], v) for k, v in self._layout().items() if k in state and state[k] != v}
        if changed:
            warnings.warn(f"the data stream of epoch {epoch} cannot resume exactly: "
                          + ", ".join(f"{k} was {a}, now {b}" for k, (a, b) in changed.items())
                          + "; skipping the same number of batches of the new order", stacklevel=2)
        log.info("resuming the data stream: replaying %d batches of epoch %d", int(state["batches"]), epoch)
        return int(state["batches"])

    def __iter__(self) -> Iterator[dict[str, Any]]:
        epoch = self.epoch_fn() if self.epoch_fn is not None else None
        self.dataset.epoch = self._passes if epoch is None else int(epoch)
        self._passes += 1
        self._epoch, self._handed_out = int(self.dataset.epoch), 0
        # Regenerate and drop what the interrupted run consumed: the same (seed, epoch) gives the
        # same batches, so the first batch yielded is the first one it never trained on.
        skip = self._batches_to_skip(self._epoch)
        for batch in super().__iter__():
            self.skips.record(batch.pop(SKIPPED_KEY, []))
            if "video" not in batch:
                continue
            self._handed_out += 1
            if skip:
                skip -= 1
                continue
            yield batch
