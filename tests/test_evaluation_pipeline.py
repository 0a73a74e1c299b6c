"""End to end through `evaluate`: a tiny trained base model scored on a tiny synthetic benchmark
next to the vigilance-test rows (paper Sec. 5.2, App. D.1), and the UCF101 protocol (App. D.2)
with a crash in the middle of generation.

One module-scoped workspace (tiny data, tiny T2I + STUNet trained for a few steps at 16 frames)
and one synthetic evaluation run are shared. The I3D is swapped for a cheap stand-in in the
task-level runs (the real network costs seconds per clip on a CPU); one test runs the real I3D
on three clips.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from torch import nn

from training_helpers import REPO_ROOT, compose_config

pytestmark = pytest.mark.slow

DATA = dict(num_train=32, num_val=8, num_test=8, num_frames=16, fps=16, size=16, hr_size=None, seed=0)
NUM_VIDEOS = 6


class PooledColour(nn.Module):
    """Stand-in for the I3D: per-channel mean and spread of the (preprocessed) clip."""

    feature_dim = 6
    clips_seen = 0  # counted over every instance

    def forward(self, videos):
        PooledColour.clips_seen += videos.shape[0]
        return torch.cat([videos.mean(dim=(2, 3, 4)), videos.std(dim=(2, 3, 4))], dim=1)


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    from lumiere.data import generate_synthetic_benchmark
    from lumiere.tasks import train

    root = tmp_path_factory.mktemp("evaluation")
    generate_synthetic_benchmark(root / "data" / "tiny", **DATA, shard_max_bytes=200_000, progress=False)
    common = [f"paths.data_dir={root / 'data'}", f"paths.artifacts_dir={root / 'artifacts'}", "logger=csv",
              "trainer.enable_progress_bar=false"]
    train(compose_config("train", ["experiment=tiny_t2i", f"export_dir={root / 'artifacts' / 't2i'}",
                                   f"paths.output_dir={root / 't2i'}", *common], root / "t2i"))
    # 16-frame clips at the source rate: the I3D FVD reads 16 frames.
    train(compose_config("train", ["experiment=tiny_stunet", "data.num_frames=16", "data.target_fps=16",
                                   "model.val_num_frames=16", f"paths.output_dir={root / 'stunet'}", *common],
                         root / "stunet"))
    return root


def evaluation_overrides(root, run: str, *extra: str) -> list[str]:
    return [f"paths.data_dir={root / 'data'}", f"paths.artifacts_dir={root / 'artifacts'}",
            f"paths.output_dir={root / run}", "evaluation.data_dir=${paths.data_dir}/tiny", "progress=false",
            "evaluation.target_fps=16", f"evaluation.num_videos={NUM_VIDEOS}", "evaluation.num_reference_videos=40",
            "evaluation.batch_size=6", "evaluation.domain_classifier.epochs=12", "evaluation.domain_classifier.lr=3e-3",
            "evaluation.domain_classifier.batch_size=8", *extra]


@pytest.fixture(scope="module")
def synthetic_run(workspace):
    from lumiere.tasks import evaluate

    ckpt = workspace / "stunet" / "checkpoints" / "last.ckpt"
    cfg = compose_config("evaluate", evaluation_overrides(
        workspace, "eval", f"ckpt_path={ckpt}", "evaluation.i3d.num_videos=4", "evaluation.i3d.num_reference_videos=5",
        "evaluation.sampling.num_inference_steps=2", "logger=csv"), workspace / "eval")
    with pytest.MonkeyPatch.context() as patch:
        use_stand_in_i3d(patch)
        metrics = evaluate(cfg)
    return workspace / "eval", metrics


def use_stand_in_i3d(patch):
    """The I3D column's code path with a cheap extractor and no resize to 224."""
    from lumiere.evaluation import features
    from lumiere.metrics import FrechetVideoDistance

    patch.setattr(features, "load_i3d", lambda weights=None, device="cpu": PooledColour())
    patch.setattr(features, "i3d_fvd_metric", lambda i3d, ddof=1, real_statistics=None: FrechetVideoDistance(
        feature_extractor=i3d, preprocess=False, ddof=ddof, real_statistics=real_statistics))


