"""Samplers' update rules: diffusers DDPM, DDIM and DPM-Solver(++) schedulers built locally.

Choices made once for every sampler (see `lumiere.diffusion.sampling`):
- The scheduler that steps never clips. Thresholding of the predicted x_0 (static to [-1, 1],
  Ho et al. 2020; or dynamic, Saharia et al. 2022, when the configuration says `thresholding`,
  as DeepFloyd IF's does) is done by the sampler (`clip_denoised=True`) before the update rule
  sees the prediction, the same way for every scheduler: diffusers offers static clipping for
  DDPM and DDIM only (`clip_sample`), and its dynamic thresholding calls `torch.quantile`, which
  refuses tensors of more than 2**24 elements (a high-resolution clip). Doing it in one place
  also makes MultiDiffusion threshold each window's prediction the same way. The configuration
  keeps the settings (`build_scheduler` takes them from a pipeline folder); the samplers step a
  copy with them off (`stepping_scheduler`).
- `timestep_spacing="trailing"`: the first step is at the last training timestep, so sampling
  starts from (nearly) pure noise (Lin et al. 2024, "Common diffusion noise schedules and
  sample steps are flawed"); diffusers' default "leading" DDIM spacing starts at 1000 - 1000/N.
- DPM-Solver with the cosine schedule clips lambda(t) at -5.1 (as DeepFloyd IF does): the
  cosine schedule's last timesteps have alpha_bar ~ 1e-9 and the solver becomes unstable there.

A scheduler carries state while sampling (the timesteps it was set to; DPM-Solver keeps its
previous predictions). `clone_scheduler` gives a fresh one with the same configuration, which is
how samplers avoid mutating the caller's object and how MultiDiffusion keeps one per window.
"""

from __future__ import annotations

import inspect
import warnings
from collections.abc import Mapping
from typing import Any

from diffusers import DDIMScheduler, DDPMScheduler, DPMSolverMultistepScheduler
from diffusers.schedulers.scheduling_utils import SchedulerMixin

from lumiere.diffusion.process import check_prediction_type
from lumiere.errors import ConfigError

SCHEDULER_NAMES = ("ddpm", "ddim", "dpmsolver++", "dpmsolver")


# Settings of a pipeline folder's scheduler/scheduler_config.json that describe the model (its
# noise schedule, parameterisation, variance and how its x_0 predictions are thresholded). The
# step spacing (`timestep_spacing`, `steps_offset`) is a sampling choice of this project and is
# not taken from a folder.
FOLDER_SCHEDULER_KEYS = (
    "num_train_timesteps", "beta_schedule", "beta_start", "beta_end", "trained_betas", "prediction_type",
    "variance_type", "thresholding", "dynamic_thresholding_ratio", "sample_max_value", "clip_sample",
    "clip_sample_range", "rescale_betas_zero_snr",
)
PROJECT_DEFAULTS = dict(
    num_train_timesteps=1000,          # length of the training noise schedule
    beta_schedule="squaredcos_cap_v2",  # cosine schedule (Nichol & Dhariwal 2021), as IF
    prediction_type="epsilon",          # "epsilon" | "v_prediction"
)


def _accepted_keys(cls: type) -> set[str]:
    return set(inspect.signature(cls.__init__).parameters) - {"self"}


def _folder_settings(scheduler_config: Mapping[str, Any] | None, cls: type) -> dict[str, Any]:
    """The model-describing keys of a folder's scheduler config that scheduler class `cls` takes."""
    if scheduler_config is None:
        return {}
    if not isinstance(scheduler_config, Mapping):
        raise ConfigError(f"scheduler_config must be a mapping (a scheduler_config.json), got "
                          f"{type(scheduler_config).__name__}")
    settings = {key: scheduler_config[key] for key in FOLDER_SCHEDULER_KEYS
                if key in scheduler_config and key in _accepted_keys(cls)}
    if cls is not DDPMScheduler:  # the sampler strips the variance half for the other update rules
        settings.pop("variance_type", None)
    return settings


