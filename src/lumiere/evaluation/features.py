"""The I3D FVD pieces both evaluation modes share (paper App. D.2): the network, the metric with
its variant name, streaming a clip set through it, and cached reference statistics.

I3D features are the expensive part on a CPU (the network runs at 224x224), so the Gaussians
of clip sets that do not depend on the evaluated model (the real reference, and the real,
static and noise rows) are computed once and saved as npz
(``FrechetVideoDistance.save_real_statistics``) under a name that encodes the data, the clip
shape and the FVD variant; evaluating another checkpoint then costs only the model's clips.
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
from collections.abc import Iterable
from pathlib import Path

import torch
from torch import nn
from tqdm.auto import tqdm

from lumiere.errors import ConfigError, InputFileError
from lumiere.metrics import FrechetVideoDistance, frechet_distance, fvd_variant

log = logging.getLogger("lumiere")

FVD_FRAMES = 16  # the published FVD (and the C3D of the IS) read the first 16 frames


def load_i3d(weights: str | os.PathLike | None = None, device: str | torch.device = "cpu") -> nn.Module:
    """The Kinetics-400 I3D (converted on first use when ``weights`` is None).

    A missing path, a directory, a file that is not safetensors or tensors that do not fit the
    network are a one-line :class:`InputFileError` (``I3D.from_pretrained``), raised before
    anything long starts; an empty string counts as None (a config's ``weights: ''``)."""
    from lumiere.metrics import I3D

    return I3D.from_pretrained(weights or None, map_location=device)


def i3d_fvd_metric(i3d: nn.Module, ddof: int = 1, real_statistics: str | os.PathLike | None = None) -> FrechetVideoDistance:
    """FVD with the published preprocessing on ``i3d``'s features; the variant names the I3D
    settings when ``i3d`` is the real network, or the extractor's class otherwise (tests)."""
    from lumiere.metrics import I3D

    variant = fvd_variant(ddof=ddof) if isinstance(i3d, I3D) else None
    return FrechetVideoDistance(feature_extractor=i3d, preprocess=True, ddof=ddof, variant=variant,
                                real_statistics=real_statistics)


def check_fvd_frames(num_frames: int, what: str = "the clips",
                     hint: str = "evaluate clips of >= 16 frames or turn the I3D column off (evaluation.i3d.enabled=false)") -> None:
    """A clip length the I3D FVD cannot read is one line; ``hint`` says what to change in the caller's mode."""
    if num_frames < FVD_FRAMES:
        raise ConfigError(f"the I3D FVD reads the first {FVD_FRAMES} frames but {what} have {num_frames}; {hint}")


class Throughput:
    """Videos per second of a feature extractor, accumulated over calls."""

    def __init__(self) -> None:
        self.videos, self.seconds = 0, 0.0

    def add(self, videos: int, seconds: float) -> None:
        self.videos += videos
        self.seconds += seconds

    @property
    def videos_per_second(self) -> float | None:
        return self.videos / self.seconds if self.seconds > 0 else None


def stream_into_fvd(
    metric: FrechetVideoDistance,
    batches: Iterable[torch.Tensor],
    real: bool,
    total: int | None = None,
    desc: str = "I3D features",
    progress: bool = True,
    throughput: Throughput | None = None,
) -> None:
    """Feed (B, 3, T, H, W) batches in [-1, 1] to one side of ``metric``, with a progress bar."""
    bar = tqdm(total=total, desc=desc, unit="clip", disable=not progress)
    for videos in batches:
        start = time.perf_counter()
        metric.update(videos, real=real)
        if throughput is not None:
            throughput.add(videos.shape[0], time.perf_counter() - start)
        bar.update(videos.shape[0])
    bar.close()


def reference_cache_path(cache_dir: str | os.PathLike, name: str, variant: str, identity: str) -> Path:
    """``<cache_dir>/<name>_<digest>.npz`` with a digest of the variant and the data identity."""
    digest = hashlib.sha256(f"{variant}|{identity}".encode()).hexdigest()[:12]
    return Path(cache_dir) / f"{name}_{digest}.npz"


def ensure_clip_statistics(
    path: Path,
    i3d: nn.Module,
    ddof: int,
    batches: Iterable[torch.Tensor],
    total: int | None,
    progress: bool = True,
    throughput: Throughput | None = None,
    desc: str = "I3D statistics",
) -> tuple[Path, bool]:
    """Compute and save the I3D Gaussian (mu, sigma, n, variant) of a clip set at ``path``
    unless it is there already: the real reference, or a row that does not depend on the model.

    Returns (path, whether it was computed now). ``batches`` is only iterated when needed.
    """
    if path.is_file():
        log.info("I3D statistics: using the cached %s", path)
        return path, False
    metric = i3d_fvd_metric(i3d, ddof)
    stream_into_fvd(metric, batches, real=True, total=total, desc=desc, progress=progress, throughput=throughput)
    metric.save_real_statistics(path)
    log.info("I3D statistics: saved %s", path)
    return path, True


def fvd_between_statistics(reference: Path, statistics: Path) -> dict:
    """FVD between two saved Gaussians of the same variant, as ``FrechetVideoDistance.result()``."""
    from lumiere.metrics.fvd import read_fvd_statistics

    loaded = [read_fvd_statistics(path) for path in (reference, statistics)]
    (mu_real, sigma_real, n_real, variant, ddof), (mu_row, sigma_row, n_row, row_variant, _) = loaded
    if variant != row_variant:
        raise InputFileError(f"{statistics} was computed with variant '{row_variant}', the reference {reference} with '{variant}'")
    return {"fvd": frechet_distance(mu_real, sigma_real, mu_row, sigma_row), "variant": variant, "num_real": n_real,
            "num_fake": n_row, "ddof": ddof}
