"""Diffusion: noise schedules, the training objective, samplers with CFG, temporal MultiDiffusion.

A denoiser is any callable `denoise_fn(x_t, t, cond) -> model_output` (docs/architecture.md);
this package never imports Lightning or `lumiere.models`.
"""

from lumiere.diffusion.analytic import OracleDenoiser
from lumiere.diffusion.guidance import drop_conditions, guided_prediction
from lumiere.diffusion.multidiffusion import (
    combine_windows,
    multidiffusion_sample,
    non_overlapping_windows,
    segment_boundaries,
    temporal_windows,
    window_weights,
)
from lumiere.diffusion.objective import DiffusionObjective
from lumiere.diffusion.process import (
    PREDICTION_TYPES,
    add_noise,
    make_noise,
    model_output_from_x0,
    predict_x0,
    signal_to_noise_ratio,
    split_variance,
    training_target,
)
from lumiere.diffusion.sampling import (
    dynamic_threshold,
    prediction_for_step,
    sample,
    sdedit,
    sdedit_schedule,
    threshold_x0,
)
from lumiere.diffusion.schedulers import (
    FOLDER_SCHEDULER_KEYS,
    SCHEDULER_NAMES,
    build_scheduler,
    check_supported,
    clone_scheduler,
    is_stochastic,
    stepping_scheduler,
    uses_learned_variance,
)

__all__ = [
    "DiffusionObjective",
    "FOLDER_SCHEDULER_KEYS",
    "OracleDenoiser",
    "PREDICTION_TYPES",
    "SCHEDULER_NAMES",
    "add_noise",
    "build_scheduler",
    "check_supported",
    "clone_scheduler",
    "combine_windows",
    "drop_conditions",
    "dynamic_threshold",
    "guided_prediction",
    "is_stochastic",
    "make_noise",
    "model_output_from_x0",
    "multidiffusion_sample",
    "non_overlapping_windows",
    "predict_x0",
    "prediction_for_step",
    "sample",
    "sdedit",
    "sdedit_schedule",
    "segment_boundaries",
    "signal_to_noise_ratio",
    "split_variance",
    "stepping_scheduler",
    "temporal_windows",
    "threshold_x0",
    "training_target",
    "uses_learned_variance",
    "window_weights",
]
