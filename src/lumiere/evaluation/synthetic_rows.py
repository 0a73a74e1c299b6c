"""The rows of the synthetic-benchmark table and how one row is scored.

A :class:`Row` is a set of clips with, where known, the label ids their prompts ask for. The
reference rows are the held-out clips themselves, :func:`static_clips` (each clip's first frame
repeated) and :func:`noise_clips` (uniform pixel noise); the model's row is sampled or read by
:mod:`lumiere.evaluation.synthetic`. A row is scored by the domain classifier (in-domain FVD, IS,
adherence, per-head accuracy, motion magnitude: :func:`domain_scores`), by colour tracking of its
linear-motion prompts (:func:`tracking_scores`, ``lumiere.metrics.tracking``) and by the I3D FVD
(:func:`i3d_scores`).
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from lumiere.evaluation import features
from lumiere.evaluation.clips import ClipSet, to_float
from lumiere.evaluation.synthetic_settings import DomainSettings, I3DSettings
from lumiere.metrics import (
    DomainClassifier,
    DomainFeatures,
    FrechetVideoDistance,
    VideoInceptionScore,
    motion_magnitude,
    prompt_adherence,
)
from lumiere.metrics.domain_classifier import IGNORE_LABEL
from lumiere.metrics.tracking import tracked_direction_accuracy

# Tensor dimension legend: n clips, c channels, t time, h height, w width.


@dataclass
class Row:
    """One row of the table: its clips and, where known, the target label ids of every clip."""

    key: str
    label: str
    clips: ClipSet
    targets: dict[str, torch.Tensor] | None


# ----------------------------------------------------------------------------------------------
# Rows
# ----------------------------------------------------------------------------------------------


def static_clips(clips: ClipSet) -> ClipSet:
    """Each clip's first frame repeated over all its frames (no motion at all)."""
    frames = clips.videos.shape[2]
    still = clips.videos[:, :, :1].expand(-1, -1, frames, -1, -1).contiguous()
    return ClipSet(still, list(clips.captions), dict(clips.labels), [f"static:{k}" for k in clips.keys])


def noise_clips(clips: ClipSet, seed: int) -> ClipSet:
    """Uniform 8-bit pixel noise of the clips' shape, i.i.d. over pixels and frames."""
    generator = torch.Generator().manual_seed(seed)
    noise = torch.randint(0, 256, tuple(clips.videos.shape), generator=generator, dtype=torch.uint8)
    return ClipSet(noise, list(clips.captions), dict(clips.labels), [f"noise:{i}" for i in range(len(clips))])


# ----------------------------------------------------------------------------------------------
# Scoring one row
# ----------------------------------------------------------------------------------------------


