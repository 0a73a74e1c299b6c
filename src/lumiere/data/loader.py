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

No silent empty epochs. A training pass that yields no batch at all (every sample skipped, too
short, or no sample for this rank), and a resampling worker that met only skips
(``__gave_up__``), raise one :class:`~lumiere.errors.InputFileError` line with the skip counts,
the frames the short videos had and needed, and what to change; without it Lightning repeats
empty epochs forever when the epoch length is unknown.
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

from lumiere.data.dataset import (
    GAVE_UP_KEY,
    REPORT_ONLY_KEY,
    SHORT_REASON,
    SKIP_REASONS,
    SKIPPED_KEY,
    frames_into_video,
)
from lumiere.errors import ConfigError, InputFileError

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
    gave_up = max((int(item.get(GAVE_UP_KEY, 0)) for item in examples), default=0)
    if gave_up:
        batch[GAVE_UP_KEY] = gave_up
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
    """Skip events (every time a bad sample is met) and distinct bad samples, per reason; for
    too-short videos also the range of frames they had and of frames their clips needed."""

    MAX_REMEMBERED = 100_000  # distinct sample ids kept; beyond that only events are counted

    def __init__(self) -> None:
        self.events: Counter[str] = Counter()
        self._seen: dict[str, set[str]] = {}
        self._remembered = 0
        self.short_had: tuple[int, int] | None = None  # (fewest, most) frames of a too-short video
        self.short_needed: tuple[int, int] | None = None  # (fewest, most) frames its clip needed

    def record(self, events: list[tuple]) -> None:
        for reason, sample_id, *detail in events:
            self.events[reason] += 1
            seen = self._seen.setdefault(reason, set())
            if sample_id not in seen and self._remembered < self.MAX_REMEMBERED:
                seen.add(sample_id)
                self._remembered += 1
            if reason == SHORT_REASON and detail and detail[0] is not None:
                had, needed = (int(v) for v in detail[0])
                self.short_had = _widen(self.short_had, had)
                self.short_needed = _widen(self.short_needed, needed)

    def counts(self) -> dict[str, int]:
        """Skip events per reason (a bad sample met in three epochs counts three times)."""
        return dict(self.events)

    def distinct_counts(self) -> dict[str, int]:
        """Distinct bad samples per reason."""
        return {reason: len(ids) for reason, ids in self._seen.items() if ids}


def _widen(bounds: tuple[int, int] | None, value: int) -> tuple[int, int]:
    return (value, value) if bounds is None else (min(bounds[0], value), max(bounds[1], value))


def _span_text(bounds: tuple[int, int]) -> str:
    return str(bounds[0]) if bounds[0] == bounds[1] else f"{bounds[0]}-{bounds[1]}"


def describe_skips(counts: dict[str, int], tracker: SkipTracker | None = None) -> str:
    """The skips in words: ``4 bad samples (empty=1, truncated=3), 2 videos too short (had 6-9
    frames, a clip needs 16)``; the frame ranges come from ``tracker``."""
    bad = {reason: count for reason, count in counts.items() if count and reason != SHORT_REASON}
    parts = []
    if bad:
        total = sum(bad.values())
        details = ", ".join(f"{reason}={count}" for reason, count in bad.items())
        parts.append(f"{total} bad sample{'s' if total != 1 else ''} ({details})")
    short = counts.get(SHORT_REASON, 0)
    if short:
        text = f"{short} video{'s' if short != 1 else ''} too short"
        if tracker is not None and tracker.short_had is not None and tracker.short_needed is not None:
            text += f" (had {_span_text(tracker.short_had)} frames, a clip needs {_span_text(tracker.short_needed)})"
        parts.append(text)
    return ", ".join(parts) if parts else "no skipped samples"


SHORT_VIDEO_ADVICE = (
    "keep short videos with data.short_videos=loop or pad, or need fewer frames per clip with a smaller "
    "data.num_frames or a smaller stride (data.frame_stride, or a higher data.target_fps)"
)


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
        require_batches: bool = False,
        on_batch: Callable[[dict[str, Any]], None] | None = None,
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
        self.require_batches = bool(require_batches)  # a pass without a batch is an error (training)
        self.on_batch = on_batch  # sees every batch handed out (e.g. the data module's fps check)
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
        before = Counter(self.skips.events)
        for batch in super().__iter__():
            self.skips.record(batch.pop(SKIPPED_KEY, []))
            gave_up = batch.pop(GAVE_UP_KEY, 0)
            if gave_up:
                raise InputFileError(self._no_data_message(before, f"{gave_up} samples in a row were skipped in {{where}}"))
            if "video" not in batch:
                continue
            self._handed_out += 1
            if skip:
                skip -= 1
                continue
            if self.on_batch is not None:
                self.on_batch(batch)
            yield batch
        if self._handed_out == 0 and self.require_batches:
            raise InputFileError(self._no_data_message(before, "a whole pass over {where} gave no batch"))

    def _no_data_message(self, before: Counter[str], what: str) -> str:
        """One line: why no batch came (this pass's skips) and what to change. ``what`` names
        the event, with ``{where}`` for the shards."""
        counts = merge_counts({reason: count - before.get(reason, 0) for reason, count in self.skips.events.items()})
        shards = list(getattr(self.dataset, "shards", []))
        where = f"{len(shards)} shard{'s' if len(shards) != 1 else ''} ({shards[0]}{', ...' if len(shards) > 1 else ''})"
        if not counts:
            world = int(getattr(self.dataset, "world_size", 1))
            return (f"no training data: {what.format(where=where)}: no sample was read on rank "
                    f"{getattr(self.dataset, 'rank', 0)} of {world}; check that the shards hold samples")
        advice = []
        if counts.get(SHORT_REASON):
            advice.append(SHORT_VIDEO_ADVICE)
        if any(reason != SHORT_REASON for reason in counts):
            advice.append("check or re-convert the shards (python -m lumiere.data.convert reports unreadable videos)")
        return f"no training data: {what.format(where=where)}: {describe_skips(counts, self.skips)}; " + "; ".join(advice)
