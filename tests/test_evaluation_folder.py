"""`evaluate.py evaluation=folder`: FVD (and IS when asked) of your own real and generated clips.

The I3D is replaced by a cheap extractor (per-channel mean and spread) everywhere but one test:
the clips still go through the published preprocessing (16 frames, TF1 bilinear to 224), so
every code path but the network's forward is the real one. One test runs a randomly initialised
I3D in the real weight layout (safetensors, loaded by `I3D.from_pretrained`) on 2 + 2 clips and
one test samples from a checkpoint trained for one step.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from metric_stand_ins import PooledColour, TopColour

from training_helpers import REPO_ROOT, compose_config, make_tiny_dataset


@pytest.fixture
def stand_in_i3d(monkeypatch):
    """The stand-in behind the published preprocessing (16 frames resized to 224: about 0.4 s a clip here)."""
    from lumiere.evaluation import features

    monkeypatch.setattr(features, "load_i3d", lambda weights=None, device="cpu": PooledColour())


@pytest.fixture
def fast_stand_in_i3d(monkeypatch):
    """The stand-in on the clips as decoded (no resize to 224): for the tests about everything around the metric."""
    from lumiere.evaluation import features
    from lumiere.metrics import FrechetVideoDistance

    monkeypatch.setattr(features, "load_i3d", lambda weights=None, device="cpu": PooledColour())
    monkeypatch.setattr(features, "i3d_fvd_metric", lambda i3d, ddof=1, real_statistics=None: FrechetVideoDistance(
        feature_extractor=i3d, preprocess=False, ddof=ddof, real_statistics=real_statistics))


def random_video(seed: int, frames: int = 18, height: int = 24, width: int = 32, brightness: float = 0.0):
    generator = torch.Generator().manual_seed(seed)
    return (torch.rand(3, frames, height, width, generator=generator) * 2 - 1 + brightness).clamp(-1, 1)


def write_videos(folder, count: int, seed: int, suffixes=(".mp4",), frames: int = 18, brightness: float = 0.0,
                 fps: float = 8):
    """`count` random clips, cycling through `suffixes` (.mp4 .gif .npy); returns their paths."""
    from lumiere.evaluation.ucf101_protocol import write_npy_video
    from lumiere.viz import write_gif, write_mp4

    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for index in range(count):
        suffix = suffixes[index % len(suffixes)]
        path = folder / f"clip{index:02d}{suffix}"
        video = random_video(seed + index, frames, brightness=brightness)
        if suffix == ".gif":
            write_gif(path, video, fps=fps, scale=1)
        elif suffix == ".npy":
            write_npy_video(path, video)
        else:
            write_mp4(path, video, fps=fps)
        paths.append(path)
    return paths


def folder_config(tmp_path, *extra: str, run: str = "run"):
    return compose_config("evaluate", [
        "evaluation=folder", f"paths.output_dir={tmp_path / run}", f"paths.artifacts_dir={tmp_path / 'artifacts'}",
        "progress=false", *extra], tmp_path / run)


def read_table(run_dir):
    return json.loads((run_dir / "folder_eval.json").read_text())


def count_decoded_sides(monkeypatch) -> list[str]:
    """The side ("real" / "generated") of every video the evaluation opens, in order."""
    from lumiere.evaluation import folder_clips

    opened, original = [], folder_clips._encoded_videos

    def counting(source):
        for item in original(source):
            opened.append(source.side)
            yield item

    monkeypatch.setattr(folder_clips, "_encoded_videos", counting)
    return opened


def fvd_by_hand(real_videos, generated_videos, extractor, ddof=1) -> float:
    """The FVD of two lists of (3, T, H, W) videos through the metric directly (first 16 frames each)."""
    from lumiere.metrics import FrechetVideoDistance

    metric = FrechetVideoDistance(feature_extractor=extractor, preprocess=True, ddof=ddof)
    metric.update(torch.stack([video[:, :16] for video in real_videos]), real=True)
    metric.update(torch.stack([video[:, :16] for video in generated_videos]), real=False)
    return float(metric.compute())


# ---------------------------------------------------------------------------------------------- the mode
def test_folder_fvd_writes_the_table_with_the_variant_and_caches_the_real_statistics(tmp_path, stand_in_i3d,
                                                                                      monkeypatch):
    from lumiere.evaluation.ucf101_protocol import read_video_file
    from lumiere.tasks import evaluate

    real = write_videos(tmp_path / "real", 3, seed=0, suffixes=(".mp4", ".gif", ".npy"))
    generated = write_videos(tmp_path / "generated", 2, seed=100, brightness=0.3)
    opened = count_decoded_sides(monkeypatch)
    overrides = [f"evaluation.real={tmp_path / 'real'}", f"evaluation.generated={tmp_path / 'generated'}"]
    metrics = evaluate(folder_config(tmp_path, *overrides))

    table = read_table(tmp_path / "run")
    row = table["rows"][0]
    variant = "tf1-legacy-bilinear-224, first16, PooledColour-6, ddof1"
    assert row["fvd_variant"] == variant and row["num_clips"] == 2 and row["num_real"] == 3
    assert row["is"] is None and "not computed" in row["is_variant"]
    assert metrics["generated/fvd"] == row["fvd"]
    # The same number as the metric on the same decoded frames; the batches differ (sums in
    # another order, float64), and the decoded mp4 frames are the files' frames either way.
    expected = fvd_by_hand([read_video_file(p) for p in real], [read_video_file(p) for p in generated], PooledColour())
    assert row["fvd"] == pytest.approx(expected, rel=1e-9)
    assert row["fvd"] > 0.01  # brighter generated clips: a clear distance
    markdown = (tmp_path / "run" / "folder_eval.md").read_text()
    assert f"| {row['fvd']:.2f} | {variant} |" in markdown  # the variant beside the number
    assert "computed now" in markdown
    assert (tmp_path / "run" / "folder_eval.csv").read_text().splitlines()[0].startswith("method,fvd,fvd_variant")
    assert opened == ["real"] * 3 + ["generated"] * 2

    # Other generated clips against the same real folder: the real videos are not decoded again.
    write_videos(tmp_path / "generated2", 2, seed=200)
    opened.clear()
    evaluate(folder_config(tmp_path, f"evaluation.real={tmp_path / 'real'}",
                           f"evaluation.generated={tmp_path / 'generated2'}", run="run2"))
    assert opened == ["generated"] * 2
    second = read_table(tmp_path / "run2")
    assert second["real_statistics_computed_now"] is False and second["real_statistics"] == table["real_statistics"]
    assert second["rows"][0]["num_real"] == 3 and "(cached" in second["notes"][0]

    # A changed real folder (one more video) is read again, into another cache file.
    write_videos(tmp_path / "real_more", 1, seed=50)
    os.replace(tmp_path / "real_more" / "clip00.mp4", tmp_path / "real" / "extra.mp4")
    opened.clear()
    evaluate(folder_config(tmp_path, *overrides, run="run3"))
    third = read_table(tmp_path / "run3")
    assert opened.count("real") == 4 and third["real_statistics_computed_now"] is True
    assert third["real_statistics"] != table["real_statistics"] and third["rows"][0]["num_real"] == 4


def test_shards_and_folders_of_the_same_videos_give_the_same_fvd(tmp_path, fast_stand_in_i3d):
    from lumiere.data.shards import ShardSink
    from lumiere.tasks import evaluate

    real = write_videos(tmp_path / "real", 4, seed=0)
    write_videos(tmp_path / "generated", 3, seed=100)
    with ShardSink(tmp_path / "shards", prefix="real", max_bytes=10**9, max_count=2) as sink:
        for path in real:
            sink.write({"__key__": path.stem, "mp4": path.read_bytes(), "txt": "a clip", "json": b'{"fps": 8}'})
    assert len(list((tmp_path / "shards").glob("*.tar"))) == 2
    generated = f"evaluation.generated={tmp_path / 'generated'}"
    from_files = evaluate(folder_config(tmp_path, f"evaluation.real={tmp_path / 'real'}", generated, run="files"))
    from_shards = evaluate(folder_config(tmp_path, f"evaluation.real={tmp_path / 'shards'}", generated, run="shards"))
    # Same frames in the same order: the same sums.
    assert from_shards["generated/fvd"] == pytest.approx(from_files["generated/fvd"], rel=1e-12)
    brace = tmp_path / "shards" / "real-{000000..000001}.tar"
    pattern = evaluate(folder_config(tmp_path, f"evaluation.real='{brace}'",
                                     generated, run="pattern"))
    assert pattern["generated/fvd"] == pytest.approx(from_files["generated/fvd"], rel=1e-12)


def test_window_policies_on_a_160_frame_video(tmp_path):
    from lumiere.evaluation.folder_clips import SideCounts, WindowOptions, find_video_source, iter_clips
    from lumiere.viz import write_mp4

    (tmp_path / "long").mkdir()
    write_mp4(tmp_path / "long" / "long.mp4", random_video(0, frames=160, height=16, width=16), fps=25)
    source = find_video_source(tmp_path / "long", "real", "evaluation.real")
    clips = {}
    for windows, target_fps in (("first", None), ("all", None), ("all", 12.5)):
        counts = SideCounts()
        clips[windows, target_fps] = list(iter_clips(source, WindowOptions(windows, target_fps), counts))
        assert counts.videos == 1 and counts.clips == len(clips[windows, target_fps])
    assert len(clips["first", None]) == 1 and len(clips["all", None]) == 10  # 160 // 16
    assert len(clips["all", 12.5]) == 5  # stride 2: 31 source frames per window, 160 // 31
    assert all(clip.shape == (16, 16, 16, 3) and clip.dtype == torch.uint8 for clip in clips["all", None])
    # Windows follow each other: the second one starts at source frame 16.
    assert torch.equal(clips["all", None][0], clips["first", None][0])
    from lumiere.data.decoders import decode_frames

    frame16, _ = decode_frames((tmp_path / "long" / "long.mp4").read_bytes(), [16], backend="pyav")
    assert torch.equal(clips["all", None][1][0], frame16[0])


def test_decord_reads_gifs_through_the_pyav_fallback(tmp_path):
    from lumiere.evaluation.folder_clips import SideCounts, WindowOptions, find_video_source, iter_clips

    write_videos(tmp_path / "gifs", 2, seed=0, suffixes=(".gif",))
    counts = SideCounts()
    clips = list(iter_clips(find_video_source(tmp_path / "gifs", "real", "evaluation.real"),
                            WindowOptions(decoder="decord"), counts))
    # GIF frame delays are whole centiseconds: 1/8 s is stored as 12 cs, read back as 100/12 fps.
    assert len(clips) == 2 and counts.source_fps == {round(100 / 12, 3): 2}


def test_generate_py_output_is_read_once_per_clip(tmp_path):
    """generate.py writes each clip as .mp4 and .gif, plus all.gif, sheet.png and x-t slices."""
    from lumiere.evaluation.folder_clips import find_video_source
    from lumiere.training.callbacks import write_video_set

    batch = tmp_path / "videos" / "base" / "batch_00000"
    write_video_set(str(batch), torch.stack([random_video(0, 4, 8, 8), random_video(1, 4, 8, 8)]), ["a cat", "a dog"],
                    fps=8)
    (tmp_path / "videos" / "base" / ".batch_00002.partial-x").mkdir()
    (tmp_path / "videos" / "base" / ".batch_00002.partial-x" / "00_a_cat.mp4").write_bytes(b"half")
    source = find_video_source(tmp_path / "videos" / "base", "generated", "evaluation.generated")
    assert [path.name for path in source.paths] == ["00_a_cat.mp4", "01_a_dog.mp4"]
    assert source.left_out == {"generate.py side-by-side GIF": 1, "same name, another suffix": 2,
                               "not a video file": 4}  # 2 x-t slices, sheet.png, prompts.txt


def test_inception_score_only_when_asked_and_only_then_the_c3d_files(tmp_path, fast_stand_in_i3d, monkeypatch):
    from lumiere.errors import InputFileError
    from lumiere.evaluation import folder
    from lumiere.metrics import VideoInceptionScore
    from lumiere.tasks import evaluate

    write_videos(tmp_path / "real", 3, seed=0)
    write_videos(tmp_path / "generated", 4, seed=100)
    sides = [f"evaluation.real={tmp_path / 'real'}", f"evaluation.generated={tmp_path / 'generated'}"]
    with pytest.raises(InputFileError, match="C3D weights.*evaluation.inception_score=false for the FVD alone"):
        evaluate(folder_config(tmp_path, *sides, "evaluation.inception_score=true",
                               f"evaluation.c3d_weights={tmp_path / 'missing.npz'}", f"evaluation.c3d_mean={tmp_path / 'm.npz'}"))
    assert not (tmp_path / "artifacts").exists(), "the real statistics were computed before the C3D check"

    monkeypatch.setattr(folder, "load_inception_score",
                        lambda settings: VideoInceptionScore(classifier=TopColour(), splits=settings.is_splits))
    metrics = evaluate(folder_config(tmp_path, *sides, "evaluation.inception_score=true", "evaluation.is_splits=2"))
    row = read_table(tmp_path / "run")["rows"][0]
    assert 1.0 <= metrics["generated/is"] <= 3.0  # IS of 3 classes lies in [1, 3]
    assert row["is_variant"] == "C3D (TGANv2 UCF101), 2 split(s)"


# ---------------------------------------------------------------------------------------------- bad input
def bad_input_cases(tmp_path):
    """(overrides, message fragment) of every refused input; the folders are made here."""
    (tmp_path / "empty").mkdir()
    (tmp_path / "text").mkdir()
    (tmp_path / "text" / "notes.txt").write_text("no videos here\n")
    (tmp_path / "broken").mkdir()
    for name in ("a.mp4", "b.mp4"):
        (tmp_path / "broken" / name).write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(200))  # a PNG named .mp4
    write_videos(tmp_path / "one", 1, seed=0)
    write_videos(tmp_path / "short", 2, seed=0, frames=8)
    write_videos(tmp_path / "good", 3, seed=10)
    write_videos(tmp_path / "mixed", 2, seed=20)
    write_videos(tmp_path / "mixed_short", 1, seed=30, frames=12)
    os.replace(tmp_path / "mixed_short" / "clip00.mp4", tmp_path / "mixed" / "short.mp4")
    good = f"evaluation.generated={tmp_path / 'good'}"
    return [
        ([f"evaluation.real={tmp_path / 'empty'}", good], "evaluation.real: no video files"),
        ([f"evaluation.real={tmp_path / 'text'}", good], "(only 1 other file(s))"),
        ([f"evaluation.real={tmp_path / 'nope'}", good], "not found"),
        ([good], "evaluation.real is not set: set evaluation.real=PATH"),
        ([f"evaluation.real={tmp_path / 'good'}"], "needs generated clips: set evaluation.generated=PATH"),
        ([f"evaluation.real={tmp_path / 'broken'}", good], "real video " + str(tmp_path / "broken" / "a.mp4")),
        ([f"evaluation.real={tmp_path / 'broken'}", good, "evaluation.unusable_videos=skip"],
         "none of the 2 real videos in"),
        ([f"evaluation.real={tmp_path / 'one'}", good], "gives 1 real clip(s); the FVD needs at least 2"),
        ([f"evaluation.real={tmp_path / 'good'}", f"evaluation.generated={tmp_path / 'short'}"],
         "has 8 frames, a 16-frame clip needs 16"),
        ([f"evaluation.real={tmp_path / 'mixed'}", good], "short.mp4 has 12 frames"),
        ([f"evaluation.real={tmp_path / 'good'}", good, "ckpt_path=model.ckpt"], "not both"),
        ([f"evaluation.real={tmp_path / 'good'}", good, "evaluation.windows=some"], "evaluation.windows must be one of"),
        ([f"evaluation.real={tmp_path / 'good'}", good, "evaluation.prompt_file=p.txt"], "set ckpt_path=PATH too"),
        ([f"evaluation.real={tmp_path / 'good'}", good, "videos_dir=x"], "not videos_dir"),
        ([f"evaluation.real={tmp_path / 'good'}", good, "+evaluation.colour=1"], "unknown setting evaluation.colour"),
    ]


def test_bad_inputs_are_one_line_errors(tmp_path, fast_stand_in_i3d):
    from lumiere.errors import LumiereError
    from lumiere.tasks import evaluate

    for index, (overrides, fragment) in enumerate(bad_input_cases(tmp_path)):
        with pytest.raises(LumiereError) as error:
            evaluate(folder_config(tmp_path, *overrides, run=f"bad{index}"))
        message = str(error.value)
        assert fragment in message and "\n" not in message, (overrides, message)


def test_skipped_short_videos_are_counted_in_the_table(tmp_path, fast_stand_in_i3d):
    from lumiere.data.decoders import TooFewFramesError
    from lumiere.tasks import evaluate

    too_short = TooFewFramesError(12, 16).reason  # the decoders' name for the reason
    bad_input_cases(tmp_path)  # makes the folders
    evaluate(folder_config(tmp_path, f"evaluation.real={tmp_path / 'mixed'}", f"evaluation.generated={tmp_path / 'good'}",
                           "evaluation.unusable_videos=skip"))
    table = read_table(tmp_path / "run")
    assert table["real"]["unusable"] == {too_short: 1} and table["rows"][0]["num_real"] == 2
    assert any(note.startswith("real: 1 video(s) left out") and f"short.mp4 ({too_short})" in note
               for note in table["notes"])


@pytest.mark.slow
def test_evaluate_py_exits_non_zero_with_one_error_line(tmp_path):
    (tmp_path / "empty").mkdir()
    env = {**os.environ, "PROJECT_ROOT": str(REPO_ROOT), "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, str(REPO_ROOT / "evaluate.py"), "evaluation=folder",
                           f"evaluation.real={tmp_path / 'empty'}", f"evaluation.generated={tmp_path / 'empty'}",
                           f"paths.log_dir={tmp_path / 'logs'}", f"hydra.run.dir={tmp_path / 'run'}"],
                          capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 2, done.stderr[-2000:]
    assert "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines()[-1].startswith("error: evaluation.real: no video files")


# ---------------------------------------------------------------------------------------------- the real I3D layout
@pytest.mark.slow
def test_random_i3d_in_the_real_layout_names_the_published_variant(tmp_path):
    """The network of the FVD, randomly initialised and saved as safetensors in the converted layout:
    the metric is the real one end to end (4 I3D forwards at 224x224, about 1 s each on one core)."""
    from safetensors.torch import save_file

    from lumiere.metrics import I3D, fvd_variant
    from lumiere.tasks import evaluate

    torch.manual_seed(0)
    weights = tmp_path / "i3d.safetensors"
    save_file({key: value.contiguous() for key, value in I3D().state_dict().items()}, str(weights))
    write_videos(tmp_path / "real", 2, seed=0, frames=16)
    write_videos(tmp_path / "generated", 2, seed=100, frames=16, brightness=0.5)
    metrics = evaluate(folder_config(tmp_path, f"evaluation.real={tmp_path / 'real'}",
                                     f"evaluation.generated={tmp_path / 'generated'}", f"evaluation.i3d_weights={weights}",
                                     "evaluation.feature_batch_size=2"))
    row = read_table(tmp_path / "run")["rows"][0]
    assert row["fvd_variant"] == fvd_variant(ddof=1) == "tf1-legacy-bilinear-224, first16, eps1e-3, logits400, ddof1"
    assert np.isfinite(metrics["generated/fvd"]) and metrics["generated/fvd"] > 0


# ---------------------------------------------------------------------------------------------- sampling from a checkpoint
TRAINED_FPS = 16  # data.target_fps of the checkpoint below (the tiny experiments' default is 8, the writer's 8)


@pytest.fixture(scope="module")
def base_checkpoint(tmp_path_factory):
    """A tiny T2I and a tiny STUNet on it, one step each through train.py's task, the STUNet at data.target_fps=16."""
    from lumiere.tasks import train

    root = tmp_path_factory.mktemp("folder_ckpt")
    make_tiny_dataset(root / "data")
    for experiment, extra in (("tiny_t2i", f"export_dir={root / 'artifacts' / 't2i'}"),
                              ("tiny_stunet", f"data.target_fps={TRAINED_FPS}")):
        train(compose_config("train", [
            f"experiment={experiment}", f"paths.data_dir={root / 'data'}", f"paths.artifacts_dir={root / 'artifacts'}",
            f"paths.output_dir={root / experiment}", "logger=csv", "trainer.enable_progress_bar=false",
            "trainer.limit_val_batches=0", "trainer.max_steps=1", "callbacks.model_checkpoint.every_n_train_steps=1",
            extra], root / experiment))
    return root / "tiny_stunet" / "checkpoints" / "last.ckpt"


