"""The training objective: exact targets, Min-SNR weights, shared schedule, learned variance."""

import math

import pytest
import torch

from lumiere.diffusion import (
    DiffusionObjective,
    OracleDenoiser,
    build_scheduler,
    model_output_from_x0,
    predict_x0,
)
from lumiere.errors import ConfigError


def cosine_alphas_cumprod(num_steps: int = 1000, offset: float = 0.008, max_beta: float = 0.999) -> torch.Tensor:
    """The cosine schedule (Nichol & Dhariwal 2021, eq. 17) computed independently of diffusers."""
    def f(t: float) -> float:
        return math.cos((t + offset) / (1 + offset) * math.pi / 2) ** 2

    betas = [min(1 - f((i + 1) / num_steps) / f(i / num_steps), max_beta) for i in range(num_steps)]
    return torch.cumprod(1 - torch.tensor(betas, dtype=torch.float64), dim=0)


def zero_denoiser(x_t, t, cond):
    return torch.zeros_like(x_t)


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
def test_loss_is_zero_for_an_oracle_and_positive_otherwise(prediction_type):
    objective = DiffusionObjective(prediction_type=prediction_type)
    x0 = torch.rand(3, 3, 4, 6, 6, generator=torch.Generator().manual_seed(0)) * 2 - 1
    oracle = OracleDenoiser(objective.alphas_cumprod, prediction_type, target=x0)
    generator = torch.Generator().manual_seed(1)
    # Include the extremes of the schedule, where the conversions are least well conditioned.
    timesteps = torch.tensor([0, 500, 999])
    loss, info = objective.loss(oracle, x0, {}, generator=generator, timesteps=timesteps)
    assert loss.item() == pytest.approx(0.0, abs=1e-8)
    assert torch.equal(info["timesteps"], timesteps)
    wrong, _ = objective.loss(zero_denoiser, x0, {}, generator=torch.Generator().manual_seed(1))
    assert wrong.item() > 0.01


def test_v_target_matches_its_definition():
    objective = DiffusionObjective(prediction_type="v_prediction")
    x0, noise = torch.randn(2, 3, 2, 4, 4), torch.randn(2, 3, 2, 4, 4)
    t = torch.tensor([10, 700])
    alpha_bar = cosine_alphas_cumprod()[t].float().view(2, 1, 1, 1, 1)
    expected = alpha_bar.sqrt() * noise - (1 - alpha_bar).sqrt() * x0
    torch.testing.assert_close(objective.target(x0, noise, t), expected, atol=1e-5, rtol=1e-4)


def test_schedule_is_the_cosine_schedule_shared_with_every_sampler():
    objective = DiffusionObjective()
    torch.testing.assert_close(objective.alphas_cumprod.double(), cosine_alphas_cumprod(), atol=1e-6, rtol=1e-5)
    for name in ("ddpm", "ddim", "dpmsolver++"):
        assert torch.equal(build_scheduler(name).alphas_cumprod, objective.alphas_cumprod)


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
def test_min_snr_weights_at_known_timesteps(prediction_type):
    gamma = 5.0
    objective = DiffusionObjective(prediction_type=prediction_type, loss_weighting="min_snr", min_snr_gamma=gamma)
    alpha_bar = cosine_alphas_cumprod()
    snr = alpha_bar / (1 - alpha_bar)
    t = torch.tensor([20, 400, 900])
    assert snr[20] > gamma and snr[400] < gamma  # one timestep on each side of the clamp
    expected = torch.minimum(snr[t], torch.tensor(gamma))
    expected = expected / snr[t] if prediction_type == "epsilon" else expected / (snr[t] + 1)
    torch.testing.assert_close(objective.loss_weights(t), expected, rtol=1e-4, atol=1e-7)
    if prediction_type == "epsilon":  # below the clamp epsilon-loss weights are exactly 1
        assert objective.loss_weights(torch.tensor([400, 900])).tolist() == [1.0, 1.0]
    uniform = DiffusionObjective(prediction_type=prediction_type)
    assert uniform.loss_weights(t).tolist() == [1.0, 1.0, 1.0]


def test_min_snr_loss_is_the_weighted_mean_of_per_sample_errors():
    objective = DiffusionObjective(loss_weighting="min_snr")
    x0 = torch.randn(3, 3, 2, 4, 4)
    t = torch.tensor([5, 300, 950])
    loss, info = objective.loss(zero_denoiser, x0, {}, timesteps=t, generator=torch.Generator().manual_seed(0))
    expected = (info["mse_per_sample"] * objective.loss_weights(t).float()).mean()
    torch.testing.assert_close(loss, expected)
    assert info["weights"][0] < 1.0  # high SNR at t=5 is down-weighted


