"""Classifier-free guidance: caption dropout and the one-forward guided prediction."""

import pytest
import torch

from lumiere.diffusion import drop_conditions, guided_prediction
from lumiere.errors import ConfigError


class RecordingDenoiser:
    """A fixed function of (x_t, t, cond) that records the batch size of every forward."""

    def __init__(self, out_channels_factor: int = 1):
        self.batches: list[int] = []
        self.factor = out_channels_factor

    def __call__(self, x_t, t, cond):
        self.batches.append(x_t.shape[0])
        text = cond["text"].mean(dim=(1, 2)).view(-1, 1, 1, 1, 1)
        out = 0.7 * x_t + text + 1e-3 * t.view(-1, 1, 1, 1, 1)
        return torch.cat([out, -2 * out], dim=1) if self.factor == 2 else out


def make_inputs(batch=2):
    generator = torch.Generator().manual_seed(0)
    x_t = torch.randn(batch, 3, 4, 5, 5, generator=generator)
    t = torch.tensor([10, 700][:batch])
    cond = {"text": torch.randn(batch, 6, 8, generator=generator)}
    uncond = {"text": torch.zeros(batch, 6, 8)}
    return x_t, t, cond, uncond


def test_guidance_scale_one_is_the_conditional_prediction_in_one_forward():
    x_t, t, cond, uncond = make_inputs()
    model = RecordingDenoiser()
    assert torch.equal(guided_prediction(model, x_t, t, cond, uncond, 1.0), model(x_t, t, cond))
    assert model.batches == [2, 2]  # no unconditional half was run


def test_batched_guided_prediction_equals_two_separate_forwards():
    x_t, t, cond, uncond = make_inputs()
    model = RecordingDenoiser()
    guided = guided_prediction(model, x_t, t, cond, uncond, 4.5)
    assert model.batches == [4]  # one forward on [cond; uncond]
    conditional, unconditional = model(x_t, t, cond), model(x_t, t, uncond)
    torch.testing.assert_close(guided, unconditional + 4.5 * (conditional - unconditional))


def test_unconditional_entries_of_batch_one_are_shared():
    x_t, t, cond, uncond = make_inputs()
    shared = {"text": uncond["text"][:1]}
    model = RecordingDenoiser()
    torch.testing.assert_close(guided_prediction(model, x_t, t, cond, shared, 3.0),
                               guided_prediction(model, x_t, t, cond, uncond, 3.0))


def test_learned_variance_guides_the_prediction_half_only():
    x_t, t, cond, uncond = make_inputs()
    model = RecordingDenoiser(out_channels_factor=2)
    guided = guided_prediction(model, x_t, t, cond, uncond, 3.0)
    conditional, unconditional = model(x_t, t, cond), model(x_t, t, uncond)
    torch.testing.assert_close(guided[:, :3], unconditional[:, :3] + 3.0 * (conditional[:, :3] - unconditional[:, :3]))
    torch.testing.assert_close(guided[:, 3:], conditional[:, 3:])


def test_guidance_input_errors():
    x_t, t, cond, uncond = make_inputs()
    model = RecordingDenoiser()
    with pytest.raises(ConfigError, match="unconditional"):
        guided_prediction(model, x_t, t, cond, None, 2.0)
    with pytest.raises(ConfigError, match="same keys"):
        guided_prediction(model, x_t, t, cond, {"other": uncond["text"]}, 2.0)
    with pytest.raises(ConfigError, match="shape"):
        guided_prediction(model, x_t, t, cond, {"text": torch.zeros(2, 7, 8)}, 2.0)


def test_caption_dropout_rates_and_reproducibility():
    captions = [f"caption {i}" for i in range(2000)]
    assert drop_conditions(captions, 0.0, torch.Generator().manual_seed(0)) == captions
    assert drop_conditions(captions, 1.0, torch.Generator().manual_seed(0)) == [""] * 2000
    first = drop_conditions(captions, 0.1, torch.Generator().manual_seed(5))
    assert first == drop_conditions(captions, 0.1, torch.Generator().manual_seed(5))
    dropped = sum(c == "" for c in first)
    assert 140 <= dropped <= 260  # 10% of 2000, +-4.5 standard deviations
    assert all(c in ("", original) for c, original in zip(first, captions))
    with pytest.raises(ConfigError):
        drop_conditions(captions, 1.5)
