"""Samplers' update rules: diffusers DDPM, DDIM and DPM-Solver(++) schedulers built locally.

Choices made once for every sampler (see `lumiere.diffusion.sampling`):
- The scheduler never clips. Static thresholding of the predicted x_0 to [-1, 1] (Ho et al.
  2020; Saharia et al. 2022) is done by the sampler (`clip_denoised=True`) before the update
  rule sees the prediction, the same way for every scheduler; diffusers offers it for DDPM and
  DDIM only (`clip_sample`), and its dynamic thresholding for DPM-Solver calls
  `torch.quantile`, which refuses tensors of more than 2**24 elements (a high-resolution window).
  Doing it in one place also makes MultiDiffusion clip each window's prediction the same way.
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

import warnings
from typing import Any

from diffusers import DDIMScheduler, DDPMScheduler, DPMSolverMultistepScheduler
from diffusers.schedulers.scheduling_utils import SchedulerMixin

from lumiere.diffusion.process import check_prediction_type
from lumiere.errors import ConfigError

SCHEDULER_NAMES = ("ddpm", "ddim", "dpmsolver++", "dpmsolver")


def build_scheduler(
    name: str,
    *,
    num_train_timesteps: int = 1000,          # length of the training noise schedule
    beta_schedule: str = "squaredcos_cap_v2",  # cosine schedule (Nichol & Dhariwal 2021), as IF
    prediction_type: str = "epsilon",          # "epsilon" | "v_prediction"
    timestep_spacing: str = "trailing",        # first step at the last training timestep
    **kwargs: Any,                             # any other constructor argument of the scheduler
) -> SchedulerMixin:
    """A diffusers scheduler by name: "ddpm", "ddim", "dpmsolver++" (2nd order) or "dpmsolver".

    For a DeepFloyd-IF-like model with learned variance, pass `variance_type="learned_range"`
    to the DDPM scheduler: the sampler then hands it both halves of the model output. The other
    schedulers use the prediction half only.
    """
    check_prediction_type(prediction_type)
    common = dict(num_train_timesteps=num_train_timesteps, beta_schedule=beta_schedule,
                  prediction_type=prediction_type, timestep_spacing=timestep_spacing)
    cosine = beta_schedule == "squaredcos_cap_v2"
    if name == "ddpm":
        cls, defaults = DDPMScheduler, dict(clip_sample=False)
    elif name == "ddim":
        cls, defaults = DDIMScheduler, dict(clip_sample=False, set_alpha_to_one=True)
    elif name in ("dpmsolver++", "dpmsolver"):
        cls = DPMSolverMultistepScheduler
        defaults = dict(algorithm_type=name, solver_order=2, thresholding=False,
                        lambda_min_clipped=-5.1 if cosine else -float("inf"))
        if name == "dpmsolver":  # the noise-space solver cannot step to sigma = 0
            defaults["final_sigmas_type"] = "sigma_min"
    else:
        raise ConfigError(f"unknown scheduler {name!r}; choose one of {SCHEDULER_NAMES}")
    options = {**common, **defaults, **kwargs}
    if "variance_type" in options and cls is not DDPMScheduler:
        # DPM-Solver would slice a hard-coded 3 channels; the sampler strips the variance itself.
        raise ConfigError("variance_type is only used by the ddpm scheduler")
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
