"""Learned variance (IF's learned_range): improved DDPM's L_hybrid against a direct float64 computation."""

import math

import pytest
import torch

from lumiere.diffusion import DiffusionObjective
from lumiere.diffusion.variational_bound import variational_bound_terms
from lumiere.errors import ConfigError


def direct_bound_term(alpha_bar: list[float], t: int, x0: float, x_t: float, eps_hat: float, v: float) -> float:
    """L_t in bits of one scalar pixel, written out from improved DDPM (Nichol & Dhariwal 2021) with math."""
    ab = alpha_bar[t]
    ab_prev = alpha_bar[t - 1] if t > 0 else 1.0
    beta = 1.0 - ab / ab_prev

    def posterior_variance(s: int) -> float:
        prev = alpha_bar[s - 1] if s > 0 else 1.0
        return (1.0 - alpha_bar[s] / prev) * (1.0 - prev) / (1.0 - alpha_bar[s])

    log_var_clipped = math.log(posterior_variance(max(t, 1)))  # beta~_0 = 0 is replaced by beta~_1
    log_var_model = (v + 1) / 2 * math.log(beta) + (1 - v) / 2 * log_var_clipped

    def mean(x_start: float) -> float:
        return (beta * math.sqrt(ab_prev) * x_start + (1 - ab_prev) * math.sqrt(1 - beta) * x_t) / (1 - ab)

    x0_hat = (x_t - math.sqrt(1 - ab) * eps_hat) / math.sqrt(ab)
    mu_true, mu_model = mean(x0), mean(x0_hat)
    if t > 0:
        nats = 0.5 * (-1 + log_var_model - log_var_clipped + math.exp(log_var_clipped - log_var_model)
                      + (mu_true - mu_model) ** 2 * math.exp(-log_var_model))
    else:
        std = math.exp(0.5 * log_var_model)

        def cdf(z: float) -> float:
            return 0.5 * (1 + math.erf(z / math.sqrt(2)))

        upper = cdf((x0 - mu_model + 1 / 255) / std) if x0 < 0.999 else 1.0
        lower = cdf((x0 - mu_model - 1 / 255) / std) if x0 > -0.999 else 0.0
        nats = -math.log(upper - lower)
    return nats / math.log(2)


CASES = [  # (t, x0, eps_hat, v): the decoder at t=0 (interior bin, both edge bins) and the KL terms
    (0, 0.3, 0.1, -0.5), (0, -1.0, -0.2, 0.2), (0, 1.0, 0.05, 0.9),
    (1, 0.5, 0.7, 0.0), (250, -0.4, -1.3, 0.8), (500, 0.9, 0.2, -0.9), (999, 0.1, -0.6, 0.4),
]


def test_bound_terms_match_a_direct_float64_computation():
    objective = DiffusionObjective()
    alpha_bar = objective.alphas_cumprod.double().tolist()
    t = torch.tensor([case[0] for case in CASES])
    x0 = torch.tensor([case[1] for case in CASES], dtype=torch.float64).view(-1, 1, 1, 1, 1)
    noise = torch.linspace(-1.5, 1.5, len(CASES), dtype=torch.float64).view(-1, 1, 1, 1, 1)
    eps_hat = torch.tensor([case[2] for case in CASES], dtype=torch.float64).view(-1, 1, 1, 1, 1)
    v = torch.tensor([case[3] for case in CASES], dtype=torch.float64).view(-1, 1, 1, 1, 1)
    seen = {}

    def model(x_t, timesteps, cond):
        seen["x_t"] = x_t
        return torch.cat([eps_hat, v], dim=1)

    _, info = objective.loss(model, x0, {}, timesteps=t, noise=noise)
    expected = [direct_bound_term(alpha_bar, case[0], case[1], float(seen["x_t"][i]), case[2], case[3])
                for i, case in enumerate(CASES)]
    # Both sides are float64 with the same alpha_bar; they differ only in operation order (and
    # log_ndtr vs log(cdf) at the edge bins), a few ulps of values of order 1-10 bits.
    torch.testing.assert_close(info["vlb_per_sample"], torch.tensor(expected, dtype=torch.float64),
                               rtol=1e-9, atol=1e-9)


