"""Clips from long videos: ``clips_per_video`` = 1 (the paper's one window), N, or "all"
non-overlapping windows; deterministic in evaluation, resumable in training."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lumiere.data import VideoDataModule
from lumiere.data.decoders import choose_start, clip_windows
from lumiere.errors import ConfigError

from data_fixtures import frame_indices, indexed_sample, tiny_synthetic, write_shard

LONG = 160  # frames of the long test video


@pytest.fixture(scope="module")
def long_video_shards(tmp_path_factory):
    """Two shards: a 160-frame video and a 48-frame one (16 fps, frames that carry their index)."""
    root = tmp_path_factory.mktemp("long")
    write_shard(root / "long-000000.tar", [indexed_sample("long", LONG)])
    write_shard(root / "long-000001.tar", [indexed_sample("medium", 48)])
    return root


def _examples_per_video(loader) -> dict[str, list[list[int]]]:
    """Decoded source indices of every clip in one pass, grouped by video key."""
    clips: dict[str, list[list[int]]] = {}
    for batch in loader:
        for key, video in zip(batch["key"], batch["video"]):
            clips.setdefault(key.split("/")[0], []).append(frame_indices(video))
    return clips


def test_clip_counts_per_video_under_each_policy_on_a_160_frame_video():
    rng = np.random.default_rng(0)
    assert len(clip_windows(LONG, num_frames=16, stride=1, clips=1, rng=rng)) == 1
    assert len(clip_windows(LONG, num_frames=16, stride=1, clips=4, rng=rng)) == 4
    every = clip_windows(LONG, num_frames=16, stride=1, clips="all")
    assert len(every) == 10
    flat = [index for window in every for index in window]
    assert flat == list(range(LONG))  # in order, no overlap, the whole video
    # stride 2: windows span 31 frames and start every 32, so together they are the video read
    # every 2 frames (5 windows; the last 160 - 159 = 1 frame is a tail shorter than a window)
    every = clip_windows(LONG, num_frames=16, stride=2, clips="all")
    assert len(every) == 5 and [i for w in every for i in w] == list(range(0, LONG, 2))
    # a window that does not fit twice gives one "all" window
    assert clip_windows(20, num_frames=16, stride=1, clips="all") == [list(range(16))]


def test_one_random_clip_is_the_same_draw_as_before_and_evaluation_windows_are_deterministic():
    first = clip_windows(LONG, num_frames=16, stride=1, clips=3, rng=np.random.default_rng(7))
    assert first[0][0] == choose_start(LONG, 16, "random", np.random.default_rng(7))  # clips=1 stream unchanged
    assert len({w[0] for w in first}) > 1
    centred = clip_windows(LONG, num_frames=16, stride=1, clips=1, offset="center")
    assert centred == [list(range(72, 88))]  # slack 144 -> start 72
    spread = clip_windows(LONG, num_frames=16, stride=1, clips=3, offset="center")
    assert [w[0] for w in spread] == [24, 72, 120]  # centres of 3 equal parts of the 145 starts
    assert [w[0] for w in clip_windows(LONG, num_frames=16, stride=1, clips=3, offset="start")] == [0, 72, 144]


@pytest.mark.parametrize("clips, expected", [(1, 1), (4, 4), ("all", 10)])
def test_the_data_module_yields_that_many_clips_of_the_decoded_windows(long_video_shards, clips, expected):
    dm = VideoDataModule(str(long_video_shards), str(long_video_shards), num_frames=16, batch_size=3,
                         num_workers=0, clips_per_video=clips, shuffle_buffer=8)
    for loader in (dm.train_dataloader(), dm.val_dataloader()):
        per_video = _examples_per_video(loader)
        assert len(per_video["long"]) == expected
        for window in per_video["long"]:  # every clip is 16 consecutive source frames
            assert window == list(range(window[0], window[0] + 16))
        if clips == "all":
            assert sorted(i for w in per_video["long"] for i in w) == list(range(LONG))
            assert len(per_video["medium"]) == 3
    val_a = _examples_per_video(dm.val_dataloader())
    assert val_a == _examples_per_video(dm.val_dataloader())  # evaluation windows never change


def test_several_clips_per_video_resume_mid_epoch_at_the_first_unseen_batch(long_video_shards):
    def make_loader():
        return VideoDataModule(str(long_video_shards), num_frames=8, batch_size=2, num_workers=2, clips_per_video=3,
                               shuffle_buffer=4, seed=3).train_dataloader()

    full = [batch["key"] for batch in make_loader()]
    assert sum(len(keys) for keys in full) == 6 and len(full) >= 3
    interrupted = make_loader()
    stream = iter(interrupted)
    seen = [next(stream)["key"] for _ in range(2)]
    state = interrupted.state_dict()
    del stream
    assert seen == full[:2]
    resumed = make_loader()
    resumed.load_state_dict(state)
    assert [batch["key"] for batch in resumed] == full[2:]


@pytest.mark.parametrize("value", [0, -1, "some", 1.5, True])
def test_bad_clips_per_video_is_a_config_error(long_video_shards, value):
    with pytest.raises(ConfigError, match="clips_per_video must be a positive int or 'all'"):
        VideoDataModule(str(long_video_shards), clips_per_video=value)


def test_image_mode_refuses_several_clips_per_video(long_video_shards):
    with pytest.raises(ConfigError, match="image_mode draws single frames"):
        VideoDataModule(str(long_video_shards), image_mode=True, clips_per_video="all")


def test_the_high_resolution_twin_follows_every_window():
    root = tiny_synthetic()  # 16-frame clips with a 64 px hr.mp4 twin
    dm = VideoDataModule(root / "train", root / "val", num_frames=4, resolution=32, hr_resolution=64, batch_size=4,
                         num_workers=0, clips_per_video="all")
    batch = next(iter(dm.val_dataloader()))
    assert [key.rsplit("/", 1)[1] for key in batch["key"]] == ["clip000", "clip001", "clip002", "clip003"]
    assert batch["video_hr"].shape == (4, 3, 4, 64, 64)
    pooled = torch.nn.functional.avg_pool3d(batch["video_hr"], kernel_size=(1, 2, 2))
    assert (pooled - batch["video"]).abs().mean() < 0.05  # the same frames at both resolutions
    assert (batch["video"][0] - batch["video"][1]).abs().mean() > 0.01  # and different windows
