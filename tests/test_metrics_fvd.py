"""FVD: the Frechet distance, the published preprocessing and the streaming metric (paper App. D.2)."""

import numpy as np
import pytest
import scipy.linalg
import torch
from torch import nn

from lumiere.errors import ConfigError, InputFileError
from lumiere.metrics import FVD_VARIANT, FrechetVideoDistance, frechet_distance, preprocess_for_fvd, tf1_legacy_bilinear_resize


def scipy_reference_distance(mu1, s1, mu2, s2):
    covmean, _ = scipy.linalg.sqrtm(s1 @ s2, disp=False)
    if np.iscomplexobj(covmean):
        assert np.abs(covmean.imag).max() < 1e-6
        covmean = covmean.real
    diff = mu1 - mu2
    return diff @ diff + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean)


def random_gaussian(rng, dim, n):
    mixing = rng.normal(size=(dim, dim))
    samples = rng.normal(size=(n, dim)) @ mixing + rng.normal(size=dim)
    return samples.mean(0), np.cov(samples, rowvar=False)


def test_frechet_distance_matches_scipy_sqrtm_reference_on_random_gaussians():
    rng = np.random.default_rng(0)
    for dim in (4, 32):
        mu1, s1 = random_gaussian(rng, dim, 200)
        mu2, s2 = random_gaussian(rng, dim, 300)
        ours, reference = frechet_distance(mu1, s1, mu2, s2), scipy_reference_distance(mu1, s1, mu2, s2)
        assert abs(ours - reference) <= 1e-6 * abs(reference)


def test_frechet_distance_is_zero_for_identical_statistics_and_accepts_tensors():
    rng = np.random.default_rng(1)
    mu, sigma = random_gaussian(rng, 16, 100)
    assert frechet_distance(mu, sigma, mu, sigma) == pytest.approx(0.0, abs=1e-8)
    assert frechet_distance(torch.tensor(mu), torch.tensor(sigma), mu, sigma) == pytest.approx(0.0, abs=1e-8)


def test_frechet_distance_of_shifted_gaussian_is_squared_mean_shift():
    sigma = np.diag([1.0, 2.0, 3.0])
    assert frechet_distance(np.zeros(3), sigma, np.array([1.0, 2.0, 2.0]), sigma) == pytest.approx(9.0, rel=1e-12)


def test_tf1_legacy_resize_matches_hand_computed_upsample_without_half_pixel_offset():
    image = torch.tensor([[0.0, 10.0], [20.0, 30.0]]).view(1, 1, 2, 2)
    # src = dst * in/out = 0, .5, 1, 1.5: the last source index clamps to the border.
    expected = torch.tensor(
        [[0.0, 5.0, 10.0, 10.0], [10.0, 15.0, 20.0, 20.0], [20.0, 25.0, 30.0, 30.0], [20.0, 25.0, 30.0, 30.0]]
    )
    assert torch.equal(tf1_legacy_bilinear_resize(image, 4)[0, 0], expected)
    # Half-pixel-centre resizing (torch align_corners=False) gives a different first row.
    torch_resized = torch.nn.functional.interpolate(image, size=4, mode="bilinear", align_corners=False)
    assert not torch.allclose(torch_resized[0, 0], expected)


def test_tf1_legacy_resize_matches_hand_computed_downsample():
    row = torch.tensor([0.0, 1.0, 2.0, 3.0]).view(1, 1, 1, 4)
    # src = 0, 4/3, 8/3 -> values 0, 4/3, 8/3
    out = tf1_legacy_bilinear_resize(row, (1, 3))[0, 0, 0]
    assert torch.allclose(out, torch.tensor([0.0, 4 / 3, 8 / 3]), atol=1e-6)


def test_preprocess_for_fvd_takes_first_16_frames_quantises_and_resizes_to_224():
    videos = torch.linspace(-1, 1, 2 * 3 * 20 * 8 * 10).view(2, 3, 20, 8, 10)
    out = preprocess_for_fvd(videos)
    assert out.shape == (2, 3, 16, 224, 224)
    assert out.min() >= -1 and out.max() <= 1
    # A constant frame stays constant and is quantised to a multiple of 1/255 of the range.
    constant = torch.full((1, 3, 16, 5, 5), 0.3)
    value = preprocess_for_fvd(constant).unique()
    assert value.numel() == 1 and ((value + 1) * 127.5 - ((value + 1) * 127.5).round()).abs() < 1e-4
    with pytest.raises(ConfigError):
        preprocess_for_fvd(torch.zeros(1, 3, 15, 8, 8))


