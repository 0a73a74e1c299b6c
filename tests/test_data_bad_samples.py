"""Bad data is skipped without sleeping, counted per reason across workers, and reported."""

from __future__ import annotations

import time

import lightning.pytorch as pl
import pytest
import torch

from lumiere.data import BadSampleReporter, VideoDataModule
from lumiere.errors import InputFileError

from data_fixtures import bad_samples, good_sample, write_shard

NUM_FRAMES = 12
EXPECTED = {"truncated": 1, "empty": 1, "not_video": 1, "missing_caption": 1, "too_short": 1}


@pytest.fixture
def mixed_shards(tmp_path):
    """Two shards: 6 good samples and the 5 kinds of bad sample interleaved."""
    bad = list(bad_samples(NUM_FRAMES).values())
    good = [good_sample(f"good_{i}", num_frames=16) for i in range(6)]
    write_shard(tmp_path / "mixed-000000.tar", [good[0], bad[0], good[1], bad[1], good[2]])
    write_shard(tmp_path / "mixed-000001.tar", [bad[2], good[3], bad[3], good[4], good[5], bad[4]])
    return tmp_path


@pytest.fixture
def no_sleep(monkeypatch):
    """Any sleep in the data path (e.g. wds.warn_and_continue's 0.5 s) fails the test."""

    def forbidden(seconds):
        raise AssertionError(f"the data pipeline slept {seconds} s")

    monkeypatch.setattr(time, "sleep", forbidden)


@pytest.mark.parametrize("num_workers", [0, 2])
def test_bad_samples_are_skipped_and_counted_per_reason(mixed_shards, no_sleep, num_workers):
    dm = VideoDataModule(str(mixed_shards), str(mixed_shards), num_frames=NUM_FRAMES, batch_size=4,
                         num_workers=num_workers, shuffle_buffer=0)
    loader = dm.train_dataloader()
    keys = [k for batch in loader for k in batch["key"]]
    assert sorted(keys) == [f"good_{i}" for i in range(6)]
    assert dm.skipped_counts() == EXPECTED
    # a second epoch meets the same bad samples again: events double, distinct samples do not
    assert len([k for batch in loader for k in batch["key"]]) == 6
    assert dm.skipped_counts("train") == {reason: 2 for reason in EXPECTED}
    assert dm.bad_sample_counts() == EXPECTED


@pytest.mark.filterwarnings("ignore:.*split at the sample level")
def test_a_shard_of_only_bad_samples_is_one_error_with_the_counts(tmp_path, no_sleep):
    write_shard(tmp_path / "bad-000000.tar", list(bad_samples(NUM_FRAMES).values()))
    dm = VideoDataModule(str(tmp_path), num_frames=NUM_FRAMES, batch_size=2, num_workers=2)
    with pytest.raises(InputFileError) as error:
        list(dm.train_dataloader())
    message = str(error.value)
    assert "\n" not in message and "gave no batch" in message
    assert "4 bad samples (empty=1, not_video=1, truncated=1, missing_caption=1)" in message
    assert "1 video too short (had 6 frames, a clip needs 12)" in message and "data.short_videos=loop" in message
    assert dm.skipped_counts() == EXPECTED
    # evaluation loaders do not raise: a rank can legitimately get no validation sample
    assert list(VideoDataModule(str(tmp_path), str(tmp_path), num_frames=NUM_FRAMES, num_workers=0).val_dataloader()) == []


def test_unreadable_shard_is_counted_and_training_data_still_flows(tmp_path, no_sleep):
    write_shard(tmp_path / "a-000000.tar", [good_sample(f"good_{i}") for i in range(3)])
    (tmp_path / "a-000001.tar").write_bytes(b"\x00garbage that is not a tar archive" * 50)
    dm = VideoDataModule(str(tmp_path), num_frames=8, batch_size=2, num_workers=0)
    assert sum(len(b["key"]) for b in dm.train_dataloader()) == 3
    assert dm.skipped_counts() == {"bad_shard": 1}


class _TinyModule(pl.LightningModule):
    def __init__(self):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(()))
        self.seen = 0

    def training_step(self, batch, batch_idx):
        assert batch["video"].dtype == torch.float32  # CPU trainer: float from the workers
        self.seen += len(batch["key"])
        return ((batch["video"].mean() - self.weight) ** 2).mean()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def test_reporter_logs_per_reason_metrics_and_prints_one_summary_line(mixed_shards, no_sleep, capsys, tmp_path):
    dm = VideoDataModule(str(mixed_shards), num_frames=NUM_FRAMES, batch_size=2, num_workers=2)
    module = _TinyModule()
    trainer = pl.Trainer(max_epochs=2, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, callbacks=[BadSampleReporter()],
                         default_root_dir=tmp_path)
    trainer.fit(module, datamodule=dm)
    assert module.seen == 12  # training went on: 6 good samples x 2 epochs
    metrics = trainer.callback_metrics
    assert metrics["data/skipped_truncated"].item() == 1.0  # per epoch (the last one)
    assert metrics["data/skipped_total"].item() == 5.0
    assert metrics["data/skipped_missing_hr"].item() == 0.0
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("skipped")]
    assert lines == ["skipped 4 bad samples (empty=1, not_video=1, truncated=1, missing_caption=1), "
                     "1 video too short (had 6 frames, a clip needs 12)"]


@pytest.mark.filterwarnings("ignore:.*split at the sample level")
@pytest.mark.parametrize("num_workers", [0, 2])
def test_decord_prints_nothing_about_bad_samples_in_the_workers(tmp_path, capfd, num_workers):
    """decord logged a failed open with the sample's raw bytes as its name; only the skip counts
    may tell about a bad sample."""
    text = b"".join(b"line %d of a text file stored as a video\n" % i for i in range(300))
    disguised = {"__key__": "bad_disguised", "mp4": b"\x00\x00\x00\x18ftypisom" + text, "txt": "an mp4 header, then text"}
    bad = bad_samples(NUM_FRAMES)
    write_shard(tmp_path / "mixed-000000.tar", [good_sample("good_0", num_frames=16), disguised, bad["truncated"],
                                                 good_sample("good_1", num_frames=16)])
    dm = VideoDataModule(str(tmp_path), num_frames=NUM_FRAMES, batch_size=2, num_workers=num_workers, decoder="decord")
    capfd.readouterr()
    assert sorted(k for batch in dm.train_dataloader() for k in batch["key"]) == ["good_0", "good_1"]
    out, err = capfd.readouterr()
    assert "line 1 of a text file" not in out + err and "ERROR opening" not in err, err[:300]
    assert err == "", err[:300]
    assert dm.skipped_counts() == {"truncated": 2}