@torch.no_grad()
def domain_scores(
    row: Row,
    classifier: DomainClassifier,
    reference_statistics: Path,
    settings: DomainSettings,
    batch_size: int,
    progress: bool,
    throughput: features.Throughput,
) -> dict[str, Any]:
    """In-domain FVD, IS, adherence, per-head accuracy and motion magnitude of one row."""
    extractor = DomainFeatures(classifier)
    fvd = FrechetVideoDistance(feature_extractor=extractor, preprocess=False, ddof=settings.ddof,
                               real_statistics=reference_statistics)
    inception = VideoInceptionScore(classifier=nn.Identity(), outputs="probs")  # fed probabilities below
    device = next(classifier.parameters()).device
    predictions: dict[str, list[torch.Tensor]] = {head: [] for head in classifier.heads}
    motion = []
    for videos, _ in tqdm(row.clips.batches(batch_size), total=-(-len(row.clips) // batch_size),
                          desc=f"domain classifier: {row.key}", unit="batch", disable=not progress):
        start = time.perf_counter()
        embedding = classifier.features(videos.to(device))  # one backbone pass for every head
        logits = {head: layer(embedding) for head, layer in classifier.classifiers.items()}
        throughput.add(videos.shape[0], time.perf_counter() - start)
        fvd.update_features(embedding, real=False)
        inception.update_probs(logits[settings.is_head].softmax(dim=-1).cpu())
        for head, value in logits.items():
            predictions[head].append(value.argmax(dim=-1).cpu())
        motion.append(motion_magnitude(videos))
    predicted = {head: torch.cat(values) for head, values in predictions.items()}
    with warnings.catch_warnings():  # the metrics were fed through update_features / update_probs
        warnings.filterwarnings("ignore", message=".*was called before the ``update`` method.*")
        result = fvd.result()
        inception_score = float(inception.compute()[0])
    scores: dict[str, Any] = {
        "domain_fvd": result["fvd"],
        "domain_fvd_variant": result["variant"],
        "domain_is": inception_score,
        "motion": float(torch.cat(motion).mean()),
    }
    if row.targets is not None:
        heads = list(settings.adherence_heads)
        labelled = torch.stack([row.targets[h] != IGNORE_LABEL for h in heads]).all(dim=0)  # (n,)
        scores["adherence"] = prompt_adherence(
            {h: predicted[h][labelled] for h in heads}, {h: row.targets[h][labelled] for h in heads}, heads=heads
        ) if labelled.any() else None
        for head in heads:
            known = row.targets[head] != IGNORE_LABEL
            scores[f"acc_{head}"] = float((predicted[head][known] == row.targets[head][known]).float().mean()) if known.any() else None
    return scores


def tracking_scores(row: Row, batch_size: int) -> dict[str, Any]:
    """Tracked direction accuracy and visibility of the prompted colour on the row's linear-motion prompts."""
    from lumiere.data.vocabulary import RGB

    colours, directions = row.clips.labels.get("color"), row.clips.labels.get("direction")
    motions = row.clips.labels.get("motion") or []
    linear = [i for i, m in enumerate(motions) if m == "linear"] if colours and directions else []
    if not linear:
        return {"tracked_direction": None, "tracked_visible": None, "num_tracked": 0}
    correct = visible = 0.0
    for start in range(0, len(linear), batch_size):
        part = linear[start:start + batch_size]
        videos = to_float(row.clips.videos[part])
        result = tracked_direction_accuracy(videos, [colours[i] for i in part], [directions[i] for i in part], RGB)
        correct += result["direction_accuracy"] * len(part)
        visible += result["visible"] * len(part)
    return {"tracked_direction": correct / len(linear), "tracked_visible": visible / len(linear), "num_tracked": len(linear)}


def i3d_scores(
    row: Row,
    i3d: nn.Module,
    reference_statistics: Path,
    settings: I3DSettings,
    progress: bool,
    throughput: features.Throughput,
    cache_path: Path | None = None,
) -> dict[str, Any]:
    """I3D FVD of the row's first ``settings.num_videos`` clips against the cached reference.

    With ``cache_path`` (rows that do not depend on the model) the row's Gaussian is cached there.
    """
    clips = row.clips.take(settings.num_videos)
    batches = (videos for videos, _ in clips.batches(settings.batch_size))
    if cache_path is not None:
        statistics, _ = features.ensure_clip_statistics(cache_path, i3d, settings.ddof, batches, total=len(clips),
                                                        progress=progress, throughput=throughput,
                                                        desc=f"I3D features: {row.key}")
        result = features.fvd_between_statistics(reference_statistics, statistics)
    else:
        metric = features.i3d_fvd_metric(i3d, settings.ddof, real_statistics=reference_statistics)
        features.stream_into_fvd(metric, batches, real=False, total=len(clips), desc=f"I3D features: {row.key}",
                                 progress=progress, throughput=throughput)
        result = metric.result()
    return {"i3d_fvd": result["fvd"], "i3d_fvd_variant": result["variant"], "num_i3d_videos": result["num_fake"],
            "num_i3d_reference": result["num_real"]}
