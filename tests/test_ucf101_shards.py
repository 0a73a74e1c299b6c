"""UCF101 generation across processes (lumiere.evaluation.ucf101_shards): shards of whole batches, each
resumable, merged into the single-process result; the merge refuses missing, duplicated and foreign
videos; the FVD alone needs no C3D files.

The model is a stand-in sampler that, like the real one, draws one noise tensor per call from the
batch's first seed (so a video depends on its batch), and the I3D / C3D are cheap stand-ins.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from metric_stand_ins import PooledColour, TopColour

import lumiere.evaluation.ucf101 as ucf101_mode
from lumiere.errors import ConfigError, InputFileError
from lumiere.evaluation import features
from lumiere.evaluation.ucf101 import UCF101Settings, evaluate_ucf101, fvd_metric
from lumiere.evaluation.ucf101_protocol import build_generation_plan
from lumiere.evaluation.ucf101_shards import generate_shard, main, merged_video_paths, shard_dir, shard_items
from lumiere.metrics import VideoInceptionScore

NUM_VIDEOS, BATCH = 7, 2  # 4 batches (2, 2, 2, 1): 3 shards get 2, 1 and 1 batches


class FakeGenerator:
    """CheckpointGenerator's interface; one noise draw per call from ``seed`` (as the real sampler)."""

    calls: list = []
    crash_after: int | None = None

    def __init__(self, ckpt_path, device, num_frames=None, **sampling):
        self.ckpt_path, self.num_frames, self.resolution, self.sampling = str(ckpt_path), 16, 8, sampling

    name = "fake/last.ckpt"

    def settings(self):
        return {"ckpt_path": self.ckpt_path, "num_frames": self.num_frames, **self.sampling}

    def __call__(self, prompts, seed):
        if FakeGenerator.crash_after is not None and len(FakeGenerator.calls) >= FakeGenerator.crash_after:
            raise RuntimeError("simulated preemption")
        FakeGenerator.calls.append((tuple(prompts), seed))
        noise = torch.randn(len(prompts), 3, 16, 8, 8, generator=torch.Generator().manual_seed(seed))
        return noise.tanh()


@pytest.fixture
def stand_ins(monkeypatch, tmp_path):
    FakeGenerator.calls, FakeGenerator.crash_after = [], None
    monkeypatch.setattr(ucf101_mode, "CheckpointGenerator", FakeGenerator)
    monkeypatch.setattr(features, "load_i3d", lambda weights=None, device="cpu": PooledColour())
    monkeypatch.setattr(ucf101_mode, "load_c3d_inception_score",
                        lambda weights, mean, splits: VideoInceptionScore(classifier=TopColour(sharpness=4), splits=splits))
    # Real statistics of random clips in the stand-in's variant: no UCF101 folder needed.
    metric = fvd_metric(PooledColour(), UCF101Settings())
    metric.update(torch.rand(6, 3, 16, 8, 8, generator=torch.Generator().manual_seed(5)) * 2 - 1, real=True)
    return metric.save_real_statistics(tmp_path / "real.npz")


def settings(tmp_path, statistics, generated, **overrides) -> UCF101Settings:
    return UCF101Settings(**{"num_videos": NUM_VIDEOS, "batch_size": BATCH, "generated_dir": str(tmp_path / generated),
                             "real_statistics": str(statistics), "is_splits": 2, "show_paper_rows": False, **overrides})


def run(tmp_path, statistics, generated, **overrides):
    return evaluate_ucf101(settings(tmp_path, statistics, generated, **overrides), tmp_path / "out", "fake.ckpt",
                           progress=False)


def test_shards_take_whole_batches_and_cover_the_plan_once():
    plan = build_generation_plan(11, seed=3)
    shards = [shard_items(plan, 3, k, 3) for k in range(3)]
    assert sorted(item.index for items in shards for item in items) == list(range(11))
    assert [[item.index for item in items] for items in shards] == [[0, 1, 2, 9, 10], [3, 4, 5], [6, 7, 8]]
    with pytest.raises(ConfigError, match="shard_index must be a whole number from 0 to num_shards - 1 = 2"):
        shard_items(plan, 3, 3, 3)


