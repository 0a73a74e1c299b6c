"""IF's scheduler conventions: one STUNet sampling step equals diffusers' DDPM step of the 2D U-Net per frame.

With temporal resampling off, the STUNet at initialisation is the 2D U-Net applied frame by frame
(its temporal blocks are zero-initialised residuals), so one step of the project's sampler with
IF stage I's scheduler configuration (learned_range variance, dynamic thresholding 0.95 / 1.5,
squaredcos_cap_v2) must be diffusers' own `DDPMScheduler.step` on the stacked per-frame outputs,
with classifier-free guidance as diffusers' IFPipeline applies it (the epsilon half guided, the
conditional variance half kept).
"""

import pytest
import torch
from diffusers import DDPMScheduler, UNet2DConditionModel

from lumiere.diffusion import build_scheduler, dynamic_threshold, sample
from lumiere.errors import ConfigError
from lumiere.models import STUNet
from lumiere.models.rehearsal import IF_STAGE1_SCHEDULER, TEXT_WIDTH, if_stage1_unet_config

NUM_STEPS, STEP_INDEX = 10, 5  # one step at t = 499 of a 10-step schedule (well conditioned x0 <-> eps)
SEED = 7


@pytest.fixture(scope="module")
def if_like_unet():
    torch.manual_seed(0)
    unet = UNet2DConditionModel(**if_stage1_unet_config()).eval()
    # Random (not zero) output layer, so the variance half and epsilon are far from trivial.
    torch.nn.init.normal_(unet.conv_out.weight, std=0.05)
    return unet


