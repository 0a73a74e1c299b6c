"""Temporal MultiDiffusion (Sec. 3.2, App. C): windows, the least-squares combination, sampling."""

import pytest
import torch

from lumiere.diffusion import (
    OracleDenoiser,
    build_scheduler,
    combine_windows,
    make_noise,
    multidiffusion_sample,
    non_overlapping_windows,
    sample,
    segment_boundaries,
    temporal_windows,
    window_weights,
)
from lumiere.errors import ConfigError

SHAPE = (2, 3, 10, 4, 4)  # B, C, T, H, W


def frame_local_denoiser(x_t, t, cond):
    """Each frame's output depends on that frame only (its own input and its slice of the per-frame
    conditioning `phase`): windows agree wherever they overlap."""
    return 0.5 * x_t + 0.5 * cond["bias"].view(-1, 1, 1, 1, 1) * torch.cos(7.0 * cond["phase"])


def window_dependent_denoiser(x_t, t, cond):
    """Mixes every frame with its window's mean: overlapping windows disagree (like a real SSR)."""
    return 0.5 * x_t + 0.4 * x_t.mean(dim=2, keepdim=True) + 0.1 * cond["bias"].view(-1, 1, 1, 1, 1)


def conditioning(batch=2, num_frames=10):
    phase = torch.linspace(0, 1, num_frames).view(1, 1, num_frames, 1, 1).expand(batch, 1, num_frames, 1, 1)
    return {"bias": torch.tensor([0.5, -1.0][:batch]), "phase": phase.contiguous()}


def noise_for(shape=SHAPE, seed=0):
    return make_noise(shape, generator=torch.Generator().manual_seed(seed))


# ----------------------------------------------------------------------------- windows
def test_windows_cover_every_frame_for_any_configuration():
    for num_frames in range(1, 26):
        for window in range(1, 13):
            for overlap in range(window):
                windows = temporal_windows(num_frames, window, overlap)
                covered = torch.zeros(num_frames, dtype=torch.long)
                for start, end in windows:
                    assert 0 <= start < end <= num_frames and end - start == min(window, num_frames)
                    covered[start:end] += 1
                assert bool((covered > 0).all()), (num_frames, window, overlap)
                assert windows[0][0] == 0 and windows[-1][1] == num_frames
                starts = [start for start, _ in windows]
                assert starts == sorted(set(starts))
                # Neighbours share at least `overlap` frames (more only for the end-aligned last one).
                for (_, end), (next_start, _) in zip(windows, windows[1:]):
                    assert end - next_start >= overlap


def test_window_examples_and_invalid_settings():
    assert temporal_windows(16, 8, 2) == [(0, 8), (6, 14), (8, 16)]
    assert temporal_windows(14, 8, 2) == [(0, 8), (6, 14)]
    assert temporal_windows(5, 8, 2) == [(0, 5)]
    for window, overlap in [(0, 0), (4, 4), (4, 6), (4, -1)]:
        with pytest.raises(ConfigError):
            temporal_windows(10, window, overlap)
    with pytest.raises(ConfigError):
        window_weights(4, "gaussian")


def test_non_overlapping_windows_give_every_frame_exactly_one_owner():
    for num_frames in range(1, 26):
        for window in range(1, 10):
            windows, weights = non_overlapping_windows(num_frames, window)
            owners = torch.zeros(num_frames)
            for (start, end), weight in zip(windows, weights):
                assert set(weight.tolist()) <= {0.0, 1.0}
                owners[start:end] += weight
            assert torch.equal(owners, torch.ones(num_frames))
    assert segment_boundaries(16, 8) == [8]
    assert segment_boundaries(20, 8) == [8, 16]  # the end-aligned last window owns frames 16-19


