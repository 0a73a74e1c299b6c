"""Checkpoint writes survive a failure midway, and ckpt_path=auto falls back to the newest readable checkpoint."""

from __future__ import annotations

import errno
import os

import pytest
import torch

from lumiere.errors import InputFileError
from lumiere.training import checkpoint_io
from lumiere.training.checkpoint_io import AtomicCheckpointIO, atomic_write, resolve_resume_checkpoint

CONFIG = {"_target_": "lumiere.training.TextToVideoModule", "unet_path": "u", "text_encoder_path": "t"}


def _checkpoint(step: int) -> dict:
    return {"lumiere": {"model_config": CONFIG}, "state_dict": {"w": torch.full((1000,), float(step))}, "global_step": step}


def _failing_save(after_bytes: int):
    """torch.save that writes part of the file, then fails as a full disk does."""
    real_save = torch.save

    def save(obj, stream, *args, **kwargs):
        import io

        buffer = io.BytesIO()
        real_save(obj, buffer)
        stream.write(buffer.getvalue()[:after_bytes])
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    return save


def test_a_write_that_fails_midway_leaves_the_previous_checkpoint_intact_and_says_so(tmp_path, monkeypatch):
    io_plugin = AtomicCheckpointIO()
    last = tmp_path / "checkpoints" / "last.ckpt"
    io_plugin.save_checkpoint(_checkpoint(1), last)
    before = last.read_bytes()
    monkeypatch.setattr(checkpoint_io.torch, "save", _failing_save(after_bytes=len(before) // 2))
    with pytest.raises(InputFileError) as error:
        io_plugin.save_checkpoint(_checkpoint(2), last)
    message = str(error.value)
    assert "\n" not in message and "No space left on device" in message and "previous file is intact" in message
    assert last.read_bytes() == before  # the old checkpoint, whole
    assert os.listdir(last.parent) == ["last.ckpt"]  # no partial file left behind
    monkeypatch.undo()
    assert torch.load(last, weights_only=True)["global_step"] == 1


def test_a_failed_first_write_leaves_nothing(tmp_path):
    def write(stream):
        stream.write(b"half")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    with pytest.raises(InputFileError, match="nothing was written"):
        atomic_write(tmp_path / "out.csv", write)
    assert os.listdir(tmp_path) == []


def test_auto_resume_falls_back_to_the_newest_readable_checkpoint(tmp_path, caplog):
    folder = tmp_path / "checkpoints"
    io_plugin = AtomicCheckpointIO()
    for step in (2, 4):
        io_plugin.save_checkpoint(_checkpoint(step), folder / f"step_{step:07d}.ckpt")
    io_plugin.save_checkpoint(_checkpoint(6), folder / "last.ckpt")
    assert resolve_resume_checkpoint("auto", tmp_path) == str(folder / "last.ckpt")
    # a truncated last.ckpt (the failure Lightning's writer left on a full disk) is reported and skipped
    data = (folder / "last.ckpt").read_bytes()
    (folder / "last.ckpt").write_bytes(data[: len(data) // 2])
    with caplog.at_level("WARNING", logger="lumiere"):
        assert resolve_resume_checkpoint("auto", tmp_path) == str(folder / "step_0000004.ckpt")
    assert "skipping unreadable last.ckpt" in caplog.text
    # an explicit but unreadable path is an error, not a silent fresh start
    with pytest.raises(InputFileError, match="cannot read checkpoint"):
        resolve_resume_checkpoint(str(folder / "last.ckpt"), tmp_path)


def test_auto_resume_starts_fresh_only_in_an_empty_folder(tmp_path):
    assert resolve_resume_checkpoint("auto", tmp_path) is None  # a new run
    assert resolve_resume_checkpoint(None, tmp_path) is None
    folder = tmp_path / "checkpoints"
    folder.mkdir()
    (folder / "last.ckpt").write_bytes(b"PK\x03\x04 truncated")
    (folder / "step_0000002.ckpt").write_bytes(b"")
    with pytest.raises(InputFileError, match="none of the 2 checkpoints .* is readable; pass ckpt_path=null"):
        resolve_resume_checkpoint("auto", tmp_path)


def test_auto_resume_skips_a_sharded_folder_whose_save_did_not_finish(tmp_path, caplog):
    """Under state_dict_type: sharded each checkpoint is a folder; without the distributed
    checkpoint's .metadata (written last, by rank 0) it is incomplete."""
    folder = tmp_path / "checkpoints"
    for name, complete in (("step_0000002.ckpt", True), ("last.ckpt", False)):
        (folder / name).mkdir(parents=True)
        (folder / name / "meta.pt").write_bytes(b"")
        (folder / name / "__0_0.distcp").write_bytes(b"")
        if complete:
            (folder / name / ".metadata").write_bytes(b"")
    with caplog.at_level("WARNING", logger="lumiere"):
        assert resolve_resume_checkpoint("auto", tmp_path) == str(folder / "step_0000002.ckpt")
    assert "incomplete sharded checkpoint" in caplog.text
    assert resolve_resume_checkpoint(str(folder / "step_0000002.ckpt"), tmp_path) == str(folder / "step_0000002.ckpt")
    with pytest.raises(InputFileError, match="incomplete sharded checkpoint"):
        resolve_resume_checkpoint(str(folder / "last.ckpt"), tmp_path)
    with pytest.raises(InputFileError, match="not a sharded checkpoint"):
        resolve_resume_checkpoint(str(tmp_path), tmp_path)
