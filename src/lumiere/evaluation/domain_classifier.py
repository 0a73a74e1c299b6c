"""Train (or reuse) the synthetic benchmark's domain classifier (in-domain metrics, Sec. 5.2 stand-in).

The classifier (``lumiere.metrics.DomainClassifier``: one softmax head per attribute of
``ATTRIBUTE_VOCAB``) is trained on the benchmark's *train* split at the clip length, frame rate
and resolution the evaluated model generates, and reports its per-head accuracy on the *val*
split, so a reader can judge how much the in-domain numbers mean. The weights are cached as
safetensors + json (``<name>.safetensors``, ``<name>.json`` with the architecture,
``<name>.training.json`` with the data fingerprint, clip settings and accuracies); a cache made
from other data or other clip settings is trained again.

CLI::

    python -m lumiere.evaluation.domain_classifier --data data/demo --out outputs/artifacts/domain_classifier \
        --frames 16 --size 32 --fps 8 --epochs 20
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from lumiere.errors import ConfigError, LumiereError
from lumiere.evaluation.clips import ClipSet, attribute_vocab, data_fingerprint, load_clips, to_float
from lumiere.metrics import DomainClassifier, load_domain_classifier, predict_labels, save_domain_classifier
from lumiere.metrics.domain_classifier import IGNORE_LABEL, train_domain_classifier

log = logging.getLogger("lumiere")


@dataclass
class ClassifierSettings:
    """How the domain classifier is trained (the cache is valid only for the same settings)."""

    epochs: int = 20
    lr: float = 2e-3
    batch_size: int = 16
    width: int = 8              # channels of the first conv block (cost grows with width^2)
    feature_dim: int = 128      # in-domain FVD feature size
    max_train_clips: int | None = None  # null: the whole train split
    max_val_clips: int | None = 64       # clips of the val split the accuracy is measured on
    seed: int = 0


@dataclass
class ClipSettings:
    """The clips the classifier sees: those of the evaluated model."""

    num_frames: int
    resolution: int
    target_fps: float | None


def cache_name(data_dir: str | os.PathLike, clips: ClipSettings) -> str:
    """``<dataset>_T<frames>_<size>px_<fps>fps``: one cached classifier per clip shape and dataset."""
    fps = "native" if clips.target_fps is None else f"{clips.target_fps:g}fps"
    return f"{Path(data_dir).resolve().name}_T{clips.num_frames}_{clips.resolution}px_{fps}"


class _ShuffledBatches:
    """Re-iterable (videos, label ids) batches over in-memory clips, reshuffled every epoch."""

    def __init__(self, clips: ClipSet, ids: dict[str, torch.Tensor], batch_size: int, seed: int):
        self.clips, self.ids, self.batch_size = clips, ids, batch_size
        self.generator = torch.Generator().manual_seed(seed)

    def __iter__(self):
        order = torch.randperm(len(self.clips), generator=self.generator)
        for start in range(0, len(order), self.batch_size):
            index = order[start:start + self.batch_size]
            yield to_float(self.clips.videos[index]), {head: ids[index] for head, ids in self.ids.items()}


@torch.no_grad()
def head_accuracies(model: DomainClassifier, clips: ClipSet, batch_size: int = 32) -> dict[str, float]:
    """Accuracy of every head on ``clips`` (clips without a label for a head are not counted)."""
    targets = clips.label_ids(attribute_vocab())
    correct = {head: 0 for head in model.heads}
    counted = {head: 0 for head in model.heads}
    for videos, part in clips.batches(batch_size):
        predictions = predict_labels(model, videos)
        for head in model.heads:
            target = targets[head][part]
            known = target != IGNORE_LABEL
            correct[head] += int((predictions[head][known] == target[known]).sum())
            counted[head] += int(known.sum())
    return {head: correct[head] / counted[head] for head in model.heads if counted[head]}


def train_benchmark_classifier(
    data_dir: str | os.PathLike,
    clips: ClipSettings,
    settings: ClassifierSettings,
    device: str | torch.device = "cpu",
    progress: bool = True,
) -> tuple[DomainClassifier, dict]:
    """Train on the train split's labels, measure per-head accuracy on the val split."""
    vocab = attribute_vocab()
    heads = {name: len(values) for name, values in vocab.items()}
    train = load_clips(data_dir, ["train"], clips.num_frames, clips.resolution, clips.target_fps,
                       settings.max_train_clips, progress=progress, desc="domain classifier: train clips")
    ids = train.label_ids(vocab)
    torch.manual_seed(settings.seed)  # the classifier's initial weights
    model = train_domain_classifier(
        _ShuffledBatches(train, ids, settings.batch_size, settings.seed), heads, epochs=settings.epochs,
        lr=settings.lr, device=device, progress=progress, width=settings.width, feature_dim=settings.feature_dim)
    model = model.cpu().eval()
    val = load_clips(data_dir, ["val"], clips.num_frames, clips.resolution, clips.target_fps, settings.max_val_clips,
                     progress=progress, desc="domain classifier: val clips")
    accuracy = head_accuracies(model, val)
    chance = {head: 1.0 / len(vocab[head]) for head in accuracy}
    record = {
        "data_dir": str(Path(data_dir).resolve()),
        "data_fingerprint": data_fingerprint(data_dir, ["train", "val"]),
        "clips": asdict(clips),
        "training": asdict(settings),
        "num_train_clips": len(train),
        "num_val_clips": len(val),
        "val_accuracy": accuracy,
        "chance_accuracy": chance,
    }
    return model, record


