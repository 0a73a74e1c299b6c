"""In-domain metrics for the project's synthetic benchmark (the stand-in for paper Sec. 5.2).

The UCF101 numbers of Table 1 need I3D/C3D trained on real human actions; on the synthetic
benchmark (moving shapes with attribute labels such as shape, colour, motion, direction, speed)
those networks measure little. This module trains a small C3D-style classifier on the benchmark
itself, with one softmax head per attribute, and derives:

- in-domain FVD: ``FrechetVideoDistance(feature_extractor=DomainFeatures(model), preprocess=False)``
  on the classifier's penultimate features;
- in-domain IS: ``VideoInceptionScore(classifier=DomainHeadProbabilities(model, "motion"))``.
  The motion head is the analogue of UCF101's action classes (what happens in the clip, which
  only a model of the video's temporal behaviour gets right), so IS uses that head by default;
  any other head can be chosen;
- prompt adherence: the fraction of clips whose predicted labels match the prompt's labels on
  every head checked (shape, colour, motion by default);
- motion magnitude: mean absolute frame difference per clip (Sec. 5.1 compares motion amounts).

The attribute vocabulary comes from the caller (``heads={"shape": 4, "color": 6, ...}``, e.g.
built from ``lumiere.data.vocabulary.ATTRIBUTE_VOCAB``); this package never imports the data code.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from lumiere.errors import ConfigError, InputFileError

# Tensor dimension legend: b batch, c channels, t time, h height, w width.

IGNORE_LABEL = -1  # a clip without a label for some head is ignored by that head's loss


def _conv_block(cin: int, cout: int, pool: tuple[int, int, int]) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv3d(cin, cout, kernel_size=3, padding=1),
        nn.GroupNorm(min(8, cout), cout),
        nn.ReLU(inplace=True),
        nn.MaxPool3d(pool, ceil_mode=True),
    )


class DomainClassifier(nn.Module):
    """Small C3D-style video classifier with one softmax head per attribute.

    ``features(x)`` returns the penultimate (B, feature_dim) embedding; ``forward(x)`` a dict
    ``{head: (B, classes) logits}``. Input (B, 3, T, H, W) in [-1, 1], any T and H, W >= 8.
    """

    def __init__(self, heads: Mapping[str, int], width: int = 32, feature_dim: int = 256, in_channels: int = 3,
                 pooling: str = "max"):
        super().__init__()
        if not heads or any(int(n) < 2 for n in heads.values()):
            raise ConfigError(f"every head needs at least 2 classes, got {dict(heads)}")
        if pooling not in ("max", "avg"):
            raise ConfigError(f"pooling must be 'max' or 'avg', got {pooling!r}")
        # Global max pooling: a small shape on a large background is found wherever it is; global
        # averaging dilutes it (docs/experiments.md).
        self.pooling = pooling
        self.heads = {str(name): int(n) for name, n in heads.items()}
        self.width, self.feature_dim, self.in_channels = width, feature_dim, in_channels
        self.backbone = nn.Sequential(
            _conv_block(in_channels, width, (1, 2, 2)),  # space first, as C3D's pool1
            _conv_block(width, 2 * width, (2, 2, 2)),
            _conv_block(2 * width, 4 * width, (2, 2, 2)),
            nn.Conv3d(4 * width, 4 * width, kernel_size=3, padding=1),
            nn.ReLU(inplace=True),
        )
        self.project = nn.Sequential(nn.Linear(4 * width, feature_dim), nn.ReLU(inplace=True))
        self.classifiers = nn.ModuleDict({name: nn.Linear(feature_dim, n) for name, n in self.heads.items()})

    def features(self, videos: torch.Tensor) -> torch.Tensor:
        """Penultimate embedding (B, feature_dim): the features of the in-domain FVD."""
        if videos.ndim != 5 or videos.shape[1] != self.in_channels:
            raise ConfigError(f"the domain classifier expects (B, {self.in_channels}, T, H, W), got {tuple(videos.shape)}")
        maps = self.backbone(videos)
        pooled = maps.amax(dim=(2, 3, 4)) if self.pooling == "max" else maps.mean(dim=(2, 3, 4))
        return self.project(pooled)

    def forward(self, videos: torch.Tensor) -> dict[str, torch.Tensor]:
        features = self.features(videos)
        return {name: head(features) for name, head in self.classifiers.items()}

    def config(self) -> dict:
        return {"heads": self.heads, "width": self.width, "feature_dim": self.feature_dim,
                "in_channels": self.in_channels, "pooling": self.pooling}


class DomainFeatures(nn.Module):
    """Adapter: ``forward`` returns the classifier's features (injectable into ``FrechetVideoDistance``)."""

    def __init__(self, model: DomainClassifier):
        super().__init__()
        self.model, self.feature_dim = model, model.feature_dim

    def forward(self, videos: torch.Tensor) -> torch.Tensor:
        return self.model.features(videos)


class DomainHeadProbabilities(nn.Module):
    """Adapter: ``forward`` returns one head's softmax (injectable into ``VideoInceptionScore``)."""

    def __init__(self, model: DomainClassifier, head: str = "motion"):
        super().__init__()
        if head not in model.heads:
            raise ConfigError(f"the domain classifier has no head '{head}' (heads: {sorted(model.heads)})")
        self.model, self.head = model, head

    def forward(self, videos: torch.Tensor) -> torch.Tensor:
        return self.model(videos)[self.head].softmax(dim=-1)


