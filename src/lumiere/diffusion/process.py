"""The Gaussian forward process and the two model parameterisations used in this project.

Forward process (Ho et al. 2020, eq. 4), with alpha-bar the cumulative product of (1 - beta):

    x_t = sqrt(alpha_bar_t) * x_0 + sqrt(1 - alpha_bar_t) * eps,        eps ~ N(0, I)

The network predicts either the noise (``"epsilon"``) or the velocity (``"v_prediction"``,
Salimans & Ho 2022): ``v = sqrt(alpha_bar_t) * eps - sqrt(1 - alpha_bar_t) * x_0``.

Every function here takes the ``alphas_cumprod`` of a diffusers scheduler, so training
(`lumiere.diffusion.objective`) and sampling (`lumiere.diffusion.sampling`) share one noise
schedule. Tensors may have any number of dimensions after the batch: a video (B, C, T, H, W),
a still image as a one-frame video, or an image (B, C, H, W).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from lumiere.errors import ConfigError

PREDICTION_TYPES = ("epsilon", "v_prediction")


def check_prediction_type(prediction_type: str) -> str:
    if prediction_type not in PREDICTION_TYPES:
        raise ConfigError(f"prediction_type must be one of {PREDICTION_TYPES}, got {prediction_type!r}")
    return prediction_type


def make_noise(
    shape: Sequence[int],
    *,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    """Standard normal noise drawn on the generator's device, then moved to `device`.

    Drawing on the generator's device makes a seed give the same noise whatever device the
    model runs on (a CPU generator and a CUDA model is the usual case).
    """
    draw_device = generator.device if generator is not None else (device or "cpu")
    noise = torch.randn(tuple(shape), generator=generator, device=draw_device, dtype=dtype)
    return noise.to(device) if device is not None else noise


def _alpha_bar(alphas_cumprod: Tensor, t: Tensor | int) -> Tensor:
    """alpha_bar at t, in float64, on t's device (no device-to-host sync for training timesteps)."""
    t = torch.as_tensor(t)
    dtype = torch.float32 if t.device.type == "mps" else torch.float64  # MPS has no float64
    return alphas_cumprod.to(t.device, dtype)[t.long()]


def _schedule_coefficients(alphas_cumprod: Tensor, t: Tensor | int, like: Tensor) -> tuple[Tensor, Tensor]:
    """sqrt(alpha_bar_t) and sqrt(1 - alpha_bar_t), shaped to broadcast against `like`.

    `t` is a scalar timestep (sampling: the whole batch is at one step) or a (B,) tensor
    (training: one timestep per sample). Computed in float64, returned in `like`'s dtype.
    """
    alpha_bar = _alpha_bar(alphas_cumprod, t)
    if alpha_bar.ndim == 1:  # per-sample timesteps: (B,) -> (B, 1, 1, ...)
        alpha_bar = alpha_bar.view(-1, *([1] * (like.ndim - 1)))
    signal = alpha_bar.sqrt().to(like.device, like.dtype)
    noise = (1.0 - alpha_bar).sqrt().to(like.device, like.dtype)
    return signal, noise


def add_noise(x0: Tensor, noise: Tensor, t: Tensor | int, alphas_cumprod: Tensor) -> Tensor:
    """Sample q(x_t | x_0): the clean sample noised to timestep t."""
    signal, sigma = _schedule_coefficients(alphas_cumprod, t, x0)
    return signal * x0 + sigma * noise


def training_target(x0: Tensor, noise: Tensor, t: Tensor | int, alphas_cumprod: Tensor,
                    prediction_type: str) -> Tensor:
    """What the network is trained to output at x_t: the noise, or the velocity v."""
    check_prediction_type(prediction_type)
    if prediction_type == "epsilon":
        return noise
    signal, sigma = _schedule_coefficients(alphas_cumprod, t, x0)
    return signal * noise - sigma * x0


def predict_x0(model_output: Tensor, x_t: Tensor, t: Tensor | int, alphas_cumprod: Tensor,
               prediction_type: str) -> Tensor:
    """The clean sample implied by a model output (its first C channels) at x_t."""
    check_prediction_type(prediction_type)
    signal, sigma = _schedule_coefficients(alphas_cumprod, t, x_t)
    if prediction_type == "epsilon":
        return (x_t - sigma * model_output) / signal
    return signal * x_t - sigma * model_output


def model_output_from_x0(x0: Tensor, x_t: Tensor, t: Tensor | int, alphas_cumprod: Tensor,
                         prediction_type: str) -> Tensor:
    """Inverse of `predict_x0`: the model output that implies clean sample `x0` at x_t."""
    check_prediction_type(prediction_type)
    signal, sigma = _schedule_coefficients(alphas_cumprod, t, x_t)
    if prediction_type == "epsilon":
        return (x_t - signal * x0) / sigma
    return (signal * x_t - x0) / sigma


def signal_to_noise_ratio(t: Tensor | int, alphas_cumprod: Tensor) -> Tensor:
    """SNR(t) = alpha_bar_t / (1 - alpha_bar_t), in float64 on t's device."""
    alpha_bar = _alpha_bar(alphas_cumprod, t)
    return alpha_bar / (1.0 - alpha_bar)


def split_variance(model_output: Tensor, channels: int) -> tuple[Tensor, Tensor | None]:
    """Split a learned-variance output (2C channels: prediction, then variance) into its halves.

    Models such as DeepFloyd IF output 2C channels (Nichol & Dhariwal 2021); a model with C
    output channels has no variance half and gets None.
    """
    out_channels = model_output.shape[1]
    if out_channels == channels:
        return model_output, None
    if out_channels == 2 * channels:
        return model_output[:, :channels], model_output[:, channels:]
    raise ConfigError(
        f"the denoiser returned {out_channels} channels for a {channels}-channel sample; "
        f"expected {channels} or {2 * channels} (learned variance)")