def read_rows(run_dir):
    return {row["row"]: row for row in json.loads((run_dir / "synthetic_eval.json").read_text())["rows"]}


def test_evaluate_writes_markdown_csv_and_json_with_every_row_and_column(synthetic_run):
    run_dir, metrics = synthetic_run
    rows = read_rows(run_dir)
    assert list(rows) == ["real", "model", "static", "noise"]
    columns = ["i3d_fvd", "domain_fvd", "domain_is", "adherence", "acc_shape", "acc_color", "acc_motion", "motion"]
    for key, row in rows.items():
        assert row["num_videos"] == NUM_VIDEOS and row["num_i3d_videos"] == 4 and row["num_i3d_reference"] == 5
        for column in columns:
            assert isinstance(row[column], float) and np.isfinite(row[column]), (key, column)
        assert row["domain_fvd_variant"].endswith("DomainFeatures-128, ddof1")
    assert metrics["model/i3d_fvd"] == rows["model"]["i3d_fvd"]

    markdown = (run_dir / "synthetic_eval.md").read_text()
    for text in ("| real held-out (floor) |", "| model (stunet/last.ckpt) |", "| random noise (ceiling) |",
                 "I3D FVD ↓", "in-domain IS ↑", "prompt adherence ↑", "I3D FVD variant:", "domain classifier val accuracy",
                 "sanity (I3D FVD, floor < model < ceiling)", "sanity (in-domain FVD, floor < model < ceiling)"):
        assert text in markdown, text
    with open(run_dir / "synthetic_eval.csv") as handle:
        table = list(csv.DictReader(handle))
    assert [row["row"] for row in table] == list(rows)
    assert {"i3d_fvd_variant", "domain_fvd_variant", "num_i3d_reference"} <= set(table[0])

    details = json.loads((run_dir / "synthetic_eval.json").read_text())
    assert details["throughput_videos_per_s"]["domain_classifier"] > 0
    assert details["domain_classifier"]["num_train_clips"] == DATA["num_train"]
    # The model's clips are kept with their captions and labels, for re-scoring.
    listed = [json.loads(line) for line in (run_dir / "videos" / "model" / "videos.jsonl").read_text().splitlines()]
    assert len(listed) == NUM_VIDEOS and all((run_dir / "videos" / "model" / e["file"]).is_file() for e in listed)
    assert set(listed[0]["labels"]) >= {"shape", "color", "motion"}
    # logger=csv received the numbers as scalars.
    assert "evaluation/synthetic/model/domain_fvd" in (run_dir / "csv" / "metrics.csv").read_text().splitlines()[0]


def test_reference_rows_rank_as_the_vigilance_tests_expect(synthetic_run):
    """Real held-out clips are closest to the real reference, static clips (no motion) farther,
    noise farthest; static clips have zero motion; noise matches almost no prompt."""
    rows = read_rows(synthetic_run[0])
    assert rows["real"]["domain_fvd"] < rows["static"]["domain_fvd"] < rows["noise"]["domain_fvd"]
    assert rows["real"]["i3d_fvd"] < rows["noise"]["i3d_fvd"]
    assert rows["static"]["motion"] == 0.0
    assert rows["noise"]["motion"] > 5 * rows["real"]["motion"] > 0
    assert rows["noise"]["adherence"] <= 1 / NUM_VIDEOS
    # The classifier learned colour on real clips; on noise its colour guesses are no better.
    assert rows["real"]["acc_color"] > rows["noise"]["acc_color"]
    # Colour tracking on the linear-motion prompts: a static clip never travels, noise has no object.
    tracked = rows["real"]["num_tracked"]
    assert tracked == rows["static"]["num_tracked"] == rows["noise"]["num_tracked"]
    if tracked:
        assert rows["static"]["tracked_direction"] == 0.0 and rows["noise"]["tracked_direction"] == 0.0
        assert rows["real"]["tracked_direction"] > 0.5


