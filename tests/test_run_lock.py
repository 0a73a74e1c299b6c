"""One live run per run folder: a second process is refused in one line; a dead owner's lock is taken over."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest

from lumiere.errors import ConfigError
from lumiere.training.run_lock import LOCK_NAME, RunLock

HOLD = """
import sys, time
from lumiere.training.run_lock import RunLock
with RunLock(sys.argv[1]):
    print("locked", flush=True)
    time.sleep(120)
"""

TRY = """
import sys
from lumiere.errors import LumiereError
from lumiere.training.run_lock import RunLock
try:
    with RunLock(sys.argv[1]):
        print("acquired")
except LumiereError as error:
    print(f"error: {error}", file=sys.stderr)
    sys.exit(2)
"""


def _python(code, folder, env=None):
    return [sys.executable, "-c", code, str(folder)], {**os.environ, **(env or {})}


def test_a_second_live_process_is_refused_and_a_killed_owners_lock_is_taken_over(tmp_path):
    command, env = _python(HOLD, tmp_path)
    owner = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, text=True)
    try:
        assert owner.stdout.readline().strip() == "locked"
        holder = json.loads((tmp_path / LOCK_NAME).read_text())
        assert holder["pid"] == owner.pid
        command, env = _python(TRY, tmp_path)
        second = subprocess.run(command, env=env, capture_output=True, text=True, timeout=60)
        assert second.returncode == 2 and second.stdout == ""
        lines = second.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: run folder") and f"pid {owner.pid}" in lines[0]
    finally:
        owner.send_signal(signal.SIGKILL)
        owner.wait(timeout=30)
    # the owner died without releasing: its lock names a dead pid on this host, so a resume takes it
    assert (tmp_path / LOCK_NAME).exists()
    again = subprocess.run(command, env=env, capture_output=True, text=True, timeout=60)
    assert again.returncode == 0 and again.stdout.strip() == "acquired"
    assert not (tmp_path / LOCK_NAME).exists()  # released on exit


def test_a_requeued_slurm_job_gets_its_folder_back_from_another_node(tmp_path):
    # the lock of job 123, written on a node that is not this one, by a pid that may be alive there
    (tmp_path / LOCK_NAME).write_text(json.dumps({"host": "node-a", "pid": 1, "slurm_job_id": "123"}))
    with pytest.raises(ConfigError, match="SLURM job 123"):
        with RunLock(tmp_path):
            pass
    previous = os.environ.get("SLURM_JOB_ID")
    os.environ["SLURM_JOB_ID"] = "123"
    try:
        with RunLock(tmp_path) as lock:
            assert json.loads(lock.path.read_text())["slurm_job_id"] == "123"
    finally:
        if previous is None:
            del os.environ["SLURM_JOB_ID"]
        else:
            os.environ["SLURM_JOB_ID"] = previous


def test_the_lock_is_released_when_the_run_fails(tmp_path):
    with pytest.raises(RuntimeError):
        with RunLock(tmp_path):
            raise RuntimeError("training failed")
    assert not (tmp_path / LOCK_NAME).exists()
