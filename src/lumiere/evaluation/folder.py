"""FVD (and, when asked, IS) of your own clips: ``python evaluate.py evaluation=folder``.

The real side is a folder of video files or WebDataset shards (``evaluation.real``); the
generated side is another such folder (``evaluation.generated``), or clips sampled from a base
checkpoint for the lines of a prompt file (``ckpt_path=...`` and ``evaluation.prompt_file=...``),
generated resumably into ``evaluation.generated_dir`` (the UCF101 mode's ledger: a rerun with the
same ``run_name`` samples only the clips still missing). Both sides are cut into 16-frame windows
the same way (``lumiere.evaluation.folder_clips``) and go through the published FVD
preprocessing (first 16 frames, TF1 legacy bilinear resize to 224, paper App. D.2) into the I3D.

The real side's I3D Gaussian is cached under ``stats_cache_dir``, keyed by its file list (path,
size, mtime), the windowing, the FVD variant and the clip length: scoring other generated clips
against the same real set decodes no real video, and any change to the real folder computes the
statistics again. The IS (TGANv2's C3D on the generated clips) is computed only with
``inception_score=true``; only then are the C3D files needed.
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from lumiere.errors import ConfigError, InputFileError
from lumiere.evaluation import features
from lumiere.evaluation.folder_clips import (
    CLIP_FRAMES,
    UNUSABLE_POLICIES,
    WINDOW_POLICIES,
    SideCounts,
    VideoSource,
    WindowOptions,
    clip_batches,
    find_video_source,
    iter_clips,
)
from lumiere.evaluation.generated import settings_from_mapping
from lumiere.evaluation.report import Column, ResultTable

log = logging.getLogger("lumiere")



@dataclass
class FolderSettings:
    real: str | None = None               # folder of videos, or shards (folder of .tar / .tar / glob / brace)
    generated: str | None = None          # the same, for the generated clips (or: ckpt_path + prompt_file)
    prompt_file: str | None = None        # with ckpt_path: one prompt per line (# comments)
    num_videos: int | None = None         # with ckpt_path: clips to sample (null: one per prompt; N: cycle the prompts)
    num_frames: int | None = None         # with ckpt_path: frames per sampled clip (null: the model's clip length)
    batch_size: int = 4                   # with ckpt_path: clips per sampling call
    seed: int = 0                         # with ckpt_path: clip i of a batch starting at clip k uses seed + k
    generated_dir: str = "outputs/generated"
    windows: str = "first"                # first: one clip per video from its start; all: every non-overlapping window
    target_fps: float | None = None       # null: every source frame; N: stride round(source fps / N), both sides
    unusable_videos: str = "error"        # error | skip: a video that gives no clip (undecodable, too short)
    decoder: str = "pyav"                 # pyav | decord (lumiere.data.decoders)
    stats_cache_dir: str = "outputs/artifacts/fvd_reference/folder"
    i3d_weights: str | None = None        # null: the default converted file (make weights)
    fvd_ddof: int = 1                     # covariance divisor N - ddof (tfgan: 1, StyleGAN-V: 0)
    feature_batch_size: int = 4           # clips per I3D (and C3D) forward
    inception_score: bool = False         # true: also the C3D IS of the generated clips (needs the C3D files)
    c3d_weights: str | None = None        # conv3d_deepnetA_ucf.npz (TGANv2 release)
    c3d_mean: str | None = None           # mean2.npz (TGANv2 release)
    is_splits: int = 1                    # TGANv2: 1; StyleGAN-V: 10
    sampling: dict = field(default_factory=dict)  # num_inference_steps, guidance_scale, scheduler (null: the checkpoint's)

    def window_options(self) -> WindowOptions:
        return WindowOptions(self.windows, self.target_fps, self.unusable_videos, self.decoder)


def _choice(value: Any, name: str, options: tuple[str, ...]) -> None:
    if value not in options:
        raise ConfigError(f"evaluation.{name} must be one of {', '.join(options)}, got {value!r}")


def _whole(value: Any, name: str, minimum: int, null: str | None = None) -> None:
    if value is None and null:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"evaluation.{name} must be a whole number >= {minimum}"
                          + (f" (null: {null})" if null else "") + f", got {value!r}")


def check_settings(settings: FolderSettings) -> None:
    """Every value that cannot work, as one line, before anything is read."""
    from lumiere.data.decoders import BACKENDS

    _choice(settings.windows, "windows", WINDOW_POLICIES)
    _choice(settings.unusable_videos, "unusable_videos", UNUSABLE_POLICIES)
    _choice(settings.decoder, "decoder", BACKENDS)
    for name in ("batch_size", "feature_batch_size", "is_splits"):
        _whole(getattr(settings, name), name, 1)
    _whole(settings.seed, "seed", 0)
    _whole(settings.num_videos, "num_videos", 2, null="one clip per prompt")
    _whole(settings.num_frames, "num_frames", CLIP_FRAMES, null="the model's clip length")
    if settings.fvd_ddof not in (0, 1):
        raise ConfigError(f"evaluation.fvd_ddof must be 0 or 1, got {settings.fvd_ddof!r}")
    fps = settings.target_fps
    if fps is not None and (isinstance(fps, bool) or not isinstance(fps, (int, float)) or not fps > 0):
        raise ConfigError(f"evaluation.target_fps must be a positive number (null: every source frame), got {fps!r}")
    if not isinstance(settings.inception_score, bool):
        raise ConfigError(f"evaluation.inception_score must be true or false, got {settings.inception_score!r}")


def load_inception_score(settings: FolderSettings):
    """TGANv2's C3D video IS; a missing or bad C3D file is one line saying how to do without it."""
    from lumiere.metrics import VideoInceptionScore

    try:
        return VideoInceptionScore(c3d_weights=settings.c3d_weights, c3d_mean=settings.c3d_mean, splits=settings.is_splits)
    except InputFileError as error:
        raise InputFileError(f"{error} (or set evaluation.inception_score=false for the FVD alone)") from None


