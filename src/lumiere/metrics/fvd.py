"""Frechet Video Distance (Unterthiner et al. 2018), paper Table 1 and App. D.2.

FVD fits a Gaussian to the I3D embeddings of real and of generated videos and reports
``|mu1 - mu2|^2 + tr S1 + tr S2 - 2 tr sqrt(S1 S2)``. The metric here streams float64 sums
(feature sum, outer-product sum, count) registered as torchmetrics states with
``dist_reduce_fx="sum"``, so several updates, several processes (DDP) and one big update all
give the same statistics. Reference statistics of UCF101 are computed once and saved
(``save_real_statistics``), then loaded for every evaluation (``load_real_statistics``).

Two named conventions (``FVD_VARIANTS``), each with a short label printed beside its numbers:

- ``tf1`` (the default; the reference FVD code): TF1 legacy bilinear resize to 224 and the
  covariance divided by N - 1 (tfgan), label ``fvd[i3d,tf1-resize,cov=N-1]``;
- ``stylegan-v`` (Skorokhodov et al. 2022, its ``fvd2048_16f``): the covariance divided by N
  (StyleGAN-V and cd-fvd; +0.05% at N=2048, +0.5% at N=64) and PyTorch's half-pixel bilinear
  resize (StyleGAN-V states that its FVD matches the TF code "up to the upsampling operation";
  the exact resize inside its TorchScript I3D is not readable offline, so the label names what
  this code does: ``fvd[i3d,torch-resize,cov=N]``). StyleGAN-V also scores 2048 clips per
  side; the counts behind a number are reported with it, not fixed by the variant.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torchmetrics import Metric

from lumiere.errors import ConfigError, InputFileError
from lumiere.metrics._frozen import exclude_from_state_dict
from lumiere.metrics.preprocessing import (
    FVD_NUM_FRAMES,
    FVD_SIZE,
    fvd_variant,
    preprocess_for_fvd,
)

# Tensor dimension legend: b batch, c channels, t time, h height, w width.

RESIZES = ("tf1", "torch")  # TF1 legacy bilinear (no half-pixel offset) | PyTorch bilinear (half-pixel)


@dataclass(frozen=True)
class FVDVariant:
    """A named FVD convention: how frames are resized to 224 and the covariance divisor N - ddof."""

    name: str
    resize: str  # one of RESIZES
    ddof: int


FVD_VARIANTS = {
    "tf1": FVDVariant("tf1", resize="tf1", ddof=1),
    "stylegan-v": FVDVariant("stylegan-v", resize="torch", ddof=0),
}


def get_fvd_variant(name: str) -> FVDVariant:
    """The convention called ``name``; a one-line :class:`ConfigError` naming the choices otherwise."""
    if name not in FVD_VARIANTS:
        raise ConfigError(f"unknown FVD variant {name!r}: choose one of {', '.join(FVD_VARIANTS)} (evaluation.fvd_variant)")
    return FVD_VARIANTS[name]


def _variant_name(resize: str, num_frames: int, size: int, ddof: int, features: str | None = None) -> str:
    """The full variant string stored with statistics (the TF1 one is ``fvd_variant``'s, unchanged)."""
    if features is None:
        name = fvd_variant(num_frames, size, ddof)
    else:
        name = f"tf1-legacy-bilinear-{size}, first{num_frames}, {features}, ddof{ddof}"
    return name if resize == "tf1" else name.replace(f"tf1-legacy-bilinear-{size}", f"torch-bilinear-{size}", 1)


def _as_float64_numpy(value) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().to(torch.float64).numpy()
    return np.asarray(value, dtype=np.float64)


def _psd_sqrt(matrix: np.ndarray) -> np.ndarray:
    """Square root of a symmetric positive semi-definite matrix; tiny negative eigenvalues -> 0."""
    eigenvalues, eigenvectors = np.linalg.eigh((matrix + matrix.T) / 2)
    return (eigenvectors * np.sqrt(np.clip(eigenvalues, 0.0, None))) @ eigenvectors.T


def read_fvd_statistics(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray, int, str, int]:
    """(mu, sigma, n, variant, ddof) of an npz written by ``save_real_statistics``; a one-line
    :class:`InputFileError` for a missing, damaged or foreign file (read without pickles)."""
    from lumiere.metrics.c3d import read_npz_arrays

    path = Path(path)
    if not path.is_file():
        raise InputFileError(f"real FVD statistics not found at {path}" + (" (it is a directory)" if path.is_dir() else ""))
    data = read_npz_arrays(path, "FVD statistics")
    missing = {"mu", "sigma", "n", "variant"} - set(data)
    if missing:
        raise InputFileError(f"{path} lacks {sorted(missing)}: not a file written by save_real_statistics")
    mu, sigma = data["mu"], data["sigma"]
    if mu.ndim != 1 or sigma.shape != (mu.shape[0], mu.shape[0]) or not (np.isfinite(mu).all() and np.isfinite(sigma).all()):
        raise InputFileError(f"{path}: mu {mu.shape} and sigma {sigma.shape} are not a finite d-dim Gaussian")
    try:
        count, variant, ddof = int(data["n"]), str(data["variant"]), int(data.get("ddof", 1))
    except (TypeError, ValueError) as error:
        raise InputFileError(f"{path}: n / variant / ddof cannot be read ({error})") from None
    return mu, sigma, count, variant, ddof


def frechet_distance(mu1, sigma1, mu2, sigma2) -> float:
    """Frechet distance between N(mu1, sigma1) and N(mu2, sigma2), in float64.

    ``tr sqrt(S1 S2)`` is computed as ``tr sqrt(sqrt(S1) S2 sqrt(S1))``: the inner matrix is
    symmetric PSD, so a symmetric eigendecomposition gives its eigenvalues without the complex
    round-off ``sqrtm(S1 @ S2)`` produces on near-singular covariances (fewer samples than
    dimensions). Tiny negative eigenvalues from round-off are clamped to zero.
    """
    mu1, mu2 = _as_float64_numpy(mu1).reshape(-1), _as_float64_numpy(mu2).reshape(-1)
    sigma1, sigma2 = _as_float64_numpy(sigma1), _as_float64_numpy(sigma2)
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape or sigma1.shape != (mu1.size, mu1.size):
        raise ConfigError(f"Frechet distance needs matching shapes, got mu {mu1.shape}/{mu2.shape}, sigma {sigma1.shape}/{sigma2.shape}")
    root1 = _psd_sqrt(sigma1)
    inner = root1 @ sigma2 @ root1
    trace_sqrt = np.sqrt(np.clip(np.linalg.eigvalsh((inner + inner.T) / 2), 0.0, None)).sum()
    diff = mu1 - mu2
    distance = diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * trace_sqrt
    return float(max(distance, 0.0))  # identical sets give 0 up to round-off of either sign


def gaussian_from_sums(feature_sum: torch.Tensor, outer_sum: torch.Tensor, count: float, ddof: int = 1):
    """Mean and covariance (float64 numpy) from streamed sums: cov = (sum x x^T - n mu mu^T) / (n - ddof)."""
    n = float(count)
    if n - ddof <= 0:
        raise ConfigError(f"FVD needs more than {ddof} videos per side to estimate a covariance, got {int(n)}")
    mean = _as_float64_numpy(feature_sum) / n
    covariance = (_as_float64_numpy(outer_sum) - n * np.outer(mean, mean)) / (n - ddof)
    return mean, (covariance + covariance.T) / 2


class FrechetVideoDistance(Metric):
    """FVD between real and generated videos, a torchmetrics ``Metric`` (DDP-reducible).

    ``update(videos, real)`` takes (B, C, T, H, W) in [-1, 1]; ``compute()`` returns the FVD as a
    float64 scalar tensor and ``result()`` a dict that also names the variant.

    Args:
        feature_extractor: module mapping preprocessed videos to (B, D) features; default the
            Kinetics-400 I3D (``I3D.from_pretrained()``), or e.g. the synthetic domain classifier.
        feature_dim: D; read from ``feature_extractor.feature_dim`` when not given.
        preprocess: ``True`` for the published FVD preprocessing (first 16 frames, 0-255,
            bilinear to 224 with ``resize``), ``False`` to feed videos unchanged, or a callable.
        ddof: covariance divisor N - ddof (1 as tfgan, 0 as StyleGAN-V / cd-fvd).
        variant: the variant name; derived from the settings when not given.
        real_statistics: path of an npz from ``save_real_statistics`` to load right away.
        resize: ``"tf1"`` (TF1 legacy bilinear, the published FVD) or ``"torch"`` (PyTorch's
            half-pixel bilinear, StyleGAN-V's convention); only read when ``preprocess`` is True.

    ``label`` is the short convention string shown in tables (``fvd[i3d,tf1-resize,cov=N-1]``).
    """

    higher_is_better = False
    is_differentiable = False
    full_state_update = False

    def __init__(
        self,
        feature_extractor: nn.Module | None = None,
        feature_dim: int | None = None,
        preprocess: bool | Callable[[torch.Tensor], torch.Tensor] = True,
        num_frames: int = FVD_NUM_FRAMES,
        size: int = FVD_SIZE,
        ddof: int = 1,
        variant: str | None = None,
        real_statistics: str | os.PathLike | None = None,
        resize: str = "tf1",
        **kwargs,
    ):
        super().__init__(**kwargs)
        if ddof not in (0, 1):
            raise ConfigError(f"ddof must be 0 or 1, got {ddof}")
        if resize not in RESIZES:
            raise ConfigError(f"resize must be one of {RESIZES}, got {resize!r}")
        from lumiere.metrics.i3d import I3D

        if feature_extractor is None:
            feature_extractor = I3D.from_pretrained()
        feature_extractor.eval().requires_grad_(False)
        self.feature_extractor = feature_extractor
        exclude_from_state_dict(self, "feature_extractor")  # frozen weights stay out of checkpoints
        dim = feature_dim or getattr(feature_extractor, "feature_dim", None)
        if not dim:
            raise ConfigError("FrechetVideoDistance needs feature_dim (or a feature_extractor with a feature_dim attribute)")
        self.feature_dim, self.ddof = int(dim), ddof
        if preprocess is True:
            self._preprocess = lambda videos: preprocess_for_fvd(videos, num_frames=num_frames, size=size, resize=resize)
        elif preprocess is False:
            self._preprocess = lambda videos: videos
        else:
            self._preprocess = preprocess
        is_i3d = isinstance(feature_extractor, I3D)
        extractor_name = f"{type(feature_extractor).__name__}-{self.feature_dim}"
        if variant is None:
            if preprocess is True:
                variant = _variant_name(resize, num_frames, size, ddof, None if is_i3d else extractor_name)
            else:
                variant = f"custom-preprocessing, {extractor_name}, ddof{ddof}"
        self.variant = variant
        features = "i3d" if is_i3d else extractor_name
        steps = f"{resize}-resize" if preprocess is True else "custom-preprocessing"
        self.label = f"fvd[{features},{steps},cov={'N-1' if ddof else 'N'}]"

        for side in ("real", "fake"):
            self.add_state(f"{side}_sum", torch.zeros(self.feature_dim, dtype=torch.float64), dist_reduce_fx="sum")
            self.add_state(f"{side}_outer", torch.zeros(self.feature_dim, self.feature_dim, dtype=torch.float64), dist_reduce_fx="sum")
            self.add_state(f"{side}_count", torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")
        # Loaded reference statistics are not metric states: reset() keeps them.
        self._loaded_real: tuple[np.ndarray, np.ndarray, int] | None = None
        if real_statistics is not None:
            self.load_real_statistics(real_statistics)

    # ------------------------------------------------------------------ streaming
    @torch.no_grad()
    def extract_features(self, videos: torch.Tensor) -> torch.Tensor:
        """(B, D) float64 features of ``videos`` (B, C, T, H, W) in [-1, 1]."""
        parameter = next(self.feature_extractor.parameters(), None)
        device = parameter.device if parameter is not None else videos.device
        features = self.feature_extractor(self._preprocess(videos.to(device)))
        if features.ndim != 2 or features.shape[1] != self.feature_dim:
            raise ConfigError(f"the feature extractor returned shape {tuple(features.shape)}, expected (B, {self.feature_dim})")
        return features.to(torch.float64)

    def update(self, videos: torch.Tensor, real: bool) -> None:
        self.update_features(self.extract_features(videos), real=real)

    def update_features(self, features: torch.Tensor, real: bool) -> None:
        """Add already extracted (B, D) features to the real or generated side."""
        side = "real" if real else "fake"
        features = features.to(device=self.real_sum.device, dtype=torch.float64)
        setattr(self, f"{side}_sum", getattr(self, f"{side}_sum") + features.sum(dim=0))
        setattr(self, f"{side}_outer", getattr(self, f"{side}_outer") + features.T @ features)
        setattr(self, f"{side}_count", getattr(self, f"{side}_count") + features.shape[0])

    # ------------------------------------------------------------------ statistics
    def _real_gaussian(self):
        if self._loaded_real is not None:
            if self.real_count.item() > 0:
                raise ConfigError("real statistics were loaded and real videos were also given: use one or the other")
            return self._loaded_real[0], self._loaded_real[1]
        return gaussian_from_sums(self.real_sum, self.real_outer, self.real_count.item(), self.ddof)

    def compute(self) -> torch.Tensor:
        mu_real, sigma_real = self._real_gaussian()
        mu_fake, sigma_fake = gaussian_from_sums(self.fake_sum, self.fake_outer, self.fake_count.item(), self.ddof)
        return torch.tensor(frechet_distance(mu_real, sigma_real, mu_fake, sigma_fake), dtype=torch.float64)

    def result(self) -> dict:
        """``{"fvd", "variant", "label", "num_real", "num_fake", "ddof"}``: the number with how it was computed."""
        fvd = float(self.compute())
        with self.sync_context(should_sync=self._to_sync, should_unsync=True):
            num_real = self._loaded_real[2] if self._loaded_real is not None else int(self.real_count.item())
            num_fake = int(self.fake_count.item())
        return {"fvd": fvd, "variant": self.variant, "label": self.label, "num_real": num_real, "num_fake": num_fake,
                "ddof": self.ddof}

    def save_real_statistics(self, path: str | os.PathLike) -> Path:
        """Save the real side as npz (mu, sigma, n, variant, ddof); only rank 0 writes under DDP."""
        with self.sync_context(should_sync=self._to_sync, should_unsync=True):
            mu, sigma = gaussian_from_sums(self.real_sum, self.real_outer, self.real_count.item(), self.ddof)
            count = int(self.real_count.item())
        path = Path(path)
        distributed = torch.distributed.is_available() and torch.distributed.is_initialized()
        if not distributed or torch.distributed.get_rank() == 0:
            path.parent.mkdir(parents=True, exist_ok=True)
            partial = path.with_name(path.name + ".partial.npz")
            try:
                np.savez(partial, mu=mu, sigma=sigma, n=np.int64(count), variant=np.array(self.variant), ddof=np.int64(self.ddof))
                os.replace(partial, path)
            except BaseException as error:
                partial.unlink(missing_ok=True)
                if isinstance(error, OSError):
                    raise InputFileError(f"could not write {path}: {error.strerror or error}") from None
                raise
        return path

    def load_real_statistics(self, path: str | os.PathLike) -> None:
        """Use saved reference statistics for the real side (then ``update(real=True)`` is not needed)."""
        mu, sigma, count, variant, _ = read_fvd_statistics(path)
        if variant != self.variant:
            raise InputFileError(f"{path} was computed with variant '{variant}', this metric uses '{self.variant}'")
        if mu.shape != (self.feature_dim,) or sigma.shape != (self.feature_dim, self.feature_dim):
            raise InputFileError(f"{path} holds {mu.shape[0]}-d statistics, the metric's features are {self.feature_dim}-d")
        self._loaded_real = (mu.astype(np.float64), sigma.astype(np.float64), count)
