"""Samplers: schedulers, reproducibility, exactness on an oracle, learned variance, SDEdit."""

import pytest
import torch
from diffusers import DDIMScheduler, DDPMScheduler, DPMSolverMultistepScheduler

from lumiere.diffusion import (
    OracleDenoiser,
    build_scheduler,
    make_noise,
    sample,
    sdedit,
    sdedit_schedule,
)
from lumiere.errors import ConfigError

SHAPE = (2, 3, 4, 6, 6)
SOLVERS = ["ddpm", "ddim", "dpmsolver++", "dpmsolver"]


def linear_denoiser(x_t, t, cond):
    """A fixed affine function of the input and the conditioning (not a good denoiser)."""
    return 0.6 * x_t + 0.2 * torch.roll(x_t, 1, dims=2) + cond["bias"].view(-1, 1, 1, 1, 1)


def target_video(seed=0):
    return torch.rand(SHAPE, generator=torch.Generator().manual_seed(seed)) * 1.6 - 0.8


def test_build_scheduler_classes_and_settings():
    expected = {"ddpm": DDPMScheduler, "ddim": DDIMScheduler, "dpmsolver++": DPMSolverMultistepScheduler,
                "dpmsolver": DPMSolverMultistepScheduler}
    for name, cls in expected.items():
        scheduler = build_scheduler(name, prediction_type="v_prediction")
        assert isinstance(scheduler, cls)
        assert scheduler.config.prediction_type == "v_prediction"
        assert not scheduler.config.get("clip_sample", False)  # the sampler clips, not the scheduler
        scheduler.set_timesteps(4)
        assert int(scheduler.timesteps[0]) >= 990  # trailing spacing starts at (nearly) pure noise
    assert build_scheduler("dpmsolver++").config.algorithm_type == "dpmsolver++"
    assert build_scheduler("ddpm", variance_type="learned_range").config.variance_type == "learned_range"
    with pytest.raises(ConfigError):
        build_scheduler("euler")
    with pytest.raises(ConfigError):
        build_scheduler("ddim", variance_type="learned_range")
    with pytest.raises(ConfigError):
        build_scheduler("ddim", prediction_type="sample_x")


@pytest.mark.parametrize("name", ["ddpm", "ddim", "dpmsolver++"])
def test_sampling_is_reproducible_given_a_seed(name):
    scheduler = build_scheduler(name)
    cond = {"bias": torch.tensor([0.1, -0.2])}

    def run(noise_seed, step_seed):
        noise = make_noise(SHAPE, generator=torch.Generator().manual_seed(noise_seed))
        return sample(linear_denoiser, noise, scheduler, num_inference_steps=5, cond=cond,
                      generator=torch.Generator().manual_seed(step_seed), progress=False)

    first = run(0, 1)
    assert torch.equal(first, run(0, 1))  # same scheduler object reused: its state does not leak
    assert not torch.equal(first, run(2, 1))
    # DDPM's per-step noise comes from the generator; the deterministic solvers ignore it.
    assert torch.equal(first, run(0, 3)) == (name != "ddpm")
    assert first.min() >= -1 and first.max() <= 1


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
@pytest.mark.parametrize("name", SOLVERS)
def test_oracle_denoiser_is_recovered_by_every_solver(name, prediction_type):
    scheduler = build_scheduler(name, prediction_type=prediction_type)
    target = target_video()
    oracle = OracleDenoiser(scheduler.alphas_cumprod, prediction_type, target=target)
    noise = make_noise(SHAPE, generator=torch.Generator().manual_seed(0))
    result = sample(oracle, noise, scheduler, num_inference_steps=4, generator=torch.Generator().manual_seed(0),
                    progress=False)
    # DPM-Solver (noise space) stops at sigma_min ~ 0.0064 instead of 0: a little noise is left.
    torch.testing.assert_close(result, target, atol=5e-2 if name == "dpmsolver" else 1e-4, rtol=0)
    assert oracle.calls == 4


