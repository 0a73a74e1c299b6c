"""Settings of the synthetic-benchmark evaluation (``evaluation=synthetic``), from plain config values.

``settings_from_dict`` turns the resolved ``evaluation`` config into :class:`SyntheticSettings`;
an unknown key is a ``ConfigError``. The evaluation itself is :mod:`lumiere.evaluation.synthetic`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from lumiere.errors import ConfigError
from lumiere.evaluation.domain_classifier import ClassifierSettings


@dataclass
class I3DSettings:
    enabled: bool = True
    num_videos: int | None = 16            # clips per row fed to the I3D (the first ones); null: all
    num_reference_videos: int = 32         # real train/val clips behind the cached statistics
    weights: str | None = None             # null: the default converted file (made on first use)
    ddof: int = 1                          # covariance divisor N - ddof (tfgan: 1)
    batch_size: int = 4


@dataclass
class DomainSettings:
    cache_dir: str = "outputs/artifacts/domain_classifier"
    retrain: bool = False
    training: ClassifierSettings = field(default_factory=ClassifierSettings)
    is_head: str = "motion"
    adherence_heads: tuple[str, ...] = ("shape", "color", "motion")
    ddof: int = 1


@dataclass
class SamplingSettings:
    num_inference_steps: int | None = None
    guidance_scale: float | None = None
    scheduler: str | None = None


@dataclass
class SyntheticSettings:
    data_dir: str
    num_videos: int = 32                   # clips per row: the first test clips and their captions
    num_frames: int | None = None          # null: the model's clip length (16 without a model)
    resolution: int | None = None          # null: the model's sample size (the benchmark's without one)
    target_fps: float | None = 8.0         # the frame rate the base model was trained at
    reference_splits: tuple[str, ...] = ("train", "val")
    num_reference_videos: int = 128        # real clips of the in-domain FVD reference
    batch_size: int = 8
    seed: int = 0
    save_videos: bool = True               # write the model's clips as mp4 + videos.jsonl
    fvd_cache_dir: str = "outputs/artifacts/fvd_reference"
    i3d: I3DSettings = field(default_factory=I3DSettings)
    domain: DomainSettings = field(default_factory=DomainSettings)
    sampling: SamplingSettings = field(default_factory=SamplingSettings)


def settings_from_dict(config: dict[str, Any]) -> SyntheticSettings:
    """Build the settings from the (resolved, plain) ``evaluation`` config; unknown keys are errors."""
    config = dict(config)
    config.pop("mode", None)
    nested = {"i3d": I3DSettings, "sampling": SamplingSettings}
    kwargs: dict[str, Any] = {}
    for key, value in config.items():
        if key in nested:
            kwargs[key] = _build(nested[key], value or {}, f"evaluation.{key}")
        elif key == "domain_classifier":
            value = dict(value or {})
            training_keys = set(ClassifierSettings.__dataclass_fields__)
            training = {k: value.pop(k) for k in list(value) if k in training_keys}
            domain = _build(DomainSettings, value, "evaluation.domain_classifier")
            domain.training = _build(ClassifierSettings, training, "evaluation.domain_classifier")
            domain.adherence_heads = tuple(domain.adherence_heads)
            kwargs["domain"] = domain
        elif key in SyntheticSettings.__dataclass_fields__ and key not in ("domain",):
            kwargs[key] = value
        else:
            raise ConfigError(f"unknown setting evaluation.{key}")
    if "reference_splits" in kwargs:
        kwargs["reference_splits"] = tuple(kwargs["reference_splits"])
    if "data_dir" not in kwargs:
        raise ConfigError("evaluation.data_dir is not set (the synthetic benchmark's root)")
    return SyntheticSettings(**kwargs)


def _build(cls, values: dict, where: str):
    unknown = set(values) - set(cls.__dataclass_fields__)
    if unknown:
        raise ConfigError(f"unknown setting(s) {where}.{sorted(unknown)[0]} (known: {sorted(cls.__dataclass_fields__)})")
    return cls(**values)


def plain(value: Any) -> Any:
    """Settings as json values: tuples become lists (for the table's metadata)."""
    if isinstance(value, tuple):
        return [plain(v) for v in value]
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    return value
