"""The application stages through the real train configs: conditional fine-tune and style fine-tune.

`python train.py experiment=tiny_conditional` runs in-process on the tiny synthetic shards from
the shared tiny chain's base checkpoint; `experiment=tiny_style_t2i` is composed and instantiated
(the chain already trained that module).
"""

from __future__ import annotations

import os

import pytest
import torch

from apps_fixtures import shared_tiny_chain
from training_helpers import compose_config, make_tiny_dataset

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def chain(tmp_path_factory):
    return shared_tiny_chain(tmp_path_factory)


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    root = tmp_path_factory.mktemp("apps_pipeline")
    make_tiny_dataset(root / "data")
    return root


def overrides(root, stage: str) -> list[str]:
    return [f"paths.data_dir={root / 'data'}", f"paths.artifacts_dir={root / 'artifacts'}",
            f"paths.output_dir={root / stage}", "logger=csv", "trainer.enable_progress_bar=false"]


def test_conditional_experiment_trains_checkpoints_and_samples_image_to_video(workspace, chain):
    from lumiere.tasks import train
    from lumiere.training import load_module_from_checkpoint
    from lumiere.training.conditional import ConditionalVideoModule

    cfg = compose_config("train", ["experiment=tiny_conditional", f"model.base_ckpt_path={chain.base_ckpt}",
                                   *overrides(workspace, "conditional")], workspace / "conditional")
    metrics = train(cfg)
    assert torch.isfinite(torch.tensor(metrics["train/loss"])) and "val/loss" in metrics
    run_dir = workspace / "conditional"
    samples = list((run_dir / "samples").glob("step_*/*image_to_video*.mp4"))
    assert samples, "validation wrote no image-to-video samples"
    module = load_module_from_checkpoint(str(run_dir / "checkpoints" / "last.ckpt"))
    assert isinstance(module, ConditionalVideoModule) and module.network.unet.config.in_channels == 7
    checkpoint = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    unet_keys = [key for key in checkpoint["state_dict"] if key.startswith("network.unet.")]
    assert unet_keys == ["network.unet.conv_in.conditioning.weight"], unet_keys


def test_style_experiment_config_builds_the_style_fine_tune_of_the_t2i_export(workspace, chain):
    """`experiment=tiny_style_t2i` instantiates the style module from an export; its training (in the chain) works."""
    from hydra.utils import instantiate
    from safetensors.torch import load_file

    from lumiere.apps import interpolate_spatial_weights, load_style_unet_state_dict
    from lumiere.data.style import StyleTransform
    from lumiere.training import load_module_from_checkpoint
    from lumiere.training.style_finetune import StyleFineTuneModule

    # the chain's T2I (tests/tiny_chain.py) regresses epsilon; the demo/tiny experiments use v
    cfg = compose_config("train", ["experiment=tiny_style_t2i", f"model.unet_path={chain.t2i_dir}/unet",
                                   f"model.text_encoder_path={chain.t2i_dir}/text_encoder",
                                   "model.objective.prediction_type=epsilon",
                                   *overrides(workspace, "style")], workspace / "style")
    module = instantiate(cfg.model, _convert_="partial")
    assert isinstance(module, StyleFineTuneModule) and isinstance(module.style, StyleTransform)
    assert cfg.export_dir.endswith("style_t2i")
    assert not any(p.requires_grad for p in module.text_encoder.parameters())
    batch = {"video": torch.rand(2, 3, 1, 16, 16) * 2 - 1, "caption": ["a", "b"]}
    styled, _ = module.prepare_batch(batch, [torch.Generator()] * 2)
    assert torch.equal(styled, module.style(batch["video"]))

    # The chain fine-tuned the same module for a few steps: its export differs from the T2I in the
    # U-Net only (the text encoder stays frozen), and interpolates into the base STUNet.
    style = load_style_unet_state_dict(chain.style_dir)
    base = load_module_from_checkpoint(chain.base_ckpt)
    original = base.network.unet.state_dict()
    assert any(not torch.equal(style[name], original[name]) for name in original), "the style fine-tune changed nothing"
    styled_unet = interpolate_spatial_weights(base.network, style, 1.0).unet.state_dict()
    assert all(torch.equal(styled_unet[name], style[name]) for name in original)
    exported = load_file(os.path.join(chain.style_dir, "text_encoder", "model.safetensors"))
    source = load_file(os.path.join(chain.t2i_dir, "text_encoder", "model.safetensors"))
    assert all(torch.equal(exported[name], source[name]) for name in source)