# ---------------------------------------------------------------------------------------------- the real side
def real_statistics_path(source: VideoSource, settings: FolderSettings, variant: str) -> Path:
    """The cache file of the real side: a digest of its files, the windowing, the variant and the clip length."""
    identity = json.dumps({"kind": source.kind, "files": source.identity(), "clip_frames": CLIP_FRAMES,
                           **asdict(settings.window_options())}, sort_keys=True)
    return features.reference_cache_path(settings.stats_cache_dir, "folder_i3d", variant, identity)


def ensure_real_statistics(source: VideoSource, settings: FolderSettings, i3d, variant: str,
                           progress: bool) -> tuple[Path, dict, bool]:
    """(statistics npz, the real side's counts, computed now?): from the cache when it holds this real set."""
    from lumiere.utils import atomic_write

    path = real_statistics_path(source, settings, variant)
    summary_path = path.with_suffix(".json")
    if path.is_file() and summary_path.is_file():
        log.info("real I3D statistics: using the cached %s", path)
        return path, json.loads(summary_path.read_text()), False
    counts = SideCounts()
    metric = features.i3d_fvd_metric(i3d, settings.fvd_ddof)
    batches = clip_batches(iter_clips(source, settings.window_options(), counts), settings.feature_batch_size)
    features.stream_into_fvd(metric, batches, real=True, desc="I3D real clips", progress=progress)
    check_enough_clips(counts, source, settings.windows)
    metric.save_real_statistics(path)
    summary = {"location": source.location, "kind": source.kind, "left_out": source.left_out, **counts.to_dict()}
    atomic_write(summary_path, lambda stream: stream.write((json.dumps(summary, indent=2) + "\n").encode()))
    log.info("real I3D statistics: saved %s", path)
    return path, summary, True


def check_enough_clips(counts: SideCounts, source: VideoSource, windows: str) -> None:
    if counts.clips < 2:
        hint = f", or set evaluation.windows=all (every {CLIP_FRAMES}-frame window of each video)" if windows == "first" else ""
        raise InputFileError(f"{source.location} gives {counts.clips} {source.side} clip(s); the FVD needs at least 2 "
                             f"per side to estimate a covariance: add videos{hint}")


