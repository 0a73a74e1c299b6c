"""The application stages through the real train configs: conditional fine-tune and style fine-tune.

`python train.py experiment=tiny_conditional` / `experiment=tiny_style_t2i` run in-process on the
tiny synthetic shards, starting from the shared tiny chain's base checkpoint and T2I export.
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


def test_style_experiment_exports_a_style_t2i_that_interpolates_into_the_base(workspace, chain):
    from lumiere.apps import interpolate_spatial_weights, load_style_unet_state_dict
    from lumiere.tasks import train
    from lumiere.training import load_module_from_checkpoint

    export = workspace / "artifacts" / "style_t2i"
    cfg = compose_config("train", ["experiment=tiny_style_t2i", f"model.unet_path={chain.t2i_dir}/unet",
                                   f"model.text_encoder_path={chain.t2i_dir}/text_encoder", f"export_dir={export}",
                                   *overrides(workspace, "style")], workspace / "style")
    train(cfg)
    style = load_style_unet_state_dict(str(export))
    base = load_module_from_checkpoint(chain.base_ckpt)
    original = base.network.unet.state_dict()
    assert any(not torch.equal(style[name], original[name]) for name in original), "the style fine-tune changed nothing"
    styled = interpolate_spatial_weights(base.network, style, 1.0).unet.state_dict()
    assert all(torch.equal(styled[name], style[name]) for name in original)
    # The text encoder stayed frozen: the export's encoder is the T2I stage's.
    from safetensors.torch import load_file

    exported = load_file(os.path.join(export, "text_encoder", "model.safetensors"))
    source = load_file(os.path.join(chain.t2i_dir, "text_encoder", "model.safetensors"))
    assert all(torch.equal(exported[name], source[name]) for name in source)