def test_saved_model_clips_are_scored_again_from_videos_dir_with_cached_reference_rows(synthetic_run, workspace,
                                                                                       monkeypatch):
    from omegaconf import OmegaConf

    from lumiere.evaluation import SyntheticSettings, evaluate_synthetic
    from lumiere.evaluation.synthetic_settings import settings_from_dict

    run_dir, _ = synthetic_run
    classifier = next((workspace / "artifacts" / "domain_classifier").glob("*.safetensors"))
    trained_at = classifier.stat().st_mtime_ns
    cfg = compose_config("evaluate", evaluation_overrides(workspace, "rescore", "evaluation.i3d.num_videos=4",
                                                          "evaluation.i3d.num_reference_videos=5"), workspace / "rescore")
    settings = settings_from_dict(OmegaConf.to_container(cfg.evaluation, resolve=True))
    assert isinstance(settings, SyntheticSettings)
    use_stand_in_i3d(monkeypatch)
    PooledColour.clips_seen = 0
    table = evaluate_synthetic(settings, workspace / "rescore", videos_dir=str(run_dir / "videos" / "model"),
                               progress=False)
    again = {row["row"]: row for row in table.rows}
    first = read_rows(run_dir)
    # The saved clips are lossless, so the model row comes back; its features are recomputed in
    # other batches than the first run's (float32 through other batch splits: about 1e-7 relative).
    assert again["model"]["num_videos"] == first["model"]["num_videos"]
    for key in ("i3d_fvd", "domain_fvd", "domain_is", "adherence", "acc_color", "motion"):
        assert again["model"][key] == pytest.approx(first["model"][key], rel=1e-6, abs=1e-9), key
    for key in ("real", "static", "noise"):
        assert again[key]["i3d_fvd"] == pytest.approx(first[key]["i3d_fvd"], rel=1e-9)
    # Only the model's clips went through the (stand-in) I3D: the reference and the real,
    # static and noise rows came from the cache.
    assert PooledColour.clips_seen == 4
    assert table.metadata["reference"]["i3d_statistics_computed_now"] is False
    assert classifier.stat().st_mtime_ns == trained_at, "the cached domain classifier was trained again"


def test_domain_classifier_command_trains_once_then_reuses_the_cache(workspace, capsys):
    from lumiere.evaluation.domain_classifier import main

    out = workspace / "classifier_cli"
    args = ["--data", str(workspace / "data" / "tiny"), "--out", str(out), "--frames", "16", "--size", "16",
            "--fps", "16", "--epochs", "1", "--width", "4", "--feature-dim", "16"]
    assert main(args) == 0
    weights = out / "tiny_T16_16px_16fps.safetensors"
    record = json.loads((out / "tiny_T16_16px_16fps.training.json").read_text())
    assert set(record["val_accuracy"]) >= {"shape", "color", "motion", "direction", "speed"}
    assert json.loads(weights.with_suffix(".json").read_text())["feature_dim"] == 16
    first = weights.stat().st_mtime_ns
    assert main(args) == 0
    assert weights.stat().st_mtime_ns == first  # same data and settings: the cache is used
    assert main([*args[:-4], "--width", "4", "--feature-dim", "8"]) == 0  # other settings: trained again
    assert json.loads(weights.with_suffix(".json").read_text())["feature_dim"] == 8
    assert "val accuracy" in capsys.readouterr().out


