"""``BadSampleReporter``: make skipped training data visible instead of silently swapped.

Web-scale video corpora (Sec. 5) always hold some broken files. The data pipeline skips them
without stalling (no retry sleeps) and counts them per reason; this callback logs the counts as
``data/skipped_<reason>`` (skip events during the epoch, summed over ranks) and prints one
summary line at the end of fit::

    skipped 2 bad samples (empty=1, truncated=1), 1 video too short (had 9 frames, a clip needs 16)

Videos too short for a clip are counted apart from bad (undecodable) samples, with the frames
they had and the frames a clip needs.
"""

from __future__ import annotations

from typing import Any

import lightning.pytorch as pl
import torch

from lumiere.data.dataset import SKIP_REASONS
from lumiere.data.loader import SkipTracker, describe_skips, merge_counts


def _trackers(trainer: pl.Trainer, stage: str | None) -> list[SkipTracker]:
    """Skip trackers of the trainer's video loaders (through the data module when there is one)."""
    datamodule = getattr(trainer, "datamodule", None)
    loaders = getattr(datamodule, "loaders", None)
    if isinstance(loaders, dict):
        return [loader.skips for split, loader in loaders.items() if stage in (None, split)]
    found: list[Any] = []
    sources = []
    if stage in (None, "train"):
        sources.append(trainer.train_dataloader)
    if stage in (None, "val"):
        sources.append(trainer.val_dataloaders)
    for source in sources:
        items = source if isinstance(source, (list, tuple)) else list(source.values()) if isinstance(source, dict) else [source]
        found.extend(item.skips for item in items if isinstance(getattr(item, "skips", None), SkipTracker))
    return found


def _merged(trackers: list[SkipTracker]) -> SkipTracker:
    """One tracker holding the widest too-short frame ranges of ``trackers`` (counts not merged)."""
    merged = SkipTracker()
    for tracker in trackers:
        for name in ("short_had", "short_needed"):
            theirs, ours = getattr(tracker, name), getattr(merged, name)
            if theirs is not None:
                setattr(merged, name, theirs if ours is None else (min(ours[0], theirs[0]), max(ours[1], theirs[1])))
    return merged


def format_skip_summary(counts: dict[str, int], tracker: SkipTracker | None = None) -> str:
    """``skipped 2 bad samples (...), 1 video too short (had ... frames, a clip needs ...)``."""
    if sum(counts.values()) == 0:
        return "skipped no bad samples"
    return f"skipped {describe_skips(counts, tracker)}"


class BadSampleReporter(pl.Callback):
    """Logs ``data/skipped_<reason>`` per training epoch and prints a summary at the end of fit.

    Every reason in :data:`~lumiere.data.dataset.SKIP_REASONS` is logged each epoch (zeros
    included) so all ranks log the same keys, which ``sync_dist`` needs."""

    def __init__(self, prefix: str = "data/skipped_"):
        super().__init__()
        self.prefix = prefix
        self._logged_until: dict[str, int] = {}

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        totals = merge_counts(*(tracker.counts() for tracker in _trackers(trainer, "train")))
        epoch_counts = {reason: totals.get(reason, 0) - self._logged_until.get(reason, 0) for reason in SKIP_REASONS}
        self._logged_until = {reason: totals.get(reason, 0) for reason in SKIP_REASONS}
        for reason, count in epoch_counts.items():
            pl_module.log(f"{self.prefix}{reason}", float(count), on_epoch=True, on_step=False, sync_dist=True, reduce_fx="sum")
        pl_module.log(f"{self.prefix}total", float(sum(epoch_counts.values())), on_epoch=True, on_step=False, sync_dist=True, reduce_fx="sum")

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        trackers = _trackers(trainer, None)
        local = merge_counts(*(tracker.distinct_counts() for tracker in trackers))
        vector = torch.tensor([float(local.get(reason, 0)) for reason in SKIP_REASONS], device=pl_module.device)
        if trainer.world_size > 1:
            vector = trainer.strategy.reduce(vector, reduce_op="sum")
        counts = {reason: int(value) for reason, value in zip(SKIP_REASONS, vector.tolist()) if value}
        if trainer.is_global_zero:
            print(format_skip_summary(counts, _merged(trackers)), flush=True)
