"""Video Inception Score and the TGANv2 C3D (paper Table 1, App. D.2)."""

import numpy as np
import pytest
import torch

from lumiere.errors import InputFileError
from lumiere.metrics import C3D, VideoInceptionScore, c3d_npz_shapes, inception_score_from_probs


def test_uniform_predictions_give_an_inception_score_of_one():
    probs = np.full((40, 101), 1 / 101)
    mean, std = inception_score_from_probs(probs, splits=4)
    assert mean == pytest.approx(1.0, abs=1e-12) and std == pytest.approx(0.0, abs=1e-12)


def test_distinct_one_hot_predictions_give_the_class_count():
    probs = np.eye(10)[np.arange(50) % 10]  # every class equally often, fully confident
    mean, _ = inception_score_from_probs(probs, splits=1)
    assert mean == pytest.approx(10.0, rel=1e-12)


def test_inception_score_matches_closed_form_on_hand_made_probabilities():
    probs = np.array([[0.5, 0.5, 0.0], [0.0, 0.5, 0.5]])
    marginal = probs.mean(0)  # (0.25, 0.5, 0.25)
    kl = [sum(p * np.log(p / m) for p, m in zip(row, marginal) if p > 0) for row in probs]
    assert inception_score_from_probs(probs)[0] == pytest.approx(np.exp(np.mean(kl)), rel=1e-12)


def test_inception_score_does_not_depend_on_sample_order():
    rng = np.random.default_rng(0)
    probs = rng.dirichlet(np.ones(7) * 0.3, size=60)
    shuffled = probs[rng.permutation(60)]
    assert inception_score_from_probs(probs, splits=5, seed=3) == inception_score_from_probs(shuffled, splits=5, seed=3)


class FixedLogits(torch.nn.Module):
    """Classifier whose logits are a fixed linear map of the mean colour (deterministic)."""

    def __init__(self):
        super().__init__()
        self.proj = torch.nn.Linear(3, 5)
        with torch.no_grad():
            self.proj.weight.copy_(torch.arange(15.0).view(5, 3).cos() * 4)
            self.proj.bias.zero_()

    def forward(self, videos):
        return self.proj(videos.mean(dim=(2, 3, 4)))


def test_metric_accumulates_batches_like_the_pure_function():
    videos = torch.rand(12, 3, 4, 5, 5, generator=torch.Generator().manual_seed(0)) * 2 - 1
    metric = VideoInceptionScore(classifier=FixedLogits(), outputs="logits", splits=2, seed=1)
    for chunk in videos.split(5):
        metric.update(chunk)
    with torch.no_grad():
        probs = FixedLogits()(videos).double().softmax(-1)
    mean, std = metric.compute()
    # float32 logits of batches of 5 vs one batch of 12 round differently (~1 ulp, 3e-8 here): the
    # split scores (~1.03) move by ~1e-9, the std (~5e-3, a difference of two scores) by as much.
    assert (float(mean), float(std)) == pytest.approx(inception_score_from_probs(probs, splits=2, seed=1),
                                                      rel=1e-6, abs=1e-8)


def write_random_tgan2_npz(tmp_path):
    """A random C3D npz with the TGANv2 key names and shapes, and a (3, 16, 128, 171) mean clip."""
    rng = np.random.default_rng(0)
    arrays = {}
    for key, shape in c3d_npz_shapes().items():
        fan_in = int(np.prod(shape[1:])) if len(shape) > 1 else 1
        array = rng.standard_normal(shape, dtype=np.float32)
        array *= np.float32(0.05 * (2.0 / fan_in) ** 0.5)
        arrays[key] = array
    weights, mean = tmp_path / "conv3d_deepnetA_ucf.npz", tmp_path / "mean2.npz"
    np.savez(weights, **arrays)
    np.savez(mean, mean=rng.uniform(80, 120, size=(3, 16, 128, 171)).astype(np.float32))
    return weights, mean


def test_c3d_npz_layout_is_the_chainer_one():
    shapes = c3d_npz_shapes()
    assert shapes["conv1a/W"] == (64, 3, 3, 3, 3) and shapes["conv5b/b"] == (512,)
    assert shapes["fc6/W"] == (4096, 8192) and shapes["fc8/W"] == (101, 4096)
    assert len(shapes) == 22


def test_c3d_loads_tgan2_npz_and_returns_probabilities(tmp_path):
    weights, mean = write_random_tgan2_npz(tmp_path)
    model = C3D.from_tgan2_npz(weights, mean)
    assert torch.equal(model.conv1a.weight, torch.from_numpy(np.load(weights)["conv1a/W"]))
    assert torch.equal(model.mean_clip, torch.from_numpy(np.load(mean)["mean"][:, :, 8:120, 8:120]))
    videos = torch.rand(2, 3, 16, 64, 80, generator=torch.Generator().manual_seed(0)) * 2 - 1
    probs = model(videos)
    assert probs.shape == (2, 101)
    assert torch.allclose(probs.sum(-1), torch.ones(2), atol=1e-5)
    metric = VideoInceptionScore(classifier=model)
    metric.update(videos)
    assert float(metric.compute()[0]) >= 1.0


def test_c3d_preprocessing_swaps_to_bgr_and_scales_to_0_256():
    model = C3D()
    red = torch.zeros(1, 3, 16, 112, 112)
    red[:, 0] = 1.0  # R=1 -> 256 in BGR channel 2; G=B=0 -> 128
    x = model.preprocess(red)
    assert torch.allclose(x[0, 2], torch.full_like(x[0, 2], 256.0)) and torch.allclose(x[0, 0], torch.full_like(x[0, 0], 128.0))


def test_missing_c3d_files_raise_a_clear_input_error(tmp_path):
    with pytest.raises(InputFileError, match="tgan2"):
        C3D.from_tgan2_npz(tmp_path / "conv3d_deepnetA_ucf.npz", tmp_path / "mean2.npz")
    with pytest.raises(InputFileError, match="mean2.npz"):
        VideoInceptionScore(c3d_weights=None, c3d_mean=None)
