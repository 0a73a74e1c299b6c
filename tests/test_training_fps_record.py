"""The frame rate a stage really trained at is kept in its checkpoint (issue 19, item 4) and sampling
writes clips at it: `data.target_fps=12` on the 16 fps tiny data reads every round(16 / 12) = 1st
frame, so the clips played at 16 fps, not 12."""

from __future__ import annotations

from collections import Counter

import pytest
import torch

from training_helpers import compose_config, make_tiny_t2i_workspace

pytestmark = pytest.mark.slow

SOURCE_FPS = 16  # the tiny benchmark's frame rate (training_helpers.TINY_DATA)
TARGET_FPS = 12  # stride round(16 / 12) = 1: the clips keep all 16 source frames per second
STEPS = 2
BATCH_SIZE = 2


@pytest.fixture(scope="module")
def trained_checkpoint(tmp_path_factory):
    from lumiere.tasks import train

    root = make_tiny_t2i_workspace(tmp_path_factory.mktemp("fps_record"))
    overrides = ["experiment=tiny_stunet", f"paths.data_dir={root / 'data'}", f"paths.artifacts_dir={root / 'artifacts'}",
                 f"paths.output_dir={root / 'stunet'}", "logger=csv", "trainer.enable_progress_bar=false",
                 "trainer.limit_val_batches=0", f"trainer.max_steps={STEPS}", f"data.batch_size={BATCH_SIZE}",
                 "callbacks.model_checkpoint.every_n_train_steps=1", f"data.target_fps={TARGET_FPS}"]
    torch.manual_seed(0)
    train(compose_config("train", overrides, root / "stunet"))
    return root / "stunet" / "checkpoints" / "last.ckpt"


def test_the_checkpoint_records_the_real_training_fps(trained_checkpoint):
    checkpoint = torch.load(trained_checkpoint, map_location="cpu", weights_only=True)
    assert checkpoint["datamodule_hyper_parameters"]["target_fps"] == TARGET_FPS
    assert checkpoint["data_fps"] == {"most_common": float(SOURCE_FPS), "counts": {"16.0": STEPS * BATCH_SIZE}}


def test_a_loaded_stage_keeps_counting_from_the_checkpoint(trained_checkpoint):
    from lumiere.training import load_module_from_checkpoint

    module = load_module_from_checkpoint(str(trained_checkpoint))
    assert module.data_fps_counts == Counter({float(SOURCE_FPS): STEPS * BATCH_SIZE})
    module.count_data_fps({"fps": torch.tensor([12.5, 16.0, 0.0])})  # 0: a clip with no known rate, not counted
    assert module.data_fps_record() == {"most_common": 16.0, "counts": {"16.0": STEPS * BATCH_SIZE + 1, "12.5": 1}}


def test_generate_writes_clips_at_the_fps_the_model_trained_at(trained_checkpoint, tmp_path):
    import av

    from lumiere.tasks import generate
    from lumiere.tasks.generation import training_fps

    assert training_fps(str(trained_checkpoint)) == SOURCE_FPS
    out_dir = tmp_path / "videos"
    overrides = [f"ckpt_path={trained_checkpoint}", "prompts=[a red circle]", f"out_dir={out_dir}", "num_frames=8",
                 "num_inference_steps=2", f"paths.log_dir={tmp_path / 'logs'}"]
    assert generate(compose_config("generate", overrides, tmp_path))["num_videos"] == 1
    (clip,) = (out_dir / "base" / "batch_00000").glob("*.mp4")
    with av.open(str(clip)) as container:
        assert float(container.streams.video[0].average_rate) == SOURCE_FPS


def test_without_a_record_the_target_fps_is_the_training_fps(trained_checkpoint, tmp_path):
    from lumiere.tasks.generation import training_fps

    checkpoint = torch.load(trained_checkpoint, map_location="cpu", weights_only=True)
    del checkpoint["data_fps"]  # a checkpoint written before the record was kept
    torch.save(checkpoint, tmp_path / "old.ckpt")
    assert training_fps(str(tmp_path / "old.ckpt")) == TARGET_FPS