# ---------------------------------------------------------------------------------------------- the generated side
def generate_from_checkpoint(generator, prompts: list[str], settings: FolderSettings, mp4_fps: float | None,
                             progress: bool) -> VideoSource:
    """Sample the clips into ``generated_dir`` (lossless ``.npy`` scored, ``.mp4`` at ``mp4_fps`` to watch),
    resuming a run that stopped; another checkpoint or sampler in the same folder is refused."""
    from lumiere.evaluation.ucf101 import check_generation_record
    from lumiere.evaluation.ucf101_protocol import PlanItem, generate_videos_resumable, write_npy_video

    count = settings.num_videos or len(prompts)
    plan = [PlanItem(index, "clip", prompts[index % len(prompts)], settings.seed + index) for index in range(count)]
    generated_dir = Path(settings.generated_dir)
    check_generation_record(generated_dir, {**generator.settings(), "prompts": prompts, "num_videos": count,
                                            "seed": settings.seed, "batch_size": settings.batch_size})

    def write(path: Path, video: torch.Tensor) -> None:
        write_npy_video(path, video)
        if mp4_fps:
            from lumiere.viz import write_mp4

            write_mp4(path.with_suffix(".mp4"), video.float().cpu(), fps=mp4_fps)

    def generate_fn(batch_prompts: list[str], seeds: list[int]) -> torch.Tensor:
        return generator(batch_prompts, seed=seeds[0])  # one seed per call: a resumed batch equals the first run's

    paths = generate_videos_resumable(plan, generate_fn, generated_dir, batch_size=settings.batch_size,
                                      writer=write, progress=progress, desc="generating clips")
    return VideoSource("generated", str(generated_dir / "videos"), "files", list(paths))


def score_generated(source: VideoSource, settings: FolderSettings, i3d, statistics: Path, inception,
                    progress: bool) -> tuple[dict, SideCounts, features.Throughput]:
    from tqdm.auto import tqdm

    fvd = features.i3d_fvd_metric(i3d, settings.fvd_ddof, real_statistics=statistics)
    counts, throughput = SideCounts(), features.Throughput()
    bar = tqdm(desc="I3D generated clips" + (" + C3D" if inception is not None else ""), unit="clip",
               disable=not progress)
    for videos in clip_batches(iter_clips(source, settings.window_options(), counts), settings.feature_batch_size):
        tic = time.perf_counter()
        fvd.update(videos, real=False)
        if inception is not None:
            inception.update(videos)
        throughput.add(videos.shape[0], time.perf_counter() - tic)
        bar.update(videos.shape[0])
    bar.close()
    check_enough_clips(counts, source, settings.windows)
    result = fvd.result()
    if inception is not None:
        if settings.is_splits > counts.clips:
            raise ConfigError(f"evaluation.is_splits={settings.is_splits} but there are {counts.clips} generated clips")
        result["is"], result["is_std"] = (float(v) for v in inception.compute())
    return result, counts, throughput


