"""The SSR module and its temporal MultiDiffusion sampling (Sec. 3.2, App. C), on tiny modules built in Python.

The inflated SSR is `STUNet(2D SSR, temporal_resampling=False)`; where a property needs frames to
interact inside a window, its zero-initialised temporal output projections are given small random
values (a freshly inflated SSR is exactly frame-by-frame).
"""

from __future__ import annotations

import functools

import pytest
import torch

from lumiere.diffusion import DiffusionObjective, sample, temporal_windows
from lumiere.errors import ConfigError
from lumiere.models import STUNet, build_tiny_text_encoder, build_unet
from lumiere.training.ssr import SSR_META_FILE, SuperResolutionModule

LOW, HIGH = 8, 16  # if_stage2_tiny made smaller still (sample_size 16): 8 -> 16 px
PROMPTS = ["a red circle moving right", "a blue square rotating"]


def module_kwargs() -> dict:
    return dict(
        objective=DiffusionObjective(num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2"),
        optimizer=functools.partial(torch.optim.AdamW, lr=1e-4),
        ema_decay=None,
        sampler={"scheduler": "ddim", "num_inference_steps": 3, "guidance_scale": 1.0},
    )


@pytest.fixture(scope="module")
def text_encoder_path(tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("t2i") / "text_encoder"
    build_tiny_text_encoder().save_pretrained(path)
    return str(path)


@pytest.fixture(scope="module")
def ssr_2d(text_encoder_path):
    torch.manual_seed(0)
    module = SuperResolutionModule(unet=build_unet("if_stage2_tiny", sample_size=HIGH),
                                   text_encoder_path=text_encoder_path, low_res_size=LOW, **module_kwargs())
    return module.eval()


@pytest.fixture(scope="module")
def ssr_export(ssr_2d, tmp_path_factory):
    out_dir = tmp_path_factory.mktemp("ssr")
    ssr_2d.export_pretrained(str(out_dir))
    return out_dir / "ssr_unet"


def inflate(ssr_export, text_encoder_path, **overrides) -> SuperResolutionModule:
    stunet = functools.partial(STUNet, temporal_resampling=False, num_temporal_attention_layers=1)
    kwargs = dict(unet_path=str(ssr_export), stunet=stunet, text_encoder_path=text_encoder_path,
                  low_res_size=LOW, window=4, overlap=2, **module_kwargs())
    kwargs.update(overrides)
    return SuperResolutionModule(**kwargs).eval()


@pytest.fixture(scope="module")
def ssr_video(ssr_export, text_encoder_path):
    """An inflated SSR whose temporal blocks mix frames (non-zero output projections)."""
    module = inflate(ssr_export, text_encoder_path)
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for _, parameter in module.network.trainable_named_parameters():
            if parameter.abs().sum() == 0:  # the zero-initialised projections of the residual temporal blocks
                parameter.copy_(0.05 * torch.randn(parameter.shape, generator=generator))
    return module


def low_res_clip(frames: int, batch: int = 2, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.rand((batch, 3, frames, LOW, LOW), generator=generator) * 2 - 1


# ----------------------------------------------------------------------------- windows vs plain sampling
def test_one_window_covering_the_clip_equals_plain_sampling(ssr_video):
    """MultiDiffusion with a single window is the plain sampler on the whole clip, bit for bit."""
    clip = low_res_clip(6)
    windowed = ssr_video.upsample(clip, PROMPTS, seed=5, window=6, num_inference_steps=2, progress=False)

    # Plain sampling with the same noise and conditioning, drawn in the module's order.
    generator = torch.Generator().manual_seed(5)
    levels = torch.full((2,), ssr_video.sample_noise_level, dtype=torch.long)
    conditioning = ssr_video.augment_low_res(clip, levels, generator)
    noise = torch.randn((2, 3, 6, HIGH, HIGH), generator=generator)
    cond = {**ssr_video.encode_text(PROMPTS), "low_res": conditioning, "class_labels": levels}
    plain = sample(ssr_video.network_forward, noise, ssr_video.make_scheduler(), num_inference_steps=2,
                   cond=cond, guidance_scale=1.0, generator=generator, progress=False)
    assert windowed.shape == (2, 3, 6, HIGH, HIGH)
    assert torch.equal(windowed, plain)


def test_every_frame_is_covered_and_each_window_sees_its_low_res_slice(ssr_video, monkeypatch):
    """11 frames, window 4, overlap 2: the end-aligned windows cover every frame; each network call
    gets the noisy video and the augmented low-res clip of the same frames."""
    frames, window = 11, 4
    clip = low_res_clip(frames, batch=1)
    generator = torch.Generator().manual_seed(7)
    levels = torch.full((1,), ssr_video.sample_noise_level, dtype=torch.long)
    conditioning = ssr_video.augment_low_res(clip, levels, generator)

    seen: list[tuple[int, int]] = []
    forward = ssr_video.network_forward

    def recording_forward(x_t, t, cond):
        assert x_t.shape[2] == cond["low_res"].shape[2] == window
        matches = [(start, end) for start, end in temporal_windows(frames, window, 2)
                   if torch.equal(cond["low_res"], conditioning[:, :, start:end])]
        assert len(matches) == 1, "a window got a low-res slice that is not its own frames"
        seen.append(matches[0])
        return forward(x_t, t, cond)

    monkeypatch.setattr(ssr_video, "network_forward", recording_forward)
    video = ssr_video.upsample(clip, PROMPTS[:1], seed=7, window=window, num_inference_steps=2, progress=False)
    expected = temporal_windows(frames, window, 2)
    assert expected[-1] == (frames - window, frames)
    assert seen == expected * 2  # every window at each of the 2 steps
    covered = {frame for start, end in seen for frame in range(start, end)}
    assert covered == set(range(frames))
    assert video.shape == (1, 3, frames, HIGH, HIGH)
    assert torch.isfinite(video).all() and video.abs().amax(dim=(0, 1, 3, 4)).gt(0).all()


def test_upsampling_is_deterministic_given_a_seed(ssr_video):
    clip = low_res_clip(6, batch=1)
    kwargs = dict(num_inference_steps=2, progress=False)
    first = ssr_video.upsample(clip, PROMPTS[:1], seed=3, **kwargs)
    second = ssr_video.upsample(clip, PROMPTS[:1], seed=3, **kwargs)
    other = ssr_video.upsample(clip, PROMPTS[:1], seed=4, **kwargs)
    assert torch.equal(first, second)
    assert not torch.allclose(first, other)
    assert first.min() >= -1 and first.max() <= 1


def test_batching_windows_in_one_forward_gives_the_same_video(ssr_video):
    # One step: over several steps a random network amplifies float rounding differences between
    # batch sizes (about 1e-6 per forward) into visible ones.
    clip = low_res_clip(10)
    one_by_one = ssr_video.upsample(clip, PROMPTS, seed=2, num_inference_steps=1, progress=False)
    batched = ssr_video.upsample(clip, PROMPTS, seed=2, num_inference_steps=1, window_batch_size=3,
                                 progress=False)
    # Batch-size-dependent conv kernels differ by ~1e-6 per forward, and an untrained network can
    # amplify that at a single pixel (seen: 3e-3 at 1 of 15,360 values, depending on the weights
    # drawn). A misassigned window would differ by O(1) everywhere: bound the mean tightly.
    difference = (batched - one_by_one).abs()
    assert difference.max() < 1e-2
    assert difference.mean() < 1e-5


def test_non_overlapping_windows_are_denoised_independently_and_multidiffusion_couples_them(ssr_video):
    """Fig. 14's ablation: without overlaps, changing the low-res frames of the second segment leaves
    the first segment untouched (nothing ties the windows: the cause of seams); with MultiDiffusion
    the shared frames carry the change into the first window."""
    clip = low_res_clip(8, batch=1)
    changed = clip.clone()
    changed[:, :, 4:] = -changed[:, :, 4:]
    kwargs = dict(seed=1, window=4, num_inference_steps=2, progress=False)

    plain, plain_changed = (ssr_video.upsample(c, PROMPTS[:1], non_overlapping=True, **kwargs) for c in (clip, changed))
    assert torch.equal(plain[:, :, :4], plain_changed[:, :, :4])
    assert not torch.allclose(plain[:, :, 4:], plain_changed[:, :, 4:])

    multi, multi_changed = (ssr_video.upsample(c, PROMPTS[:1], overlap=2, **kwargs) for c in (clip, changed))
    assert (multi[:, :, :2] - multi_changed[:, :, :2]).abs().max() > 1e-4


# ----------------------------------------------------------------------------- inflation
def test_inflated_ssr_at_initialisation_equals_its_2d_model_frame_by_frame(ssr_2d, ssr_export, text_encoder_path):
    """Zero-initialised temporal blocks: the inflated SSR is the 2D SSR applied to every frame, with the
    6-channel input (noisy high-res + low-res) and the noise level as class_labels."""
    inflated = inflate(ssr_export, text_encoder_path)
    generator = torch.Generator().manual_seed(0)
    x_t = torch.randn((2, 3, 5, HIGH, HIGH), generator=generator)
    levels = torch.tensor([20, 180])
    cond = {**ssr_2d.encode_text(PROMPTS), "class_labels": levels,
            "low_res": ssr_2d.augment_low_res(low_res_clip(5), levels, generator)}
    t = torch.tensor([999, 400])
    with torch.no_grad():
        per_frame = ssr_2d.network_forward(x_t, t, cond)
        video = inflated.network_forward(x_t, t, cond)
        other_level = ssr_2d.network_forward(x_t, t, {**cond, "class_labels": torch.tensor([500, 500])})
    assert video.shape == per_frame.shape == (2, 3, 5, HIGH, HIGH)
    torch.testing.assert_close(video, per_frame, atol=1e-5, rtol=1e-5)
    assert (other_level - per_frame).abs().max() > 1e-3  # the noise level does reach the network


def test_inflated_ssr_trains_only_temporal_parameters(ssr_export, text_encoder_path):
    inflated = inflate(ssr_export, text_encoder_path)
    trainable = [name for name, _ in inflated.trainable_named_parameters()]
    assert trainable and all(name.startswith("network.") and not name.startswith("network.unet.")
                             for name in trainable)


# ----------------------------------------------------------------------------- user errors
def test_low_res_input_of_the_wrong_size_is_a_config_error(ssr_video):
    with pytest.raises(ConfigError, match="8x8"):
        ssr_video.upsample(torch.zeros(1, 3, 4, 12, 12), PROMPTS[:1], progress=False)
    with pytest.raises(ConfigError, match="prompts"):
        ssr_video.upsample(low_res_clip(4), PROMPTS[:1], progress=False)


def test_inflating_an_export_with_another_low_res_size_or_parameterisation_is_a_config_error(ssr_export,
                                                                                             text_encoder_path):
    assert (ssr_export / SSR_META_FILE).is_file()
    with pytest.raises(ConfigError, match="trained to upsample 8 px"):
        inflate(ssr_export, text_encoder_path, low_res_size=4)
    other_parameterisation = DiffusionObjective(beta_schedule="squaredcos_cap_v2", prediction_type="v_prediction")
    with pytest.raises(ConfigError, match="prediction_type='epsilon'"):
        inflate(ssr_export, text_encoder_path, objective=other_parameterisation)


def test_training_batch_checks_the_pair_sizes_and_gives_a_finite_loss(ssr_video):
    batch = {"video": low_res_clip(4), "video_hr": torch.zeros(2, 3, 4, HIGH, HIGH), "caption": PROMPTS,
             "key": ["clip0", "clip1"]}
    loss = ssr_video.diffusion_loss(batch, ssr_video.sample_generators(batch, step=0))
    assert torch.isfinite(loss)
    with pytest.raises(ConfigError, match="hr_resolution=16"):
        bad = {**batch, "video_hr": torch.zeros(2, 3, 4, 24, 24)}
        ssr_video.diffusion_loss(bad, ssr_video.sample_generators(bad, step=0))


def test_an_ssr_with_no_network_names_t2i_path(text_encoder_path):
    with pytest.raises(ConfigError, match=r"^model.t2i_path is not set \(an IF stage II folder, or unet_path \+ "
                                          r"text_encoder_path of a trained 2D SSR\)"):
        SuperResolutionModule(text_encoder_path=text_encoder_path, low_res_size=LOW, **module_kwargs())
