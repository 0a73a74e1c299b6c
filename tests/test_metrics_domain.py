"""The synthetic benchmark's domain classifier and the in-domain metrics built on it."""

import pytest
import torch

from lumiere.errors import ConfigError
from lumiere.metrics import (
    DomainClassifier,
    DomainFeatures,
    DomainHeadProbabilities,
    FrechetVideoDistance,
    VideoInceptionScore,
    load_domain_classifier,
    motion_magnitude,
    predict_labels,
    prompt_adherence,
    save_domain_classifier,
    train_domain_classifier,
)

HEADS = {"color": 2, "direction": 2}


def toy_clips(n, seed):
    """A 3x3 square, red or green, moving left or right across an 8-frame 12x12 clip."""
    generator = torch.Generator().manual_seed(seed)
    color = torch.randint(0, 2, (n,), generator=generator)
    direction = torch.randint(0, 2, (n,), generator=generator)
    videos = torch.full((n, 3, 8, 12, 12), -1.0)
    for i in range(n):
        row = int(torch.randint(0, 9, (1,), generator=generator))
        for t in range(8):
            col = t if direction[i] == 0 else 8 - t
            videos[i, int(color[i]), t, row : row + 3, col : col + 3] = 1.0
    return videos, {"color": color, "direction": direction}


def test_domain_classifier_learns_an_easy_toy_problem_to_high_accuracy():
    torch.manual_seed(0)
    videos, labels = toy_clips(64, seed=0)
    batches = [(videos[i : i + 16], {k: v[i : i + 16] for k, v in labels.items()}) for i in range(0, 64, 16)]
    model = train_domain_classifier(batches, HEADS, epochs=8, lr=3e-3, progress=False, width=8, feature_dim=32)
    test_videos, test_labels = toy_clips(64, seed=1)
    predictions = predict_labels(model, test_videos)
    for head in HEADS:
        assert (predictions[head] == test_labels[head]).float().mean() >= 0.95
    assert prompt_adherence(predictions, test_labels, heads=("color", "direction")) >= 0.9


def test_forward_returns_one_logit_tensor_per_head_and_features_are_penultimate():
    model = DomainClassifier({"shape": 4, "color": 6, "motion": 3}, width=8, feature_dim=16)
    videos = torch.rand(2, 3, 8, 16, 16) * 2 - 1
    logits = model(videos)
    assert {k: tuple(v.shape) for k, v in logits.items()} == {"shape": (2, 4), "color": (2, 6), "motion": (2, 3)}
    assert model.features(videos).shape == (2, 16)


def test_save_and_load_round_trip(tmp_path):
    model = DomainClassifier(HEADS, width=8, feature_dim=16).eval()
    path = save_domain_classifier(model, tmp_path / "domain.safetensors")
    loaded = load_domain_classifier(path)
    videos = torch.rand(2, 3, 8, 12, 12) * 2 - 1
    with torch.no_grad():
        assert torch.equal(model.features(videos), loaded.features(videos))
    assert loaded.heads == HEADS


def test_in_domain_fvd_and_is_use_the_classifier_features_and_motion_head():
    model = DomainClassifier({"motion": 3, "color": 2}, width=8, feature_dim=16).eval()
    fvd = FrechetVideoDistance(feature_extractor=DomainFeatures(model), preprocess=False)
    real, fake = torch.rand(20, 3, 8, 12, 12) * 2 - 1, torch.rand(20, 3, 8, 12, 12) * 2 - 1
    fvd.update(real, real=True)
    fvd.update(fake, real=False)
    assert fvd.result()["variant"].endswith("DomainFeatures-16, ddof1") and fvd.result()["fvd"] >= 0
    inception = VideoInceptionScore(classifier=DomainHeadProbabilities(model, "motion"))
    inception.update(fake)
    assert 1.0 <= float(inception.compute()[0]) <= 3.0
    with pytest.raises(ConfigError):
        DomainHeadProbabilities(model, "speed")


def test_prompt_adherence_requires_every_checked_head_to_match():
    pred = {"shape": [0, 1, 2, 3], "color": [1, 1, 0, 0], "motion": [2, 2, 2, 2]}
    target = {"shape": [0, 1, 2, 0], "color": [1, 0, 0, 0], "motion": [2, 2, 2, 2]}
    assert prompt_adherence(pred, target) == pytest.approx(0.5)
    assert prompt_adherence(pred, target, heads=("motion",)) == 1.0


def test_motion_magnitude_is_mean_absolute_frame_difference():
    static = torch.zeros(1, 3, 4, 5, 5)
    flicker = torch.zeros(1, 3, 4, 5, 5)
    flicker[:, :, 1::2] = 1.0  # every frame differs from the previous by 1 everywhere
    assert motion_magnitude(torch.cat([static, flicker])).tolist() == [0.0, 1.0]