def test_merged_shards_equal_a_single_process_run_and_a_killed_shard_resumes(stand_ins, tmp_path):
    single = run(tmp_path, stand_ins, "single")
    single_calls = sorted(FakeGenerator.calls)
    single_paths = sorted((tmp_path / "single" / "videos").glob("*.npy"))
    assert len(single_paths) == NUM_VIDEOS

    FakeGenerator.calls = []
    for k in (1, 2):
        table = run(tmp_path, stand_ins, "sharded", num_shards=3, shard_index=k)
        assert table.rows[0]["row"] == "shard" and "shard_index=null" in " ".join(table.notes)
    # Shard 0 holds batches 0 and 3 (videos 0, 1 and 6): killed after its first batch.
    FakeGenerator.crash_after = len(FakeGenerator.calls) + 1
    with pytest.raises(RuntimeError, match="simulated preemption"):
        run(tmp_path, stand_ins, "sharded", num_shards=3, shard_index=0)
    with pytest.raises(InputFileError, match=r"1 missing \(first: 00006_\w+\.npy \(shard 0\)"):
        run(tmp_path, stand_ins, "sharded", num_shards=3)  # the merge refuses an unfinished shard
    assert main(["status", str(tmp_path / "sharded")]) == 2

    FakeGenerator.crash_after, calls_before = None, len(FakeGenerator.calls)
    run(tmp_path, stand_ins, "sharded", num_shards=3, shard_index=0)  # the rerun finishes shard 0
    assert len(FakeGenerator.calls) == calls_before + 1, "the resumed shard generated finished videos again"
    assert sorted(FakeGenerator.calls) == single_calls, "the shards made other sampling calls than one process"
    assert main(["status", str(tmp_path / "sharded")]) == 0
    merged = run(tmp_path, stand_ins, "sharded", num_shards=3)

    merged_paths = merged_video_paths(tmp_path / "sharded", build_generation_plan(NUM_VIDEOS, seed=0), BATCH, 3)
    assert [p.name for p in merged_paths] == [p.name for p in single_paths]
    assert all(a.read_bytes() == b.read_bytes() for a, b in zip(single_paths, merged_paths))
    ours, theirs = merged.rows[0], single.rows[0]
    # The same files in the same order and feature batches: the scores are the same computation;
    # 1e-12 relative only leaves room for nothing but float64 noise.
    for key in ("fvd", "is", "is_std"):
        assert ours[key] == pytest.approx(theirs[key], rel=1e-12, abs=1e-15), key
    assert ours["num_videos"] == NUM_VIDEOS and ours["fvd_label"] == theirs["fvd_label"]


def fake_generate(prompts, seeds):
    return torch.stack([torch.full((3, 2, 4, 4), (seed % 200) / 100 - 1) for seed in seeds])


def test_merge_refuses_missing_duplicated_and_foreign_videos(tmp_path):
    plan = build_generation_plan(NUM_VIDEOS, seed=1)
    for k in range(3):
        generate_shard(plan, fake_generate, tmp_path, BATCH, k, 3, progress=False)
    assert len(merged_video_paths(tmp_path, plan, BATCH, 3)) == NUM_VIDEOS
    shard0, shard1 = (shard_dir(tmp_path, k, 3) / "videos" for k in (0, 1))
    copied = sorted(shard0.glob("*.npy"))[0]
    shutil.copy(copied, shard1 / copied.name)
    with pytest.raises(InputFileError, match=rf"1 duplicated \(first: {copied.name} \(shard_0000_of_0003 and shard_0001_of_0003\)"):
        merged_video_paths(tmp_path, plan, BATCH, 3)
    (shard1 / copied.name).unlink()
    (shard1 / "notes.txt").write_text("not a video")
    stray = shard_dir(tmp_path, 0, 2)
    stray.mkdir()
    with pytest.raises(InputFileError, match=r"2 foreign \(first: shard_0000_of_0002/ .*, shard_0001_of_0003/videos/notes.txt"):
        merged_video_paths(tmp_path, plan, BATCH, 3)
    stray.rmdir()
    (shard1 / "notes.txt").unlink()
    sorted(shard1.glob("*.npy"))[-1].unlink()
    with pytest.raises(InputFileError, match=r"the 3 shards do not hold each of the 7 planned videos exactly once: 1 missing"):
        merged_video_paths(tmp_path, plan, BATCH, 3)
    with pytest.raises(ConfigError, match="batch_size"):  # merging with other settings than the shards had
        merged_video_paths(tmp_path, plan, 3, 3)
    with pytest.raises(ConfigError, match="another plan or shard split"):  # a shard of another plan into the same folder
        generate_shard(build_generation_plan(NUM_VIDEOS, seed=2), fake_generate, tmp_path, BATCH, 0, 3, progress=False)


def test_shard_settings_are_checked_before_anything_runs(stand_ins, tmp_path):
    with pytest.raises(ConfigError, match="num_shards=1"):
        run(tmp_path, stand_ins, "g", shard_index=0)
    with pytest.raises(ConfigError, match="num_shards must be a whole number >= 1"):
        run(tmp_path, stand_ins, "g", num_shards=0)
    with pytest.raises(InputFileError, match="no shard has been generated"):
        run(tmp_path, stand_ins, "g", num_shards=2)
    assert FakeGenerator.calls == []


def test_fvd_alone_needs_no_c3d_files(stand_ins, tmp_path, monkeypatch):
    monkeypatch.undo()  # the real C3D loader again; the other stand-ins re-applied
    monkeypatch.setattr(ucf101_mode, "CheckpointGenerator", FakeGenerator)
    monkeypatch.setattr(features, "load_i3d", lambda weights=None, device="cpu": PooledColour())
    with pytest.raises(InputFileError, match=r"C3D weights .* not found at None.*evaluation.inception_score=false"):
        run(tmp_path, stand_ins, "with_is")
    for switch in ({"inception_score": False}, {"is_splits": 0}):
        table = run(tmp_path, stand_ins, "fvd_only", **switch)
        row = table.rows[0]
        assert np.isfinite(row["fvd"]) and row["is"] is None and row["is_label"] == "not computed (FVD only)"
        assert any("IS: not computed" in note for note in table.notes)
    assert json.loads((tmp_path / "fvd_only" / "ledger.json").read_text())["total"] == NUM_VIDEOS
    assert not Path(tmp_path / "with_is").exists()  # refused before generating