class LinearFeatures(nn.Module):
    """A deterministic tiny feature extractor: a fixed linear map of the pooled video."""

    feature_dim = 6

    def __init__(self):
        super().__init__()
        self.proj = nn.Linear(3 * 4, self.feature_dim)
        with torch.no_grad():
            self.proj.weight.copy_(torch.linspace(-1, 1, 72).view(6, 12).sin())
            self.proj.bias.copy_(torch.arange(6.0) / 10)

    def forward(self, videos):
        pooled = nn.functional.adaptive_avg_pool3d(videos, (4, 1, 1)).flatten(1)
        return self.proj(pooled)


def toy_videos(seed, n, shift=0.0):
    generator = torch.Generator().manual_seed(seed)
    return (torch.rand(n, 3, 8, 6, 6, generator=generator) * 1.6 - 0.8 + shift).clamp(-1, 1)


def make_metric(**kwargs):
    return FrechetVideoDistance(feature_extractor=LinearFeatures(), preprocess=False, **kwargs)


def test_several_updates_equal_one_update_with_all_the_data():
    real, fake = toy_videos(0, 24), toy_videos(1, 20, shift=0.2)
    one = make_metric()
    one.update(real, real=True)
    one.update(fake, real=False)
    many = make_metric()
    for chunk in real.split(5):
        many.update(chunk, real=True)
    for chunk in fake.split(7):
        many.update(chunk, real=False)
    # float32 features of chunks vs one batch may differ by an ulp (batch-shape-dependent matmul
    # kernels); that moves this FVD by ~5e-8 relative. The float64 sums themselves are order-safe.
    assert float(many.compute()) == pytest.approx(float(one.compute()), rel=1e-6)
    assert float(one.compute()) > 0


def test_metric_equals_frechet_distance_of_features_with_selected_ddof():
    real, fake = toy_videos(2, 16), toy_videos(3, 12, shift=0.1)
    extractor = LinearFeatures()
    with torch.no_grad():
        fr, ff = extractor(real).double().numpy(), extractor(fake).double().numpy()
    for ddof in (0, 1):
        metric = make_metric(ddof=ddof)
        metric.update(real, real=True)
        metric.update(fake, real=False)
        expected = frechet_distance(fr.mean(0), np.cov(fr, rowvar=False, ddof=ddof), ff.mean(0), np.cov(ff, rowvar=False, ddof=ddof))
        assert float(metric.compute()) == pytest.approx(expected, rel=1e-9)
        assert metric.result()["variant"].endswith(f"ddof{ddof}")


def test_saved_real_statistics_replace_real_updates(tmp_path):
    real, fake = toy_videos(4, 16), toy_videos(5, 16, shift=0.3)
    reference = make_metric()
    reference.update(real, real=True)
    reference.update(fake, real=False)
    path = reference.save_real_statistics(tmp_path / "ucf101_real.npz")

    loaded = make_metric(real_statistics=path)
    loaded.update(fake, real=False)  # no real update needed
    result = loaded.result()
    assert result["fvd"] == pytest.approx(float(reference.compute()), rel=1e-12)
    assert result["num_real"] == 16 and result["num_fake"] == 16
    loaded.reset()  # loaded statistics survive a reset of the streamed states
    loaded.update(fake, real=False)
    assert float(loaded.compute()) == pytest.approx(result["fvd"], rel=1e-12)


def test_loading_statistics_of_another_variant_is_refused(tmp_path):
    metric = make_metric(ddof=0)
    metric.update(toy_videos(6, 8), real=True)
    path = metric.save_real_statistics(tmp_path / "stats.npz")
    with pytest.raises(InputFileError, match="variant"):
        make_metric(ddof=1).load_real_statistics(path)


def test_default_variant_name_is_the_published_one():
    assert FVD_VARIANT == "tf1-legacy-bilinear-224, first16, eps1e-3, logits400, ddof1"


def test_frozen_feature_extractor_stays_out_of_checkpoints():
    holder = nn.Module()
    holder.fvd = make_metric()
    holder.head = nn.Linear(2, 2)
    state = holder.state_dict()
    assert not any("feature_extractor" in key for key in state) and "head.weight" in state
    fresh = nn.Module()
    fresh.fvd = make_metric()
    fresh.head = nn.Linear(2, 2)
    fresh.load_state_dict(state, strict=True)  # the extractor's absence is not an error
    assert torch.equal(fresh.fvd.feature_extractor.proj.weight, LinearFeatures().proj.weight)