def text_states(batch: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    hidden = torch.randn(batch, 6, TEXT_WIDTH, generator=generator)
    mask = torch.ones(batch, 6, dtype=torch.bool)
    mask[:, 4:] = False  # padding tokens, as a T5 prompt padded to max_length
    return hidden, mask


def step_inputs():
    """Text states, x_t at the tested timestep, and the reference scheduler set to the schedule."""
    generator = torch.Generator().manual_seed(1)
    cond, uncond = text_states(2, generator), text_states(2, generator)
    clean = torch.rand(2, 3, 3, 16, 16, generator=generator) * 2 - 1
    noise = torch.randn(2, 3, 3, 16, 16, generator=generator)
    reference = DDPMScheduler(**IF_STAGE1_SCHEDULER, timestep_spacing="trailing")  # the project's spacing
    reference.set_timesteps(NUM_STEPS)
    timestep = int(reference.timesteps[STEP_INDEX])
    x_t = reference.add_noise(clean, noise, torch.tensor([timestep]))
    # The second clip is scaled down so its 95% quantile of |x0| falls between 1 and sample_max_value.
    x_t[1] *= 0.5
    return cond, uncond, x_t, timestep, reference


def reference_step(unet, x_t, timestep, cond, uncond, guidance_scale, scheduler):
    """diffusers: the 2D U-Net on every frame, IFPipeline's guidance, DDPMScheduler.step on the clip."""
    batch, channels, frames, height, width = x_t.shape

    def per_frame(states):
        hidden, mask = states
        folded = x_t.permute(0, 2, 1, 3, 4).reshape(batch * frames, channels, height, width)
        out = unet(folded, timestep, encoder_hidden_states=hidden.repeat_interleave(frames, 0),
                   encoder_attention_mask=mask.repeat_interleave(frames, 0)).sample
        return out.reshape(batch, frames, -1, height, width).permute(0, 2, 1, 3, 4)

    output = per_frame(cond)
    if guidance_scale != 1.0:
        eps_text, variance = output.split(channels, dim=1)
        eps_uncond, _ = per_frame(uncond).split(channels, dim=1)
        output = torch.cat([eps_uncond + guidance_scale * (eps_text - eps_uncond), variance], dim=1)
    if scheduler.config.variance_type != "learned_range":
        output = output[:, :channels]
    return scheduler.step(output, timestep, x_t, generator=torch.Generator().manual_seed(SEED)).prev_sample


@pytest.mark.parametrize("guidance_scale", [1.0, 4.0])
@torch.no_grad()
def test_one_stunet_step_equals_diffusers_ddpm_step_per_frame(if_like_unet, guidance_scale):
    cond, uncond, x_t, timestep, reference = step_inputs()
    scheduler = build_scheduler("ddpm", scheduler_config=IF_STAGE1_SCHEDULER)
    assert [int(t) for t in reference.timesteps] == [int(t) for t in _timesteps(scheduler)]
    stunet = STUNet(if_like_unet, temporal_resampling=False)

    def denoise(x, t, c):
        return stunet(x, t, c["encoder_hidden_states"], encoder_attention_mask=c["encoder_attention_mask"])

    def as_cond(states):
        return {"encoder_hidden_states": states[0], "encoder_attention_mask": states[1]}

    ours = sample(denoise, x_t, scheduler, num_inference_steps=NUM_STEPS, start_step=STEP_INDEX,
                  end_step=STEP_INDEX + 1, cond=as_cond(cond), uncond=as_cond(uncond),
                  guidance_scale=guidance_scale, generator=torch.Generator().manual_seed(SEED), progress=False)
    expected = reference_step(if_like_unet, x_t, timestep, cond, uncond, guidance_scale, reference)
    # float32 throughout; the two sides differ by the STUNet's exact-zero residuals, the sampler's
    # x0 -> epsilon -> x0 round trip (alpha_bar_499 ~ 0.5: a few ulps of values of order 1) and
    # float64 vs float32 schedule coefficients.
    torch.testing.assert_close(ours, expected, atol=1e-5, rtol=0)

    # The check sees IF's settings: without dynamic thresholding, or with the fixed variance,
    # the reference step is visibly different.
    for changed in ({"thresholding": False}, {"variance_type": "fixed_small"}):
        other = DDPMScheduler(**{**IF_STAGE1_SCHEDULER, **changed}, timestep_spacing="trailing")
        other.set_timesteps(NUM_STEPS)
        assert (reference_step(if_like_unet, x_t, timestep, cond, uncond, guidance_scale, other)
                - expected).abs().max() > 1e-2


def test_the_clips_exercise_both_sides_of_the_threshold(if_like_unet):
    """Dynamic thresholding's s is clamped to 1.5 for one clip and strictly inside (1, 1.5) for the other."""
    cond, _, x_t, timestep, reference = step_inputs()
    with torch.no_grad():
        folded = x_t.permute(0, 2, 1, 3, 4).reshape(6, 3, 16, 16)
        eps = if_like_unet(folded, timestep, encoder_hidden_states=cond[0].repeat_interleave(3, 0),
                           encoder_attention_mask=cond[1].repeat_interleave(3, 0)).sample[:, :3]
    alpha_bar = reference.alphas_cumprod[timestep]
    x0 = (folded - (1 - alpha_bar).sqrt() * eps) / alpha_bar.sqrt()
    x0 = x0.reshape(2, 3, 3, 16, 16).permute(0, 2, 1, 3, 4)
    s = torch.quantile(x0.reshape(2, -1).abs(), 0.95, dim=1)
    assert s[0] > 1.5 and 1.0 < s[1] < 1.5


def _timesteps(scheduler):
    probe = type(scheduler).from_config(scheduler.config)
    probe.set_timesteps(NUM_STEPS)
    return probe.timesteps


def test_dynamic_threshold_is_diffusers_arithmetic_without_the_quantile_size_limit():
    scheduler = DDPMScheduler(**IF_STAGE1_SCHEDULER)
    x0 = torch.randn(3, 3, 4, 8, 8, generator=torch.Generator().manual_seed(0)) * torch.tensor([0.3, 1.2, 3.0]).view(3, 1, 1, 1, 1)
    # Same quantile from two order statistics instead of torch.quantile: equal up to float32 rounding of the interpolation.
    torch.testing.assert_close(dynamic_threshold(x0, 0.95, 1.5), scheduler._threshold_sample(x0), atol=1e-6, rtol=0)
    big = torch.randn(1, 1, 2**24 + 1, generator=torch.Generator().manual_seed(1)) * 2  # e.g. 80 frames at 256 px, batch 2
    assert big.numel() > 2**24  # torch.quantile (diffusers' thresholding) refuses this tensor
    thresholded = dynamic_threshold(big, 0.95, 1.5)
    assert thresholded.abs().max() <= 1.0 and thresholded.abs().max() > 0.99


def test_folder_settings_are_honoured_and_the_experiment_wins():
    folder = {**IF_STAGE1_SCHEDULER, "_class_name": "DDPMScheduler", "clip_sample": True,
              "timestep_spacing": "leading", "steps_offset": 1}
    ddpm = build_scheduler("ddpm", scheduler_config=folder)
    for key, value in IF_STAGE1_SCHEDULER.items():
        assert ddpm.config[key] == value
    assert ddpm.config.clip_sample  # the sampler thresholds instead (stepping_scheduler turns it off)
    assert ddpm.config.timestep_spacing == "trailing" and ddpm.config.steps_offset == 0  # spacing is ours
    overridden = build_scheduler("ddpm", scheduler_config=folder, thresholding=False, variance_type="fixed_small",
                                 prediction_type=None)
    assert not overridden.config.thresholding and overridden.config.variance_type == "fixed_small"
    assert overridden.config.prediction_type == "epsilon"  # None = not given: the folder's
    ddim = build_scheduler("ddim", scheduler_config=folder)  # no variance_type: the sampler strips it
    assert ddim.config.thresholding and ddim.config.sample_max_value == 1.5
    assert "variance_type" not in ddim.config
    assert build_scheduler("dpmsolver++", scheduler_config=folder).config.thresholding
    assert not build_scheduler("ddpm").config.thresholding  # no folder: as before
    with pytest.raises(ConfigError, match="scheduler_config"):
        build_scheduler("ddpm", scheduler_config="scheduler_config.json")


def test_a_learned_variance_scheduler_refuses_a_model_without_a_variance_half():
    scheduler = build_scheduler("ddpm", scheduler_config=IF_STAGE1_SCHEDULER)
    with pytest.raises(ConfigError, match="variance_type='learned_range'.*fixed_small"):
        sample(lambda x, t, c: torch.zeros_like(x), torch.randn(1, 3, 2, 4, 4), scheduler,
               num_inference_steps=2, progress=False)