def test_real_i3d_ranks_real_held_out_clips_below_noise(workspace, tmp_path):
    """The real Kinetics-400 I3D through the evaluation's FVD path (published preprocessing, cached
    reference statistics), on one clip per side: three I3D forwards at 224x224."""
    from lumiere.evaluation import features
    from lumiere.evaluation.clips import load_clips
    from lumiere.evaluation.synthetic_rows import Row, i3d_scores, noise_clips
    from lumiere.evaluation.synthetic_settings import I3DSettings
    from lumiere.metrics import fvd_variant, i3d_weights

    try:
        weights = i3d_weights.ensure_i3d_weights()
    except i3d_weights.WeightsUnavailableError as error:
        pytest.skip(f"I3D weights unavailable: {error}")
    i3d = features.load_i3d(weights)
    data = workspace / "data" / "tiny"
    reference = load_clips(data, ["train"], 16, 16, 16, max_clips=1, progress=False)
    test = load_clips(data, ["test"], 16, 16, 16, max_clips=1, progress=False)
    settings = I3DSettings(num_videos=1, ddof=0, batch_size=2)  # ddof 0: a one-clip "covariance" is zero
    path = features.reference_cache_path(tmp_path, "tiny", fvd_variant(ddof=0), "train1")
    throughput = features.Throughput()
    features.ensure_clip_statistics(path, i3d, 0, (v for v, _ in reference.batches(1)), total=1,
                                    progress=False, throughput=throughput)
    assert throughput.videos == 1
    _, computed = features.ensure_clip_statistics(path, i3d, 0, iter(()), total=0, progress=False)
    assert not computed  # cached
    real = i3d_scores(Row("real", "real", test, None), i3d, path, settings, False, throughput)
    noise = i3d_scores(Row("noise", "noise", noise_clips(test, 0), None), i3d, path, settings, False, throughput)
    assert real["i3d_fvd_variant"] == fvd_variant(ddof=0) == "tf1-legacy-bilinear-224, first16, eps1e-3, logits400, ddof0"
    assert real["i3d_fvd"] < noise["i3d_fvd"]


def test_bad_inputs_fail_with_one_line_errors(workspace, tmp_path):
    from lumiere.errors import ConfigError, InputFileError
    from lumiere.evaluation import SyntheticSettings, evaluate_synthetic

    data = str(workspace / "data" / "tiny")
    with pytest.raises(ConfigError, match="not both"):
        evaluate_synthetic(SyntheticSettings(data_dir=data), tmp_path, ckpt_path="a.ckpt", videos_dir="v")
    with pytest.raises(ConfigError, match="first 16 frames but the clips have 8"):
        evaluate_synthetic(SyntheticSettings(data_dir=data, num_frames=8, resolution=16), tmp_path)
    with pytest.raises(InputFileError, match="benchmark folder not found"):
        evaluate_synthetic(SyntheticSettings(data_dir=str(tmp_path / "missing")), tmp_path)
    with pytest.raises(InputFileError, match="videos.jsonl"):
        evaluate_synthetic(SyntheticSettings(data_dir=data), tmp_path, videos_dir=str(tmp_path))

    env = {**os.environ, "PROJECT_ROOT": str(REPO_ROOT)}
    done = subprocess.run([sys.executable, str(REPO_ROOT / "evaluate.py"), f"paths.log_dir={tmp_path}",
                           f"evaluation.data_dir={tmp_path / 'missing'}"], capture_output=True, text=True, env=env,
                          timeout=120)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines()[-1].startswith("error: benchmark folder not found")


# ----------------------------------------------------------------------------------------------
# UCF101 protocol
# ----------------------------------------------------------------------------------------------


class TopColour(nn.Module):
    """Stand-in for the C3D: three 'classes' from the clip's mean colour."""

    def forward(self, videos):
        return videos.mean(dim=(2, 3, 4)).softmax(dim=-1)


def fake_ucf101(root):
    """One tiny clip in every class folder (the real statistics read every class)."""
    from lumiere.evaluation.ucf101_protocol import ucf101_classes
    from lumiere.viz import write_mp4

    generator = torch.Generator().manual_seed(0)
    for name in ucf101_classes():
        (root / name).mkdir(parents=True)
        write_mp4(root / name / f"v_{name}_g01_c01.mp4", torch.rand(3, 16, 16, 16, generator=generator) * 2 - 1, fps=8)
    return root