def test_bound_vanishes_when_the_model_is_the_true_posterior():
    objective = DiffusionObjective()
    x0 = torch.rand(3, 3, 2, 4, 4, dtype=torch.float64) * 2 - 1
    noise = torch.randn(3, 3, 2, 4, 4, dtype=torch.float64)
    # v = -1 selects log beta~_t, the true posterior variance; epsilon is the true noise.
    _, info = objective.loss(lambda x_t, t, c: torch.cat([noise, -torch.ones_like(noise)], dim=1), x0, {},
                             timesteps=torch.tensor([1, 400, 999]), noise=noise)
    assert info["mse_per_sample"].abs().max() < 1e-20
    assert info["vlb_per_sample"].abs().max() < 1e-9  # float64 cancellation in the KL


def test_hybrid_loss_is_simple_loss_plus_lambda_times_T_bound():
    objective = DiffusionObjective(loss_weighting="min_snr")
    x0 = torch.rand(2, 3, 2, 4, 4) * 2 - 1
    output = torch.randn(2, 6, 2, 4, 4, generator=torch.Generator().manual_seed(0))
    t = torch.tensor([0, 600])
    loss, info = objective.loss(lambda x_t, ts, c: output, x0, {}, timesteps=t,
                                noise=torch.randn(2, 3, 2, 4, 4, generator=torch.Generator().manual_seed(1)))
    expected = info["weights"] * info["mse_per_sample"] + 0.001 * 1000 * info["vlb_per_sample"]
    torch.testing.assert_close(info["loss_per_sample"], expected)
    torch.testing.assert_close(loss, expected.mean())


def test_bound_trains_the_variance_half_only():
    objective = DiffusionObjective()
    x0 = torch.rand(2, 3, 2, 4, 4) * 2 - 1
    output = torch.randn(2, 6, 2, 4, 4, generator=torch.Generator().manual_seed(2), requires_grad=True)
    t = torch.tensor([0, 300])
    # The bound alone: no gradient reaches the epsilon half (stop-gradient on the mean).
    x_t = objective.add_noise(x0, torch.zeros_like(x0), t)
    vlb = variational_bound_terms(objective.posterior, x0, x_t, t, output[:, :3], output[:, 3:], "epsilon")
    (grad,) = torch.autograd.grad(vlb.sum(), output)
    assert torch.count_nonzero(grad[:, :3]) == 0
    assert torch.count_nonzero(grad[:, 3:]) == grad[:, 3:].numel()
    # The full hybrid loss: the epsilon half's gradient is the simple loss's alone.
    hybrid, _ = objective.loss(lambda x_t, ts, c: output, x0, {}, timesteps=t, noise=torch.zeros_like(x0))
    simple, _ = DiffusionObjective(variance_loss="none").loss(lambda x_t, ts, c: output, x0, {}, timesteps=t,
                                                              noise=torch.zeros_like(x0))
    (hybrid_grad,) = torch.autograd.grad(hybrid, output)
    (simple_grad,) = torch.autograd.grad(simple, output)
    # Exact: the same operations on the same tensors, plus the stopped bound's gradient of exactly zero.
    torch.testing.assert_close(hybrid_grad[:, :3], simple_grad[:, :3], rtol=0, atol=0)
    assert torch.count_nonzero(simple_grad[:, 3:]) == 0 and torch.count_nonzero(hybrid_grad[:, 3:]) > 0


def test_three_channel_models_get_the_simple_loss_under_either_setting():
    x0 = torch.rand(2, 3, 1, 4, 4) * 2 - 1
    output = torch.randn(2, 3, 1, 4, 4)
    t, noise = torch.tensor([3, 700]), torch.randn(2, 3, 1, 4, 4)
    hybrid, info = DiffusionObjective().loss(lambda x_t, ts, c: output, x0, {}, timesteps=t, noise=noise)
    simple, _ = DiffusionObjective(variance_loss="none").loss(lambda x_t, ts, c: output, x0, {}, timesteps=t,
                                                              noise=noise)
    assert "vlb_per_sample" not in info
    torch.testing.assert_close(hybrid, simple, rtol=0, atol=0)


def test_bad_variance_settings_are_config_errors():
    with pytest.raises(ConfigError, match="variance_loss"):
        DiffusionObjective(variance_loss="kl")
    with pytest.raises(ConfigError, match="vlb_weight"):
        DiffusionObjective(vlb_weight=-1.0)