@pytest.mark.parametrize("kind", ["flat", "triangular"])
def test_combination_is_the_least_squares_solution(kind):
    generator = torch.Generator().manual_seed(0)
    num_frames, batch, channels, height, width = 11, 2, 2, 3, 2
    windows = temporal_windows(num_frames, 5, 2)
    weights = [window_weights(end - start, kind) for start, end in windows]
    preds = [torch.randn(batch, channels, end - start, height, width, generator=generator, dtype=torch.float64)
             for start, end in windows]
    combined = combine_windows(preds, windows, num_frames, weights)

    # argmin_J sum_i sum_f w_i(f) ||J(f) - pred_i(f)||^2 as an explicit least-squares problem:
    # one row per (window, frame), scaled by sqrt(w); one right-hand column per pixel.
    rows, targets = [], []
    for (start, end), weight, pred in zip(windows, weights, preds):
        for offset, frame in enumerate(range(start, end)):
            row = torch.zeros(num_frames, dtype=torch.float64)
            row[frame] = weight[offset].double().sqrt()
            rows.append(row)
            targets.append(weight[offset].double().sqrt() * pred[:, :, offset].reshape(-1))
    solution = torch.linalg.lstsq(torch.stack(rows), torch.stack(targets)).solution  # (T, B*C*H*W)
    expected = solution.reshape(num_frames, batch, channels, height, width).permute(1, 2, 0, 3, 4)
    torch.testing.assert_close(combined, expected, atol=1e-10, rtol=1e-10)


# ----------------------------------------------------------------------------- sampling
@pytest.mark.parametrize("name", ["ddim", "dpmsolver++", "ddpm"])
def test_one_window_covering_the_clip_equals_plain_sampling(name):
    scheduler, noise, cond = build_scheduler(name), noise_for(), conditioning()
    uncond = {"bias": torch.zeros(2), "phase": cond["phase"]}
    options = dict(num_inference_steps=4, cond=cond, uncond=uncond, guidance_scale=2.0, progress=False)
    plain = sample(window_dependent_denoiser, noise, scheduler, generator=torch.Generator().manual_seed(1), **options)
    windowed = multidiffusion_sample(window_dependent_denoiser, noise, scheduler, window=16,
                                     generator=torch.Generator().manual_seed(1), **options)
    assert torch.equal(plain, windowed)


@pytest.mark.parametrize("name", ["ddim", "ddpm"])
def test_one_window_equals_plain_sampling_with_ifs_folder_settings(name):
    """Learned variance and dynamic thresholding from a folder's scheduler config: MultiDiffusion
    thresholds and steps exactly as plain sampling does."""
    folder = dict(variance_type="learned_range", thresholding=True, dynamic_thresholding_ratio=0.95,
                  sample_max_value=1.5, clip_sample=True)
    scheduler, noise, cond = build_scheduler(name, scheduler_config=folder), noise_for(), conditioning()
    uncond = {"bias": torch.zeros(2), "phase": cond["phase"]}

    def learned_variance_denoiser(x_t, t, c):
        prediction = 2.0 * window_dependent_denoiser(x_t, t, c)  # large enough that thresholding acts
        return torch.cat([prediction, torch.tanh(x_t)], dim=1)

    options = dict(num_inference_steps=4, cond=cond, uncond=uncond, guidance_scale=2.0, progress=False)
    plain = sample(learned_variance_denoiser, noise, scheduler, generator=torch.Generator().manual_seed(1), **options)
    windowed = multidiffusion_sample(learned_variance_denoiser, noise, scheduler, window=16,
                                     generator=torch.Generator().manual_seed(1), **options)
    assert torch.equal(plain, windowed)
    unthresholded = sample(learned_variance_denoiser, noise, build_scheduler(name, scheduler_config=folder,
                                                                             thresholding=False),
                           generator=torch.Generator().manual_seed(1), **options)
    assert (unthresholded - plain).abs().max() > 1e-3


@pytest.mark.parametrize("weighting", ["flat", "triangular"])
@pytest.mark.parametrize("name", ["ddim", "dpmsolver++", "ddpm"])
def test_frame_local_denoiser_gives_full_clip_sampling_for_any_windows(name, weighting):
    # When windows agree on their overlaps, averaging must change nothing, and DDPM's step noise
    # must be drawn once for the whole clip (not averaged over windows). float64: at t = 999 the
    # epsilon -> x0 conversion divides by sqrt(alpha_bar) = 5e-5, which float32 rounding cannot take.
    scheduler, noise, cond = build_scheduler(name), noise_for().double(), conditioning()
    plain = sample(frame_local_denoiser, noise, scheduler, num_inference_steps=4, cond=cond,
                   generator=torch.Generator().manual_seed(1), progress=False)
    windowed = multidiffusion_sample(frame_local_denoiser, noise, scheduler, num_inference_steps=4, window=4,
                                     overlap=2, cond=cond, temporal_cond_keys=("phase",), weighting=weighting,
                                     generator=torch.Generator().manual_seed(1), progress=False)
    assert windowed.dtype == torch.float64
    torch.testing.assert_close(windowed, plain, atol=1e-9, rtol=0)


