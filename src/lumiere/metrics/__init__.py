"""Video metrics of the paper's evaluation (Sec. 5.2, Table 1, App. D.2/D.3).

- FVD with the Kinetics-400 I3D and the published preprocessing (``FrechetVideoDistance``, ``I3D``).
- Video Inception Score with TGANv2's UCF101 C3D (``VideoInceptionScore``, ``C3D``).
- The UCF101 zero-shot protocol: class prompts, apportionment of 10,235 videos, resumable
  generation, real statistics (``lumiere.metrics.ucf101``).
- In-domain metrics for the synthetic benchmark (``DomainClassifier`` and helpers).

Depends on torch, torchmetrics, numpy, safetensors and PyAV (decoding UCF101); never on
``lumiere.training``. The I3D weights: ``python -m lumiere.metrics.i3d_weights``.
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
from lumiere.metrics.ucf101 import (
    PAPER_NUM_VIDEOS,
    PROMPT_TEMPLATES,
    PlanItem,
    apportion,
    build_generation_plan,
    class_prompt,
    class_words,
    compute_ucf101_real_statistics,
    generate_videos_resumable,
    iter_video_batches,
    load_prompt_file,
    load_user_study_prompts,
    read_video_file,
    ucf101_class_counts,
    ucf101_classes,
    ucf101_prompts,
)

__all__ = [
    "C3D",
    "DomainClassifier",
    "DomainFeatures",
    "DomainHeadProbabilities",
    "FVD_VARIANT",
    "FrechetVideoDistance",
    "I3D",
    "PAPER_NUM_VIDEOS",
    "PROMPT_TEMPLATES",
    "PlanItem",
    "VideoInceptionScore",
    "apportion",
    "build_generation_plan",
    "c3d_npz_shapes",
    "class_prompt",
    "class_words",
    "compute_ucf101_real_statistics",
    "frechet_distance",
    "fvd_variant",
    "gaussian_from_sums",
    "generate_videos_resumable",
    "inception_score_from_probs",
    "iter_video_batches",
    "load_domain_classifier",
    "load_prompt_file",
    "load_user_study_prompts",
    "motion_magnitude",
    "predict_labels",
    "preprocess_for_fvd",
    "prompt_adherence",
    "quantize_to_uint8_range",
    "read_video_file",
    "save_domain_classifier",
    "tf1_legacy_bilinear_resize",
    "train_domain_classifier",
    "ucf101_class_counts",
    "ucf101_classes",
    "ucf101_prompts",
]