def _record_path(weights: Path) -> Path:
    return weights.with_name(weights.stem + ".training.json")


def save_benchmark_classifier(model: DomainClassifier, record: dict, weights: str | os.PathLike) -> Path:
    weights = save_domain_classifier(model, weights)
    _record_path(weights).write_text(json.dumps(record, indent=2) + "\n")
    return weights


def cached_record(weights: str | os.PathLike) -> dict | None:
    """The training record of a cached classifier, or None when there is no complete cache."""
    weights = Path(weights)
    record = _record_path(weights)
    if not (weights.is_file() and weights.with_suffix(".json").is_file() and record.is_file()):
        return None
    try:
        return json.loads(record.read_text())
    except json.JSONDecodeError:
        return None


def ensure_domain_classifier(
    cache_dir: str | os.PathLike,
    data_dir: str | os.PathLike,
    clips: ClipSettings,
    settings: ClassifierSettings,
    retrain: bool = False,
    device: str | torch.device = "cpu",
    progress: bool = True,
) -> tuple[DomainClassifier, dict, Path]:
    """Load the cached classifier for these data and clip settings, or train and cache it.

    Returns (model in eval mode on ``device``, training record, weights path). A cache whose
    data fingerprint, clip settings or training settings differ is replaced.
    """
    weights = Path(cache_dir) / f"{cache_name(data_dir, clips)}.safetensors"
    record = None if retrain else cached_record(weights)
    wanted = {"data_fingerprint": data_fingerprint(data_dir, ["train", "val"]), "clips": asdict(clips),
              "training": asdict(settings)}
    if record is not None and all(record.get(key) == value for key, value in wanted.items()):
        log.info("domain classifier: using the cached %s", weights)
        return load_domain_classifier(weights, device=device), record, weights
    if record is not None:
        log.info("domain classifier: %s was trained on other data or settings; training again", weights)
    model, record = train_benchmark_classifier(data_dir, clips, settings, device=device, progress=progress)
    save_benchmark_classifier(model, record, weights)
    log.info("domain classifier: saved %s (val accuracy %s)", weights,
             ", ".join(f"{k} {v:.2f}" for k, v in record["val_accuracy"].items()))
    return load_domain_classifier(weights, device=device), record, weights


# ----------------------------------------------------------------------------------------------
# Command line
# ----------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lumiere.evaluation.domain_classifier",
                                     description="Train the synthetic benchmark's domain classifier (cached).")
    parser.add_argument("--data", required=True, type=Path, help="benchmark root with train/ and val/ shards")
    parser.add_argument("--out", required=True, type=Path, help="cache folder (the file name encodes data and clip shape)")
    parser.add_argument("--frames", type=int, default=16, help="frames per clip (the model's clip length)")
    parser.add_argument("--size", type=int, default=32, help="clip resolution (the model's sample size)")
    parser.add_argument("--fps", type=float, default=8.0, help="frame rate clips are sampled at (<= 0: native)")
    defaults = ClassifierSettings()
    parser.add_argument("--epochs", type=int, default=defaults.epochs)
    parser.add_argument("--lr", type=float, default=defaults.lr)
    parser.add_argument("--batch-size", type=int, default=defaults.batch_size)
    parser.add_argument("--width", type=int, default=defaults.width)
    parser.add_argument("--feature-dim", type=int, default=defaults.feature_dim)
    parser.add_argument("--max-train-clips", type=int, default=None)
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--retrain", action="store_true", help="train even if a matching cache exists")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    clips = ClipSettings(args.frames, args.size, args.fps if args.fps > 0 else None)
    settings = ClassifierSettings(epochs=args.epochs, lr=args.lr, batch_size=args.batch_size, width=args.width,
                                  feature_dim=args.feature_dim, max_train_clips=args.max_train_clips, seed=args.seed)
    try:
        if args.frames < 2 or args.size < 8:
            raise ConfigError(f"need --frames >= 2 and --size >= 8, got {args.frames}, {args.size}")
        _, record, weights = ensure_domain_classifier(args.out, args.data, clips, settings, retrain=args.retrain,
                                                      device=args.device)
    except LumiereError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"domain classifier: {weights}")
    for head, accuracy in record["val_accuracy"].items():
        print(f"  val accuracy {head:>13}: {accuracy:.3f} (chance {record['chance_accuracy'][head]:.3f})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
