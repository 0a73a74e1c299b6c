"""README "Train on your own videos" at tiny size (issue 19, item 7), on videos this test makes:
six clips of mixed lengths and frame rates (25, 30, 16, 24 fps; two shorter than a training clip)
plus a captions CSV, two of them held out.

convert (train split and the held-out split) -> stage 0 on the converted shards (the stage draws
still frames by itself) -> the first training batch on disk -> the STUNet on the same shards ->
sample a clip -> FVD of sampled clips against the held-out real clips.

Each step runs the entry point's own task function on the config the command line would compose
(`python train.py experiment=tiny_t2i data=webdataset data.root=...`, ...), so the commands in the
README are these overrides. The FVD's I3D is randomly initialised in the real layout (no download):
the number is meaningless, the path to it is the real one.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import av
import numpy as np
import pytest
import torch

from lumiere.data.codec import encode_h264
from lumiere.data.convert import main as convert

from data_fixtures import moving_bar_frames
from training_helpers import compose_config

pytestmark = pytest.mark.slow

# name: (source frames, source fps, caption); at 16 fps: 39, 26, 40, 7, 43 and 27 frames
VIDEOS = {
    "walk25": (60, 25, "a bar walking right"),
    "walk30": (48, 30, "a bar walking right quickly"),
    "slide16": (40, 16, "a bar sliding right"),
    "blink25": (10, 25, "a bar blinking"),          # 7 frames at 16 fps: shorter than an 8-frame clip at 8 fps
    "drift24": (64, 24, "a bar drifting right"),    # held out
    "swing30": (50, 30, "a bar swinging right"),    # held out
}
HELD_OUT = ("drift24", "swing30")
SHORT = ("blink25",)


def _write_inputs(root: Path) -> Path:
    videos = root / "my_videos"
    videos.mkdir(parents=True)
    for name, (frames, fps, _) in VIDEOS.items():
        (videos / f"{name}.mp4").write_bytes(encode_h264(moving_bar_frames(frames, 16, 16), fps))
    for split, names in (("train", [n for n in VIDEOS if n not in HELD_OUT]), ("test", HELD_OUT)):
        rows = "".join(f"{name}.mp4,{VIDEOS[name][2]}\n" for name in names)
        (root / f"{split}.csv").write_text("video,caption\n" + rows)
    return videos


def _train_overrides(root: Path, run: str) -> list[str]:
    return ["data=webdataset", f"data.root={root / 'data' / 'mine'}", "data.decoder=pyav", "data.pin_memory=false",
            f"paths.log_dir={root / 'outputs'}", f"paths.artifacts_dir={root / 'artifacts'}",
            f"paths.output_dir={root / run}", "trainer.enable_progress_bar=false", "trainer.max_steps=2"]


@pytest.fixture(scope="module")
def walkthrough(tmp_path_factory):
    from lumiere.tasks import evaluate, generate, train

    root = tmp_path_factory.mktemp("own_videos")
    videos = _write_inputs(root)
    shards = root / "data" / "mine"
    reports = {}
    for split in ("train", "test"):
        # python -m lumiere.data.convert --videos my_videos --captions train.csv --out data/mine/train --fps 16
        assert convert(["--videos", str(videos), "--captions", str(root / f"{split}.csv"), "--out", str(shards / split),
                        "--fps", "16", "--clip-frames", "16", "--quiet"]) == 0
        reports[split] = json.loads((shards / split / "convert_report.json").read_text())

    logs = []
    handler = logging.Handler()
    handler.emit = lambda record: logs.append(record.getMessage())
    lumiere_log = logging.getLogger("lumiere")
    level = lumiere_log.level
    lumiere_log.addHandler(handler)
    lumiere_log.setLevel(logging.INFO)
    try:
        # python train.py experiment=tiny_t2i data=webdataset data.root=data/mine export_dir=...
        t2i = root / "artifacts" / "t2i_mine"
        train(compose_config("train", ["experiment=tiny_t2i", *_train_overrides(root, "t2i"), f"export_dir={t2i}"],
                             root / "t2i"))
        # python train.py experiment=tiny_stunet data=webdataset data.root=data/mine model.t2i_path=...
        train(compose_config("train", ["experiment=tiny_stunet", *_train_overrides(root, "stunet"), f"model.t2i_path={t2i}"],
                             root / "stunet"))
    finally:
        lumiere_log.removeHandler(handler)
        lumiere_log.setLevel(level)
    checkpoint = root / "stunet" / "checkpoints" / "last.ckpt"

    # python generate.py ckpt_path=... prompts='["a bar walking right"]' num_frames=16
    generate(compose_config("generate", [f"ckpt_path={checkpoint}", 'prompts=["a bar walking right"]', "num_frames=16",
                                         "num_inference_steps=2", f"out_dir={root / 'samples'}", "device=cpu",
                                         f"paths.log_dir={root / 'outputs'}"], root / "generate"))

    # python evaluate.py evaluation=folder evaluation.real=data/mine/test ckpt_path=... evaluation.prompt_file=...
    from safetensors.torch import save_file

    from lumiere.metrics import I3D

    torch.manual_seed(0)
    i3d = root / "i3d_random.safetensors"
    save_file({key: value.contiguous() for key, value in I3D().state_dict().items()}, str(i3d))
    (root / "prompts.txt").write_text("a bar drifting right\na bar swinging right\n")
    metrics = evaluate(compose_config("evaluate", [
        "evaluation=folder", f"evaluation.real={shards / 'test'}", f"ckpt_path={checkpoint}",
        f"evaluation.prompt_file={root / 'prompts.txt'}", "evaluation.num_frames=16",
        "evaluation.sampling.num_inference_steps=2", f"evaluation.i3d_weights={i3d}", "evaluation.feature_batch_size=2",
        "device=cpu", "progress=false", f"paths.output_dir={root / 'fvd'}", f"paths.log_dir={root / 'outputs'}",
        f"paths.artifacts_dir={root / 'artifacts'}"], root / "fvd"))
    return {"root": root, "reports": reports, "logs": logs, "metrics": metrics}


def test_converter_keeps_every_video_and_says_which_hold_a_clip(walkthrough):
    train_report, test_report = walkthrough["reports"]["train"], walkthrough["reports"]["test"]
    assert (train_report["converted"], train_report["skipped"], test_report["converted"]) == (4, 0, 2)
    assert train_report["unnamed"]["count"] == 2  # the held-out videos sit in the same folder
    check = train_report["clip_check"]  # 16-frame clips at 16 fps: all but the 7-frame one
    assert (check["long_enough"], [entry["source"] for entry in check["too_short"]]) == (3, ["blink25.mp4"])


def test_stage_zero_drew_still_frames_and_wrote_its_first_batch(walkthrough):
    root, logs = walkthrough["root"], walkthrough["logs"]
    assert "TextToImageModule is a text-to-image stage: data.image_mode=true (2 still frames per clip, T = 1)" in logs
    first_batch = root / "t2i" / "samples" / "first_batch"
    assert any(first_batch.glob("*.mp4")) and (first_batch / "sheet.png").is_file()
    with av.open(str(next(first_batch.glob("*.mp4")))) as container:
        assert container.streams.video[0].frames == 1  # T = 1 stills


def test_validation_prompts_are_the_held_out_captions(walkthrough):
    """No val/ folder: validation reads test/, and model.val_prompts=null takes its captions."""
    held_out = [VIDEOS[name][2] for name in HELD_OUT]
    from lumiere.training.base import CHECKPOINT_KEY

    stored = torch.load(walkthrough["root"] / "stunet" / "checkpoints" / "last.ckpt", map_location="cpu",
                        weights_only=True)
    assert sorted(stored[CHECKPOINT_KEY]["model_config"]["val_prompts"]) == sorted(held_out)


def test_a_sampled_clip_and_an_fvd_against_the_held_out_clips(walkthrough):
    root, metrics = walkthrough["root"], walkthrough["metrics"]
    clips = sorted((root / "samples" / "base" / "batch_00000").glob("*.mp4"))
    assert len(clips) == 1
    with av.open(str(clips[0])) as container:
        stream = container.streams.video[0]
        assert (stream.frames, stream.width) == (16, 16)
    assert np.isfinite(metrics["generated/fvd"]) and metrics["generated/num_clips"] == 2
