"""Sizes from the experiment (issue 20, item 4): training, validation and generation use the configured
resolution, never the frozen U-Net's `sample_size`; a differing `sample_size` gets one warning line."""

from __future__ import annotations

import logging
from functools import partial

import pytest
import torch
from omegaconf import OmegaConf
from test_pipeline_folder import stage_kwargs, write_pipeline_folder

from lumiere.diffusion import DiffusionObjective
from lumiere.errors import ConfigError
from lumiere.models import build_tiny_text_encoder, build_unet
from lumiere.training import TextToVideoModule
from lumiere.training.ssr import SuperResolutionModule

from training_helpers import compose_config


def size_warnings(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING and "sample_size" in r.getMessage()]


def test_a_unet_with_sample_size_8_configured_at_16_samples_16px_clips_of_the_configured_length(tmp_path, caplog):
    folder = write_pipeline_folder(tmp_path / "IF-8px", unet_overrides={"sample_size": 8})
    with caplog.at_level(logging.WARNING, logger="lumiere"):
        module = TextToVideoModule(t2i_path=str(folder), resolution=16, val_num_frames=8,
                                   val_prompts=["a red circle moving left"], sampler={"num_inference_steps": 2},
                                   **stage_kwargs())
    assert size_warnings(caplog) == ["model.resolution=16 differs from the pre-trained U-Net's sample_size=8: "
                                     "training and sampling run at 16x16"]
    assert module.sample_size == 16
    videos, prompts = module.validation_samples()
    assert videos.shape == (1, 3, 8, 16, 16) and prompts == ["a red circle moving left"]
    assert module.generate(["a cat"], num_frames=16, progress=False).shape == (1, 3, 16, 16, 16)
    batch = {"video": torch.zeros(1, 3, 8, 16, 16), "caption": ["a cat"], "key": ["k"]}
    assert torch.isfinite(module.diffusion_loss(batch, module.sample_generators(batch, 0)))
    with pytest.raises(ConfigError, match=r"works on 16x16 frames \(model.resolution\), but the data's clips are 8x8; "
                                          "set data.resolution=16"):
        module.diffusion_loss({**batch, "video": torch.zeros(1, 3, 8, 8, 8)}, module.sample_generators(batch, 0))


def test_a_matching_or_unset_resolution_says_nothing(tmp_path, caplog):
    folder = write_pipeline_folder(tmp_path / "IF-16px")
    with caplog.at_level(logging.WARNING, logger="lumiere"):
        same = TextToVideoModule(t2i_path=str(folder), resolution=16, **stage_kwargs())
        unset = TextToVideoModule(t2i_path=str(folder), **stage_kwargs())
    assert size_warnings(caplog) == [] and same.sample_size == unset.sample_size == 16


def test_the_ssr_outputs_the_configured_resolution(tmp_path, caplog):
    build_tiny_text_encoder().save_pretrained(tmp_path / "text_encoder")
    torch.manual_seed(0)
    with caplog.at_level(logging.WARNING, logger="lumiere"):
        ssr = SuperResolutionModule(unet=build_unet("if_stage2_tiny", sample_size=16), resolution=32, low_res_size=16,
                                    text_encoder_path=str(tmp_path / "text_encoder"), objective=DiffusionObjective(),
                                    optimizer=partial(torch.optim.AdamW, lr=1e-4), ema_decay=None)
    assert len(size_warnings(caplog)) == 1 and ssr.sample_size == 32
    videos = ssr.upsample(torch.zeros(1, 3, 2, 16, 16), ["a cat"], num_inference_steps=1, progress=False)
    assert videos.shape == (1, 3, 2, 32, 32)


@pytest.mark.parametrize(("experiment", "data_key"), [("tiny_stunet", "resolution"), ("tiny_t2i", "resolution"),
                                                      ("tiny_ssr", "hr_resolution"), ("tiny_ssr_t2i", "hr_resolution")])
def test_every_stage_takes_its_size_from_the_data(experiment, data_key, tmp_path):
    cfg = compose_config("train", [f"experiment={experiment}", f"data.{data_key}=48"], tmp_path)
    OmegaConf.resolve(cfg)
    assert cfg.model.resolution == 48