@pytest.mark.slow
def test_checkpoint_and_prompt_file_sample_resumably_at_the_training_fps(tmp_path, fast_stand_in_i3d, monkeypatch,
                                                                           base_checkpoint):
    import av

    from lumiere.evaluation.generated import CheckpointGenerator
    from lumiere.tasks import evaluate

    write_videos(tmp_path / "real", 3, seed=0, frames=16)
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("# two prompts\na red circle moving right\na blue square moving left\n")
    calls, original = [], CheckpointGenerator.__call__
    monkeypatch.setattr(CheckpointGenerator, "__call__",
                        lambda self, batch, seed: calls.append(len(batch)) or original(self, batch, seed))
    overrides = [f"evaluation.real={tmp_path / 'real'}", f"ckpt_path={base_checkpoint}",
                 f"evaluation.prompt_file={prompts}", "evaluation.num_videos=3", "evaluation.num_frames=16",
                 "evaluation.batch_size=2", "evaluation.sampling.num_inference_steps=2",
                 f"evaluation.generated_dir={tmp_path / 'generated'}"]
    metrics = evaluate(folder_config(tmp_path, *overrides))
    assert calls == [2, 1] and np.isfinite(metrics["generated/fvd"]) and metrics["generated/num_clips"] == 3
    videos = tmp_path / "generated" / "videos"
    assert sorted(path.name for path in videos.iterdir()) == [
        f"{index:05d}_clip{suffix}" for index in range(3) for suffix in (".mp4", ".npy")]
    with av.open(str(videos / "00000_clip.mp4")) as container:  # written at the checkpoint's training fps
        assert float(container.streams.video[0].average_rate) == TRAINED_FPS
    plan = (tmp_path / "generated" / "plan.tsv").read_text().splitlines()
    assert plan[3].endswith("a red circle moving right")  # clip 2 cycles back to the first prompt

    again = evaluate(folder_config(tmp_path, *overrides, run="again"))
    assert calls == [2, 1], "the rerun sampled finished clips again"
    # Both runs score the same .npy files through the same feature batches (feature_batch_size): the
    # same reductions, so the same number.
    assert again["generated/fvd"] == pytest.approx(metrics["generated/fvd"], rel=1e-12)
    # The folder of sampled clips scored as a generated folder: its .npy files, not their .mp4 copies.
    scored = evaluate(folder_config(tmp_path, f"evaluation.real={tmp_path / 'real'}", f"evaluation.generated={videos}",
                                    run="as_folder"))
    assert scored["generated/fvd"] == pytest.approx(metrics["generated/fvd"], rel=1e-12)
    assert read_table(tmp_path / "as_folder")["generated"]["left_out"] == {"same name, another suffix": 3}
