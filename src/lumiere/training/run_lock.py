"""One live run per run folder: a lock file naming its owner (host and pid, or the SLURM job).

Two runs with the same ``run_name`` at once would write the same checkpoints and interleave their
``metrics.csv``. :class:`RunLock` takes ``<run folder>/run.lock`` for the life of the run, created
exclusively (``O_EXCL``), holding ``host``, ``pid`` and ``SLURM_JOB_ID``. A second run finds it and
stops with one line naming the owner, unless the owner is gone:

- the same SLURM job id (a requeued job gets its folder back, on whatever node it restarts);
- the same host and a pid that is no longer running (a killed run, resumed by hand).

A lock left by a dead run on another host cannot be checked from here; its line says which file to
remove. Only rank 0 takes the lock: the other ranks of a DDP run share the folder by design.
"""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

from lumiere.errors import ConfigError

LOCK_NAME = "run.lock"


def _owner() -> dict:
    return {"host": socket.gethostname(), "pid": os.getpid(), "slurm_job_id": os.environ.get("SLURM_JOB_ID")}


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True


def _stale(holder: dict, me: dict) -> bool:
    """True when the holder of a lock is known to be gone (or is this very job, requeued)."""
    if holder.get("slurm_job_id") and holder.get("slurm_job_id") == me["slurm_job_id"]:
        return True
    if holder.get("host") == me["host"]:
        pid = holder.get("pid")
        return not (isinstance(pid, int) and pid != me["pid"] and _pid_alive(pid))
    return False


class RunLock:
    """Context manager holding ``<folder>/run.lock`` for one run."""

    def __init__(self, folder: str | os.PathLike):
        self.path = Path(folder) / LOCK_NAME
        self.owner = _owner()
        self.held = False

    def acquire(self) -> RunLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        for _ in range(3):  # a stale lock is removed and the exclusive create tried again
            try:
                handle = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                holder = self._read_holder()
                if holder is not None and not _stale(holder, self.owner):
                    who = f"pid {holder.get('pid')} on {holder.get('host')}"
                    if holder.get("slurm_job_id"):
                        who += f", SLURM job {holder['slurm_job_id']}"
                    raise ConfigError(f"run folder {self.path.parent} is in use by another run ({who}); choose another "
                                      f"run_name, or remove {self.path} if that run is dead") from None
                try:
                    self.path.unlink()
                except FileNotFoundError:
                    pass
                continue
            with os.fdopen(handle, "w") as stream:
                json.dump(self.owner, stream)
            self.held = True
            return self
        raise ConfigError(f"could not take the run lock {self.path}: another run keeps replacing it")

    def _read_holder(self) -> dict | None:
        try:
            holder = json.loads(self.path.read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError):
            return {}  # unreadable or half-written: treated as held by an unknown, live owner for a moment
        return holder if isinstance(holder, dict) else {}

    def release(self) -> None:
        if self.held:
            holder = self._read_holder()
            if holder is not None and holder.get("pid") == self.owner["pid"] and holder.get("host") == self.owner["host"]:
                self.path.unlink(missing_ok=True)
            self.held = False

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()