# ---------------------------------------------------------------------------------------------- the protocol
def evaluate_folder(settings: FolderSettings, out_dir: str | os.PathLike, ckpt_path: str | None = None,
                    prompts: list[str] | None = None, device: str | torch.device = "cpu", progress: bool = True,
                    mp4_fps: float | None = None) -> ResultTable:
    """FVD (and IS) of the generated side against the real side; returns the table.

    With ``ckpt_path`` the generated side is sampled for ``prompts`` (the task reads them from
    ``evaluation.prompt_file``); ``mp4_fps`` is the frame rate of the viewing copies (the task
    passes the checkpoint's training fps)."""
    started = time.perf_counter()
    check_settings(settings)
    device = torch.device(device)
    # 1. Inputs that can be missing or wrong, cheapest first, before anything long runs.
    if settings.generated and ckpt_path:
        raise ConfigError("give evaluation.generated=PATH (clips you have) or ckpt_path=PATH with "
                          "evaluation.prompt_file=PATH (clips to sample), not both")
    if not settings.generated and not ckpt_path:
        raise ConfigError("evaluation=folder needs generated clips: set evaluation.generated=PATH, or ckpt_path=PATH "
                          "with evaluation.prompt_file=PATH")
    if ckpt_path and not prompts:
        raise ConfigError("sampling from ckpt_path needs prompts: set evaluation.prompt_file=PATH (one prompt per line)")
    real = find_video_source(settings.real, "real", "evaluation.real")
    generated = find_video_source(settings.generated, "generated", "evaluation.generated") if settings.generated else None
    inception = load_inception_score(settings) if settings.inception_score else None
    i3d = features.load_i3d(settings.i3d_weights, device=device)
    variant = features.i3d_fvd_metric(i3d, settings.fvd_ddof).variant
    generator = None
    if ckpt_path:
        from lumiere.evaluation.generated import CheckpointGenerator

        generator = CheckpointGenerator(ckpt_path, device, settings.num_frames, **(settings.sampling or {}))
        features.check_fvd_frames(generator.num_frames, "the model's clips",
                                  hint=f"set evaluation.num_frames to {CLIP_FRAMES} or more")

    # 2. The real statistics (cached), 3. the generated clips, 4. their scores.
    statistics, real_summary, computed_now = ensure_real_statistics(real, settings, i3d, variant, progress)
    if generator is not None:
        generated = generate_from_checkpoint(generator, list(prompts), settings, mp4_fps, progress)
    result, counts, throughput = score_generated(generated, settings, i3d, statistics, inception, progress)
    log.info("FVD %.4g (%s): %d generated clips against %d real clips", result["fvd"], result["variant"],
             result["num_fake"], result["num_real"])

    label = f"this model ({generator.name})" if generator is not None else f"generated ({generated.location})"
    row = {"row": "generated", "method": label, "fvd": result["fvd"], "fvd_variant": result["variant"],
           "is": result.get("is"), "is_std": result.get("is_std"), "num_clips": counts.clips,
           "num_videos": counts.videos, "num_real": result["num_real"], "num_real_videos": real_summary.get("videos"),
           "is_variant": f"C3D (TGANv2 UCF101), {settings.is_splits} split(s)" if inception is not None
           else "not computed (evaluation.inception_score=false)"}
    columns = [Column("method", "generated side", ""), Column("fvd", "FVD ↓", ".2f"), Column("fvd_variant", "FVD variant", ""),
               Column("is", "IS ↑", ".2f"), Column("num_clips", "clips", "d"),
               Column("num_real", "real clips", "d")]
    notes = [f"FVD variant: {result['variant']}; real statistics: {result['num_real']} clips from "
             f"{real_summary.get('videos')} videos in {real.location} "
             + ("(computed now" if computed_now else "(cached") + f", {statistics}).",
             f"clips: {_windows_text(settings)}, resized to 224 by the FVD's TF1 bilinear resize"
             + (" and to 112 for the C3D" if inception is not None else "") + ".",
             "IS: " + (f"C3D fine-tuned on UCF101 (TGANv2), first 16 frames, {settings.is_splits} split(s), "
                       f"{result['is']:.2f} ± {result['is_std']:.2f}." if inception is not None
                       else "not computed (evaluation.inception_score=true computes it; needs the C3D files).")]
    notes += _side_notes("real", real_summary) + _side_notes("generated", {"left_out": generated.left_out,
                                                                            **counts.to_dict()})
    table = ResultTable("FVD of your own clips (evaluation=folder)", columns, [row], notes)
    table.metadata.update({
        "settings": asdict(settings), "real": real_summary, "real_statistics": str(statistics),
        "real_statistics_computed_now": computed_now,
        "generated": {"location": generated.location, "left_out": generated.left_out, **counts.to_dict()},
        "model": generator.settings() if generator is not None else None,
        "throughput_videos_per_s": {"generated_features": throughput.videos_per_second},
        "device": str(device), "wall_seconds": time.perf_counter() - started})
    return table


def _windows_text(settings: FolderSettings) -> str:
    rate = f"every {settings.target_fps:g}-fps frame (stride from the source fps)" if settings.target_fps \
        else "every source frame"
    policy = "the first window of each video" if settings.windows == "first" else "every non-overlapping window"
    return f"{CLIP_FRAMES} frames ({rate}), {policy}"


def _side_notes(side: str, summary: dict) -> list[str]:
    notes = []
    if summary.get("unusable"):
        reasons = ", ".join(f"{n} {reason}" for reason, n in sorted(summary["unusable"].items()))
        notes.append(f"{side}: {sum(summary['unusable'].values())} video(s) left out (evaluation.unusable_videos=skip): "
                     f"{reasons}; e.g. {'; '.join(summary.get('unusable_names', []))}.")
    if summary.get("left_out"):
        notes.append(f"{side}: files not read: " + ", ".join(f"{n} {why}" for why, n in sorted(summary["left_out"].items()))
                     + ".")
    if summary.get("without_fps"):
        notes.append(f"{side}: {summary['without_fps']} .npy clip(s) have no frame rate and were read frame by frame.")
    return notes


def settings_from_dict(config: dict[str, Any]) -> FolderSettings:
    return settings_from_mapping(FolderSettings, config)
