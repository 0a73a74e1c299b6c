"""Video Inception Score (Salimans et al. 2016; TGANv2's C3D variant), paper Table 1 and App. D.2.

IS = exp(E_i KL(p(y|x_i) || p(y))), with p(y) the mean class distribution of the split. Computed
in float64 with ``p + 1e-20`` (TGANv2; StyleGAN-V takes the logs without it, which changes a score
by less than 1e-18 relative unless a probability underflows to 0, where its log gives NaN).

Three named conventions (``IS_VARIANTS``), each with a label printed beside its numbers:

- ``splits`` (the default): every sample, in ``splits`` parts after a seeded shuffle; mean and
  std over the parts. With 1 split this is one score over all the generated videos, as the
  paper's App. D.2 describes ("the same generated videos" as the FVD's 10,235);
- ``tgan2`` (Saito et al. 2020, ``scripts/compute_inception_score.py`` of the tgan2 code): 10
  repetitions of one score over 2048 samples, mean and std over the repetitions. TGANv2 draws
  fresh samples from its generator each time; here each repetition is a seeded draw of 2048
  distinct videos from the generated set (draws overlap when fewer than 20,480 are generated);
- ``stylegan-v`` (Skorokhodov et al. 2022, ``isv2048_ucf``): 2048 samples (a seeded draw from
  the generated set; StyleGAN-V takes its first 2048) shuffled into 10 parts; mean and std.

Before the shuffle the probabilities are put in a canonical order (lexicographic on the rows), so
the score does not depend on the order in which samples arrived: several processes (DDP, whose
gathered order differs from a single process) give the same number.
"""

from __future__ import annotations

import os

import numpy as np
import torch
from torch import nn
from torchmetrics import Metric
from torchmetrics.utilities import dim_zero_cat

from lumiere.errors import ConfigError
from lumiere.metrics._frozen import exclude_from_state_dict

LOG_EPS = 1e-20
IS_VARIANTS = ("splits", "tgan2", "stylegan-v")
CONVENTION_SAMPLES = 2048  # TGANv2 and StyleGAN-V: scores over 2048 videos
CONVENTION_PARTS = 10      # TGANv2: 10 repetitions; StyleGAN-V: 10 splits


def _as_float64_probs(probs) -> np.ndarray:
    if isinstance(probs, torch.Tensor):
        probs = probs.detach().cpu().to(torch.float64).numpy()
    probs = np.asarray(probs, dtype=np.float64)
    if probs.ndim != 2:
        raise ConfigError(f"probabilities must be (N, classes), got shape {probs.shape}")
    return probs[np.lexsort(probs.T[::-1])]  # canonical order: independent of arrival order


def _score(part: np.ndarray) -> float:
    marginal = part.mean(axis=0, keepdims=True)
    kl = (part * (np.log(part + LOG_EPS) - np.log(marginal + LOG_EPS))).sum(axis=1)
    return float(np.exp(kl.mean()))


def check_is_variant(variant: str, num_samples: int | None = None) -> None:
    """A one-line :class:`ConfigError` for an unknown variant, or too few samples for its 2048 draws."""
    if variant not in IS_VARIANTS:
        raise ConfigError(f"unknown IS variant {variant!r}: choose one of {', '.join(IS_VARIANTS)} (evaluation.is_variant)")
    if variant != "splits" and num_samples is not None and num_samples < CONVENTION_SAMPLES:
        raise ConfigError(f"the {variant} IS scores {CONVENTION_SAMPLES} videos but there are {num_samples}: "
                          "generate at least 2048 (evaluation.num_videos) or use is_variant=splits")


def is_variant_label(variant: str, splits: int = 1, num_samples: int | None = None, classifier: str = "c3d-ucf101") -> str:
    """The short string printed beside an IS, e.g. ``is[c3d-ucf101,tgan2,10x2048]``."""
    check_is_variant(variant)
    if variant == "tgan2":
        return f"is[{classifier},tgan2,{CONVENTION_PARTS}x{CONVENTION_SAMPLES}]"
    if variant == "stylegan-v":
        return f"is[{classifier},stylegan-v,{CONVENTION_SAMPLES},splits={CONVENTION_PARTS}]"
    return f"is[{classifier},all{'' if num_samples is None else num_samples},splits={splits}]"


def inception_score_repeated(probs, num_samples: int = CONVENTION_SAMPLES, repeats: int = CONVENTION_PARTS,
                             seed: int | None = 0) -> tuple[float, float]:
    """TGANv2's convention: (mean, std) over ``repeats`` scores, each of one split over
    ``num_samples`` distinct samples drawn (seeded, independently per repetition) from ``probs``."""
    probs = _as_float64_probs(probs)
    if not 1 <= num_samples <= probs.shape[0] or repeats < 1:
        raise ConfigError(f"repetitions need 1 <= num_samples <= {probs.shape[0]} samples and repeats >= 1, "
                          f"got num_samples={num_samples}, repeats={repeats}")
    rng = np.random.default_rng(seed)
    scores = [_score(probs[rng.choice(probs.shape[0], size=num_samples, replace=False)]) for _ in range(repeats)]
    return float(np.mean(scores)), float(np.std(scores))


