"""A checkpoint is pinned to the frozen T2I and text encoder it was trained on (content fingerprints)."""

from __future__ import annotations

from functools import partial

import pytest
import torch

from lumiere.diffusion import DiffusionObjective
from lumiere.errors import InputFileError
from lumiere.models import STUNet, build_tiny_text_encoder, build_unet, save_unet
from lumiere.training import TextToVideoModule, load_module_from_checkpoint
from lumiere.training.base import CHECKPOINT_KEY

STAGE = {"_target_": "lumiere.training.TextToVideoModule",
         "stunet": {"_target_": "lumiere.models.STUNet", "_partial_": True, "num_temporal_attention_layers": 1},
         "objective": {"_target_": "lumiere.diffusion.DiffusionObjective"},
         "optimizer": {"_target_": "torch.optim.AdamW", "_partial_": True, "lr": 1e-4}, "ema_decay": None}


def _export(folder, seed, text_encoder=True):
    torch.manual_seed(seed)
    save_unet(build_unet("if_stage1_tiny"), folder / "unet")
    if text_encoder:
        build_tiny_text_encoder().save_pretrained(folder / "text_encoder")


def _checkpoint(tmp_path):
    """A STUNet checkpoint trained (here: initialised) on the export at tmp_path/t2i."""
    paths = {"unet_path": str(tmp_path / "t2i" / "unet"), "text_encoder_path": str(tmp_path / "t2i" / "text_encoder")}
    module = TextToVideoModule(**paths, stunet=partial(STUNet, num_temporal_attention_layers=1),
                               objective=DiffusionObjective(), optimizer=partial(torch.optim.AdamW, lr=1e-4), ema_decay=None)
    module.model_config = {**STAGE, **paths}
    checkpoint = {"state_dict": module.state_dict(), "global_step": 0}
    module.on_save_checkpoint(checkpoint)
    path = tmp_path / "stunet.ckpt"
    torch.save(checkpoint, path)
    return path, checkpoint, module


def test_a_checkpoint_records_its_frozen_parts_and_loads_on_the_same_ones(tmp_path):
    _export(tmp_path / "t2i", seed=0)
    path, checkpoint, module = _checkpoint(tmp_path)
    fingerprints = checkpoint[CHECKPOINT_KEY]["frozen_fingerprints"]
    assert set(fingerprints) == {"text_encoder", "network.unet"}
    loaded = load_module_from_checkpoint(str(path))
    assert loaded.frozen_fingerprints() == fingerprints
    # the fingerprint is of the content: the same weights give the same value, other weights another
    other = build_unet("if_stage1_tiny")
    assert module.frozen_fingerprints()["network.unet"] == loaded.frozen_fingerprints()["network.unet"]
    from lumiere.training.base import tensor_fingerprint
    assert tensor_fingerprint(other.named_parameters()) != tensor_fingerprint(loaded.network.unet.named_parameters())


def test_re_exporting_the_t2i_under_a_checkpoint_is_refused_in_one_line_unless_allowed(tmp_path):
    _export(tmp_path / "t2i", seed=0)
    path, _, _ = _checkpoint(tmp_path)
    _export(tmp_path / "t2i", seed=1, text_encoder=False)  # the U-Net re-exported over the same folder
    with pytest.raises(InputFileError, match="another frozen network.unet") as error:
        load_module_from_checkpoint(str(path))
    message = str(error.value)
    assert "\n" not in message and "unet_path" in message and "allow_frozen_mismatch" in message
    with pytest.warns(UserWarning, match="loaded anyway"):
        module = load_module_from_checkpoint(str(path), allow_frozen_mismatch=True)
    assert isinstance(module, TextToVideoModule)


def test_a_checkpoint_of_the_wrong_stage_is_refused_naming_both(tmp_path):
    _export(tmp_path / "t2i", seed=0)
    path, _, _ = _checkpoint(tmp_path)
    with pytest.raises(InputFileError, match="is a TextToVideoModule checkpoint; expected a SuperResolutionModule"):
        load_module_from_checkpoint(str(path), expected="SuperResolutionModule")
