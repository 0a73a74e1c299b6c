"""End to end through the real configs: SSR stage 0 -> export -> inflated SSR -> checkpoint -> cascade.

The base model of the cascade is a tiny STUNet inflated from a random T2I U-Net (2 training
steps): what matters here is that its 16 px clips chain into the 16 -> 32 px SSR.
"""

from __future__ import annotations

import pytest
import torch

from training_helpers import compose_config, make_tiny_dataset

pytestmark = pytest.mark.slow


def path_overrides(root, stage: str) -> list[str]:
    return [f"paths.data_dir={root / 'data'}", f"paths.artifacts_dir={root / 'artifacts'}",
            f"paths.output_dir={root / stage}", "logger=csv", "trainer.enable_progress_bar=false"]


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """Tiny data (16 px clips with 32 px twins) and a T2I 'export' (random U-Net, text encoder)."""
    from lumiere.models import build_tiny_text_encoder, build_unet, save_unet

    root = tmp_path_factory.mktemp("ssr_pipeline")
    make_tiny_dataset(root / "data")
    torch.manual_seed(0)
    build_tiny_text_encoder().save_pretrained(root / "artifacts" / "t2i" / "text_encoder")
    save_unet(build_unet("if_stage1_tiny"), root / "artifacts" / "t2i" / "unet")
    return root


@pytest.fixture(scope="module")
def base_ckpt(workspace):
    from lumiere.tasks import train

    overrides = ["experiment=tiny_stunet", "trainer.max_steps=2", *path_overrides(workspace, "stunet")]
    train(compose_config("train", overrides, workspace / "stunet"))
    return workspace / "stunet" / "checkpoints" / "last.ckpt"


@pytest.fixture(scope="module")
def ssr_t2i_run(workspace):
    from lumiere.tasks import train

    overrides = ["experiment=tiny_ssr_t2i", f"export_dir={workspace / 'artifacts' / 'ssr'}",
                 *path_overrides(workspace, "ssr_t2i")]
    return train(compose_config("train", overrides, workspace / "ssr_t2i"))


@pytest.fixture(scope="module")
def ssr_ckpt(workspace, ssr_t2i_run):
    from lumiere.tasks import train

    train(compose_config("train", ["experiment=tiny_ssr", *path_overrides(workspace, "ssr")], workspace / "ssr"))
    return workspace / "ssr" / "checkpoints" / "last.ckpt"


def generate_config(workspace, base, ssr, out_dir, *extra):
    overrides = [f"ckpt_path={base}", f"ssr_ckpt_path={ssr}", f"out_dir={out_dir}",
                 "prompts=[a red circle moving right,a blue square rotating]", "num_frames=8",
                 "num_inference_steps=2", "ssr.num_inference_steps=2", "ssr.window=4",
                 f"paths.log_dir={workspace / 'logs'}", *extra]
    return compose_config("generate", overrides, out_dir)


def test_ssr_stage0_exports_a_2d_ssr_that_the_inflation_stage_loads(workspace, ssr_t2i_run):
    from lumiere.models import load_unet
    from lumiere.training.ssr import read_ssr_meta

    assert torch.isfinite(torch.tensor(ssr_t2i_run["train/loss"]))
    export = workspace / "artifacts" / "ssr" / "ssr_unet"
    unet = load_unet(export)
    assert unet.config.in_channels == 6 and unet.config.sample_size == 32
    meta = read_ssr_meta(export)
    assert (meta["low_res_size"], meta["sample_size"]) == (16, 32)
    assert list((workspace / "ssr_t2i" / "samples").glob("step_*/*.mp4")), "no validation upsamplings"


def test_inflated_ssr_checkpoint_holds_only_temporal_weights_and_rebuilds(workspace, ssr_ckpt):
    from lumiere.training import load_module_from_checkpoint
    from lumiere.viz import read_video

    checkpoint = torch.load(ssr_ckpt, map_location="cpu", weights_only=True)
    keys = list(checkpoint["state_dict"])
    assert keys and not any(key.startswith(("network.unet.", "text_encoder.")) for key in keys), \
        "frozen 2D SSR or text encoder weights leaked into the inflated SSR checkpoint"
    assert checkpoint["lumiere"]["model_config"]["_target_"].endswith("SuperResolutionModule")
    module = load_module_from_checkpoint(str(ssr_ckpt))
    assert module.inflated and (module.low_res_size, module.sample_size) == (16, 32)
    samples = sorted((workspace / "ssr" / "samples").glob("step_*/*.mp4"))
    assert samples, "validation wrote no upsampled clips"
    # bilinear | SSR | ground truth, side by side
    assert tuple(read_video(samples[0]).shape) == (3, 8, 32, 3 * 32)


def test_cascade_from_prompts_writes_high_resolution_videos(workspace, base_ckpt, ssr_ckpt):
    """generate.py's cascade: base clip (16 px) -> SSR with MultiDiffusion (8 frames, windows of 4) -> 32 px mp4."""
    from lumiere.tasks import generate
    from lumiere.viz import read_video

    out_dir = workspace / "cascade"
    metrics = generate(generate_config(workspace, base_ckpt, ssr_ckpt, out_dir))
    assert metrics["num_videos"] == 2
    base_videos = sorted((out_dir / "base" / "batch_00000").glob("*.mp4"))
    high_videos = sorted((out_dir / "ssr" / "batch_00000").glob("*.mp4"))
    assert len(base_videos) == len(high_videos) == 2
    assert tuple(read_video(base_videos[0]).shape) == (3, 8, 16, 16)
    for path in high_videos:
        assert tuple(read_video(path).shape) == (3, 8, 32, 32)
    assert list((out_dir / "ssr" / "batch_00000").glob("*_xt.png"))
    # the one-look GIF: each base clip (pixels enlarged x2) above its SSR output, clips side by side
    from PIL import Image

    with Image.open(out_dir / "ssr" / "batch_00000" / "cascade.gif") as gif:
        assert gif.n_frames == 8
        scale = gif.size[1] // (2 * 32)  # small clips are enlarged for viewing
        assert gif.size == (2 * 32 * scale, 2 * 32 * scale)


def test_cascade_rejects_a_base_model_whose_frames_are_not_the_ssr_input_size(workspace, base_ckpt, ssr_ckpt):
    """A base model making 8 px frames cannot feed a 16 -> 32 px SSR: ConfigError before any sampling."""
    from lumiere.errors import ConfigError
    from lumiere.models import build_unet, save_unet
    from lumiere.tasks import generate

    # The same tiny STUNet weights over a T2I U-Net whose sample size is 8 px (other frozen weights than
    # it was trained on: allow_frozen_mismatch lets it load, so that the size check is what refuses it).
    save_unet(build_unet("if_stage1_tiny", sample_size=8), workspace / "artifacts" / "t2i_8px" / "unet")
    checkpoint = torch.load(base_ckpt, map_location="cpu", weights_only=True)
    checkpoint["lumiere"]["model_config"]["unet_path"] = str(workspace / "artifacts" / "t2i_8px" / "unet")
    checkpoint["lumiere"]["model_config"]["resolution"] = 8  # the base's frame size is its configured resolution
    small_base = workspace / "base_8px.ckpt"
    torch.save(checkpoint, small_base)

    out_dir = workspace / "mismatch"
    with pytest.raises(ConfigError, match=r"16x16 -> 32x32 frames, but got 8x8"):
        generate(generate_config(workspace, small_base, ssr_ckpt, out_dir, "allow_frozen_mismatch=true"))
    assert not list(out_dir.glob("base/*/*.mp4")), "the base clips were sampled before the size check"
