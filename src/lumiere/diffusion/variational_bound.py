"""The variational-bound term that trains a learned variance (improved DDPM, Nichol & Dhariwal 2021).

A U-Net with 2C output channels (DeepFloyd IF stage I and II) predicts, besides epsilon (or v),
an interpolation v in [-1, 1] between the two extreme reverse-process variances, in log space
(diffusers' and IF's ``variance_type="learned_range"``, improved DDPM eq. 15):

    log Sigma_theta(x_t, t) = (v + 1) / 2 * log beta_t + (1 - v) / 2 * log beta~_t

with beta~_t = beta_t (1 - alpha_bar_{t-1}) / (1 - alpha_bar_t) the posterior variance. That half
of the output is trained by the per-timestep terms of the variational bound (Ho et al. 2020
eq. 5; improved DDPM Sec. 3.1), in bits per dimension:

    L_t = KL( q(x_{t-1} | x_t, x_0) || p_theta(x_{t-1} | x_t) )         for t > 0
    L_0 = -log p_theta(x_0 | x_1)  (discretized Gaussian decoder)        for t = 0

where p_theta's mean comes from the predicted epsilon with a stop-gradient (L_hybrid trains the
mean with the simple loss only, the bound only reaches the variance).

Timesteps follow diffusers' indexing (0 .. T-1, timestep 0 is the first noising step), so the
decoder term is the one at t = 0. beta~_0 = 0, so its log is replaced by log beta~_1 everywhere,
as improved DDPM's ``posterior_log_variance_clipped`` does (diffusers' sampler clamps it to 1e-20
instead; the two agree for t > 0, and the sampler adds no noise at t = 0).

The decoder uses the exact normal CDF (``torch.special.ndtr`` / ``log_ndtr``) where improved DDPM
uses a tanh approximation of it; bins are 2/255 wide, the 8-bit quantisation of pixels in [-1, 1].
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from lumiere.diffusion.process import predict_x0

BIN_HALF_WIDTH = 1.0 / 255.0  # half of one 8-bit level of a pixel in [-1, 1]
LOG_PROBABILITY_FLOOR = 1e-12  # improved DDPM's floor on a bin's probability before the log


class PosteriorTables:
    """Per-timestep coefficients of q(x_{t-1} | x_t, x_0), in float64 (Ho et al. 2020 eq. 6-7)."""

    def __init__(self, alphas_cumprod: Tensor) -> None:
        alpha_bar = alphas_cumprod.double().cpu()
        alpha_bar_prev = torch.cat([alpha_bar.new_ones(1), alpha_bar[:-1]])
        beta = 1.0 - alpha_bar / alpha_bar_prev  # as diffusers' DDPM step computes it from alpha_bar
        variance = beta * (1.0 - alpha_bar_prev) / (1.0 - alpha_bar)
        self.alphas_cumprod = alpha_bar
        self.log_beta = beta.log()
        self.log_variance_clipped = torch.cat([variance[1:2], variance[1:]]).log()
        self.mean_coef_x0 = beta * alpha_bar_prev.sqrt() / (1.0 - alpha_bar)
        self.mean_coef_xt = (1.0 - alpha_bar_prev) * (1.0 - beta).sqrt() / (1.0 - alpha_bar)

    def at(self, name: str, t: Tensor, like: Tensor) -> Tensor:
        """Table `name` at per-sample timesteps t (B,), shaped (B, 1, ...) to broadcast against `like`."""
        values = getattr(self, name).to(like.device, like.dtype)[t.to(like.device).long()]
        return values.view(-1, *([1] * (like.ndim - 1)))

    def posterior_mean(self, x0: Tensor, x_t: Tensor, t: Tensor) -> Tensor:
        return self.at("mean_coef_x0", t, x_t) * x0 + self.at("mean_coef_xt", t, x_t) * x_t

    def model_log_variance(self, variance_output: Tensor, t: Tensor) -> Tensor:
        """log Sigma_theta from the learned-range interpolation output v (improved DDPM eq. 15)."""
        fraction = (variance_output + 1.0) / 2.0
        return (fraction * self.at("log_beta", t, variance_output)
                + (1.0 - fraction) * self.at("log_variance_clipped", t, variance_output))


def gaussian_kl(mean_q: Tensor, log_var_q: Tensor, mean_p: Tensor, log_var_p: Tensor) -> Tensor:
    """KL(N(mean_q, exp(log_var_q)) || N(mean_p, exp(log_var_p))) per element, in nats."""
    return 0.5 * (-1.0 + log_var_p - log_var_q + torch.exp(log_var_q - log_var_p)
                  + (mean_q - mean_p).pow(2) * torch.exp(-log_var_p))


def discretized_gaussian_log_likelihood(x: Tensor, mean: Tensor, log_scale: Tensor) -> Tensor:
    """log P(x) per element of a Gaussian integrated over x's 8-bit bin; the edge bins reach to +-inf."""
    inv_std = torch.exp(-log_scale)
    upper = inv_std * (x - mean + BIN_HALF_WIDTH)
    lower = inv_std * (x - mean - BIN_HALF_WIDTH)
    log_cdf_upper = torch.special.log_ndtr(upper)        # bin (-inf, -1 + 1/255]
    log_survival_lower = torch.special.log_ndtr(-lower)  # bin [1 - 1/255, inf)
    bin_mass = (torch.special.ndtr(upper) - torch.special.ndtr(lower)).clamp(min=LOG_PROBABILITY_FLOOR)
    return torch.where(x < -0.999, log_cdf_upper, torch.where(x > 0.999, log_survival_lower, bin_mass.log()))


def variational_bound_terms(
    tables: PosteriorTables,
    x0: Tensor,
    x_t: Tensor,
    t: Tensor,
    prediction: Tensor,
    variance_output: Tensor,
    prediction_type: str,
) -> Tensor:
    """L_t of every sample (B,), in bits per dimension; the mean of p_theta gets no gradient.

    `prediction` is the epsilon (or v) half of the model output, `variance_output` the
    learned-range half; x0, x_t (B, C, ...) and t (B,) are the training sample, its noisy
    version and its timestep.
    """
    mean_source = prediction.detach()  # stop-gradient: the bound trains the variance only
    predicted_x0 = predict_x0(mean_source, x_t, t, tables.alphas_cumprod, prediction_type)
    model_mean = tables.posterior_mean(predicted_x0, x_t, t)
    model_log_variance = tables.model_log_variance(variance_output, t)
    true_mean = tables.posterior_mean(x0, x_t, t)
    true_log_variance = tables.at("log_variance_clipped", t, x_t)
    reduce_dims = tuple(range(1, x0.ndim))
    kl = gaussian_kl(true_mean, true_log_variance, model_mean, model_log_variance).mean(dim=reduce_dims)
    decoder_nll = -discretized_gaussian_log_likelihood(x0, model_mean, 0.5 * model_log_variance).mean(dim=reduce_dims)
    nats = torch.where(t.to(kl.device) == 0, decoder_nll, kl)
    return nats / math.log(2.0)
