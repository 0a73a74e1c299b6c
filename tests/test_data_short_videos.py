"""Short videos are a decision: skipped and counted as too_short (default), looped or padded;
shards with no usable sample stop training at once in one line, never an endless empty epoch."""

from __future__ import annotations

import time

import lightning.pytorch as pl
import pytest
import torch

import lumiere.data.dataset as dataset_module
from lumiere.data import VideoDataModule
from lumiere.data.decoders import clip_windows
from lumiere.errors import ConfigError, InputFileError

from data_fixtures import frame_indices, indexed_sample, write_shard


@pytest.fixture
def short_shards(tmp_path):
    """Two shards holding only videos of 6 and 9 frames (a 16-frame clip needs 16)."""
    write_shard(tmp_path / "short-000000.tar", [indexed_sample("six", 6), indexed_sample("nine", 9)])
    write_shard(tmp_path / "short-000001.tar", [indexed_sample("six_b", 6)])
    return tmp_path


def _assert_one_line_no_data_error(message: str) -> None:
    assert "\n" not in message
    assert "3 videos too short (had 6-9 frames, a clip needs 16)" in message
    assert "data.short_videos=loop or pad" in message and "data.num_frames" in message
    assert "bad sample" not in message  # short videos are not reported as broken


def test_loop_and_pad_fill_the_clip_with_the_right_frames(tmp_path):
    write_shard(tmp_path / "a-000000.tar", [indexed_sample("six", 6)])
    decoded = {}
    for policy in ("loop", "pad"):
        dm = VideoDataModule(str(tmp_path), str(tmp_path), num_frames=16, batch_size=1, num_workers=0,
                             short_videos=policy)
        for loader in (dm.train_dataloader(), dm.val_dataloader()):
            (batch,) = list(loader)
            decoded.setdefault(policy, []).append(frame_indices(batch["video"][0]))
        assert dm.skipped_counts() == {}
    assert decoded["loop"] == [[0, 1, 2, 3, 4, 5] * 2 + [0, 1, 2, 3]] * 2
    assert decoded["pad"] == [[0, 1, 2, 3, 4, 5] + [5] * 10] * 2


def test_a_stride_fills_with_the_frames_on_its_grid():
    # 7 frames, 6 frames every 2 need 11: the grid holds 0, 2, 4, 6
    assert clip_windows(7, num_frames=6, stride=2, short_videos="loop") == [[0, 2, 4, 6, 0, 2]]
    assert clip_windows(7, num_frames=6, stride=2, short_videos="pad") == [[0, 2, 4, 6, 6, 6]]
    assert clip_windows(7, num_frames=6, stride=2, clips="all", short_videos="pad") == [[0, 2, 4, 6, 6, 6]]
    with pytest.raises(ConfigError, match="short_videos must be one of"):
        clip_windows(7, num_frames=6, stride=2, short_videos="repeat")


def test_too_short_videos_are_counted_apart_with_their_frames(tmp_path):
    write_shard(tmp_path / "m-000000.tar", [indexed_sample("long", 20), indexed_sample("six", 6)])
    dm = VideoDataModule(str(tmp_path), num_frames=16, batch_size=2, num_workers=0)
    keys = [key for batch in dm.train_dataloader() for key in batch["key"]]
    assert keys == ["long"]
    assert dm.skipped_counts() == {"too_short": 1}
    tracker = dm.loaders["train"].skips
    assert (tracker.short_had, tracker.short_needed) == ((6, 6), (16, 16))
    with pytest.raises(ConfigError, match="short_videos must be one of"):
        VideoDataModule(str(tmp_path), short_videos="repeat")


@pytest.mark.filterwarnings("ignore:.*split at the sample level")
@pytest.mark.parametrize("num_workers", [0, 2])
def test_all_short_shards_with_one_pass_epochs_fail_in_one_line(short_shards, num_workers):
    dm = VideoDataModule(str(short_shards), num_frames=16, batch_size=2, num_workers=num_workers, epoch_length=None)
    started = time.monotonic()
    with pytest.raises(InputFileError, match="a whole pass over 2 shards") as error:
        list(dm.train_dataloader())
    assert time.monotonic() - started < 20
    _assert_one_line_no_data_error(str(error.value))


def test_all_short_shards_with_resampled_epochs_fail_in_one_line(short_shards, monkeypatch):
    monkeypatch.setattr(dataset_module, "MAX_CONSECUTIVE_SKIPS", 30)  # the real 1000 only costs time
    dm = VideoDataModule(str(short_shards), num_frames=16, batch_size=2, num_workers=0, epoch_length=4)
    with pytest.raises(InputFileError, match="30 samples in a row were skipped") as error:
        list(dm.train_dataloader())
    message = str(error.value)
    assert "\n" not in message and "videos too short (had 6-9 frames, a clip needs 16)" in message


class _CountingModule(pl.LightningModule):
    def __init__(self):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(()))
        self.epochs_started = 0

    def on_train_epoch_start(self):
        self.epochs_started += 1

    def training_step(self, batch, batch_idx):
        return ((batch["video"].mean() - self.weight) ** 2).mean()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def test_the_trainer_stops_at_once_instead_of_looping_empty_epochs(short_shards, tmp_path):
    """Before: with epoch_length=null Lightning ran empty epochs forever (`Epoch 14781/-2`)."""
    dm = VideoDataModule(str(short_shards), num_frames=16, batch_size=2, num_workers=0, epoch_length=None)
    module = _CountingModule()
    trainer = pl.Trainer(max_epochs=1000, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path)
    started = time.monotonic()
    with pytest.raises(InputFileError) as error:
        trainer.fit(module, datamodule=dm)
    assert time.monotonic() - started < 20 and module.epochs_started <= 1  # the first epoch, not the 2nd
    _assert_one_line_no_data_error(str(error.value))
