"""The denoising training objective (Ho et al. 2020), with epsilon or v targets and Min-SNR weighting.

Lumiere trains the newly added temporal layers with the standard diffusion loss of the T2I model
it inflates (Sec. 3.1); only the target parameterisation and the per-timestep weight are choices:

    L = E_{x0, eps, t} [ w(t) * || f(x_t, t, cond) - target(x0, eps, t) ||^2 ]

with t uniform over the training timesteps.
`loss_weighting="min_snr"` is Min-SNR-gamma (Hang et al. 2023): w(t) = min(SNR(t), gamma) / SNR(t)
for epsilon targets and min(SNR(t), gamma) / (SNR(t) + 1) for v targets, i.e. the x0-space weight
min(SNR, gamma) expressed for the target actually regressed.

Learned variance: a model with 2C output channels (DeepFloyd IF) predicts epsilon (or v) and a
log-variance interpolation (``learned_range``). `variance_loss` chooses how it trains:
- "vlb" (default): improved DDPM's L_hybrid (Nichol & Dhariwal 2021, Sec. 3.1), the simple loss
  above on the first C channels plus lambda * L_vlb on the variance half, with a stop-gradient on
  the mean inside L_vlb (`lumiere.diffusion.variational_bound`). Sampling one uniform t estimates
  L_vlb = sum_t L_t as T * L_t, so the per-sample term added is lambda * T * L_t (lambda = 0.001,
  the paper's value; improved DDPM's code writes it as L_t * T / 1000).
- "none": the simple loss on the first C channels only; the variance half gets no gradient.
A model with C output channels has no variance half and both give the simple loss.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import torch
from diffusers import DDPMScheduler
from torch import Tensor

from lumiere.diffusion.process import (
    add_noise,
    check_prediction_type,
    make_noise,
    predict_x0,
    signal_to_noise_ratio,
    split_variance,
    training_target,
)
from lumiere.diffusion.variational_bound import PosteriorTables, variational_bound_terms
from lumiere.errors import ConfigError

LOSS_WEIGHTINGS = ("uniform", "min_snr")
VARIANCE_LOSSES = ("vlb", "none")

Denoiser = Callable[[Tensor, Tensor, Mapping[str, Tensor]], Tensor]


class DiffusionObjective:
    """Samples (t, eps), noises x0 and regresses the model output on the epsilon or v target."""

    def __init__(
        self,
        num_train_timesteps: int = 1000,          # length of the noise schedule
        beta_schedule: str = "squaredcos_cap_v2",  # must match the sampler's scheduler
        prediction_type: str = "epsilon",          # "epsilon" | "v_prediction"
        loss_weighting: str = "uniform",           # "uniform" | "min_snr"
        min_snr_gamma: float = 5.0,                # Min-SNR clamp (Hang et al. 2023 use 5)
        # A learned-variance U-Net (IF) keeps L_hybrid by default: its frozen layers were trained with
        # it, and the STUNet's new temporal layers change the features the variance head reads, so
        # without the bound term its variance would drift from what the sampler assumes.
        variance_loss: str = "vlb",                # "vlb" (L_hybrid) | "none" (simple loss only)
        vlb_weight: float = 0.001,                 # lambda of L_hybrid (improved DDPM)
    ) -> None:
        check_prediction_type(prediction_type)
        if loss_weighting not in LOSS_WEIGHTINGS:
            raise ConfigError(f"loss_weighting must be one of {LOSS_WEIGHTINGS}, got {loss_weighting!r}")
        if min_snr_gamma <= 0:
            raise ConfigError(f"min_snr_gamma must be positive, got {min_snr_gamma}")
        if variance_loss not in VARIANCE_LOSSES:
            raise ConfigError(f"variance_loss must be one of {VARIANCE_LOSSES}, got {variance_loss!r}")
        if vlb_weight < 0:
            raise ConfigError(f"vlb_weight must be >= 0, got {vlb_weight}")
        self.num_train_timesteps = num_train_timesteps
        self.beta_schedule = beta_schedule
        self.prediction_type = prediction_type
        self.loss_weighting = loss_weighting
        self.min_snr_gamma = float(min_snr_gamma)
        self.variance_loss = variance_loss
        self.vlb_weight = float(vlb_weight)
        # The schedule is taken from the scheduler class the samplers use, so training and
        # sampling cannot disagree on alpha_bar.
        reference = DDPMScheduler(num_train_timesteps=num_train_timesteps, beta_schedule=beta_schedule,
                                  prediction_type=prediction_type)
        self.alphas_cumprod: Tensor = reference.alphas_cumprod.clone()
        self.posterior = PosteriorTables(self.alphas_cumprod)

    def __repr__(self) -> str:
        return (f"DiffusionObjective(num_train_timesteps={self.num_train_timesteps}, "
                f"beta_schedule={self.beta_schedule!r}, prediction_type={self.prediction_type!r}, "
                f"loss_weighting={self.loss_weighting!r}, min_snr_gamma={self.min_snr_gamma}, "
                f"variance_loss={self.variance_loss!r}, vlb_weight={self.vlb_weight})")

    # ------------------------------------------------------------------ noise
    def draw_noise(self, shape: Sequence[int], generator: torch.Generator | None = None,
                   device: torch.device | str | None = None) -> Tensor:
        """Unit-variance i.i.d. Gaussian noise of ``shape`` ((C, T, H, W) for one clip or (B, C, T, H, W)):
        the one place training and sampling draw their starting noise."""
        return make_noise(shape, generator=generator, device=device)

    # ------------------------------------------------------------------ schedule quantities
    def add_noise(self, x0: Tensor, noise: Tensor, t: Tensor | int) -> Tensor:
        return add_noise(x0, noise, t, self.alphas_cumprod)

    def target(self, x0: Tensor, noise: Tensor, t: Tensor | int) -> Tensor:
        return training_target(x0, noise, t, self.alphas_cumprod, self.prediction_type)

    def predict_x0(self, model_output: Tensor, x_t: Tensor, t: Tensor | int) -> Tensor:
        """The clean sample implied by a model output (prediction half if it has 2C channels)."""
        prediction, _ = split_variance(model_output, x_t.shape[1])
        return predict_x0(prediction, x_t, t, self.alphas_cumprod, self.prediction_type)

    def snr(self, t: Tensor | int) -> Tensor:
        return signal_to_noise_ratio(t, self.alphas_cumprod)

    def loss_weights(self, t: Tensor) -> Tensor:
        """Per-sample weight w(t) (float64, on t's device) of the squared error on the chosen target."""
        if self.loss_weighting == "uniform":
            t = torch.as_tensor(t)
            return torch.ones(t.shape, dtype=torch.float64, device=t.device)
        snr = self.snr(t)
        clamped = snr.clamp(max=self.min_snr_gamma)
        return clamped / snr if self.prediction_type == "epsilon" else clamped / (snr + 1.0)

    def sample_timesteps(self, batch_size: int, *, generator: torch.Generator | None = None,
                         device: torch.device | str | None = None) -> Tensor:
        """t uniform over the training timesteps."""
        draw_device = generator.device if generator is not None else "cpu"
        t = torch.randint(0, self.num_train_timesteps, (batch_size,), generator=generator, device=draw_device)
        return t.to(device) if device is not None else t

    # ------------------------------------------------------------------ the loss
    def loss(
        self,
        denoise_fn: Denoiser,
        x0: Tensor,
        cond: Mapping[str, Tensor],
        *,
        generator: torch.Generator | None = None,
        timesteps: Tensor | None = None,
        noise: Tensor | None = None,
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """Weighted denoising loss of `denoise_fn(x_t, t, cond)` on clean samples x0 (B, C, ...).

        Returns the scalar loss (batch mean of the per-sample losses) and an info dict:
        `loss_per_sample` (weighted MSE, plus the bound term for a learned variance under "vlb"),
        `mse_per_sample` (unweighted), `weights`, `timesteps`, and `vlb_per_sample` (L_t in bits
        per dimension) when the bound term is used.
        """
        batch, channels = x0.shape[:2]
        if timesteps is None:
            timesteps = self.sample_timesteps(batch, generator=generator, device=x0.device)
        else:  # caller-chosen timesteps are checked (sampled ones are valid by construction)
            timesteps = torch.as_tensor(timesteps, device=x0.device).long()
            if timesteps.shape != (batch,):
                raise ConfigError(f"timesteps must have shape ({batch},), got {tuple(timesteps.shape)}")
            if timesteps.min() < 0 or timesteps.max() >= self.num_train_timesteps:
                raise ConfigError(f"timesteps must lie in [0, {self.num_train_timesteps})")
        if noise is None:
            noise = make_noise(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype)
        x_t = self.add_noise(x0, noise, timesteps)
        model_output = denoise_fn(x_t, timesteps, dict(cond))
        if model_output.shape[0] != batch or model_output.shape[2:] != x0.shape[2:]:
            raise ConfigError(f"the denoiser returned shape {tuple(model_output.shape)} for input "
                              f"{tuple(x0.shape)}")
        prediction, variance = split_variance(model_output, channels)
        target = self.target(x0, noise, timesteps)
        reduce_dims = tuple(range(1, x0.ndim))
        compute_dtype = torch.promote_types(prediction.dtype, torch.float32)
        mse = (prediction.to(compute_dtype) - target.to(compute_dtype)).pow(2).mean(dim=reduce_dims)
        weights = self.loss_weights(timesteps).to(mse.dtype)
        per_sample = weights * mse
        info = {"mse_per_sample": mse.detach(), "weights": weights, "timesteps": timesteps}
        if variance is not None and self.variance_loss == "vlb":
            vlb = variational_bound_terms(self.posterior, x0.to(compute_dtype), x_t.to(compute_dtype), timesteps,
                                          prediction.to(compute_dtype), variance.to(compute_dtype),
                                          self.prediction_type)
            per_sample = per_sample + self.vlb_weight * self.num_train_timesteps * vlb
            info["vlb_per_sample"] = vlb.detach()
        info["loss_per_sample"] = per_sample.detach()
        return per_sample.mean(), info
