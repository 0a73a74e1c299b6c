"""Zero-shot text-to-video on UCF101 (paper Sec. 5.2, Table 1, App. D.2) as an evaluation mode.

App. D.2: 10,235 videos following UCF101's class distribution, prompts from class names (the
PYoCo prompt set is not public: templates or a user prompt file), I3D embeddings of the first
16 frames resized to 224 for the FVD against UCF101's real videos, and C3D (TGANv2) class
probabilities of the same videos for the IS. This module wires the pieces of
``lumiere.evaluation.ucf101_protocol`` together:

1. inputs are checked before anything long starts: the C3D files (user-supplied; not needed
   with ``inception_score=false`` or ``is_splits=0``, which compute the FVD alone), the I3D
   weights, and the UCF101 folder unless its real statistics are already cached;
2. the real I3D statistics are computed once and cached as npz, under a name keyed by the FVD
   variant;
3. the videos are generated in batches into ``generated_dir`` with a ledger, so a crashed or
   preempted run generates only the missing ones when started again (same ``run_name``);
4. FVD and IS are computed over the generated videos and written as a Table-1-style row, next
   to the rows the paper reports, each number labelled with its convention (``fvd_variant``:
   tf1 | stylegan-v, ``is_variant``: splits | tgan2 | stylegan-v; ``lumiere.metrics``).

Across GPUs (``lumiere.evaluation.ucf101_shards``): ``num_shards=N shard_index=K`` generates
shard K only (its own folder and ledger, resumable), and ``num_shards=N shard_index=null``
checks that the N shards hold every planned video exactly once and scores them, once.
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
from tqdm.auto import tqdm

from lumiere.errors import ConfigError, InputFileError
from lumiere.evaluation import features
from lumiere.evaluation.generated import CheckpointGenerator, settings_from_mapping
from lumiere.evaluation.report import Column, ResultTable
from lumiere.evaluation.ucf101_protocol import (
    PAPER_NUM_VIDEOS,
    build_generation_plan,
    compute_ucf101_real_statistics,
    find_ucf101_videos,
    generate_videos_resumable,
    iter_video_batches,
    ucf101_prompts,
)
from lumiere.evaluation.ucf101_shards import check_shard_settings, generate_shard, merged_video_paths, shard_dir, shard_items
from lumiere.metrics import FrechetVideoDistance, VideoInceptionScore
from lumiere.metrics.fvd import get_fvd_variant
from lumiere.metrics.inception_score import check_is_variant, is_variant_label
from lumiere.utils import atomic_write

log = logging.getLogger("lumiere")

# Paper Table 1 (zero-shot UCF101): method, FVD, IS ("-": not reported).
PAPER_TABLE1 = (
    ("MagicVideo (Zhou et al., 2022)", 655.00, None),
    ("Emu Video (Girdhar et al., 2023)", 606.20, 42.70),
    ("Video LDM (Blattmann et al., 2023b)", 550.61, 33.45),
    ("Show-1 (Zhang et al., 2023a)", 394.46, 35.42),
    ("Make-A-Video (Singer et al., 2022)", 367.23, 33.00),
    ("PYoCo (Ge et al., 2023)", 355.19, 47.76),
    ("SVD (Blattmann et al., 2023a)", 242.02, None),
    ("Lumiere (Ours)", 332.49, 37.54),
)

GENERATION_RECORD = "generation.json"


@dataclass
class UCF101Settings:
    num_videos: int = PAPER_NUM_VIDEOS    # App. D.2: 10,235, apportioned over the class frequencies
    prompt_template: str = "a_person"     # a_person | video_of | plain | a format string with {words}
    prompt_file: str | None = None        # ClassName<TAB>prompt lines or json {class: prompt(s)}
    plan_seed: int = 0                    # the seeds of the videos (one per video)
    batch_size: int = 8                   # videos per sampling call
    num_frames: int | None = None         # null: the model's clip length (>= 16)
    generated_dir: str = "outputs/ucf101_generated"
    ucf101_root: str | None = None        # UCF-101/<ClassName>/*.avi (only needed for the real statistics)
    real_statistics: str | None = None    # null: <stats_cache_dir>/ucf101_i3d_<...>.npz
    stats_cache_dir: str = "outputs/artifacts/ucf101"
    real_max_per_class: int | None = None  # null: every UCF101 clip (the protocol); N: quick runs
    c3d_weights: str | None = None        # conv3d_deepnetA_ucf.npz (TGANv2 release)
    c3d_mean: str | None = None           # mean2.npz (TGANv2 release)
    i3d_weights: str | None = None        # null: the default converted file
    fvd_variant: str = "tf1"              # tf1 (TF1 resize, cov N-1) | stylegan-v (torch resize, cov N)
    fvd_ddof: int | None = None           # null: the variant's covariance divisor N - ddof (tf1: 1, stylegan-v: 0)
    inception_score: bool = True          # false: FVD only (the C3D files are not needed)
    is_variant: str = "splits"            # splits (all videos, is_splits parts) | tgan2 | stylegan-v
    is_splits: int = 1                    # parts of is_variant=splits; 0: no IS (as inception_score=false)
    feature_batch_size: int = 8
    show_paper_rows: bool = True
    num_shards: int = 1                   # > 1: the generation is split into this many shards
    shard_index: int | None = None        # 0..num_shards-1: generate that shard only; null: generate all / merge
    sampling: dict = field(default_factory=dict)  # num_inference_steps, guidance_scale, scheduler


def load_c3d_inception_score(weights: str | None, mean: str | None, splits: int) -> VideoInceptionScore:
    """The video IS with TGANv2's C3D; a clear ``InputFileError`` when a file is missing, bad, or
    differs from a pinned or recorded sha256 (``python -m lumiere.metrics.c3d_weights verify``)."""
    from lumiere.metrics.c3d_weights import verify_c3d_files

    try:
        metric = VideoInceptionScore(c3d_weights=weights, c3d_mean=mean, splits=splits)
        verify_c3d_files(weights, mean, record=False, load=False)
    except InputFileError as error:
        raise InputFileError(f"{error} (or set evaluation.inception_score=false for the FVD alone)") from None
    return metric


def check_settings(settings: UCF101Settings) -> bool:
    """One line for a setting that cannot work, before any file is read; returns whether the IS is computed."""
    if settings.num_videos < 2:
        raise ConfigError(f"evaluation.num_videos must be at least 2, got {settings.num_videos}")
    if not isinstance(settings.inception_score, bool):
        raise ConfigError(f"evaluation.inception_score must be true or false, got {settings.inception_score!r}")
    if not 0 <= settings.is_splits <= settings.num_videos:
        raise ConfigError(f"evaluation.is_splits must be between 1 and num_videos (0: no IS), got {settings.is_splits}")
    with_is = settings.inception_score and settings.is_splits > 0
    if with_is:
        check_is_variant(settings.is_variant, settings.num_videos)
        if settings.is_variant != "splits" and settings.is_splits != 1:
            raise ConfigError(f"evaluation.is_splits applies to is_variant=splits; is_variant={settings.is_variant} "
                              "fixes its own samples and splits (leave is_splits at 1)")
    get_fvd_variant(settings.fvd_variant)
    if settings.fvd_ddof not in (None, 0, 1):
        raise ConfigError(f"evaluation.fvd_ddof must be 0, 1 or null (the variant's), got {settings.fvd_ddof!r}")
    check_shard_settings(settings.shard_index, settings.num_shards)
    return with_is


def fvd_metric(i3d: torch.nn.Module, settings: UCF101Settings, real_statistics: Path | None = None) -> FrechetVideoDistance:
    """The I3D FVD in the configured convention (resize and covariance divisor)."""
    variant = get_fvd_variant(settings.fvd_variant)
    ddof = variant.ddof if settings.fvd_ddof is None else settings.fvd_ddof
    return FrechetVideoDistance(feature_extractor=i3d, preprocess=True, ddof=ddof, resize=variant.resize,
                                real_statistics=real_statistics)


def real_statistics_path(settings: UCF101Settings, variant: str) -> Path:
    if settings.real_statistics:
        return Path(settings.real_statistics)
    subset = "all" if settings.real_max_per_class is None else f"max{settings.real_max_per_class}"
    return features.reference_cache_path(settings.stats_cache_dir, f"ucf101_i3d_{subset}", variant, subset)


def check_generation_record(generated_dir: Path, record: dict, create: bool = True) -> None:
    """Refuse to mix videos of another checkpoint or other sampling settings into ``generated_dir``."""
    path = generated_dir / GENERATION_RECORD
    if path.is_file():
        previous = json.loads(path.read_text())
        if previous != record:
            changed = sorted(k for k in set(previous) | set(record) if previous.get(k) != record.get(k))
            raise ConfigError(f"{generated_dir} holds videos generated with other settings ({', '.join(changed)}): "
                              "use another evaluation.generated_dir (or run_name)")
        return
    if create:
        data = (json.dumps(record, indent=2) + "\n").encode()
        atomic_write(path, lambda stream: stream.write(data))


def generate_for_role(settings: UCF101Settings, plan: list, generator: CheckpointGenerator, record: dict,
                      progress: bool) -> tuple[list[Path], list[int], float]:
    """Generate what this process is asked to (all, one shard, or nothing when merging); returns the
    paths of the videos to score (none for a shard), the batch sizes generated now and the seconds."""
    generated_dir = Path(settings.generated_dir)
    generated_now: list[int] = []

    def generate_fn(batch_prompts: list[str], seeds: list[int]) -> torch.Tensor:
        # One noise seed per sampling call: a resumed run (or a shard) regenerates whole batches
        # with the same first seed, so its videos equal those of an uninterrupted single run.
        generated_now.append(len(batch_prompts))
        return generator(batch_prompts, seed=seeds[0])

    tic = time.perf_counter()
    if settings.num_shards == 1:
        check_generation_record(generated_dir, record)
        paths = generate_videos_resumable(plan, generate_fn, generated_dir, batch_size=settings.batch_size, progress=progress)
    elif settings.shard_index is not None:
        check_generation_record(shard_dir(generated_dir, settings.shard_index, settings.num_shards), record)
        generate_shard(plan, generate_fn, generated_dir, settings.batch_size, settings.shard_index, settings.num_shards,
                       progress=progress)
        paths = []
    else:
        for index in range(settings.num_shards):  # every shard sampled with these settings?
            check_generation_record(shard_dir(generated_dir, index, settings.num_shards), record, create=False)
        paths = merged_video_paths(generated_dir, plan, settings.batch_size, settings.num_shards)
    return paths, generated_now, time.perf_counter() - tic


def score_videos(paths: list[Path], fvd: FrechetVideoDistance, inception: VideoInceptionScore | None,
                 settings: UCF101Settings, progress: bool) -> tuple[dict, features.Throughput]:
    """FVD (I3D) and IS (C3D) over the generated videos, in the configured conventions."""
    throughput = features.Throughput()
    bar = tqdm(total=len(paths), desc="UCF101 scores (I3D + C3D)" if inception is not None else "UCF101 FVD (I3D)",
               unit="clip", disable=not progress)
    for videos in iter_video_batches(paths, batch_size=settings.feature_batch_size, num_frames=features.FVD_FRAMES):
        tic_features = time.perf_counter()
        fvd.update(videos, real=False)
        if inception is not None:
            inception.update(videos)
        throughput.add(videos.shape[0], time.perf_counter() - tic_features)
        bar.update(videos.shape[0])
    bar.close()
    result = fvd.result()
    result["is"], result["is_std"], result["is_label"] = None, None, "not computed (FVD only)"
    if inception is not None:
        result["is"], result["is_std"] = (float(v) for v in inception.score(settings.is_variant))
        result["is_label"] = is_variant_label(settings.is_variant, settings.is_splits, len(paths))
    return result, throughput


def shard_table(settings: UCF101Settings, generator: CheckpointGenerator, num_planned: int, generated_now: list[int],
                seconds: float) -> ResultTable:
    """What a shard job reports: its videos; the scores come from the merge."""
    k, n = settings.shard_index, settings.num_shards
    row = {"row": "shard", "method": f"shard {k} of {n} ({generator.name})", "num_videos": num_planned,
           "generated_this_run": sum(generated_now), "source": "generated, not scored"}
    notes = [f"shard {k} of {n}: {num_planned} videos in {shard_dir(settings.generated_dir, k, n)} (resumable: rerun "
             "the same command after a preemption).",
             f"when every shard is done: the same command with evaluation.shard_index=null evaluation.num_shards={n} "
             f"checks that each planned video is there once and computes the table "
             f"(progress: python -m lumiere.evaluation.ucf101_shards status {settings.generated_dir})."]
    table = ResultTable(f"UCF101 zero-shot: shard {k} of {n} generated", [Column("method", "shard", ""),
                        Column("num_videos", "videos", "d"), Column("generated_this_run", "generated now", "d")], [row], notes)
    table.metadata.update({"settings": asdict(settings), "model": generator.settings(), "generation_seconds_this_run": seconds})
    return table


def result_table(settings: UCF101Settings, generator: CheckpointGenerator, result: dict, statistics: Path) -> ResultTable:
    """The Table-1 row of this model, labelled with its conventions, beside the paper's rows."""
    row = {"row": "model", "method": f"this model ({generator.name})", "fvd": result["fvd"], "is": result["is"],
           "is_std": result["is_std"], "num_videos": result["num_fake"], "num_real": result["num_real"],
           "fvd_label": result["label"], "is_label": result["is_label"], "fvd_variant": result["variant"],
           "source": "measured"}
    rows = [row]
    if settings.show_paper_rows:
        rows += [{"row": f"paper_{i}", "method": method, "fvd": fvd_value, "is": is_value, "num_videos": PAPER_NUM_VIDEOS,
                  "fvd_label": "as reported", "is_label": "as reported", "source": "paper Table 1 (reported)"}
                 for i, (method, fvd_value, is_value) in enumerate(PAPER_TABLE1)]
    columns = [Column("method", "method", ""), Column("fvd", "FVD ↓", ".2f"), Column("fvd_label", "FVD variant", ""),
               Column("is", "IS ↑", ".2f"), Column("is_label", "IS variant", ""), Column("num_videos", "videos", "d"),
               Column("source", "source", "")]
    with_is = result["is"] is not None
    notes = [
        f"FVD {result['label']} ({result['variant']}); real statistics: {result['num_real']} UCF101 clips ({statistics}).",
        (f"IS {result['is_label']}: C3D fine-tuned on UCF101 (TGANv2), first 16 frames; "
         f"this model's IS {result['is']:.2f} ± {result['is_std']:.2f}." if with_is
         else "IS: not computed (evaluation.inception_score=false or is_splits=0: FVD only, no C3D files needed)."),
        f"{result['num_fake']} generated videos apportioned over UCF101's class frequencies "
        f"(the paper: {PAPER_NUM_VIDEOS}); prompts: "
        + (f"file {settings.prompt_file}" if settings.prompt_file else f"template '{settings.prompt_template}'")
        + " (the paper's PYoCo prompt set is not public).",
        f"clips: {generator.num_frames} frames at {generator.resolution}x{generator.resolution}, "
        f"resized to 224 (FVD){' and 112 (IS)' if with_is else ''}; generated into {settings.generated_dir}"
        + (f" by {settings.num_shards} shards." if settings.num_shards > 1 else "."),
        "the paper does not name its conventions: the rows it lists are quoted as reported.",
    ]
    if result["num_fake"] < PAPER_NUM_VIDEOS or settings.real_max_per_class is not None:
        notes.append("not the full protocol (fewer videos or a subset of UCF101): not comparable with the paper's rows.")
    return ResultTable("UCF101 zero-shot text-to-video (paper Table 1, App. D.2)", columns, rows, notes)


