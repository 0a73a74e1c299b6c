"""``VideoDataModule(root=...)``: one folder with train/, val/ and test/ instead of three shard
paths; explicit shard paths still win; a missing train/ is one line naming the root."""

from __future__ import annotations

import logging

import pytest

from lumiere.data import VideoDataModule
from lumiere.errors import ConfigError

from data_fixtures import good_sample, write_shard


def _dataset(root, splits=("train", "val", "test")):
    for split in splits:
        write_shard(root / split / "shard-000000.tar", [good_sample(f"{split}_{i}", num_frames=4) for i in range(2)])
    return root


def _keys(loader) -> list[str]:
    return sorted(key for batch in loader for key in batch["key"])


def test_root_finds_the_three_splits(tmp_path):
    root = _dataset(tmp_path)
    dm = VideoDataModule(root=str(root), num_frames=4, batch_size=2, num_workers=0)
    assert dm.shard_specs == {split: str(root / split) for split in ("train", "val", "test")}
    assert _keys(dm.train_dataloader()) == ["train_0", "train_1"]
    assert _keys(dm.val_dataloader()) == ["val_0", "val_1"]
    assert _keys(dm.test_dataloader()) == ["test_0", "test_1"]


def test_without_val_the_test_split_validates_and_a_log_line_says_so(tmp_path, caplog):
    root = _dataset(tmp_path, ("train", "test"))  # the UCF101 layout
    dm = VideoDataModule(root=str(root), num_frames=4, batch_size=2, num_workers=0)
    with caplog.at_level(logging.INFO, logger="lumiere"):
        assert _keys(dm.val_dataloader()) == ["test_0", "test_1"]
    assert [r.getMessage() for r in caplog.records if "no val/ folder" in r.getMessage()] == [
        f"data.root={root} has no val/ folder: validating on {root / 'test'}"
    ]
    only_train = _dataset(tmp_path / "only_train", ("train",))
    dm = VideoDataModule(root=str(only_train), num_frames=4, num_workers=0)
    assert dm.val_dataloader() == [] and dm.test_dataloader() == []


def test_explicit_shards_win_over_the_root(tmp_path):
    root = _dataset(tmp_path / "mine")
    other = _dataset(tmp_path / "other", ("val",))
    dm = VideoDataModule(root=str(root), val_shards=str(other / "val"), num_frames=4, batch_size=2, num_workers=0)
    assert dm.shard_specs["train"] == str(root / "train") and dm.shard_specs["val"] == str(other / "val")
    assert _keys(dm.val_dataloader()) == ["val_0", "val_1"] and dm.shard_specs["test"] == str(root / "test")
    # explicit paths alone work as before
    dm = VideoDataModule(str(root / "train"), num_frames=4, batch_size=2, num_workers=0)
    assert _keys(dm.train_dataloader()) == ["train_0", "train_1"] and dm.val_dataloader() == []


def test_a_root_without_train_is_one_line_naming_it(tmp_path):
    _dataset(tmp_path, ("val",))
    with pytest.raises(ConfigError, match=f"data.root={tmp_path} has no train/ folder; expected {tmp_path}/train"):
        VideoDataModule(root=str(tmp_path)).setup("fit")
    write_shard(tmp_path / "loose-000000.tar", [good_sample("loose", num_frames=4)])
    with pytest.raises(ConfigError, match=r"it holds 1 .tar shards directly: give them as data.train_shards"):
        VideoDataModule(root=str(tmp_path)).setup("fit")
    missing = VideoDataModule(root=str(tmp_path / "missing"))  # building it reads nothing: setup does
    with pytest.raises(ConfigError, match="is not a folder"):
        missing.setup("fit")
    with pytest.raises(ConfigError, match="must be a local folder"):
        VideoDataModule(root="s3://bucket/shards").setup("fit")
    with pytest.raises(ConfigError, match="set data.root .* or data.train_shards"):
        VideoDataModule(num_frames=4).setup("fit")