@pytest.mark.parametrize("name", ["ddim", "dpmsolver++", "dpmsolver"])
def test_averaging_x_prev_equals_averaging_predictions_for_deterministic_solvers(name):
    # Checks the per-window scheduler state: DPM-Solver's multistep history must belong to its window.
    scheduler, noise, cond = build_scheduler(name), noise_for(), conditioning()
    options = dict(num_inference_steps=5, window=4, overlap=2, cond=cond, progress=False)
    per_window = multidiffusion_sample(window_dependent_denoiser, noise, scheduler, combine="x_prev", **options)
    averaged = multidiffusion_sample(window_dependent_denoiser, noise, scheduler, combine="prediction", **options)
    torch.testing.assert_close(per_window, averaged, atol=2e-5, rtol=0)
    full_clip = sample(window_dependent_denoiser, noise, scheduler, num_inference_steps=5, cond=cond, progress=False)
    assert (per_window - full_clip).abs().max() > 1e-2  # the windows really do see different context


def test_window_batching_runs_fewer_forwards_with_the_same_result():
    scheduler, noise, cond = build_scheduler("dpmsolver++"), noise_for(), conditioning()
    uncond = {"bias": torch.zeros(1), "phase": cond["phase"][:1]}  # shared unconditional entries
    calls = []

    def counting(x_t, t, c):
        calls.append(x_t.shape[0])
        return window_dependent_denoiser(x_t, t, c)

    def run(window_batch_size):
        calls.clear()
        out = multidiffusion_sample(counting, noise, scheduler, num_inference_steps=3, window=4, overlap=1,
                                    cond=cond, uncond=uncond, guidance_scale=3.0, temporal_cond_keys=("phase",),
                                    window_batch_size=window_batch_size, progress=False)
        return out, list(calls)

    one_by_one, calls_single = run(None)
    batched, calls_batched = run(2)
    assert len(temporal_windows(10, 4, 1)) == 3
    assert calls_single == [4] * 9           # 3 steps x 3 windows, each [cond; uncond] of batch 2
    assert calls_batched == [8, 4] * 3       # two windows together, then the last one
    torch.testing.assert_close(batched, one_by_one, atol=1e-6, rtol=0)


def test_temporal_conditioning_is_sliced_per_window():
    # An oracle whose clean sample is the conditioning video itself: the result is that video only
    # if every window receives the frames it covers.
    scheduler = build_scheduler("ddim")
    low_res = torch.rand(1, 3, 11, 4, 4, generator=torch.Generator().manual_seed(3)) * 2 - 1
    oracle = OracleDenoiser(scheduler.alphas_cumprod, target_key="low_res")
    result = multidiffusion_sample(oracle, noise_for((1, 3, 11, 4, 4)), scheduler, num_inference_steps=3,
                                   window=4, overlap=2, cond={"low_res": low_res},
                                   temporal_cond_keys=("low_res",), progress=False)
    torch.testing.assert_close(result, low_res, atol=1e-4, rtol=0)
    with pytest.raises(ConfigError, match="frames"):
        multidiffusion_sample(oracle, noise_for((1, 3, 11, 4, 4)), scheduler, num_inference_steps=1, window=4,
                              cond={"low_res": low_res[:, :, :5]}, temporal_cond_keys=("low_res",), progress=False)


def test_non_overlapping_mode_denoises_windows_independently():
    # The App. C ablation: each window is sampled as if it were the whole clip.
    scheduler, noise, cond = build_scheduler("ddim"), noise_for((2, 3, 12, 4, 4)), conditioning(num_frames=12)
    result = multidiffusion_sample(window_dependent_denoiser, noise, scheduler, num_inference_steps=4, window=4,
                                   cond=cond, non_overlapping=True, progress=False)
    for start in (0, 4, 8):
        alone = sample(window_dependent_denoiser, noise[:, :, start:start + 4], scheduler, num_inference_steps=4,
                       cond=cond, progress=False)
        torch.testing.assert_close(result[:, :, start:start + 4], alone, atol=1e-6, rtol=0)