def test_guided_sampling_with_scale_one_ignores_the_unconditional_input():
    scheduler = build_scheduler("ddim")
    noise = make_noise(SHAPE, generator=torch.Generator().manual_seed(0))
    cond, uncond = {"bias": torch.tensor([0.1, -0.2])}, {"bias": torch.tensor([5.0, 5.0])}
    plain = sample(linear_denoiser, noise, scheduler, num_inference_steps=3, cond=cond, progress=False)
    guided = sample(linear_denoiser, noise, scheduler, num_inference_steps=3, cond=cond, uncond=uncond,
                    guidance_scale=1.0, progress=False)
    assert torch.equal(plain, guided)
    stronger = sample(linear_denoiser, noise, scheduler, num_inference_steps=3, cond=cond, uncond=uncond,
                      guidance_scale=3.0, progress=False)
    assert not torch.equal(plain, stronger)


def test_learned_variance_is_used_by_ddpm_only():
    noise = make_noise(SHAPE, generator=torch.Generator().manual_seed(0))
    cond = {"bias": torch.tensor([0.1, -0.2])}

    def with_variance(value):
        return lambda x, t, c: torch.cat([linear_denoiser(x, t, c), torch.full_like(x, value)], dim=1)

    def run(name, denoiser, **options):
        return sample(denoiser, noise, build_scheduler(name, **options), num_inference_steps=4, cond=cond,
                      generator=torch.Generator().manual_seed(1), progress=False)

    # DDIM and DPM-Solver read the prediction half only.
    for name in ("ddim", "dpmsolver++"):
        assert torch.equal(run(name, with_variance(-1.0)), run(name, linear_denoiser))
    # DDPM with learned_range interpolates its log-variance with the second half.
    low = run("ddpm", with_variance(-1.0), variance_type="learned_range")
    high = run("ddpm", with_variance(1.0), variance_type="learned_range")
    assert not torch.equal(low, high)


def test_callback_sees_every_step():
    seen = []
    noise = make_noise(SHAPE, generator=torch.Generator().manual_seed(0))
    sample(linear_denoiser, noise, build_scheduler("ddim"), num_inference_steps=4,
           cond={"bias": torch.zeros(2)}, progress=False, callback=lambda i, t, x: seen.append((i, t, x.shape)))
    assert [(i, t) for i, t, _ in seen] == [(0, 999), (1, 749), (2, 499), (3, 249)]


def test_sdedit_schedule():
    assert sdedit_schedule(0.5, 25, 1000) == (50, 25)
    assert sdedit_schedule(1.0, 10, 1000) == (10, 10)
    assert sdedit_schedule(1e-3, 5, 1000) == (1000, 1)  # one step from t = 0
    for strength in (0.0, -0.1, 1.5):
        with pytest.raises(ConfigError, match="strength"):
            sdedit_schedule(strength, 10, 1000)


@pytest.mark.parametrize("name", ["ddim", "dpmsolver++", "ddpm"])
def test_sdedit_with_tiny_strength_returns_the_input(name):
    video = target_video(1)
    result = sdedit(linear_denoiser, video, build_scheduler(name), 1e-3, num_inference_steps=3,
                    cond={"bias": torch.zeros(2)}, generator=torch.Generator().manual_seed(0), progress=False)
    assert (result - video).abs().max() < 0.05
    with pytest.raises(ConfigError, match="strength"):
        sdedit(linear_denoiser, video, build_scheduler(name), 0.0, num_inference_steps=3, progress=False)


def test_sdedit_starts_at_the_strength_fraction_of_the_schedule():
    video, target = target_video(1), target_video(2)
    scheduler = build_scheduler("ddim")
    seen = []
    oracle = OracleDenoiser(scheduler.alphas_cumprod, target=target)
    result = sdedit(oracle, video, scheduler, 0.5, num_inference_steps=5, progress=False,
                    generator=torch.Generator().manual_seed(0), callback=lambda i, t, x: seen.append(t))
    assert len(seen) == 5 and seen[0] == 499  # noised to t0 = 0.5 * 1000, five steps down to 0
    torch.testing.assert_close(result, target, atol=1e-4, rtol=0)
