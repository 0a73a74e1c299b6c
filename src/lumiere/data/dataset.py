"""The streaming clip dataset behind :class:`~lumiere.data.VideoDataModule` (worker side).

Pipeline, run inside each DataLoader worker::

    shards --(epoch shuffle, split over ranks x workers)--> tar samples --(shuffle buffer)-->
    decode mp4 (+ hr.mp4) --> resize / crop (uint8) --> collate: float video in [-1, 1]

Splitting. ``wds.split_by_node`` + ``wds.split_by_worker`` give each (rank, worker) whole
shards; with fewer shards than ranks x workers some get none, and a rank with no data stalls
DDP. Here the split is done over the *global worker index* ``rank * num_workers + worker``: with
at least as many shards as global workers each gets whole shards round-robin; with fewer, the
global workers that share a shard split its samples round-robin. Either way every sample is
read exactly once per epoch across all ranks and workers. The shard order is shuffled with a
seed that depends only on ``(seed, epoch)``, so all ranks agree on the partition.

With ``batches_per_epoch`` set, each worker instead draws shards at random (with replacement)
forever and stops after its share of the epoch: every rank gets exactly that many batches
(the ``.with_epoch`` regime for large corpora and DDP).

Clips per video. ``clips_per_video`` = N takes N windows of each video per pass (1, the
default, is one random window in training and the centred one in evaluation); ``"all"`` takes
every non-overlapping window in order (see :func:`~lumiere.data.decoders.clip_windows`). The
clips of one video come out one after another, so training with more than one clip per video
shuffles them again in a second, example-level buffer (as for the frames of ``image_mode``).

Bad samples (Sec. 5 trains on web video, where some files are always broken) are skipped
without sleeping and reported: each skip is recorded as ``(reason, sample id, detail)`` and
rides to the main process on the next example (``__skipped__``); skips after a worker's last
example travel in a final report-only item. :class:`~lumiere.data.loader.VideoDataLoader`
collects them. A video too short for a clip is not a bad sample: it is counted as
``too_short`` with its detail ``(frames it has, frames the clip needs)``, and
``short_videos="loop"|"pad"`` keeps it instead. With resampled epochs a worker that meets
:data:`MAX_CONSECUTIVE_SKIPS` skips in a row stops and says so in a report-only item
(``__gave_up__``); the loader turns that, and a training pass without a batch, into one error.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import islice
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import IterableDataset, get_worker_info

from lumiere.data.decoders import TooFewFramesError, VideoDecodeError, decode_clips, decode_frames, decode_windows
from lumiere.data.shards import sample_caption, sample_meta, sample_video_bytes
from lumiere.errors import LumiereError

SKIP_REASONS = (
    "empty",  # zero-byte video
    "not_video",  # bytes that are no known video container
    "truncated",  # an mp4 cut short (box overruns the end / no moov)
    "corrupt",  # a recognised container that still fails to decode
    "too_short",  # shorter than (num_frames - 1) * stride + 1 (short_videos=skip): not bad, short
    "missing_video",  # no mp4/webm/... entry in the sample
    "missing_caption",  # neither txt nor json caption
    "missing_hr",  # hr.mp4 requested but absent
    "bad_json",  # malformed json metadata
    "bad_shard",  # unreadable tar (shard-level; counted once per failure)
)
SKIPPED_KEY = "__skipped__"
REPORT_ONLY_KEY = "__report_only__"
GAVE_UP_KEY = "__gave_up__"
SHORT_REASON = "too_short"
MAX_CONSECUTIVE_SKIPS = 1000  # resampled epochs: give up if the data is all bad


class SampleSkipped(Exception):
    def __init__(self, reason: str, detail: tuple[int, int] | None = None):
        super().__init__(reason)
        self.reason = reason
        self.detail = detail  # too_short: (frames the video has, frames the clip needs)


@dataclass(frozen=True)
class ClipOptions:
    """How a sample becomes a training example (all plain values: pickled into workers)."""

    num_frames: int = 80
    frame_stride: int | None = None
    target_fps: float | None = None
    resolution: tuple[int, int] | None = None
    hr_resolution: tuple[int, int] | None = None
    image_mode: bool = False
    frames_per_clip: int = 4
    temporal_crop: str = "random"
    decoder: str = "decord"
    clips_per_video: int | str = 1  # int N or "all" (every non-overlapping window)
    short_videos: str = "skip"  # or "loop" / "pad"
    hr_source: str = "hr.mp4"  # "mp4": the high-resolution clip is the sample's own video


# ----------------------------------------------------------------------------------------------
# Frames -> model tensors
# ----------------------------------------------------------------------------------------------
# Examples keep uint8 (T, H, W, 3) frames until collation, which writes them straight into the
# float batch (one pass per channel: convert, scale and lay out planar at once). Converting per
# example and then stacking costs extra passes over a 4x larger float array; at 128x128x80
# writing the float batch into fresh shared memory already costs about as much as decoding.

_MINUS_ONE = torch.tensor(-1.0)
_SCALE = 2.0 / 255.0  # uint8 [0, 255] -> [-1, 1]


def resize_center_crop(frames: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Resize uint8 frames (T, H, W, 3) to cover ``size`` (keeping aspect), then centre crop.

    Identity when the frames already have that size. Interpolates uint8 directly (bilinear,
    antialiased when shrinking), which torch does on the channels-last layout decoders give."""
    target_h, target_w = size
    height, width = frames.shape[1:3]
    if (height, width) == (target_h, target_w):
        return frames
    scale = max(target_h / height, target_w / width)
    new_h, new_w = max(target_h, round(height * scale)), max(target_w, round(width * scale))
    if (new_h, new_w) != (height, width):
        channels_last = frames.permute(0, 3, 1, 2)  # (T, 3, H, W) view, channels-last memory
        antialias = new_h < height or new_w < width
        resized = F.interpolate(channels_last, size=(new_h, new_w), mode="bilinear", align_corners=False, antialias=antialias)
        frames = resized.permute(0, 2, 3, 1)
    top, left = (new_h - target_h) // 2, (new_w - target_w) // 2
    return frames[:, top : top + target_h, left : left + target_w]


