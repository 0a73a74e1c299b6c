"""Text-to-image U-Net presets and loaders (Sec. 3, 3.1)."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file

from lumiere.errors import ConfigError, InputFileError
from lumiere.models import TINY_TEXT_DIM, UNET_PRESETS, build_unet, load_unet, save_unet, unet_text_dim


@pytest.mark.parametrize("preset", sorted(UNET_PRESETS))
def test_every_preset_builds_and_matches_its_text_encoder(preset):
    with torch.device("meta"):  # the paper-size preset has billions of parameters: shapes only
        unet = build_unet(preset)
    expected_text_dim = 4096 if preset == "if_stage1_paper" else TINY_TEXT_DIM
    assert unet_text_dim(unet) == expected_text_dim
    if preset.startswith("if_stage2"):
        assert unet.config.in_channels == 6 and unet.config.class_embed_type == "timestep"
    else:
        assert unet.config.in_channels == 3


def test_tiny_stage1_preset_runs_and_learned_variance_doubles_output_channels():
    unet = build_unet("if_stage1_tiny_learned_variance")
    out = unet(torch.randn(1, 3, 16, 16), 3, torch.randn(1, 4, TINY_TEXT_DIM)).sample
    assert out.shape == (1, 6, 16, 16)


def test_unknown_preset_is_a_config_error():
    with pytest.raises(ConfigError, match="unknown U-Net preset"):
        build_unet("if_stage1_huge")


def test_load_unet_round_trips_folder_and_safetensors(tmp_path):
    torch.manual_seed(0)
    unet = build_unet("sd_tiny")
    x, text = torch.randn(1, 3, 16, 16), torch.randn(1, 4, TINY_TEXT_DIM)
    with torch.no_grad():
        reference = unet(x, 7, text).sample
        save_unet(unet, tmp_path / "unet")
        from_folder = load_unet(tmp_path / "unet")
        save_file(unet.state_dict(), str(tmp_path / "unet.safetensors"))
        from_file = load_unet(tmp_path / "unet.safetensors", preset="sd_tiny")
        # same weights; diffusers' loaded model may pick another attention kernel: float rounding only
        assert torch.allclose(from_folder(x, 7, text).sample, reference, atol=1e-6)
        assert torch.allclose(from_file(x, 7, text).sample, reference, atol=1e-6)
        assert all(torch.equal(a, b) for a, b in zip(unet.state_dict().values(), from_folder.state_dict().values()))
    with pytest.raises(ConfigError, match="preset"):
        load_unet(tmp_path / "unet.safetensors")
    with pytest.raises(InputFileError, match="does not match"):
        load_unet(tmp_path / "unet.safetensors", preset="if_stage1_tiny")


def test_missing_unet_or_hub_id_is_an_input_file_error(tmp_path):
    with pytest.raises(InputFileError, match="nothing is downloaded"):
        load_unet("DeepFloyd/IF-I-XL-v1.0")
    with pytest.raises(InputFileError, match="no config.json"):
        load_unet(tmp_path)