@pytest.mark.parametrize("shape", [(2, 3, 1, 8, 8), (2, 3, 8, 8)], ids=["one-frame-video", "image"])
def test_loss_works_for_single_frames_and_images(shape):
    objective = DiffusionObjective()
    x0 = torch.rand(shape) * 2 - 1
    loss, info = objective.loss(OracleDenoiser(objective.alphas_cumprod, target=x0), x0, {},
                                generator=torch.Generator().manual_seed(0))
    assert loss.ndim == 0 and loss.item() == pytest.approx(0.0, abs=1e-8)
    assert info["loss_per_sample"].shape == (2,)


def test_learned_variance_half_is_ignored_and_gets_no_gradient_without_the_bound_term():
    objective = DiffusionObjective(variance_loss="none")
    x0 = torch.rand(2, 3, 2, 4, 4) * 2 - 1
    oracle = OracleDenoiser(objective.alphas_cumprod, target=x0)
    variance = torch.zeros(2, 3, 2, 4, 4, requires_grad=True)

    def learned_variance_model(x_t, t, cond):
        return torch.cat([oracle(x_t, t, cond), variance * 100.0], dim=1)

    loss, _ = objective.loss(learned_variance_model, x0, {}, generator=torch.Generator().manual_seed(0))
    assert loss.item() == pytest.approx(0.0, abs=1e-8)
    loss.backward()
    assert variance.grad is not None and torch.count_nonzero(variance.grad) == 0


def test_loss_is_reproducible_given_a_generator():
    objective = DiffusionObjective()
    x0 = torch.randn(4, 3, 2, 4, 4)
    first = objective.loss(zero_denoiser, x0, {}, generator=torch.Generator().manual_seed(3))
    second = objective.loss(zero_denoiser, x0, {}, generator=torch.Generator().manual_seed(3))
    assert torch.equal(first[0], second[0]) and torch.equal(first[1]["timesteps"], second[1]["timesteps"])


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
def test_predict_x0_inverts_the_forward_process(prediction_type):
    objective = DiffusionObjective(prediction_type=prediction_type)
    x0, noise = torch.rand(3, 3, 2, 4, 4) * 2 - 1, torch.randn(3, 3, 2, 4, 4)
    t = torch.tensor([1, 500, 990])
    x_t = objective.add_noise(x0, noise, t)
    torch.testing.assert_close(objective.predict_x0(objective.target(x0, noise, t), x_t, t), x0,
                               atol=1e-4, rtol=1e-4)
    output = torch.randn_like(x0)
    implied = predict_x0(output, x_t, t, objective.alphas_cumprod, prediction_type)
    torch.testing.assert_close(model_output_from_x0(implied, x_t, t, objective.alphas_cumprod, prediction_type),
                               output, atol=1e-3, rtol=1e-3)


def test_invalid_settings_raise_config_errors():
    with pytest.raises(ConfigError):
        DiffusionObjective(prediction_type="sample_x")
    with pytest.raises(ConfigError):
        DiffusionObjective(loss_weighting="p2")
    objective = DiffusionObjective()
    with pytest.raises(ConfigError, match="channels"):
        objective.loss(lambda x, t, c: torch.zeros(x.shape[0], 5, *x.shape[2:]), torch.zeros(1, 3, 1, 4, 4), {})


def test_noise_is_the_papers_iid_gaussian_for_a_batch_or_one_clip():
    from lumiere.diffusion import DiffusionObjective

    iid = DiffusionObjective().draw_noise((2, 3, 4, 8, 8), generator=torch.Generator().manual_seed(3))
    assert torch.equal(iid, torch.randn((2, 3, 4, 8, 8), generator=torch.Generator().manual_seed(3)))
    one_clip = DiffusionObjective().draw_noise((3, 4, 8, 8), generator=torch.Generator().manual_seed(1))
    assert torch.equal(one_clip, torch.randn((3, 4, 8, 8), generator=torch.Generator().manual_seed(1)))


def test_training_draws_uniform_timesteps_from_the_objective_after_the_noise():
    """The Lightning module's per-sample draws go through the objective: noise first, then t uniform."""
    from functools import partial

    from lumiere.models import build_tiny_text_encoder, build_unet
    from lumiere.training import TextToImageModule

    seen = []
    objective = DiffusionObjective()
    module = TextToImageModule(unet=build_unet("if_stage1_tiny"), text_encoder=build_tiny_text_encoder(),
                               objective=objective, optimizer=partial(torch.optim.AdamW, lr=1e-4))
    original = objective.loss

    def recording_loss(*args, timesteps, **kwargs):
        seen.append(timesteps)
        return original(*args, timesteps=timesteps, **kwargs)

    objective.loss = recording_loss
    batch = {"video": torch.zeros(64, 3, 1, 16, 16), "caption": ["a red circle"] * 64}
    module.diffusion_loss(batch, [torch.Generator().manual_seed(i) for i in range(64)])

    def expected_draw(seed: int) -> torch.Tensor:
        generator = torch.Generator().manual_seed(seed)
        torch.randn((3, 1, 16, 16), generator=generator)  # the noise is drawn first
        return torch.randint(0, 1000, (), generator=generator)

    assert torch.equal(seen[-1], torch.stack([expected_draw(i) for i in range(64)]))