def ucf101_config(workspace, tmp_path, *extra):
    ckpt = workspace / "stunet" / "checkpoints" / "last.ckpt"
    return compose_config("evaluate", [
        "evaluation=ucf101", f"ckpt_path={ckpt}", f"paths.artifacts_dir={tmp_path / 'artifacts'}",
        f"paths.output_dir={tmp_path / 'run'}", "progress=false", f"evaluation.num_videos={NUM_VIDEOS}",
        "evaluation.batch_size=2", f"evaluation.ucf101_root={tmp_path / 'UCF-101'}",
        f"evaluation.c3d_weights={tmp_path / 'conv3d_deepnetA_ucf.npz'}", f"evaluation.c3d_mean={tmp_path / 'mean2.npz'}",
        "evaluation.sampling.num_inference_steps=2", *extra], tmp_path / "run")


def test_ucf101_resumes_generation_and_caches_real_statistics(workspace, tmp_path, monkeypatch):
    import lumiere.evaluation.ucf101 as ucf101_mode
    from lumiere.errors import ConfigError
    from lumiere.evaluation.generated import CheckpointGenerator
    from lumiere.metrics import VideoInceptionScore
    from lumiere.tasks import evaluate

    fake_ucf101(tmp_path / "UCF-101")
    use_stand_in_i3d(monkeypatch)
    monkeypatch.setattr(ucf101_mode, "load_c3d_inception_score",
                        lambda weights, mean, splits: VideoInceptionScore(classifier=TopColour(), splits=splits))
    statistics_runs, original_statistics = [], ucf101_mode.compute_ucf101_real_statistics
    monkeypatch.setattr(ucf101_mode, "compute_ucf101_real_statistics",
                        lambda *a, **k: statistics_runs.append(1) or original_statistics(*a, **k))
    calls, original_call = [], CheckpointGenerator.__call__

    def counting_call(self, prompts, seed):
        if crash_after is not None and len(calls) == crash_after:
            raise RuntimeError("simulated preemption")
        calls.append(list(prompts))
        return original_call(self, prompts, seed)

    monkeypatch.setattr(CheckpointGenerator, "__call__", counting_call)
    crash_after = 2
    with pytest.raises(RuntimeError, match="simulated preemption"):
        evaluate(ucf101_config(workspace, tmp_path))
    assert len(calls) == 2 and statistics_runs == [1]

    crash_after = None
    metrics = evaluate(ucf101_config(workspace, tmp_path))
    assert len(calls) == 3, "the rerun generated finished videos again"  # 6 videos in batches of 2
    assert statistics_runs == [1], "the cached UCF101 statistics were computed again"
    assert len(list((tmp_path / "run" / "generated" / "videos").glob("*.npy"))) == NUM_VIDEOS
    assert np.isfinite(metrics["model/fvd"]) and metrics["model/is"] >= 1.0
    rows = json.loads((tmp_path / "run" / "ucf101_eval.json").read_text())["rows"]
    assert rows[0]["num_videos"] == NUM_VIDEOS and rows[0]["num_real"] == 101
    assert any(row["method"] == "Lumiere (Ours)" and row["fvd"] == 332.49 for row in rows)
    assert "not comparable with the paper" in (tmp_path / "run" / "ucf101_eval.md").read_text()

    with pytest.raises(ConfigError, match="other settings"):  # another sampler in the same folder
        evaluate(ucf101_config(workspace, tmp_path, "evaluation.sampling.num_inference_steps=3"))


def test_ucf101_without_c3d_files_fails_before_generating(workspace, tmp_path):
    from lumiere.errors import InputFileError
    from lumiere.tasks import evaluate

    with pytest.raises(InputFileError, match="conv3d_deepnetA_ucf.npz"):
        evaluate(ucf101_config(workspace, tmp_path))
    assert not (tmp_path / "run" / "generated").exists()
