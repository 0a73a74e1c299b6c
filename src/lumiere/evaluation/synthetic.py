"""Evaluation on the synthetic benchmark: the stand-in for paper Sec. 5.2 / Table 1, with the
vigilance tests of App. D.1 as reference rows.

Rows (every row has the same number of clips, one per held-out test caption):

- **real held-out**: the test split's clips. FVD against real train/val clips: the *floor*.
- **model**: one clip sampled from a base checkpoint per test caption (or read from a folder of
  generated clips), scored against that caption's labels.
- **static**: each test clip's first frame repeated (App. D.1's "static image vs a real video"):
  appearance is right, motion is missing, so a metric that sees motion ranks it above the floor.
- **random noise**: uniform pixel noise (App. D.1's "real video vs complete random noise"): the
  *ceiling*.

Columns: I3D FVD (Kinetics-400 I3D, published preprocessing, against cached statistics of real
train/val clips), in-domain FVD (the benchmark's domain classifier features, same reference),
in-domain IS (the classifier's motion head: the analogue of UCF101's action classes), prompt
adherence (fraction of clips whose predicted shape, colour and motion all match the prompt's
labels), per-head accuracies, motion magnitude (mean absolute frame difference), and for prompts of
linear motion the *tracked* direction accuracy: the prompted colour's centroid must travel the
prompted way (``lumiere.metrics.tracking``; a direct check that needs no learned classifier).
The expected ordering floor < model < ceiling is checked and written under the table.

The settings are :mod:`lumiere.evaluation.synthetic_settings`; the rows and how each is scored,
:mod:`lumiere.evaluation.synthetic_rows`.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from torch import nn

from lumiere.errors import ConfigError, InputFileError
from lumiere.evaluation import features
from lumiere.evaluation.clips import ClipSet, attribute_vocab, data_fingerprint, load_clips
from lumiere.evaluation.domain_classifier import ClipSettings, cache_name, ensure_domain_classifier
from lumiere.evaluation.generated import CheckpointGenerator, generate_clips, read_videos_dir, write_videos_dir
from lumiere.evaluation.report import Column, ResultTable, ordering_check
from lumiere.evaluation.synthetic_rows import Row, domain_scores, i3d_scores, noise_clips, static_clips, tracking_scores
from lumiere.evaluation.synthetic_settings import SyntheticSettings, plain
from lumiere.metrics import DomainFeatures, FrechetVideoDistance

log = logging.getLogger("lumiere")

# Tensor dimension legend: n clips, c channels, t time, h height, w width.

ROW_LABELS = {
    "real": "real held-out (floor)",
    "model": "model",
    "static": "static: first frame repeated (motion check)",
    "noise": "random noise (ceiling)",
}


# ----------------------------------------------------------------------------------------------
# The evaluation
# ----------------------------------------------------------------------------------------------


def _manifest_size(data_dir: str) -> int | None:
    from lumiere.data.shards import read_manifest

    manifest = read_manifest(data_dir) or {}
    size = (manifest.get("config") or {}).get("size")
    return int(size) if size else None


class PhaseTimer:
    """Wall seconds per phase of the evaluation (written to the json next to the numbers)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextmanager
    def __call__(self, phase: str):
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[phase] = self.seconds.get(phase, 0.0) + time.perf_counter() - start


def _model_source(settings: SyntheticSettings, ckpt_path: str | None, videos_dir: str | None, device: torch.device,
                  progress: bool) -> tuple[CheckpointGenerator | None, ClipSet | None, int, int]:
    """(generator, already generated clips, frames, resolution): the clip shape is the model's."""
    generator, generated = None, None
    if ckpt_path:
        s = settings.sampling
        generator = CheckpointGenerator(ckpt_path, device, settings.num_frames, s.num_inference_steps,
                                        s.guidance_scale, s.scheduler)
        num_frames, resolution = generator.num_frames, generator.resolution
    elif videos_dir:
        generated = read_videos_dir(videos_dir, settings.num_frames, progress=progress)
        num_frames, resolution = int(generated.videos.shape[2]), int(generated.videos.shape[3])
        if generated.videos.shape[3] != generated.videos.shape[4]:
            raise InputFileError(f"{videos_dir}: clips are {tuple(generated.videos.shape[3:])}, the benchmark's are square")
    else:
        num_frames = settings.num_frames or 16
        resolution = settings.resolution or _manifest_size(settings.data_dir)
        if not resolution:
            raise ConfigError("set evaluation.resolution: there is no model and the benchmark has no manifest size")
    if settings.resolution and settings.resolution != resolution:
        raise ConfigError(f"evaluation.resolution={settings.resolution} but the model's clips are {resolution}x{resolution}: "
                          "leave it null to evaluate at the model's size")
    return generator, generated, num_frames, resolution


