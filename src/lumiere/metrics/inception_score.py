"""Video Inception Score (Salimans et al. 2016; TGANv2's C3D variant), paper Table 1 and App. D.2.

IS = exp(E_i KL(p(y|x_i) || p(y))), with p(y) the mean class distribution of the split. Computed
in float64 with ``p + 1e-20`` inside the logs (TGANv2). The samples are split into ``splits``
parts after a seeded shuffle and the mean and standard deviation over parts are reported
(TGANv2 reports 1 split; StyleGAN-V 10 splits).

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


def inception_score_from_probs(probs, splits: int = 1, seed: int | None = 0) -> tuple[float, float]:
    """(mean, std) of the Inception Score of class probabilities ``probs`` (N, K) over ``splits`` parts."""
    if isinstance(probs, torch.Tensor):
        probs = probs.detach().cpu().to(torch.float64).numpy()
    probs = np.asarray(probs, dtype=np.float64)
    if probs.ndim != 2:
        raise ConfigError(f"probabilities must be (N, classes), got shape {probs.shape}")
    if not 1 <= splits <= probs.shape[0]:
        raise ConfigError(f"splits must be between 1 and the number of samples ({probs.shape[0]}), got {splits}")
    probs = probs[np.lexsort(probs.T[::-1])]  # canonical order: independent of arrival order
    if seed is not None:
        probs = probs[np.random.default_rng(seed).permutation(probs.shape[0])]
    scores = []
    for part in np.array_split(probs, splits):
        marginal = part.mean(axis=0, keepdims=True)
        kl = (part * (np.log(part + LOG_EPS) - np.log(marginal + LOG_EPS))).sum(axis=1)
        scores.append(np.exp(kl.mean()))
    return float(np.mean(scores)), float(np.std(scores))


class VideoInceptionScore(Metric):
    """Inception Score of generated videos from a video classifier's class probabilities.

    ``update(videos)`` takes (B, C, T, H, W) in [-1, 1]; ``compute()`` returns (mean, std) as
    float64 tensors. The default classifier is the TGANv2 C3D fine-tuned on UCF101, built from
    the user-supplied ``c3d_weights`` / ``c3d_mean`` npz files; any module returning
    probabilities (or logits, with ``outputs="logits"``) can be injected instead.
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
        **kwargs,
    ):
        super().__init__(**kwargs)
        if outputs not in ("probs", "logits"):
            raise ConfigError(f"outputs must be 'probs' or 'logits', got {outputs!r}")
        if classifier is None:
            from lumiere.metrics.c3d import C3D

            classifier = C3D.from_tgan2_npz(c3d_weights, c3d_mean)
            outputs = "probs"
        classifier.eval().requires_grad_(False)
        self.classifier, self.outputs, self.splits, self.seed = classifier, outputs, splits, seed
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
        mean, std = inception_score_from_probs(dim_zero_cat(self.probs), splits=self.splits, seed=self.seed)
        return torch.tensor(mean, dtype=torch.float64), torch.tensor(std, dtype=torch.float64)
