"""The named metric conventions: FVD tf1 vs stylegan-v, IS splits vs tgan2 repetitions vs stylegan-v
splits of 2048, their labels, and real-statistics caches keyed by the FVD variant."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from lumiere.errors import ConfigError
from lumiere.evaluation.ucf101 import UCF101Settings, check_settings, fvd_metric, real_statistics_path
from lumiere.metrics import I3D, FrechetVideoDistance, frechet_distance, preprocess_for_fvd
from lumiere.metrics.fvd import FVD_VARIANTS, get_fvd_variant
from lumiere.metrics.inception_score import (
    inception_score_from_probs,
    inception_score_repeated,
    inception_score_variant,
    is_variant_label,
)


class Features(nn.Module):
    feature_dim = 5

    def forward(self, videos):  # never called: the tests feed features directly
        raise AssertionError


def known_features(seed: int, n: int) -> torch.Tensor:
    rng = np.random.default_rng(seed)
    return torch.from_numpy(rng.normal(size=(n, 5)) @ rng.normal(size=(5, 5)) + rng.normal(size=5))


@pytest.mark.filterwarnings("ignore:The ``compute`` method")  # features are fed with update_features, not update
def test_the_two_fvd_variants_differ_exactly_by_the_covariance_divisor():
    real, fake = known_features(0, 12), known_features(1, 9)
    values = {}
    for name, variant in FVD_VARIANTS.items():
        metric = FrechetVideoDistance(feature_extractor=Features(), preprocess=False, ddof=variant.ddof)
        metric.update_features(real, real=True)
        metric.update_features(fake, real=False)
        values[name] = float(metric.compute())
    # Closed form in float64: the sample covariances with N - 1, and the same scaled by (N - 1) / N.
    mu_r, mu_f = real.numpy().mean(0), fake.numpy().mean(0)
    cov_r, cov_f = np.cov(real.numpy(), rowvar=False), np.cov(fake.numpy(), rowvar=False)
    tf1 = frechet_distance(mu_r, cov_r, mu_f, cov_f)
    stylegan_v = frechet_distance(mu_r, cov_r * 11 / 12, mu_f, cov_f * 8 / 9)
    # Streamed sums (x x^T - n mu mu^T) vs np.cov's centred products: float64 round-off of O(1e-15)
    # on O(1) entries, amplified a little by the matrix square root: 1e-10 relative.
    assert values["tf1"] == pytest.approx(tf1, rel=1e-10)
    assert values["stylegan-v"] == pytest.approx(stylegan_v, rel=1e-10)
    assert abs(tf1 - stylegan_v) > 1e-3 * tf1  # the two conventions are different numbers here


def test_fvd_variants_resize_differently_and_carry_their_labels():
    videos = torch.rand(2, 3, 16, 10, 14, generator=torch.Generator().manual_seed(0)) * 2 - 1
    torch_resized = preprocess_for_fvd(videos, resize="torch")
    frames = ((videos.clamp(-1, 1) + 1) * 127.5).round().permute(0, 2, 1, 3, 4).reshape(32, 3, 10, 14)
    expected = F.interpolate(frames, size=(224, 224), mode="bilinear", align_corners=False)
    expected = expected.reshape(2, 16, 3, 224, 224).permute(0, 2, 1, 3, 4) * 2 / 255 - 1
    assert torch.allclose(torch_resized, expected, atol=1e-6)  # float32 of values in [-1, 1]
    assert (torch_resized - preprocess_for_fvd(videos)).abs().max() > 1e-2  # TF1's resize is another one

    i3d = I3D()
    tf1, stylegan_v = (fvd_metric(i3d, UCF101Settings(fvd_variant=name)) for name in ("tf1", "stylegan-v"))
    assert tf1.label == "fvd[i3d,tf1-resize,cov=N-1]" and stylegan_v.label == "fvd[i3d,torch-resize,cov=N]"
    assert tf1.variant == "tf1-legacy-bilinear-224, first16, eps1e-3, logits400, ddof1"  # unchanged: old caches stay valid
    assert stylegan_v.variant == "torch-bilinear-224, first16, eps1e-3, logits400, ddof0"
    mixed = fvd_metric(i3d, UCF101Settings(fvd_variant="tf1", fvd_ddof=0))
    assert mixed.label == "fvd[i3d,tf1-resize,cov=N]"
    paths = {real_statistics_path(UCF101Settings(stats_cache_dir="cache"), m.variant) for m in (tf1, stylegan_v, mixed)}
    assert len(paths) == 3  # one real-statistics cache per variant
    with pytest.raises(ConfigError, match="unknown FVD variant 'tf2': choose one of tf1, stylegan-v"):
        get_fvd_variant("tf2")


def distinct_one_hot(n: int) -> np.ndarray:
    """n samples, each confidently of its own class: the IS of any m of them is exactly m."""
    return np.eye(n)


def test_is_conventions_on_known_probabilities():
    probs = distinct_one_hot(2560)
    # splits: 10 parts of all 2560 (256 each) -> 256 +- 0.
    mean, std = inception_score_variant(probs, "splits", splits=10)
    assert mean == pytest.approx(256, rel=1e-12) and std == pytest.approx(0, abs=1e-9)
    # tgan2: 10 repetitions of one score over 2048 distinct draws -> 2048 +- 0.
    mean, std = inception_score_variant(probs, "tgan2")
    assert mean == pytest.approx(2048, rel=1e-12) and std == pytest.approx(0, abs=1e-8)
    # stylegan-v: 2048 drawn, 10 parts of 204 or 205 (8 of 205, 2 of 204) -> 204.8 +- 0.4.
    mean, std = inception_score_variant(probs, "stylegan-v")
    assert mean == pytest.approx(204.8, rel=1e-12) and std == pytest.approx(0.4, rel=1e-9)
    with pytest.raises(ConfigError, match="the tgan2 IS scores 2048 videos but there are 100"):
        inception_score_variant(distinct_one_hot(100), "tgan2")


def test_splits_and_repetitions_differ_on_two_classes():
    two = np.repeat(np.eye(2), 2, axis=0)  # classes A, A, B, B
    assert inception_score_from_probs(two, splits=1)[0] == pytest.approx(2, rel=1e-12)  # the whole set
    # Unshuffled parts follow the canonical (sorted) order: B, B | A, A, each one class -> 1 +- 0.
    assert inception_score_from_probs(two, splits=2, seed=None) == pytest.approx((1, 0), abs=1e-12)
    # Repetitions over all 4 samples are the whole set each time: 2 +- 0.
    assert inception_score_repeated(two, num_samples=4, repeats=5) == pytest.approx((2, 0), abs=1e-12)
    # Draws of 2 score 1 (same class) or 2 (different): with a fraction f of mixed draws the mean is
    # 1 + f and the population std sqrt(f (1 - f)), whatever the seed draws.
    mean, std = inception_score_repeated(two, num_samples=2, repeats=40, seed=3)
    assert 1 < mean < 2 and std == pytest.approx(np.sqrt((mean - 1) * (2 - mean)), rel=1e-9)


def test_is_labels_and_settings():
    assert is_variant_label("splits", 1, 10235) == "is[c3d-ucf101,all10235,splits=1]"
    assert is_variant_label("tgan2") == "is[c3d-ucf101,tgan2,10x2048]"
    assert is_variant_label("stylegan-v") == "is[c3d-ucf101,stylegan-v,2048,splits=10]"
    assert check_settings(UCF101Settings(is_variant="stylegan-v")) is True
    assert check_settings(UCF101Settings(inception_score=False, is_variant="nonsense")) is False  # not read
    with pytest.raises(ConfigError, match="is_splits applies to is_variant=splits"):
        check_settings(UCF101Settings(is_variant="tgan2", is_splits=10))
    with pytest.raises(ConfigError, match="the stylegan-v IS scores 2048 videos but there are 100"):
        check_settings(UCF101Settings(num_videos=100, is_variant="stylegan-v"))
    with pytest.raises(ConfigError, match="unknown IS variant"):
        check_settings(UCF101Settings(is_variant="tgan3"))
