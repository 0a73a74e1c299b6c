"""Text encoder (Sec. 3): tiny offline ByT5/T5 encoder, padding mask, save/load, local-only loading."""

from __future__ import annotations

import pytest
import torch

from lumiere.errors import InputFileError
from lumiere.models import FrozenTextEncoder, build_tiny_text_encoder

PROMPTS = ["a red square moving left", "", "x" * 100]


def test_tiny_encoder_pads_to_max_length_and_masks_real_tokens():
    torch.manual_seed(0)
    encoder = build_tiny_text_encoder(d_model=64, max_length=32)
    hidden, mask = encoder(PROMPTS)
    assert hidden.shape == (3, 32, 64) and hidden.dtype == torch.float32
    assert mask.shape == (3, 32) and mask.dtype == torch.bool
    # ByT5: one token per byte plus the end-of-sequence token; long prompts are truncated.
    assert mask.sum(1).tolist() == [len(PROMPTS[0]) + 1, 1, 32]
    assert encoder.dim == 64


def test_save_and_load_round_trip_gives_identical_outputs(tmp_path):
    torch.manual_seed(0)
    encoder = build_tiny_text_encoder(max_length=24)
    encoder.save_pretrained(tmp_path / "text")
    loaded = FrozenTextEncoder.from_pretrained(tmp_path / "text")
    assert loaded.max_length == 24 and not loaded.trainable
    with torch.no_grad():
        for (h1, m1), (h2, m2) in [(encoder(PROMPTS), loaded(PROMPTS))]:
            assert torch.equal(m1, m2)
            assert torch.equal(h1, h2)


def test_frozen_encoder_has_no_trainable_parameters_and_stays_in_eval():
    encoder = build_tiny_text_encoder(trainable=True)
    assert all(p.requires_grad for p in encoder.parameters())
    hidden, _ = encoder(["a"])
    assert hidden.requires_grad
    encoder.set_trainable(False)
    encoder.train()
    assert not encoder.encoder.training
    assert not any(p.requires_grad for p in encoder.parameters())
    hidden, _ = encoder(["a"])
    assert not hidden.requires_grad


@pytest.mark.parametrize("name", ["google/t5-v1_1-xxl", "DeepFloyd/IF-I-XL-v1.0"])
def test_hub_id_is_rejected_with_a_local_path_message(name):
    with pytest.raises(InputFileError, match="must be a local path"):
        FrozenTextEncoder.from_pretrained(name)


def test_folder_without_encoder_is_rejected(tmp_path):
    with pytest.raises(InputFileError, match="no text encoder"):
        FrozenTextEncoder.from_pretrained(tmp_path)