def evaluate_ucf101(
    settings: UCF101Settings,
    out_dir: str | os.PathLike,
    ckpt_path: str | None,
    device: str | torch.device = "cpu",
    progress: bool = True,
) -> ResultTable:
    """Generate (resumably; all, one shard, or merge the shards) and score the UCF101 zero-shot protocol."""
    started = time.perf_counter()
    device = torch.device(device)
    if not ckpt_path:
        raise ConfigError("the UCF101 protocol samples from a base model: set ckpt_path=PATH")
    with_is = check_settings(settings)
    is_shard = settings.shard_index is not None

    # 1. Inputs that can be missing, before anything long runs (the C3D only when the IS is
    # wanted); a shard job checks them too, so that the merge cannot fail on them days later.
    inception = load_c3d_inception_score(settings.c3d_weights, settings.c3d_mean, settings.is_splits) if with_is else None
    i3d = features.load_i3d(settings.i3d_weights, device="cpu" if is_shard else device)
    variant = fvd_metric(i3d, settings).variant
    statistics = real_statistics_path(settings, variant)
    if not statistics.is_file():
        if not settings.ucf101_root:
            raise InputFileError(f"UCF101 real statistics not found at {statistics} and evaluation.ucf101_root is not set: "
                                 "point it at the UCF-101 folder (one subfolder of videos per class)")
        find_ucf101_videos(settings.ucf101_root, settings.real_max_per_class)  # every class folder present?
    prompts = ucf101_prompts(settings.prompt_file, settings.prompt_template)
    plan = build_generation_plan(settings.num_videos, prompts, seed=settings.plan_seed)
    generator = CheckpointGenerator(ckpt_path, device, settings.num_frames, **(settings.sampling or {}))
    features.check_fvd_frames(generator.num_frames, "the model's clips")
    record = {**generator.settings(), "prompt_template": settings.prompt_template, "prompt_file": settings.prompt_file,
              "batch_size": settings.batch_size}

    # 2. Real statistics, once (by the process that scores).
    if not is_shard and not statistics.is_file():
        compute_ucf101_real_statistics(settings.ucf101_root, statistics, metric=fvd_metric(i3d, settings),
                                       batch_size=settings.feature_batch_size, num_frames=features.FVD_FRAMES,
                                       max_per_class=settings.real_max_per_class, progress=progress)

    # 3. Resumable generation: everything, one shard, or the merge check of all shards.
    paths, generated_now, generation_seconds = generate_for_role(settings, plan, generator, record, progress)
    if is_shard:
        num_planned = len(shard_items(plan, settings.batch_size, settings.shard_index, settings.num_shards))
        return shard_table(settings, generator, num_planned, generated_now, generation_seconds)

    # 4. FVD (I3D) and IS (C3D) over the generated videos.
    result, throughput = score_videos(paths, fvd_metric(i3d, settings, real_statistics=statistics), inception,
                                      settings, progress)
    table = result_table(settings, generator, result, statistics)
    table.metadata.update({
        "settings": asdict(settings),
        "model": generator.settings(),
        "throughput_videos_per_s": {
            "i3d_plus_c3d": throughput.videos_per_second,
            "generation": sum(generated_now) / generation_seconds if generated_now else None},
        "generated_this_run": sum(generated_now),
        "generation_seconds_this_run": generation_seconds,
        "device": str(device),
        "wall_seconds": time.perf_counter() - started,
    })
    return table


def settings_from_dict(config: dict[str, Any]) -> UCF101Settings:
    return settings_from_mapping(UCF101Settings, config)