def frames_into_video(frames: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """Write uint8 frames (T, H, W, 3) into a float video ``out`` (3, T, H, W) in [-1, 1]."""
    for channel in range(3):
        torch.add(_MINUS_ONE, frames[..., channel], alpha=_SCALE, out=out[channel])
    return out


def frames_to_video(frames: torch.Tensor, size: tuple[int, int] | None = None) -> torch.Tensor:
    """uint8 frames (T, H, W, 3) -> float32 video (3, T, H, W) in [-1, 1], resized if asked."""
    if size is not None:
        frames = resize_center_crop(frames, size)
    out = torch.empty((3, *frames.shape[:3]), dtype=torch.float32)
    return frames_into_video(frames, out)


# ----------------------------------------------------------------------------------------------
# Splitting shards over ranks x workers
# ----------------------------------------------------------------------------------------------


def assign_shards(shards: list[str], global_worker: int, num_global_workers: int) -> list[tuple[str, int, int]]:
    """The reading plan of one global worker: ``(shard, modulus, remainder)`` triples, meaning
    "read the samples ``i`` of ``shard`` with ``i % modulus == remainder``".

    With ``len(shards) >= num_global_workers`` shards go round-robin (modulus 1). With fewer,
    worker ``g`` reads shard ``g % S`` together with the other workers ``h = g (mod S)`` and
    takes every k-th sample, k being the number of sharers. The plans of all global workers
    partition the samples."""
    num_shards = len(shards)
    if not 0 <= global_worker < num_global_workers:
        raise ValueError(f"global worker {global_worker} out of range {num_global_workers}")
    if num_shards == 0:
        return []
    if num_shards >= num_global_workers:
        return [(shard, 1, 0) for shard in shards[global_worker::num_global_workers]]
    shard_index = global_worker % num_shards
    sharers = list(range(shard_index, num_global_workers, num_shards))
    return [(shards[shard_index], len(sharers), sharers.index(global_worker))]


def shard_order(shards: list[str], seed: int, epoch: int, shuffle: bool) -> list[str]:
    """Shard order of an epoch; identical on every rank and worker (seeded by seed and epoch)."""
    if not shuffle:
        return list(shards)
    permutation = np.random.default_rng([seed, epoch]).permutation(len(shards))
    return [shards[i] for i in permutation]


# ----------------------------------------------------------------------------------------------
# The dataset
# ----------------------------------------------------------------------------------------------


class _SkipLedger:
    """Skips seen by this worker since the last hand-off to the main process."""

    def __init__(self) -> None:
        self.pending: list[tuple[str, str, tuple[int, int] | None]] = []

    def add(self, reason: str, sample_id: str, detail: tuple[int, int] | None = None) -> None:
        self.pending.append((reason, sample_id, detail))

    def take(self) -> list[tuple[str, str, tuple[int, int] | None]]:
        taken, self.pending = self.pending, []
        return taken


class VideoShardDataset(IterableDataset):
    """Decoded clips from WebDataset shards, split exactly over ranks and workers.

    ``rank`` / ``world_size`` are given explicitly (the data module reads them from the trainer)
    rather than looked up in the environment inside the worker. ``epoch`` is set by the loader
    before each pass and advanced by the dataset itself (for persistent workers)."""

    def __init__(
        self,
        shards: list[str],
        options: ClipOptions,
        *,
        shuffle: bool = False,
        shuffle_buffer: int = 0,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        batches_per_epoch: int | None = None,
        batch_size: int = 1,
    ):
        super().__init__()
        if not shards:
            raise LumiereError("VideoShardDataset needs at least one shard")
        self.shards = list(shards)
        self.options = options
        self.shuffle = shuffle
        self.shuffle_buffer = int(shuffle_buffer)
        self.seed = int(seed)
        self.rank = int(rank)
        self.world_size = int(world_size)
        self.batches_per_epoch = batches_per_epoch
        self.batch_size = int(batch_size)
        self.epoch = 0

    # -- reading ------------------------------------------------------------------------------

    def _plan(self, epoch: int, worker: int, num_workers: int, rng: np.random.Generator) -> Iterator[tuple[str, int, int]]:
        if self.batches_per_epoch is not None:  # resampled: random shards with replacement, forever
            while True:
                yield (self.shards[int(rng.integers(len(self.shards)))], 1, 0)
        order = shard_order(self.shards, self.seed, epoch, self.shuffle)
        yield from assign_shards(order, self.rank * num_workers + worker, self.world_size * num_workers)

    @staticmethod
    def _read(plan, ledger: _SkipLedger) -> Iterator[dict[str, Any]]:
        import webdataset as wds

        for shard, modulus, remainder in plan:

            def on_error(error: Exception, shard=shard) -> bool:
                ledger.add("bad_shard", f"{shard}: {type(error).__name__}")
                return True  # skip the rest of this shard, keep going

            samples = wds.tarfile_to_samples(handler=on_error)(iter([{"url": shard}]))
            for index, sample in enumerate(samples):
                if index % modulus == remainder:
                    yield sample

    # -- decoding -----------------------------------------------------------------------------

    def _examples(self, sample: dict[str, Any], rng: np.random.Generator) -> list[dict[str, Any]]:
        opts = self.options
        key = str(sample.get("__key__"))
        try:
            meta = sample_meta(sample)
        except (ValueError, UnicodeDecodeError):
            raise SampleSkipped("bad_json") from None
        video_bytes = sample_video_bytes(sample)
        if video_bytes is None:
            raise SampleSkipped("missing_video")
        caption = sample_caption(sample, meta)
        if caption is None:
            raise SampleSkipped("missing_caption")
        hr_bytes = video_bytes if opts.hr_source == "mp4" else sample.get("hr.mp4")
        if opts.hr_resolution is not None and hr_bytes is None:
            raise SampleSkipped("missing_hr")
        labels = meta.get("labels") if isinstance(meta.get("labels"), dict) else {}
        offset = opts.temporal_crop if self.shuffle else "center"
        resize = (lambda clip: resize_center_crop(clip, opts.resolution)) if opts.resolution is not None else None
        try:
            if opts.image_mode:
                wanted = opts.frames_per_clip

                def pick(num_source: int) -> list[int]:
                    if num_source <= wanted:
                        return list(range(num_source))
                    if offset == "random":
                        return sorted(int(i) for i in rng.choice(num_source, size=wanted, replace=False))
                    return [int(round(x)) for x in np.linspace(0, num_source - 1, wanted)]

                frames, info = decode_frames(video_bytes, pick, backend=opts.decoder)
                stride, fps = 1, info["source_fps"]
                # one T = 1 example per drawn frame
                clips = [resize(frames[i : i + 1]) if resize else frames[i : i + 1] for i in range(len(frames))]
                windows = [[index] for index in info["indices"]]
                suffixes = [f"/frame{index:06d}" for index in info["indices"]]
            else:
                clips, info = decode_clips(
                    video_bytes,
                    num_frames=opts.num_frames,
                    backend=opts.decoder,
                    frame_stride=opts.frame_stride,
                    target_fps=opts.target_fps,
                    clips=opts.clips_per_video,
                    offset=offset,
                    short_videos=opts.short_videos,
                    rng=rng,
                    transform=resize,
                )
                stride, fps, windows = info["stride"], info["fps"], info["windows"]
                suffixes = [""] if opts.clips_per_video == 1 else [f"/clip{k:03d}" for k in range(len(clips))]
            hr_clips = None
            if opts.hr_resolution is not None:
                hr_size = opts.hr_resolution
                hr_clips, _ = decode_windows(hr_bytes, windows, backend=opts.decoder,
                                             transform=lambda clip: resize_center_crop(clip, hr_size))
        except TooFewFramesError as error:
            raise SampleSkipped(SHORT_REASON, (error.available, error.required)) from None
        except VideoDecodeError as error:
            raise SampleSkipped(error.reason) from None
        if not fps and meta.get("fps"):
            fps = float(meta["fps"]) / stride  # container without a frame rate: trust the json

        examples = []
        for index, (clip, suffix) in enumerate(zip(clips, suffixes)):
            item = {"frames": clip, "caption": caption, "frame_stride": int(stride), "fps": float(fps),
                    "labels": labels, "key": key + suffix}
            if hr_clips is not None:
                item["frames_hr"] = hr_clips[index]
            examples.append(item)
        return examples

    def _decoded(self, samples, ledger: _SkipLedger, rng: np.random.Generator) -> Iterator[dict[str, Any]]:
        consecutive = 0
        for sample in samples:
            try:
                examples = self._examples(sample, rng)
            except SampleSkipped as skip:
                ledger.add(skip.reason, f"{sample.get('__url__')}::{sample.get('__key__')}", skip.detail)
                consecutive += 1
                if self.batches_per_epoch is not None and consecutive >= MAX_CONSECUTIVE_SKIPS:
                    # resampling draws forever: stop, and let the loader say why in one line
                    yield {REPORT_ONLY_KEY: True, GAVE_UP_KEY: consecutive}
                    return
                continue
            consecutive = 0
            yield from examples

    # -- iteration ----------------------------------------------------------------------------

    def __iter__(self) -> Iterator[dict[str, Any]]:
        import webdataset as wds

        info = get_worker_info()
        worker, num_workers = (info.id, info.num_workers) if info is not None else (0, 1)
        epoch = self.epoch
        self.epoch += 1  # persistent workers keep their copy: advance it for the next pass
        rng = np.random.default_rng([self.seed, epoch, self.rank, worker, 1])
        ledger = _SkipLedger()

        samples = self._read(self._plan(epoch, worker, num_workers, rng), ledger)
        if self.shuffle and self.shuffle_buffer > 1:
            shuffle_rng = random.Random(int(rng.integers(2**63)))
            samples = wds.shuffle(self.shuffle_buffer, initial=self.shuffle_buffer, rng=shuffle_rng)(samples)
        examples = self._decoded(samples, ledger, rng)  # lazy: draws from rng only when iterated
        several_per_sample = self.options.image_mode or self.options.clips_per_video != 1
        if self.shuffle and self.shuffle_buffer > 1 and several_per_sample:
            # The buffer above shuffles samples; one clip yields `frames_per_clip` consecutive frames
            # (one video `clips_per_video` clips), so without a second, example-level buffer a batch
            # of 32 frames held only 32 / frames_per_clip captions.
            frame_rng = random.Random(int(rng.integers(2**63)))
            examples = wds.shuffle(self.shuffle_buffer, initial=self.shuffle_buffer, rng=frame_rng)(examples)
        if self.batches_per_epoch is not None:
            # this worker's share of the rank's batches; the DataLoader batches per worker
            share = self.batches_per_epoch // num_workers + (worker < self.batches_per_epoch % num_workers)
            examples = islice(examples, share * self.batch_size)
        for item in examples:
            item[SKIPPED_KEY] = ledger.take()
            yield item
        leftover = ledger.take()
        if leftover:
            yield {SKIPPED_KEY: leftover, REPORT_ONLY_KEY: True}
