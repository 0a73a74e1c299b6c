"""Checkpoint files that survive a full disk or a kill, and the choice of what a run resumes from.

Lightning's default writer serialises into memory and copies through a temporary file that fsspec
places in the system's temp folder, so on a full disk (or a kill mid-copy) ``last.ckpt`` is left
truncated. :class:`AtomicCheckpointIO` writes into a temporary file in the destination folder,
flushes it to disk and renames it over the old file: a reader sees the previous checkpoint or the
new one, never half of one, and a failed write says so in one line.

:func:`resolve_resume_checkpoint` turns ``ckpt_path=auto`` into the newest *readable* checkpoint
of the run folder (``last.ckpt``, else the ``step_*.ckpt`` beside it), says which it took, and
refuses to start from scratch when checkpoints exist but none can be read.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO

from lumiere.errors import ConfigError, InputFileError
from lumiere.utils import atomic_write

log = logging.getLogger("lumiere")


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning checkpoint IO that writes each checkpoint atomically in its own folder."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options: Any | None = None) -> None:
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} takes no storage_options, got {storage_options!r}")
        atomic_write(path, lambda stream: torch.save(checkpoint, stream))


def is_sharded_checkpoint(path: str | os.PathLike) -> bool:
    """A folder written by FSDP with ``state_dict_type: sharded``: Lightning's ``meta.pt`` beside the
    distributed checkpoint's ``.metadata`` and one shard file per rank."""
    path = Path(path)
    return path.is_dir() and (path / "meta.pt").is_file()


def is_readable_checkpoint(path: str | os.PathLike) -> tuple[bool, str]:
    """(True, "") if ``path`` loads as one of our checkpoints, else (False, why). A sharded folder
    is complete when its distributed-checkpoint metadata is there (its shards are read by every
    rank of the resumed run, which needs the process group)."""
    from lumiere.training.base import read_checkpoint

    if Path(path).is_dir():
        if not is_sharded_checkpoint(path):
            return False, f"{path} is a folder but not a sharded checkpoint (no meta.pt)"
        if not (Path(path) / ".metadata").is_file():
            return False, f"{path} is an incomplete sharded checkpoint (no .metadata: the save did not finish)"
        return True, ""
    try:
        read_checkpoint(str(path))
    except InputFileError as error:
        return False, str(error)
    return True, ""


def resolve_resume_checkpoint(ckpt_path: str | None, output_dir: str | os.PathLike) -> str | None:
    """What ``train.py ckpt_path=...`` resumes from.

    ``null``: a fresh run. A path: that checkpoint, which must be readable. ``auto``: the run folder's
    ``last.ckpt`` if readable, else its newest readable ``step_*.ckpt`` (each unreadable one is
    reported); a fresh run when the folder holds no checkpoint; an error when it holds checkpoints
    and none is readable (``ckpt_path=null`` starts fresh on purpose)."""
    if ckpt_path in (None, "", "null"):
        return None
    if ckpt_path != "auto":
        if not os.path.exists(ckpt_path):
            raise ConfigError(f"ckpt_path does not exist: {ckpt_path}")
        readable, why = is_readable_checkpoint(ckpt_path)
        if not readable:
            raise InputFileError(why)
        return str(ckpt_path)
    folder = Path(output_dir) / "checkpoints"
    last = folder / "last.ckpt"
    steps = sorted(folder.glob("step_*.ckpt"), reverse=True)  # zero-padded step numbers: newest first
    candidates = ([last] if last.exists() else []) + steps  # files, or folders under state_dict_type: sharded
    if not candidates:
        log.info("ckpt_path=auto: no checkpoint in %s, starting a fresh run", folder)
        return None
    for candidate in candidates:
        readable, why = is_readable_checkpoint(candidate)
        if readable:
            log.info("ckpt_path=auto: resuming from %s", candidate)
            return str(candidate)
        log.warning("ckpt_path=auto: skipping unreadable %s (%s)", candidate.name, why)
    raise InputFileError(f"ckpt_path=auto: none of the {len(candidates)} checkpoints in {folder} is readable; "
                         "pass ckpt_path=null to start a fresh run in this folder")
