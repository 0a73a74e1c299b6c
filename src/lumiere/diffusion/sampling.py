"""Samplers: the scheduler's reverse process with classifier-free guidance, and SDEdit.

Flat functions with one shared signature (after k-diffusion): a denoiser, the starting noise, a
scheduler that supplies the update rule (DDPM ancestral sampling, Ho et al. 2020; DDIM, Song et
al. 2021; DPM-Solver(++), Lu et al. 2022), and keyword options. Every sampler returns x_0
clipped to [-1, 1] (docs/architecture.md).

Thresholding of the predicted x_0 follows the scheduler's configuration (`threshold_x0`: IF's
dynamic thresholding from its folder, else static clipping); the scheduler that steps is a copy
that does not threshold again (`stepping_scheduler`).

Reproducibility: the starting noise is drawn by the caller from a `torch.Generator`
(`make_noise`), and the same generator is handed to every scheduler step, so stochastic
schedulers (DDPM) draw their per-step noise from it too: one seed, one output.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping

import torch
from diffusers.schedulers.scheduling_utils import SchedulerMixin
from torch import Tensor
from tqdm.auto import tqdm

from lumiere.diffusion.guidance import guided_prediction
from lumiere.diffusion.process import add_noise, make_noise, model_output_from_x0, predict_x0, split_variance
from lumiere.diffusion.schedulers import check_supported, clone_scheduler, stepping_scheduler, uses_learned_variance
from lumiere.errors import ConfigError

Denoiser = Callable[[Tensor, Tensor, Mapping[str, Tensor]], Tensor]
StepCallback = Callable[[int, int, Tensor], None]


def dynamic_threshold(x0: Tensor, ratio: float, max_value: float) -> Tensor:
    """Dynamic thresholding (Saharia et al. 2022, Imagen): per sample, s = the `ratio` quantile of
    |x0| clamped to [1, max_value]; x0 is clamped to [-s, s] and divided by s.

    The same arithmetic as diffusers' `_threshold_sample` (linear-interpolation quantile), over
    each sample's C x T x H x W values, without `torch.quantile`'s 2**24-element limit.
    """
    if not 0.0 < ratio <= 1.0 or max_value < 1.0:
        raise ConfigError(f"dynamic thresholding needs dynamic_thresholding_ratio in (0, 1] and "
                          f"sample_max_value >= 1, got {ratio} and {max_value}")
    compute = x0 if x0.dtype in (torch.float32, torch.float64) else x0.float()
    flat = compute.reshape(compute.shape[0], -1)
    magnitude = flat.abs()
    position = ratio * (flat.shape[1] - 1)
    below = math.floor(position)
    above = min(below + 1, flat.shape[1] - 1)
    # The two order statistics around the quantile's position (kthvalue is 1-based; no full sort).
    low = magnitude.kthvalue(below + 1, dim=1).values
    high = magnitude.kthvalue(above + 1, dim=1).values if above != below else low
    quantile = low + (position - below) * (high - low)
    s = quantile.clamp(min=1.0, max=max_value).unsqueeze(1)
    return (torch.clamp(flat, -s, s) / s).reshape(x0.shape).to(x0.dtype)


def threshold_x0(x0: Tensor, scheduler: SchedulerMixin) -> Tensor:
    """The predicted x_0 thresholded as the scheduler's configuration says: dynamic thresholding
    when `thresholding` is set (DeepFloyd IF), else clamped to +-`clip_sample_range` when
    `clip_sample` is set, else to [-1, 1] (the data range)."""
    config = scheduler.config
    if config.get("thresholding", False):
        return dynamic_threshold(x0, float(config.dynamic_thresholding_ratio), float(config.sample_max_value))
    limit = float(config.clip_sample_range) if config.get("clip_sample", False) else 1.0
    return x0.clamp(-limit, limit)


def prediction_for_step(
    denoise_fn: Denoiser,
    x_t: Tensor,
    timestep: int,
    scheduler: SchedulerMixin,
    cond: Mapping[str, Tensor],
    uncond: Mapping[str, Tensor] | None,
    guidance_scale: float,
    clip_denoised: bool,
) -> Tensor:
    """The (guided, thresholded) model output at x_t that a step of `stepping_scheduler(scheduler)`
    consumes.

    With `clip_denoised`, the implied x_0 is thresholded as `scheduler`'s configuration says
    (`threshold_x0`) and re-expressed in the model's parameterisation so any update rule can use
    it. The variance half of a learned-variance output is kept only for a scheduler that uses it
    (DDPM with learned variance).
    """
    t_batch = torch.full((x_t.shape[0],), int(timestep), dtype=torch.long, device=x_t.device)
    output = guided_prediction(denoise_fn, x_t, t_batch, cond, uncond, guidance_scale)
    prediction, variance = split_variance(output, x_t.shape[1])
    if variance is None and uses_learned_variance(scheduler):
        raise ConfigError(
            f"the scheduler has variance_type={scheduler.config.variance_type!r} but the model returns "
            f"{x_t.shape[1]} channels, no variance half; set the sampler's variance_type to fixed_small")
    prediction = prediction.to(x_t.dtype)
    if clip_denoised:
        alphas_cumprod = scheduler.alphas_cumprod
        prediction_type = scheduler.config.prediction_type
        x0 = threshold_x0(predict_x0(prediction, x_t, timestep, alphas_cumprod, prediction_type), scheduler)
        prediction = model_output_from_x0(x0, x_t, timestep, alphas_cumprod, prediction_type)
    if variance is not None and uses_learned_variance(scheduler):
        return torch.cat([prediction, variance.to(x_t.dtype)], dim=1)
    return prediction


def sample(
    denoise_fn: Denoiser,
    noise: Tensor,
    scheduler: SchedulerMixin,
    *,
    num_inference_steps: int,
    cond: Mapping[str, Tensor] | None = None,
    uncond: Mapping[str, Tensor] | None = None,
    guidance_scale: float = 1.0,
    clip_denoised: bool = True,
    start_step: int = 0,
    end_step: int | None = None,
    generator: torch.Generator | None = None,
    progress: bool = True,
    callback: StepCallback | None = None,
) -> Tensor:
    """Reverse diffusion with the scheduler's update rule and classifier-free guidance.

    `noise` is x_T, standard normal of the output's shape (B, C, T, H, W). With `start_step > 0`
    sampling starts at the schedule's `start_step`-th timestep and `noise` must already be the
    noisy sample at that timestep (SDEdit; see `sdedit`). With `end_step` set below the number of
    steps, sampling stops before that step and returns the noisy sample there, unclipped (one
    step of a schedule: `start_step=k, end_step=k + 1`). The caller's scheduler is not mutated.
    `callback(step_index, timestep, x)` runs after every step with the new sample.
    """
    if num_inference_steps < 1:
        raise ConfigError(f"num_inference_steps must be >= 1, got {num_inference_steps}")
    cond = dict(cond or {})
    stepper = stepping_scheduler(check_supported(scheduler))
    stepper.set_timesteps(num_inference_steps)
    timesteps = [int(t) for t in stepper.timesteps]
    if not 0 <= start_step < len(timesteps):
        raise ConfigError(f"start_step must lie in [0, {len(timesteps)}), got {start_step}")
    end_step = len(timesteps) if end_step is None else end_step
    if not start_step < end_step <= len(timesteps):
        raise ConfigError(f"end_step must lie in ({start_step}, {len(timesteps)}], got {end_step}")
    x = noise * stepper.init_noise_sigma if start_step == 0 else noise
    steps = range(start_step, end_step)
    for step_index in tqdm(steps, desc="sampling", disable=not progress, leave=False):
        timestep = timesteps[step_index]
        prediction = prediction_for_step(denoise_fn, x, timestep, scheduler, cond, uncond,
                                         guidance_scale, clip_denoised)
        x = stepper.step(prediction, timestep, x, generator=generator).prev_sample
        if callback is not None:
            callback(step_index, timestep, x)
    return x.clamp(-1.0, 1.0) if end_step == len(timesteps) else x


def sdedit_schedule(strength: float, num_inference_steps: int, num_train_timesteps: int) -> tuple[int, int]:
    """How SDEdit spends its steps: (steps of the full schedule to set, steps actually run).

    SDEdit (Meng et al. 2022) noises the input to t0 = strength * T_train and solves the reverse
    process from t0 to 0 in N steps. With diffusers' evenly spaced schedules that is the last N
    steps of a schedule of N / strength steps. At most one step per training timestep fits in
    [0, t0], so a tiny strength runs fewer than N steps (at least one).
    """
    if not 0.0 < strength <= 1.0:
        raise ConfigError(f"SDEdit strength must lie in (0, 1], got {strength}")
    if num_inference_steps < 1:
        raise ConfigError(f"num_inference_steps must be >= 1, got {num_inference_steps}")
    steps_run = min(num_inference_steps, max(1, math.floor(strength * num_train_timesteps + 1e-6)))
    schedule_steps = min(num_train_timesteps, max(steps_run, round(steps_run / strength)))
    return schedule_steps, steps_run


def sdedit(
    denoise_fn: Denoiser,
    video: Tensor,
    scheduler: SchedulerMixin,
    strength: float,
    *,
    num_inference_steps: int,
    cond: Mapping[str, Tensor] | None = None,
    uncond: Mapping[str, Tensor] | None = None,
    guidance_scale: float = 1.0,
    clip_denoised: bool = True,
    noise: Tensor | None = None,
    generator: torch.Generator | None = None,
    progress: bool = True,
    callback: StepCallback | None = None,
) -> Tensor:
    """SDEdit (Meng et al. 2022): noise `video` (B, C, T, H, W) in [-1, 1] to `strength`, denoise.

    strength in (0, 1] is the fraction of the noise schedule: near 0 returns (almost) the input,
    1 starts from (almost) pure noise. `num_inference_steps` is the number of denoising steps
    actually run over [0, t0] (unlike diffusers' img2img, which runs strength * N of N steps).
    """
    num_train_timesteps = scheduler.config.num_train_timesteps
    schedule_steps, steps_run = sdedit_schedule(strength, num_inference_steps, num_train_timesteps)
    probe = clone_scheduler(scheduler)
    probe.set_timesteps(schedule_steps)
    timesteps = probe.timesteps
    start_step = max(len(timesteps) - steps_run, 0)
    if noise is None:
        noise = make_noise(video.shape, generator=generator, device=video.device, dtype=video.dtype)
    x_start = add_noise(video, noise, int(timesteps[start_step]), probe.alphas_cumprod)
    return sample(denoise_fn, x_start, scheduler, num_inference_steps=schedule_steps, cond=cond, uncond=uncond,
                  guidance_scale=guidance_scale, clip_denoised=clip_denoised, start_step=start_step,
                  generator=generator, progress=progress, callback=callback)
