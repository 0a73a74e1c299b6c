"""``VideoDataModule``: captioned clips from WebDataset shards for every training stage.

* Text-to-video base model (Sec. 3, Sec. 5): ``num_frames`` frames (paper: 80 at 16 fps) at
  the base resolution; ``frame_stride`` or ``target_fps`` picks the temporal sampling and the
  batch reports both (``frame_stride``, ``fps``) as conditioning.
* Text-to-image stage: ``image_mode=True`` draws ``frames_per_clip`` single frames (T = 1) from
  each clip.
* Spatial super-resolution (Sec. 3.2): ``hr_resolution`` also decodes the sample's ``hr.mp4``
  at the same frame indices and returns ``video_hr``.

Batches hold float32 videos in [-1, 1]. Under a Trainer on an accelerator the workers send
uint8 videos instead (a quarter of the bytes through shared memory and to the device) and
:meth:`VideoDataModule.on_after_batch_transfer` converts them on the device, before the
LightningModule or any callback sees the batch (``convert_on_device=False`` turns this off).

Shards come from :mod:`lumiere.data.synthetic`, :mod:`lumiere.data.convert` or video2dataset,
given per split (``train_shards``, ...) or as one ``root`` folder holding ``train/``, ``val/`` and
``test/`` (see :func:`shards_under_root`). ``clips_per_video`` takes several clips (or every
non-overlapping one) from each video, ``short_videos`` keeps videos shorter than a clip by
looping or padding them; with ``target_fps`` each batch reports the clips' real ``fps`` and a
rounded stride that misses the target by more than 3% is warned about once.
Bad samples are skipped and counted (:meth:`VideoDataModule.skipped_counts`,
:class:`~lumiere.data.callbacks.BadSampleReporter`). See :mod:`lumiere.data.dataset` for how the
shards are split over ranks and workers.
"""

from __future__ import annotations

import logging
import os
import weakref
from itertools import islice
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.utilities import rank_zero_warn

from lumiere.data.dataset import ClipOptions, VideoShardDataset
from lumiere.data.decoders import ALL_WINDOWS, BACKENDS, OFFSET_POLICIES, SHORT_VIDEO_POLICIES
from lumiere.data.loader import VideoDataLoader, merge_counts, to_model_range
from lumiere.data.shards import expand_shards
from lumiere.errors import ConfigError

HR_SOURCES = ("hr.mp4", "mp4")  # where super-resolution pairs take their high-resolution clip

STAGES = ("train", "val", "test")
FPS_TOLERANCE = 0.03  # a clip rate further than this (relative) from target_fps is warned about
log = logging.getLogger("lumiere")


def shards_under_root(root: str | os.PathLike) -> dict[str, str | None]:
    """The shard folders of a dataset root: ``root/train`` (required), ``root/val`` (or, when
    there is none, ``root/test``, said in one log line) and ``root/test`` (None when absent)."""
    root = os.path.expanduser(str(root))
    if "://" in root or root.startswith("pipe:"):
        raise ConfigError(f"data.root={root} must be a local folder; give remote shards as data.train_shards / "
                          "data.val_shards / data.test_shards")
    if not os.path.isdir(root):
        raise ConfigError(f"data.root={root} is not a folder; point it at the folder holding train/ (and val/, test/)")
    folders = {split: os.path.join(root, split) for split in STAGES}
    if not os.path.isdir(folders["train"]):
        loose = [name for name in os.listdir(root) if name.endswith(".tar")]
        hint = f" (it holds {len(loose)} .tar shards directly: give them as data.train_shards)" if loose else ""
        raise ConfigError(f"data.root={root} has no train/ folder{hint}; expected {root}/train, {root}/val, {root}/test")
    found = {split: path if os.path.isdir(path) else None for split, path in folders.items()}
    if found["val"] is None:
        found["val"] = found["test"]
        log.info("data.root=%s has no val/ folder: %s", root,
                 f"validating on {found['test']}" if found["test"] else "no validation set")
    return found