# ----------------------------------------------------------------------------------------------
# Training, saving, loading
# ----------------------------------------------------------------------------------------------


def _label_dict(labels, heads: Sequence[str]) -> dict[str, torch.Tensor]:
    """Accept ``{head: ids}`` or a (B, num_heads) tensor in ``heads`` order."""
    if isinstance(labels, Mapping):
        return {name: torch.as_tensor(labels[name]).long() for name in heads if name in labels}
    labels = torch.as_tensor(labels).long()
    if labels.ndim != 2 or labels.shape[1] != len(heads):
        raise ConfigError(f"label ids must be a dict or a (B, {len(heads)}) tensor, got shape {tuple(labels.shape)}")
    return {name: labels[:, i] for i, name in enumerate(heads)}


def train_domain_classifier(
    data: Iterable,
    heads: Mapping[str, int],
    epochs: int = 10,
    lr: float = 1e-3,
    device: str | torch.device = "cpu",
    progress: bool = True,
    model: DomainClassifier | None = None,
    weight_decay: float = 1e-4,
    **model_kwargs,
) -> DomainClassifier:
    """Train on ``data``: an iterable (re-iterated every epoch, e.g. a DataLoader) of
    ``(videos (B, 3, T, H, W) in [-1, 1], label_ids)`` with ``label_ids`` a dict ``{head: (B,)}``
    or a (B, num_heads) tensor; ``-1`` marks a missing label. Summed cross-entropy over heads,
    AdamW. Returns the model in eval mode."""
    model = (model or DomainClassifier(heads, **model_kwargs)).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    names = list(model.heads)
    model.train()
    for _ in tqdm(range(epochs), desc="training domain classifier", disable=not progress):
        for videos, labels in data:
            targets = _label_dict(labels, names)
            logits = model(videos.to(device))
            loss = sum(
                F.cross_entropy(logits[name], target.to(device), ignore_index=IGNORE_LABEL)
                for name, target in targets.items()
                if (target != IGNORE_LABEL).any()
            )
            if not torch.is_tensor(loss):
                continue  # no labelled head in this batch
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    return model.eval()


def save_domain_classifier(model: DomainClassifier, path: str | os.PathLike) -> Path:
    """Weights as safetensors at ``path`` and the constructor arguments in ``path`` with suffix ``.json``."""
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}, str(path))
    path.with_suffix(".json").write_text(json.dumps(model.config(), indent=2) + "\n")
    return path


def load_domain_classifier(path: str | os.PathLike, device: str | torch.device = "cpu") -> DomainClassifier:
    """Load a classifier written by ``save_domain_classifier`` (eval mode, frozen)."""
    from safetensors.torch import load_file

    path = Path(path)
    config_path = path.with_suffix(".json")
    if not path.is_file() or not config_path.is_file():
        raise InputFileError(f"domain classifier not found: need {path} and {config_path}")
    model = DomainClassifier(**json.loads(config_path.read_text()))
    model.load_state_dict(load_file(str(path), device="cpu"))
    return model.to(device).eval().requires_grad_(False)


# ----------------------------------------------------------------------------------------------
# Metrics on top of the classifier
# ----------------------------------------------------------------------------------------------


@torch.no_grad()
def predict_labels(model: DomainClassifier, videos: torch.Tensor) -> dict[str, torch.Tensor]:
    """Arg-max label id of every head, ``{head: (B,)}``."""
    device = next(model.parameters()).device
    return {name: logits.argmax(dim=-1).cpu() for name, logits in model(videos.to(device)).items()}


def prompt_adherence(
    pred_label_ids: Mapping[str, Sequence[int] | torch.Tensor],
    target_label_ids: Mapping[str, Sequence[int] | torch.Tensor],
    heads: Sequence[str] = ("shape", "color", "motion"),
) -> float:
    """Fraction of clips whose predicted labels equal the prompt's labels on every head in ``heads``."""
    missing = [h for h in heads if h not in pred_label_ids or h not in target_label_ids]
    if missing:
        raise ConfigError(f"prompt adherence needs predictions and targets for heads {missing}")
    matches = None
    for head in heads:
        pred, target = torch.as_tensor(pred_label_ids[head]).long(), torch.as_tensor(target_label_ids[head]).long()
        if pred.shape != target.shape:
            raise ConfigError(f"head '{head}': {tuple(pred.shape)} predictions for {tuple(target.shape)} targets")
        matches = (pred == target) if matches is None else matches & (pred == target)
    if matches is None or matches.numel() == 0:
        raise ConfigError("prompt adherence needs at least one head and one clip")
    return matches.float().mean().item()


def motion_magnitude(videos: torch.Tensor) -> torch.Tensor:
    """Mean absolute difference between consecutive frames, per clip: (B,) for (B, C, T, H, W)."""
    if videos.ndim != 5 or videos.shape[2] < 2:
        raise ConfigError(f"motion magnitude needs (B, C, T>=2, H, W) videos, got {tuple(videos.shape)}")
    return (videos[:, :, 1:] - videos[:, :, :-1]).abs().float().mean(dim=(1, 2, 3, 4))