def inception_score_variant(probs, variant: str = "splits", splits: int = 1, seed: int | None = 0) -> tuple[float, float]:
    """(mean, std) of the IS of ``probs`` (N, K) in the named convention (``IS_VARIANTS``)."""
    check_is_variant(variant, len(probs))
    if variant == "tgan2":
        return inception_score_repeated(probs, CONVENTION_SAMPLES, CONVENTION_PARTS, seed=seed)
    if variant == "stylegan-v":
        probs = _as_float64_probs(probs)
        chosen = np.random.default_rng(seed).choice(probs.shape[0], size=CONVENTION_SAMPLES, replace=False)
        return inception_score_from_probs(probs[np.sort(chosen)], splits=CONVENTION_PARTS, seed=seed)
    return inception_score_from_probs(probs, splits=splits, seed=seed)


def inception_score_from_probs(probs, splits: int = 1, seed: int | None = 0) -> tuple[float, float]:
    """(mean, std) of the Inception Score of class probabilities ``probs`` (N, K) over ``splits``
    parts (sizes differ by at most one) after a seeded shuffle."""
    probs = _as_float64_probs(probs)
    if not 1 <= splits <= probs.shape[0]:
        raise ConfigError(f"splits must be between 1 and the number of samples ({probs.shape[0]}), got {splits}")
    if seed is not None:
        probs = probs[np.random.default_rng(seed).permutation(probs.shape[0])]
    scores = [_score(part) for part in np.array_split(probs, splits)]
    return float(np.mean(scores)), float(np.std(scores))


class VideoInceptionScore(Metric):
    """Inception Score of generated videos from a video classifier's class probabilities.

    ``update(videos)`` takes (B, C, T, H, W) in [-1, 1]; ``compute()`` returns (mean, std) as
    float64 tensors. The default classifier is the TGANv2 C3D fine-tuned on UCF101, built from
    the user-supplied ``c3d_weights`` / ``c3d_mean`` npz files; any module returning
    probabilities (or logits, with ``outputs="logits"``) can be injected instead. ``variant``
    names the convention (``IS_VARIANTS``; ``splits`` is read by the ``splits`` variant only) and
    ``label()`` the string printed beside the number.
    """

    higher_is_better = True
    is_differentiable = False
    full_state_update = False

    def __init__(
        self,
        classifier: nn.Module | None = None,
        c3d_weights: str | os.PathLike | None = None,
        c3d_mean: str | os.PathLike | None = None,
        outputs: str = "probs",
        splits: int = 1,
        seed: int | None = 0,
        variant: str = "splits",
        **kwargs,
    ):
        super().__init__(**kwargs)
        if outputs not in ("probs", "logits"):
            raise ConfigError(f"outputs must be 'probs' or 'logits', got {outputs!r}")
        check_is_variant(variant)
        if classifier is None:
            from lumiere.metrics.c3d import C3D

            classifier = C3D.from_tgan2_npz(c3d_weights, c3d_mean)
            outputs = "probs"
        classifier.eval().requires_grad_(False)
        self.classifier, self.outputs, self.splits, self.seed, self.variant = classifier, outputs, splits, seed, variant
        exclude_from_state_dict(self, "classifier")  # frozen weights stay out of checkpoints
        self.add_state("probs", [], dist_reduce_fx="cat")

    @torch.no_grad()
    def class_probabilities(self, videos: torch.Tensor) -> torch.Tensor:
        parameter = next(self.classifier.parameters(), None)
        device = parameter.device if parameter is not None else videos.device
        out = self.classifier(videos.to(device)).to(torch.float64)
        return out.softmax(dim=-1) if self.outputs == "logits" else out

    def update(self, videos: torch.Tensor) -> None:
        self.update_probs(self.class_probabilities(videos))

    def update_probs(self, probs: torch.Tensor) -> None:
        """Add already computed (B, K) class probabilities."""
        self.probs.append(probs.detach().to(torch.float64))

    def compute(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.score(self.variant)

    def score(self, variant: str) -> tuple[torch.Tensor, torch.Tensor]:
        """(mean, std) of the samples seen so far in the convention ``variant``."""
        mean, std = inception_score_variant(dim_zero_cat(self.probs), variant=variant, splits=self.splits, seed=self.seed)
        return torch.tensor(mean, dtype=torch.float64), torch.tensor(std, dtype=torch.float64)

    def label(self, variant: str | None = None, num_samples: int | None = None) -> str:
        return is_variant_label(variant or self.variant, self.splits, num_samples)