def _as_clips_per_video(value: Any) -> int | str:
    if value == ALL_WINDOWS:
        return ALL_WINDOWS
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"clips_per_video must be a positive int or {ALL_WINDOWS!r}, got {value!r}")
    return int(value)


def _as_size(value: int | tuple[int, int] | list[int] | None, name: str) -> tuple[int, int] | None:
    if value is None:
        return None
    if isinstance(value, int):
        size = (value, value)
    else:
        size = tuple(int(v) for v in value)
    if len(size) != 2 or min(size) < 1:
        raise ConfigError(f"{name} must be an int or (height, width), got {value!r}")
    return size  # type: ignore[return-value]


def _weak_method(method):
    """A bound method that does not keep its object alive. The loaders hold it: a strong
    reference would close the cycle data module -> loader -> data module, and a cycle's garbage
    collection tears persistent DataLoader workers down only after join timeouts (seconds each)."""
    ref = weakref.WeakMethod(method)

    def call(*args):
        bound = ref()
        return bound(*args) if bound is not None else None

    return call


class VideoDataModule(pl.LightningDataModule):
    """Clips from WebDataset shards (``mp4``/``hr.mp4``/``txt``/``json``) as video batches."""

    def __init__(
        self,
        train_shards: str | list[str] | None = None,  # directory, glob, brace pattern or URL
        val_shards: str | list[str] | None = None,
        test_shards: str | list[str] | None = None,
        root: str | None = None,  # folder with train/, val/ (else test/ validates), test/; explicit shards win
        num_frames: int = 80,  # frames per clip (paper: 80)
        frame_stride: int | None = None,  # source frames between sampled frames ...
        target_fps: float | None = None,  # ... or the frame rate to resample to (paper: 16)
        resolution: int | tuple[int, int] | None = None,  # short-side resize + centre crop; None keeps
        hr_resolution: int | tuple[int, int] | None = None,  # also return video_hr from hr.mp4 ...
        hr_source: str = "hr.mp4",  # ... or "mp4": from the same video, so `video` is its downscaled copy
        image_mode: bool = False,  # T = 1 samples for the text-to-image stage
        frames_per_clip: int = 4,  # image_mode: frames drawn from each clip
        temporal_crop: str = "random",  # training clip offset; val/test use "center"
        clips_per_video: int | str = 1,  # clips per video per pass (paper: 1); "all": every non-overlapping window
        short_videos: str = "skip",  # videos shorter than a clip: "skip" (paper), "loop" or "pad" them
        batch_size: int = 8,
        val_batch_size: int | None = None,  # defaults to batch_size
        num_workers: int = 2,
        persistent_workers: bool = False,
        pin_memory: bool = False,
        decoder: str = "decord",  # or "pyav"
        convert_on_device: bool = True,  # with a Trainer on an accelerator: uint8 to the device, float there
        shuffle_buffer: int = 64,  # samples held for shuffling (training)
        seed: int = 0,
        epoch_length: int | None = None,  # None: one pass per epoch; int: batches per rank, resampled
        rank: int | None = None,  # override the trainer's global rank (tests, custom launchers)
        world_size: int | None = None,
    ):
        super().__init__()
        if decoder not in BACKENDS:
            raise ConfigError(f"decoder must be one of {BACKENDS}, got {decoder!r}")
        if temporal_crop not in OFFSET_POLICIES:
            raise ConfigError(f"temporal_crop must be one of {OFFSET_POLICIES}, got {temporal_crop!r}")
        if short_videos not in SHORT_VIDEO_POLICIES:
            raise ConfigError(f"short_videos must be one of {SHORT_VIDEO_POLICIES}, got {short_videos!r}")
        if hr_source not in HR_SOURCES:
            raise ConfigError(f"hr_source must be one of {HR_SOURCES}, got {hr_source!r}")
        clips_per_video = _as_clips_per_video(clips_per_video)
        if image_mode and clips_per_video != 1:
            raise ConfigError(f"clips_per_video={clips_per_video!r} takes video clips; image_mode draws single frames "
                              "(set frames_per_clip instead, or clips_per_video=1)")
        if frame_stride is not None and target_fps is not None:
            raise ConfigError("set either frame_stride or target_fps, not both")
        if frame_stride is not None and int(frame_stride) < 1:
            raise ConfigError(f"frame_stride must be >= 1, got {frame_stride}")
        if target_fps is not None and float(target_fps) <= 0:
            raise ConfigError(f"target_fps must be positive, got {target_fps}")
        if int(num_frames) < 1 or int(frames_per_clip) < 1:
            raise ConfigError(f"num_frames and frames_per_clip must be >= 1, got {num_frames}, {frames_per_clip}")
        if int(batch_size) < 1 or int(num_workers) < 0:
            raise ConfigError(f"need batch_size >= 1 and num_workers >= 0, got {batch_size}, {num_workers}")
        if epoch_length is not None and int(epoch_length) < 1:
            raise ConfigError(f"epoch_length must be a positive number of batches or null, got {epoch_length}")
        if (rank is None) != (world_size is None) or (world_size is not None and not 0 <= rank < world_size):
            raise ConfigError(f"give rank and world_size together with 0 <= rank < world_size, got {rank}, {world_size}")
        self.save_hyperparameters(logger=False)
        self.root = root
        self._given_specs = {"train": train_shards, "val": val_shards, "test": test_shards}
        self._shard_specs: dict[str, Any] | None = None
        self.options = ClipOptions(
            num_frames=int(num_frames),
            frame_stride=int(frame_stride) if frame_stride is not None else None,
            target_fps=float(target_fps) if target_fps is not None else None,
            resolution=_as_size(resolution, "resolution"),
            hr_resolution=_as_size(hr_resolution, "hr_resolution"),
            image_mode=bool(image_mode),
            frames_per_clip=int(frames_per_clip),
            temporal_crop=temporal_crop,
            decoder=decoder,
            clips_per_video=clips_per_video,
            short_videos=short_videos,
            hr_source=hr_source,
        )
        self.batch_size = int(batch_size)
        self.val_batch_size = int(val_batch_size or batch_size)
        self.num_workers = int(num_workers)
        self.persistent_workers = bool(persistent_workers) and self.num_workers > 0
        self.pin_memory = bool(pin_memory)
        self.convert_on_device = bool(convert_on_device)
        self.shuffle_buffer = int(shuffle_buffer)
        self.seed = int(seed)
        self.epoch_length = int(epoch_length) if epoch_length is not None else None
        self.rank, self.world_size = rank, world_size
        self.shards: dict[str, list[str]] = {}
        self.loaders: dict[str, VideoDataLoader] = {}
        self._warned: set[str] = set()

    # -- setup ----------------------------------------------------------------------------------

    @property
    def shard_specs(self) -> dict[str, Any]:
        """The shard spec of each split: the one given, else the split's folder under ``root``.
        Resolved on first use (setup or a loader), like the shard paths themselves, so building
        the data module never touches the file system."""
        if self._shard_specs is None:
            specs = dict(self._given_specs)
            if self.root is not None:  # an explicit per-split shard spec wins over the root's folder
                for split, folder in shards_under_root(self.root).items():
                    if specs[split] is None:
                        specs[split] = folder
            self._shard_specs = specs
        return self._shard_specs

    def setup(self, stage: str | None = None) -> None:
        """Resolve the shard lists the stage needs (fails early on missing files) and check that
        ``hr.mp4`` exists when high-resolution pairs are asked for."""
        wanted = {"fit": ("train", "val"), "validate": ("val",), "test": ("test",), None: STAGES}.get(stage, ())
        for split in wanted:
            spec = self.shard_specs[split]
            if spec is None:
                if split == "train":
                    raise ConfigError("no training shards: set data.root (a folder with train/) or data.train_shards")
                continue
            if split not in self.shards:
                self.shards[split] = expand_shards(spec)
                if self.options.hr_resolution is not None and self.options.hr_source == "hr.mp4":
                    self._check_first_sample_has_hr(split)

    def _check_first_sample_has_hr(self, split: str) -> None:
        import webdataset as wds

        first = self.shards[split][0]
        if not os.path.isfile(first):
            return  # remote shards: a missing hr.mp4 is reported per sample as missing_hr
        for sample in wds.tarfile_to_samples()(iter([{"url": first}])):
            if "hr.mp4" not in sample:
                keys = sorted(k for k in sample if not k.startswith("__"))
                raise ConfigError(
                    f"hr_resolution is set but sample {sample['__key__']} of {first} has no 'hr.mp4' "
                    f"(keys: {', '.join(keys)}); set data.hr_source=mp4 (pairs from the same video), generate the data with --hr-size, or unset hr_resolution"
                )
            return

    # -- distributed layout ---------------------------------------------------------------------

    def _rank_and_world(self) -> tuple[int, int]:
        if self.world_size is not None:
            return int(self.rank), int(self.world_size)
        trainer = self.trainer
        if trainer is not None:
            return int(trainer.global_rank), int(trainer.world_size)
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            return dist.get_rank(), dist.get_world_size()
        if "RANK" in os.environ and "WORLD_SIZE" in os.environ:
            return int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
        return 0, 1

    def _current_epoch(self) -> int | None:
        trainer = self.trainer
        return int(trainer.current_epoch) if trainer is not None else None

    def _consumed_train_batches(self) -> int | None:
        """Training batches the fit loop has taken in the current epoch (restored on resume).

        The loader's own count would be one too many when Lightning fetches a batch ahead (it does
        for loaders without a length, to know which batch is the last)."""
        trainer = self.trainer
        try:
            return int(trainer.fit_loop.epoch_loop.batch_progress.current.ready)
        except AttributeError:  # no trainer (plain iteration): the loader counts itself
            return None

    def _uint8_batches(self) -> bool:
        """Send uint8 videos when a Trainer will move them to an accelerator: the conversion to
        float then runs there (``on_after_batch_transfer``), not in the CPU workers."""
        trainer = self.trainer
        if not self.convert_on_device or trainer is None:
            return False
        try:
            return trainer.strategy.root_device.type != "cpu"
        except Exception:  # strategy not set up yet
            return False

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """Finish uint8 batches on the device: float32 in [-1, 1] (docs/architecture.md)."""
        if isinstance(batch, dict):
            for key in ("video", "video_hr"):
                if key in batch and isinstance(batch[key], torch.Tensor):
                    batch[key] = to_model_range(batch[key])
        return batch

    def _warn_once(self, tag: str, message: str) -> None:
        if tag not in self._warned:
            self._warned.add(tag)
            rank_zero_warn(message)

    def _check_fps(self, batch: dict[str, Any]) -> None:
        """Warn once when ``target_fps`` is met only roughly: the stride is a whole number of
        source frames, so 25 fps sources at target 16 play at 12.5 fps."""
        target = self.options.target_fps
        if target is None or "fps-mismatch" in self._warned:
            return
        fps = batch["fps"]
        miss = torch.where(fps > 0, (fps - target).abs() / target, torch.zeros_like(fps))
        worst = int(miss.argmax())
        if float(miss[worst]) <= FPS_TOLERANCE:
            return
        real, stride = float(fps[worst]), int(batch["frame_stride"][worst])
        self._warn_once(
            "fps-mismatch",
            f"target_fps={target:g} is not met: video {batch['key'][worst]} is {real * stride:g} fps; read every {stride} "
            f"frames, it plays at {real:g} fps ({100 * (real - target) / target:+.0f}%; the batch's 'fps' holds each "
            f"clip's real rate). Resample the videos exactly: python -m lumiere.data.convert --videos DIR "
            f"--captions CSV --out OUT --fps {target:g} (or --ucf101 DIR ... --fps {target:g})",
        )

    # -- loaders --------------------------------------------------------------------------------

    def _loader(self, split: str) -> VideoDataLoader:
        if split not in self.shards:
            self.setup({"train": "fit", "val": "validate", "test": "test"}[split])
        shards = self.shards[split]
        rank, world_size = self._rank_and_world()
        training = split == "train"
        resampled = training and self.epoch_length is not None
        batch_size = self.batch_size if training else self.val_batch_size
        workers_total = world_size * max(1, self.num_workers)
        if not resampled and len(shards) < workers_total:
            self._warn_once(
                f"few-shards-{split}",
                f"{split}: {len(shards)} shards for {world_size} rank(s) x {max(1, self.num_workers)} worker(s); "
                "shards are split at the sample level (each is read by several workers). Write more shards.",
            )
        if training and not resampled and world_size > 1:
            self._warn_once(
                "ddp-one-pass",
                "training with one pass over the shards per epoch on several ranks: ranks can get different "
                "batch counts and stall DDP at the end of an epoch; set epoch_length (batches per rank) instead",
            )
        dataset = VideoShardDataset(
            shards,
            self.options,
            shuffle=training,
            shuffle_buffer=self.shuffle_buffer if training else 0,
            seed=self.seed,
            rank=rank,
            world_size=world_size,
            batches_per_epoch=self.epoch_length if resampled else None,
            batch_size=batch_size,
        )
        loader = VideoDataLoader(
            dataset,
            batch_size=batch_size,
            num_workers=self.num_workers,
            num_batches=self.epoch_length if resampled else None,
            epoch_fn=_weak_method(self._current_epoch),
            consumed_fn=_weak_method(self._consumed_train_batches) if training else None,
            persistent_workers=self.persistent_workers,
            pin_memory=self.pin_memory,
            uint8_video=self._uint8_batches(),
            require_batches=training,
            on_batch=_weak_method(self._check_fps) if self.options.target_fps is not None else None,
        )
        previous = self.loaders.get(split)
        if previous is not None:  # keep the counts of an earlier loader of this split
            loader.skips = previous.skips
        self.loaders[split] = loader
        return loader

    def train_captions(self, limit: int = 4096) -> list[str]:
        """Up to ``limit`` captions of the training shards, read in shard order without decoding any
        video: statistics of the caption distribution, e.g. for the STUNet's whitened caption pooling."""

        from lumiere.data.shards import shard_captions

        def captions():
            yield from shard_captions(self.shards["train"])

        self.setup("fit")
        return list(islice(captions(), limit))

    def train_dataloader(self) -> VideoDataLoader:
        return self._loader("train")

    def val_dataloader(self) -> VideoDataLoader | list:
        return self._loader("val") if self.shard_specs["val"] is not None else []

    def test_dataloader(self) -> VideoDataLoader | list:
        return self._loader("test") if self.shard_specs["test"] is not None else []

    # -- bad-sample reporting -------------------------------------------------------------------

    def skipped_counts(self, stage: str | None = None) -> dict[str, int]:
        """Skip events per reason on this rank, summed over workers (and stages unless ``stage``
        names one of train/val/test). A bad sample met in every epoch counts every time."""
        return merge_counts(*(loader.skips.counts() for split, loader in self.loaders.items() if stage in (None, split)))

    def bad_sample_counts(self, stage: str | None = None) -> dict[str, int]:
        """Distinct bad samples per reason on this rank."""
        return merge_counts(
            *(loader.skips.distinct_counts() for split, loader in self.loaders.items() if stage in (None, split))
        )
