"""Super-resolution pairs from ordinary video shards (data.hr_source=mp4): the high-resolution clip is
the sample's own video at hr_resolution and the low-resolution one the same frames downscaled."""

from __future__ import annotations

import pytest
import torch

from lumiere.data import VideoDataModule
from lumiere.errors import ConfigError

from data_fixtures import good_sample, write_shard


def _shards(tmp_path):
    write_shard(tmp_path / "clips-000000.tar", [good_sample(f"v{i}", num_frames=12) for i in range(2)])
    return str(tmp_path)


def test_pairs_come_from_the_same_video(tmp_path):
    shards = _shards(tmp_path)
    dm = VideoDataModule(shards, num_frames=4, resolution=8, hr_resolution=16, hr_source="mp4",
                         batch_size=2, num_workers=0, temporal_crop="start")
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert batch["video"].shape == (2, 3, 4, 8, 8) and batch["video_hr"].shape == (2, 3, 4, 16, 16)
    # The low clip is the high one at half the size: a 2x2 average of the high frames is close to it
    # (both are resized from the same decoded frames, so only the resize filters differ).
    pooled = torch.nn.functional.avg_pool3d(batch["video_hr"], kernel_size=(1, 2, 2))
    assert (pooled - batch["video"]).abs().mean() < 0.05


def test_without_hr_mp4_the_default_says_what_to_set(tmp_path):
    shards = _shards(tmp_path)
    dm = VideoDataModule(shards, num_frames=4, resolution=8, hr_resolution=16, batch_size=2, num_workers=0)
    with pytest.raises(ConfigError, match="data.hr_source=mp4"):
        dm.setup("fit")


def test_an_unknown_source_is_refused():
    with pytest.raises(ConfigError, match="hr_source must be one of"):
        VideoDataModule("x", hr_source="hr.png")
