"""Frame rate honestly: each clip reports the rate it really plays at (source fps / stride);
a rounded stride that misses target_fps by more than 3% is warned about once per data module."""

from __future__ import annotations

import warnings

import pytest

from lumiere.data import VideoDataModule

from data_fixtures import good_sample, write_shard


def _shards(tmp_path, fps: float):
    write_shard(tmp_path / "clips-000000.tar", [good_sample(f"v{i}", num_frames=24, fps=fps) for i in range(3)])
    return str(tmp_path)


def _target_fps_warnings(caught) -> list[str]:
    return [str(w.message) for w in caught if "target_fps" in str(w.message)]


def test_25_fps_sources_at_target_16_play_at_12_5_fps_and_say_so_once(tmp_path):
    shards = _shards(tmp_path, 25.0)
    dm = VideoDataModule(shards, shards, num_frames=8, target_fps=16, batch_size=2, num_workers=0)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        batches = list(dm.train_dataloader()) + list(dm.train_dataloader()) + list(dm.val_dataloader())
    assert {fps for batch in batches for fps in batch["fps"].tolist()} == {12.5}  # 25 / round(25 / 16)
    assert {s for batch in batches for s in batch["frame_stride"].tolist()} == {2}
    (message,) = _target_fps_warnings(caught)  # once, over two epochs and the validation loader
    assert "is 25 fps; read every 2 frames, it plays at 12.5 fps (-22%" in message
    assert "python -m lumiere.data.convert --videos DIR --captions CSV --out OUT --fps 16" in message


@pytest.mark.parametrize("source_fps", [32.0, 16.0, 16.4])
def test_a_target_met_within_3_percent_is_silent(tmp_path, source_fps):
    shards = _shards(tmp_path, source_fps)
    dm = VideoDataModule(shards, num_frames=8, target_fps=16, batch_size=3, num_workers=0)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        (batch,) = list(dm.train_dataloader())
    assert batch["fps"].tolist() == pytest.approx([source_fps / round(source_fps / 16)] * 3)
    assert _target_fps_warnings(caught) == []


def test_a_frame_stride_reports_the_real_rate_without_a_target(tmp_path):
    shards = _shards(tmp_path, 25.0)
    dm = VideoDataModule(shards, num_frames=8, frame_stride=3, batch_size=3, num_workers=0)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        (batch,) = list(dm.train_dataloader())
    assert batch["fps"].tolist() == pytest.approx([25.0 / 3] * 3)  # float32 of 8.333...
    assert _target_fps_warnings(caught) == []
