"""Video metrics of the paper's evaluation (Sec. 5.2, Table 1, App. D.2).

- FVD with the Kinetics-400 I3D and the published preprocessing (``FrechetVideoDistance``, ``I3D``).
- Video Inception Score with TGANv2's UCF101 C3D (``VideoInceptionScore``, ``C3D``).
- In-domain metrics for the synthetic benchmark (``DomainClassifier`` and helpers) and colour
  tracking of the prompted object (``lumiere.metrics.tracking``).

Networks and metric math only: the protocols that use them (the UCF101 zero-shot protocol, the
synthetic table, the prompt-following probes) live in ``lumiere.evaluation``. Depends on torch,
torchmetrics, numpy and safetensors; never on ``lumiere.training``, ``lumiere.data``,
``lumiere.evaluation`` or Lightning. The I3D weights: ``python -m lumiere.metrics.i3d_weights``.
"""

from lumiere.metrics.c3d import C3D, c3d_npz_shapes
from lumiere.metrics.domain_classifier import (
    DomainClassifier,
    DomainFeatures,
    DomainHeadProbabilities,
    load_domain_classifier,
    motion_magnitude,
    predict_labels,
    prompt_adherence,
    save_domain_classifier,
    train_domain_classifier,
)
from lumiere.metrics.fvd import FrechetVideoDistance, frechet_distance, gaussian_from_sums
from lumiere.metrics.i3d import I3D
from lumiere.metrics.inception_score import VideoInceptionScore, inception_score_from_probs
from lumiere.metrics.preprocessing import (
    FVD_VARIANT,
    fvd_variant,
    preprocess_for_fvd,
    quantize_to_uint8_range,
    tf1_legacy_bilinear_resize,
)

__all__ = [
    "C3D",
    "DomainClassifier",
    "DomainFeatures",
    "DomainHeadProbabilities",
    "FVD_VARIANT",
    "FrechetVideoDistance",
    "I3D",
    "VideoInceptionScore",
    "c3d_npz_shapes",
    "frechet_distance",
    "fvd_variant",
    "gaussian_from_sums",
    "inception_score_from_probs",
    "load_domain_classifier",
    "motion_magnitude",
    "predict_labels",
    "preprocess_for_fvd",
    "prompt_adherence",
    "quantize_to_uint8_range",
    "save_domain_classifier",
    "tf1_legacy_bilinear_resize",
    "train_domain_classifier",
]