def build_scheduler(
    name: str,
    *,
    scheduler_config: Mapping[str, Any] | None = None,  # a pipeline folder's scheduler_config.json
    num_train_timesteps: int | None = None,  # None: the folder's, else 1000
    beta_schedule: str | None = None,        # None: the folder's, else squaredcos_cap_v2
    prediction_type: str | None = None,      # None: the folder's, else epsilon
    timestep_spacing: str = "trailing",      # first step at the last training timestep
    **kwargs: Any,                           # any other constructor argument of the scheduler
) -> SchedulerMixin:
    """A diffusers scheduler by name: "ddpm", "ddim", "dpmsolver++" (2nd order) or "dpmsolver".

    Precedence, highest first: the keyword arguments given here (the experiment's settings; a
    None value counts as not given), then `scheduler_config` (the `FOLDER_SCHEDULER_KEYS` of a
    pipeline folder's `scheduler/scheduler_config.json`, e.g. DeepFloyd IF's learned_range
    variance and dynamic thresholding), then this project's defaults (`PROJECT_DEFAULTS` and the
    per-scheduler defaults below). Without a folder config the result is as before.

    For a DeepFloyd-IF-like model with learned variance, `variance_type="learned_range"` (given
    or from the folder) makes the DDPM scheduler use both halves of the model output. The other
    schedulers use the prediction half only; a folder's `variance_type` is not passed to them.
    `thresholding` / `clip_sample` are kept in the configuration and applied by the sampler
    (`lumiere.diffusion.sampling.threshold_x0`), which steps a copy that does neither itself.
    """
    if name == "ddpm":
        cls, defaults = DDPMScheduler, dict(clip_sample=False)
    elif name == "ddim":
        cls, defaults = DDIMScheduler, dict(clip_sample=False, set_alpha_to_one=True)
    elif name in ("dpmsolver++", "dpmsolver"):
        cls = DPMSolverMultistepScheduler
        defaults = dict(algorithm_type=name, solver_order=2, thresholding=False)
        if name == "dpmsolver":  # the noise-space solver cannot step to sigma = 0
            defaults["final_sigmas_type"] = "sigma_min"
    else:
        raise ConfigError(f"unknown scheduler {name!r}; choose one of {SCHEDULER_NAMES}")
    given = dict(num_train_timesteps=num_train_timesteps, beta_schedule=beta_schedule,
                 prediction_type=prediction_type, timestep_spacing=timestep_spacing, **kwargs)
    given = {key: value for key, value in given.items() if value is not None}
    if "variance_type" in given and cls is not DDPMScheduler:
        # DPM-Solver would slice a hard-coded 3 channels; the sampler strips the variance itself.
        raise ConfigError("variance_type is only used by the ddpm scheduler")
    options = {**PROJECT_DEFAULTS, **defaults, **_folder_settings(scheduler_config, cls), **given}
    check_prediction_type(options["prediction_type"])
    if cls is DPMSolverMultistepScheduler and "lambda_min_clipped" not in options:
        # The cosine schedule's last timesteps have alpha_bar ~ 1e-9: clip lambda(t) as IF does.
        options["lambda_min_clipped"] = -5.1 if options["beta_schedule"] == "squaredcos_cap_v2" else -float("inf")
    try:
        with warnings.catch_warnings():
            # diffusers marks algorithm_type="dpmsolver" deprecated; it is offered for comparison.
            warnings.filterwarnings("ignore", category=FutureWarning)
            return cls(**options)
    except (TypeError, ValueError, NotImplementedError) as error:
        raise ConfigError(f"cannot build scheduler {name!r} with {options}: {error}") from error


def check_supported(scheduler: SchedulerMixin) -> SchedulerMixin:
    """The samplers assume a variance-preserving schedule with unit input scaling (x_T ~ N(0, I)),
    which DDPM, DDIM and DPM-Solver(++) have; Karras-sigma schedulers (Euler, Heun) do not."""
    if not isinstance(scheduler, (DDPMScheduler, DDIMScheduler, DPMSolverMultistepScheduler)):
        raise ConfigError(f"the samplers support DDPM, DDIM and DPM-Solver schedulers, got {type(scheduler).__name__}")
    return scheduler


def clone_scheduler(scheduler: SchedulerMixin) -> SchedulerMixin:
    """A fresh scheduler of the same class and configuration, with no sampling state."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=FutureWarning)
        return type(scheduler).from_config(scheduler.config)


def stepping_scheduler(scheduler: SchedulerMixin) -> SchedulerMixin:
    """A fresh copy that neither clips nor thresholds x_0 itself: the samplers step this one after
    thresholding the prediction as the original's configuration says (`sampling.threshold_x0`)."""
    overrides = {key: False for key in ("thresholding", "clip_sample") if key in scheduler.config}
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=FutureWarning)
        return type(scheduler).from_config(scheduler.config, **overrides)


def uses_learned_variance(scheduler: SchedulerMixin) -> bool:
    """Whether the scheduler's update consumes the variance half of a 2C-channel output."""
    return isinstance(scheduler, DDPMScheduler) and scheduler.config.variance_type in ("learned", "learned_range")


def is_stochastic(scheduler: SchedulerMixin) -> bool:
    """Whether a step draws fresh noise (ancestral DDPM, SDE variants of DPM-Solver).

    DDIM is called with eta = 0 by the samplers here, so it is deterministic.
    """
    if isinstance(scheduler, DDPMScheduler):
        return True
    algorithm = getattr(scheduler.config, "algorithm_type", "")
    return isinstance(algorithm, str) and algorithm.startswith("sde")