def _i3d_cache_path(settings: SyntheticSettings, i3d: nn.Module, clips: ClipSettings, what: str, splits: Sequence[str],
                    count: int) -> Path:
    """Cache file of the I3D Gaussian of ``count`` clips of ``what`` (reference, real, static, noise)."""
    variant = features.i3d_fvd_metric(i3d, settings.i3d.ddof).variant
    seed = f"|seed{settings.seed}" if what == "noise" else ""
    identity = f"{data_fingerprint(settings.data_dir, splits)}|{what}|{count}{seed}"
    name = f"{cache_name(settings.data_dir, clips)}_{what}_{'+'.join(splits)}_n{count}"
    return features.reference_cache_path(settings.fvd_cache_dir, name, variant, identity)


def evaluate_synthetic(
    settings: SyntheticSettings,
    out_dir: str | os.PathLike,
    ckpt_path: str | None = None,
    videos_dir: str | None = None,
    device: str | torch.device = "cpu",
    progress: bool = True,
) -> ResultTable:
    """Score the model (if any) and the reference rows; returns the table (not yet written)."""
    started, timer = time.perf_counter(), PhaseTimer()
    out_dir, device = Path(out_dir), torch.device(device)
    if ckpt_path and videos_dir:
        raise ConfigError("give ckpt_path (sample clips) or videos_dir (already generated clips), not both")
    if settings.num_videos < 2:
        raise ConfigError(f"num_videos must be at least 2 (FVD needs a covariance), got {settings.num_videos}")
    data_dir = str(settings.data_dir)
    if not Path(data_dir).is_dir():
        raise InputFileError(f"benchmark folder not found: {data_dir} (python -m lumiere.data.synthetic --out {data_dir})")
    vocab = attribute_vocab()
    for head in (*settings.domain.adherence_heads, settings.domain.is_head):
        if head not in vocab:
            raise ConfigError(f"'{head}' is not an attribute of the benchmark (attributes: {sorted(vocab)})")

    with timer("model"):
        generator, generated, num_frames, resolution = _model_source(settings, ckpt_path, videos_dir, device, progress)
    if settings.i3d.enabled:
        features.check_fvd_frames(num_frames)
    clip_settings = ClipSettings(num_frames, resolution, settings.target_fps)

    # Real clips: the held-out test captions (rows) and the train/val reference.
    with timer("reading real clips"):
        test = load_clips(data_dir, ["test"], num_frames, resolution, settings.target_fps, settings.num_videos,
                          progress=progress, desc="held-out test clips")
        num_reference = max(settings.num_reference_videos, settings.i3d.num_reference_videos if settings.i3d.enabled else 0)
        reference = load_clips(data_dir, list(settings.reference_splits), num_frames, resolution, settings.target_fps,
                               num_reference, progress=progress, desc="reference clips")
    if len(test) < settings.num_videos:
        log.warning("the test split has %d usable clips; rows use %d instead of %d", len(test), len(test), settings.num_videos)

    with timer("domain classifier (train or load)"):
        classifier, classifier_record, classifier_path = ensure_domain_classifier(
            settings.domain.cache_dir, data_dir, clip_settings, settings.domain.training, settings.domain.retrain,
            device=device, progress=progress)

    # Rows: real held-out, model, static, noise.
    test_targets = test.label_ids(vocab)
    rows = [Row("real", ROW_LABELS["real"], test, test_targets)]
    if generator is not None:
        with timer("generation"):
            videos = generate_clips(generator, test.captions, settings.batch_size, settings.seed, progress=progress)
        generated = ClipSet(videos, list(test.captions), dict(test.labels), list(test.keys))
        if settings.save_videos:
            seeds = [{"key": key, "batch_seed": settings.seed + (i // settings.batch_size) * settings.batch_size}
                     for i, key in enumerate(test.keys)]
            write_videos_dir(out_dir / "videos" / "model", generated, fps=settings.target_fps or 8, extra=seeds)
        rows.append(Row("model", f"model ({generator.name})", generated, test_targets))
    elif generated is not None:
        targets = generated.label_ids(vocab) if generated.labels else None
        rows.append(Row("model", f"model ({Path(videos_dir).name}/)", generated, targets))
    rows.append(Row("static", ROW_LABELS["static"], static_clips(test), test_targets))
    rows.append(Row("noise", ROW_LABELS["noise"], noise_clips(test, settings.seed), test_targets))

    # Reference statistics: in-domain (cheap, every run) and I3D (cached).
    domain_throughput, i3d_throughput = features.Throughput(), features.Throughput()
    domain_reference_clips = reference.take(settings.num_reference_videos)
    with timer("in-domain reference"):
        domain_metric = FrechetVideoDistance(feature_extractor=DomainFeatures(classifier), preprocess=False,
                                             ddof=settings.domain.ddof)
        features.stream_into_fvd(domain_metric, (v for v, _ in domain_reference_clips.batches(settings.batch_size)),
                                 real=True, total=len(domain_reference_clips), desc="domain classifier: reference",
                                 progress=progress, throughput=domain_throughput)
        domain_reference = domain_metric.save_real_statistics(out_dir / "domain_fvd_reference.npz")
    i3d, i3d_reference, i3d_reference_computed = None, None, False
    if settings.i3d.enabled:
        with timer("I3D reference"):
            i3d = features.load_i3d(settings.i3d.weights, device=device)
            i3d_clips = reference.take(settings.i3d.num_reference_videos)
            i3d_reference, i3d_reference_computed = features.ensure_clip_statistics(
                _i3d_cache_path(settings, i3d, clip_settings, "reference", settings.reference_splits, len(i3d_clips)),
                i3d, settings.i3d.ddof, (v for v, _ in i3d_clips.batches(settings.i3d.batch_size)),
                total=len(i3d_clips), progress=progress, throughput=i3d_throughput, desc="I3D features: reference")

    table_rows = []
    for row in rows:
        entry: dict[str, Any] = {"row": row.key, "label": row.label, "num_videos": len(row.clips)}
        with timer("in-domain scores"):
            entry.update(domain_scores(row, classifier, domain_reference, settings.domain, settings.batch_size,
                                       progress, domain_throughput))
        with timer("colour tracking"):
            entry.update(tracking_scores(row, settings.batch_size))
        if i3d is not None:
            count = len(row.clips.take(settings.i3d.num_videos))
            cache = None if row.key == "model" else _i3d_cache_path(settings, i3d, clip_settings, row.key, ["test"], count)
            with timer("I3D scores"):
                entry.update(i3d_scores(row, i3d, i3d_reference, settings.i3d, progress, i3d_throughput, cache))
        table_rows.append(entry)
        log.info("%s: %s", row.key, {k: v for k, v in entry.items() if isinstance(v, float)})

    table = build_table(table_rows, settings, classifier_record, clip_settings, len(domain_reference_clips))
    generation_seconds = timer.seconds.get("generation")
    table.metadata.update({
        "settings": plain(asdict(settings)),
        "model": {"ckpt_path": ckpt_path, "videos_dir": videos_dir,
                  "sampling": generator.settings() if generator is not None else None},
        "domain_classifier": {"path": str(classifier_path), **classifier_record},
        "reference": {"splits": list(settings.reference_splits), "num_domain_reference": len(domain_reference_clips),
                      "i3d_statistics": str(i3d_reference) if i3d_reference else None,
                      "i3d_statistics_computed_now": i3d_reference_computed},
        "throughput_videos_per_s": {"i3d_features": i3d_throughput.videos_per_second,
                                    "domain_classifier": domain_throughput.videos_per_second,
                                    "generation": len(test) / generation_seconds if generation_seconds else None},
        "seconds": timer.seconds,
        "device": str(device),
        "wall_seconds": time.perf_counter() - started,
    })
    return table


def build_table(rows: list[dict], settings: SyntheticSettings, classifier_record: dict, clips: ClipSettings,
                num_domain_reference: int) -> ResultTable:
    """Columns, notes (variants, counts, classifier accuracy) and the sanity lines."""
    columns = [Column("label", "row", ""), Column("num_videos", "videos", "d")]
    if settings.i3d.enabled:
        columns += [Column("i3d_fvd", "I3D FVD ↓", ".1f"), Column("num_i3d_videos", "I3D videos", "d")]
    columns += [Column("domain_fvd", "in-domain FVD ↓", ".4g"), Column("domain_is", "in-domain IS ↑", ".2f"),
                Column("adherence", "prompt adherence ↑", ".3f")]
    columns += [Column(f"acc_{head}", f"{head} acc. ↑", ".2f") for head in settings.domain.adherence_heads]
    columns.append(Column("motion", "motion magnitude", ".4f"))
    if any(row.get("num_tracked") for row in rows):
        columns += [Column("tracked_direction", "tracked direction acc. ↑", ".2f"),
                    Column("tracked_visible", "prompted colour visible", ".2f")]

    by_key = {row["row"]: row for row in rows}
    notes = [f"clips: {clips.num_frames} frames at {clips.resolution}x{clips.resolution}"
             f"{f', {clips.target_fps:g} fps' if clips.target_fps else ''}; each row holds one clip per held-out "
             f"test caption (the first {rows[0]['num_videos']} test clips); noise and sampling seed {settings.seed}."]
    if settings.i3d.enabled:
        first = rows[0]
        notes.append(f"I3D FVD variant: {first['i3d_fvd_variant']}; reference: {first['num_i3d_reference']} real "
                     f"{'+'.join(settings.reference_splits)} clips; each row uses its first {first['num_i3d_videos']} clips.")
    accuracy = classifier_record.get("val_accuracy", {})
    chance = classifier_record.get("chance_accuracy", {})
    shown = ", ".join(f"{head} {accuracy[head]:.2f} (chance {chance.get(head, float('nan')):.2f})"
                      for head in dict.fromkeys((*settings.domain.adherence_heads, settings.domain.is_head))
                      if head in accuracy)
    notes.append(f"in-domain FVD variant: {rows[0]['domain_fvd_variant']}; reference: {num_domain_reference} real "
                 f"{'+'.join(settings.reference_splits)} clips; domain classifier val accuracy: {shown}.")
    notes.append(f"in-domain IS: the classifier's '{settings.domain.is_head}' head "
                 f"({len(attribute_vocab()[settings.domain.is_head])} classes, the maximum IS), one split.")
    notes.append(f"prompt adherence: fraction of clips whose predicted {', '.join(settings.domain.adherence_heads)} "
                 "all match the prompt's labels. Motion magnitude: mean |frame difference| in [-1, 1] units.")
    if any(row.get("num_tracked") for row in rows):
        notes.append(f"tracked direction acc.: on the {rows[0]['num_tracked']} clips whose prompt is linear motion, the "
                     "fraction where the prompted colour's centroid travels the prompted way (left/right/up/down); "
                     "visible: fraction of their frames showing that colour. Static clips score 0 by construction.")
    if "model" in by_key:
        for key, name in (("i3d_fvd", "I3D FVD"), ("domain_fvd", "in-domain FVD")):
            if key in by_key["model"]:
                notes.append(ordering_check(f"{name}, floor < model < ceiling",
                                            [("real", by_key["real"].get(key)), ("model", by_key["model"].get(key)),
                                             ("noise", by_key["noise"].get(key))]))
    else:
        notes.append("sanity: no model row (give ckpt_path or videos_dir); reference rows only.")
    for key, name in (("i3d_fvd", "I3D FVD"), ("domain_fvd", "in-domain FVD")):
        if key in by_key["real"]:
            notes.append(ordering_check(f"{name} sees motion, real < static < noise",
                                        [("real", by_key["real"].get(key)), ("static", by_key["static"].get(key)),
                                         ("noise", by_key["noise"].get(key))]))
    return ResultTable("Synthetic benchmark: model vs. reference rows (paper Sec. 5.2, App. D.1 vigilance tests)",
                       columns, rows, notes)


def sanity_holds(table: ResultTable, column: str = "i3d_fvd") -> bool | None:
    """Whether floor < model < ceiling holds in ``column`` (None without a model row or column)."""
    rows = {row["row"]: row for row in table.rows}
    if "model" not in rows or rows["model"].get(column) is None:
        return None
    return rows["real"][column] < rows["model"][column] < rows["noise"][column]
