"""Temporal MultiDiffusion (Bar-Tal et al. 2023) for the spatial super-resolution stage.

Lumiere Sec. 3.2 and App. C: the inflated SSR network only fits short segments of the video in
memory, so at every denoising step the noisy video J (B, C, T, H, W) is split into overlapping
temporal windows J_i = J[:, :, s_i:e_i] (an overlap of 2 frames in the paper), the network
predicts Phi(J_i) for each, and the step's result is

    J' = argmin_J  sum_i sum_{f in window i} w_i(f) * || J(f) - Phi(J_i)(f) ||^2

whose closed form is the per-frame weighted average  J'(f) = sum_i w_i(f) Phi(J_i)(f) / sum_i w_i(f)
(`combine_windows`; flat weights give the paper's "average the predictions of overlapping
pixels"). Windows are slices of ONE shared noise tensor: independent noise per window would be
averaged in the overlaps and lose variance there.

What is averaged each step (`combine=`):
- "x_prev" (the paper's formulation): each window runs its own scheduler step (one scheduler per
  window, since DPM-Solver keeps a history of previous predictions per sample) and the windows'
  x_{t-1} are averaged.
- "prediction": the windows' (guided, clipped) model outputs are averaged and one scheduler step
  runs on the whole video. For DDIM (eta = 0) and DPM-Solver(++) the update is affine in the
  prediction history with coefficients that depend on the timestep only, so this equals
  "x_prev" exactly (tests/test_diffusion_multidiffusion.py checks it). For ancestral DDPM it
  averages the windows' posterior means and then adds the step's noise ONCE for the whole
  video; "x_prev" would average independent per-window noise in the overlaps (variance / 2).
- "auto" (default): "prediction" for stochastic schedulers (DDPM), "x_prev" otherwise.

`non_overlapping=True` is the App. C / Fig. 14 ablation: plain windowing with no averaging.

Legend: B batch, C channels, T frames of the video, L frames of a window, H height, W width.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import torch
from diffusers.schedulers.scheduling_utils import SchedulerMixin
from torch import Tensor
from tqdm.auto import tqdm

from lumiere.diffusion.sampling import StepCallback, prediction_for_step
from lumiere.diffusion.schedulers import check_supported, is_stochastic, stepping_scheduler
from lumiere.errors import ConfigError

Denoiser = Callable[[Tensor, Tensor, Mapping[str, Tensor]], Tensor]
WINDOW_WEIGHTINGS = ("flat", "triangular")
COMBINE_MODES = ("auto", "x_prev", "prediction")


# ----------------------------------------------------------------------------- windows
def temporal_windows(num_frames: int, window: int, overlap: int = 2) -> list[tuple[int, int]]:
    """Half-open frame ranges [start, end) of length `window` that cover every frame.

    Windows start every `window - overlap` frames; the last one is aligned to the end of the
    clip, so a remainder is covered by a window that overlaps its predecessor more than
    `overlap` frames (rather than being dropped). `window >= num_frames` gives one window.
    """
    if num_frames < 1:
        raise ConfigError(f"num_frames must be >= 1, got {num_frames}")
    if window < 1:
        raise ConfigError(f"window must be >= 1 frame, got {window}")
    if overlap < 0 or overlap >= window:
        raise ConfigError(f"overlap must lie in [0, window={window}), got {overlap}")
    if window >= num_frames:
        return [(0, num_frames)]
    stride = window - overlap
    starts = list(range(0, num_frames - window, stride)) + [num_frames - window]
    return [(start, start + window) for start in starts]


def window_weights(length: int, kind: str = "flat") -> Tensor:
    """Per-frame weights w(f) of one window: all ones, or a triangle peaking at its centre.

    Triangular weights trust a window's central frames more than its edges (positive
    everywhere, so a frame seen by one window only keeps that window's value).
    """
    if kind not in WINDOW_WEIGHTINGS:
        raise ConfigError(f"window weighting must be one of {WINDOW_WEIGHTINGS}, got {kind!r}")
    if length < 1:
        raise ConfigError(f"window length must be >= 1, got {length}")
    if kind == "flat":
        return torch.ones(length)
    index = torch.arange(length, dtype=torch.float32)
    ramp = torch.minimum(index + 1, length - index)
    return ramp / ramp.max()


def non_overlapping_windows(num_frames: int, window: int) -> tuple[list[tuple[int, int]], list[Tensor]]:
    """Plain temporal windowing (the ablation of App. C): windows and 0/1 ownership weights.

    Windows tile the clip with stride `window`. When `window` does not divide `num_frames`, the
    last window is end-aligned (the network always sees `window` frames) and owns only the frames
    no earlier window covered, so every frame still comes from exactly one window.
    """
    windows = temporal_windows(num_frames, window, overlap=0)
    weights, covered_until = [], 0
    for start, end in windows:
        owned = torch.zeros(end - start)
        owned[max(covered_until - start, 0):] = 1.0
        weights.append(owned)
        covered_until = end
    return windows, weights


def segment_boundaries(num_frames: int, window: int) -> list[int]:
    """First frame of every non-overlapping segment but the first: where the ablation's seams are.

    Pass these to `lumiere.viz.boundary_to_median_ratio` / `plot_frame_difference` for both the
    windowed and the MultiDiffusion result, so the two are measured at the same transitions.
    """
    windows, weights = non_overlapping_windows(num_frames, window)
    return [start + int(torch.nonzero(weight)[0]) for (start, _), weight in zip(windows[1:], weights[1:])]


def combine_windows(
    window_preds: Sequence[Tensor],
    windows: Sequence[tuple[int, int]],
    num_frames: int,
    weights: Sequence[Tensor] | None = None,
) -> Tensor:
    """Closed-form MultiDiffusion step: per-frame weighted average of the window predictions.

    `window_preds[i]` is (B, C, L_i, ...) for frames `windows[i]`; `weights[i]` is (L_i,)
    (None: flat). Solves argmin_J sum_i sum_f w_i(f) ||J(f) - pred_i(f)||^2 exactly.
    """
    if len(window_preds) != len(windows) or (weights is not None and len(weights) != len(windows)):
        raise ConfigError("combine_windows needs one prediction (and weight vector) per window")
    first = window_preds[0]
    accumulate = torch.float64 if first.dtype == torch.float64 else torch.float32
    value = torch.zeros((*first.shape[:2], num_frames, *first.shape[3:]), dtype=accumulate, device=first.device)
    count = torch.zeros(num_frames, dtype=accumulate, device=first.device)
    for index, (pred, (start, end)) in enumerate(zip(window_preds, windows)):
        if pred.shape[2] != end - start:
            raise ConfigError(f"window {index} covers frames [{start}, {end}) but its prediction has "
                              f"{pred.shape[2]} frames")
        weight = torch.ones(end - start) if weights is None else weights[index]
        weight = weight.to(first.device, accumulate)
        frame_shape = (1, 1, end - start) + (1,) * (pred.ndim - 3)
        value[:, :, start:end] += pred.to(accumulate) * weight.view(frame_shape)
        count[start:end] += weight
    if bool((count <= 0).any()):
        missing = torch.nonzero(count <= 0).flatten().tolist()
        raise ConfigError(f"frames {missing[:8]} are covered by no window with positive weight")
    frame_shape = (1, 1, num_frames) + (1,) * (first.ndim - 3)
    return (value / count.view(frame_shape)).to(first.dtype)


# ----------------------------------------------------------------------------- sampling
def _per_sample(mapping: Mapping[str, Tensor] | None, batch: int) -> dict[str, Tensor] | None:
    """Expand batch-1 entries (a shared unconditional text embedding) to the video batch."""
    if mapping is None:
        return None
    return {key: value.expand(batch, *value.shape[1:]) if isinstance(value, Tensor) and value.shape[0] == 1
            else value for key, value in mapping.items()}


def _window_inputs(
    mapping: Mapping[str, Tensor] | None,
    chunk: Sequence[tuple[int, int]],
    temporal_keys: Sequence[str],
) -> dict[str, Tensor] | None:
    """Conditioning for a batch of windows, window-major: temporal entries sliced on T (dim 2)."""
    if mapping is None:
        return None
    out = {}
    for key, value in mapping.items():
        if value is None:
            out[key] = None
        elif key in temporal_keys:
            out[key] = torch.cat([value[:, :, start:end] for start, end in chunk])
        else:
            out[key] = torch.cat([value] * len(chunk))
    return out


def _check_temporal_keys(mapping: Mapping[str, Tensor] | None, keys: Sequence[str], num_frames: int,
                         name: str) -> None:
    if mapping is None:
        return
    for key in keys:
        if key not in mapping:
            raise ConfigError(f"temporal_cond_keys names {key!r}, which {name} does not have")
        value = mapping[key]
        if not isinstance(value, Tensor) or value.ndim < 3 or value.shape[2] != num_frames:
            shape = tuple(value.shape) if isinstance(value, Tensor) else type(value).__name__
            raise ConfigError(f"{name}[{key!r}] must be a video with {num_frames} frames on dim 2, got {shape}")


def multidiffusion_sample(
    denoise_fn: Denoiser,
    noise: Tensor,
    scheduler: SchedulerMixin,
    *,
    num_inference_steps: int,
    window: int,
    overlap: int = 2,
    cond: Mapping[str, Tensor] | None = None,
    uncond: Mapping[str, Tensor] | None = None,
    temporal_cond_keys: Sequence[str] = (),
    guidance_scale: float = 1.0,
    weighting: str = "flat",
    combine: str = "auto",
    non_overlapping: bool = False,
    window_batch_size: int | None = None,
    clip_denoised: bool = True,
    generator: torch.Generator | None = None,
    progress: bool = True,
    callback: StepCallback | None = None,
) -> Tensor:
    """Temporal MultiDiffusion sampling of a whole clip with a network that sees `window` frames.

    noise: x_T (B, C, T, H, W). `temporal_cond_keys` names the cond/uncond entries that are
    videos aligned with the output (e.g. the SSR's upsampled low-resolution video) and are sliced
    per window; every other entry is shared by all windows. `window_batch_size` windows go
    through the network in one forward (None: one window per forward, the memory-bounded
    choice). `non_overlapping=True` ignores `overlap` and `weighting` (App. C ablation).
    Supports DDPM, DDIM and DPM-Solver(++) schedulers; returns x_0 clipped to [-1, 1].
    """
    check_supported(scheduler)
    if num_inference_steps < 1:
        raise ConfigError(f"num_inference_steps must be >= 1, got {num_inference_steps}")
    if combine not in COMBINE_MODES:
        raise ConfigError(f"combine must be one of {COMBINE_MODES}, got {combine!r}")
    batch_size = window_batch_size or 1
    if batch_size < 1:
        raise ConfigError(f"window_batch_size must be >= 1, got {window_batch_size}")
    batch, _, num_frames = noise.shape[:3]

    if non_overlapping:
        windows, weights = non_overlapping_windows(num_frames, window)
    else:
        windows = temporal_windows(num_frames, window, overlap)
        weights = [window_weights(end - start, weighting) for start, end in windows]
    weights = [weight.to(noise.device) for weight in weights]
    if combine == "auto":
        combine = "prediction" if is_stochastic(scheduler) else "x_prev"

    cond = _per_sample(dict(cond or {}), batch)
    uncond = _per_sample(uncond, batch)
    _check_temporal_keys(cond, temporal_cond_keys, num_frames, "cond")
    _check_temporal_keys(uncond, temporal_cond_keys, num_frames, "uncond")

    master = stepping_scheduler(scheduler)  # steps; `scheduler` says how predictions are thresholded
    master.set_timesteps(num_inference_steps)
    timesteps = [int(t) for t in master.timesteps]
    window_schedulers = []
    if combine == "x_prev":  # one scheduler (and solver history) per window
        for _ in windows:
            window_scheduler = stepping_scheduler(scheduler)
            window_scheduler.set_timesteps(num_inference_steps)
            window_schedulers.append(window_scheduler)
    chunks = [list(range(i, min(i + batch_size, len(windows)))) for i in range(0, len(windows), batch_size)]

    x = noise * master.init_noise_sigma
    for step_index, timestep in enumerate(tqdm(timesteps, desc="multidiffusion", disable=not progress,
                                                leave=False)):
        predictions: list[Tensor] = [None] * len(windows)  # type: ignore[list-item]
        for chunk in chunks:
            spans = [windows[i] for i in chunk]
            x_windows = torch.cat([x[:, :, start:end] for start, end in spans])  # (k*B, C, L, H, W)
            output = prediction_for_step(
                denoise_fn, x_windows, timestep, scheduler,
                _window_inputs(cond, spans, temporal_cond_keys), _window_inputs(uncond, spans, temporal_cond_keys),
                guidance_scale, clip_denoised)
            for position, window_index in enumerate(chunk):
                predictions[window_index] = output[position * batch:(position + 1) * batch]
        if combine == "prediction":
            combined = combine_windows(predictions, windows, num_frames, weights)
            x = master.step(combined, timestep, x, generator=generator).prev_sample
        else:
            x_prev = [window_schedulers[i].step(predictions[i], timestep, x[:, :, start:end],
                                                generator=generator).prev_sample
                      for i, (start, end) in enumerate(windows)]
            x = combine_windows(x_prev, windows, num_frames, weights)
        if callback is not None:
            callback(step_index, timestep, x)
    return x.clamp(-1.0, 1.0)
