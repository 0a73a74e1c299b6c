"""Runs a researcher can trust: one run per folder, resumes that say what they took, writes that survive.

The train task on the tiny STUNet of tests/test_cluster_training.py (its workspace and helpers):
a second run in a live run's folder stops in one line; ``ckpt_path=auto`` skips a truncated
last.ckpt for the newest step checkpoint; a SIGTERM-stopped and resumed run has each step's loss row
in metrics.csv exactly once; a frame count the STUNet cannot take is refused before any file.
Exports are written beside the previous one and replace it only when complete.
"""

from __future__ import annotations

import csv
import errno
import logging
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch
from omegaconf import OmegaConf
from test_cluster_training import (
    TESTS_DIR,
    common_overrides,
    load,
    run_dir,
    send_signal,
    train_in_child,
    train_in_process,
)

from lumiere.errors import ConfigError, InputFileError

from training_helpers import REPO_ROOT, compose_config, make_tiny_t2i_workspace

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    return make_tiny_t2i_workspace(tmp_path_factory.mktemp("trusted"))


class WaitForFile(pl.Callback):
    """Hold the run at the start of training until `path` exists (at most `timeout` seconds)."""

    def __init__(self, path: str, timeout: float = 120.0):
        self.path, self.timeout = path, timeout

    def on_train_start(self, trainer, pl_module):
        deadline = time.monotonic() + self.timeout
        while not os.path.exists(self.path) and time.monotonic() < deadline:
            time.sleep(0.1)


def short_run(max_steps: int, every: int) -> list[str]:
    return [f"trainer.max_steps={max_steps}", f"callbacks.model_checkpoint.every_n_train_steps={every}"]


def train_command(root: Path, run_name: str, extra: list[str]) -> tuple[list[str], dict]:
    env = {**os.environ, "PROJECT_ROOT": str(REPO_ROOT), "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([str(TESTS_DIR), os.environ.get("PYTHONPATH", "")])}
    for name in ("RANK", "SLURM_PROCID", "LOCAL_RANK", "NODE_RANK", "SLURM_JOB_ID"):
        env.pop(name, None)
    return [sys.executable, str(REPO_ROOT / "train.py"), *common_overrides(root), f"run_name={run_name}", *extra], env


def checkpoint_files(folder: Path) -> list[str]:
    return sorted(p.name for p in (folder / "checkpoints").glob("*.ckpt")) if (folder / "checkpoints").is_dir() else []


# ---------------------------------------------------------------------------- one run per folder
def test_a_second_run_in_a_live_runs_folder_stops_in_one_line_and_writes_nothing(workspace, tmp_path):
    release = tmp_path / "release"
    hold = ["+callbacks.wait._target_=test_trusted_runs.WaitForFile", f"+callbacks.wait.path={release}"]
    command, env = train_command(workspace, "locked", [*short_run(2, 2), *hold])
    folder = run_dir(workspace, "locked")
    with open(tmp_path / "first.out", "w") as out, open(tmp_path / "first.err", "w") as err:
        first = subprocess.Popen(command, env=env, stdout=out, stderr=err, cwd=REPO_ROOT)
    try:
        deadline = time.monotonic() + 180
        while not (folder / "run.lock").exists() and first.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        assert (folder / "run.lock").exists(), (tmp_path / "first.err").read_text()[-3000:]

        started = time.monotonic()
        second = subprocess.run(command, env=env, capture_output=True, text=True, timeout=180, cwd=REPO_ROOT)
        elapsed = time.monotonic() - started
        assert second.returncode != 0
        last_line = second.stderr.strip().splitlines()[-1]
        assert last_line.startswith("error: run folder") and f"pid {first.pid}" in last_line, second.stderr[-3000:]
        assert first.poll() is None, "the first run ended before the second one was refused"
        assert elapsed < 90  # refused at start-up: no model built, no step trained
        assert checkpoint_files(folder) == []  # the first run is held before its first step
    finally:
        release.touch()
    assert first.wait(timeout=300) == 0, (tmp_path / "first.err").read_text()[-3000:]
    assert checkpoint_files(folder) == ["last.ckpt", "step_0000002.ckpt"]
    assert not (folder / "run.lock").exists()  # released at the end of the run


def test_only_rank_zero_takes_the_lock():
    from lumiere.tasks.training import is_global_rank_zero

    assert is_global_rank_zero({})
    assert is_global_rank_zero({"RANK": "0", "LOCAL_RANK": "0"})
    assert not is_global_rank_zero({"RANK": "3"})
    assert not is_global_rank_zero({"SLURM_PROCID": "1"})
    assert not is_global_rank_zero({"LOCAL_RANK": "1"})
    assert not is_global_rank_zero({"NODE_RANK": "1", "LOCAL_RANK": "0"})  # rank 0 of the second node


def test_the_configured_checkpoint_writer_and_the_slurm_environment_are_both_plugins(monkeypatch, tmp_path):
    from lightning.fabric.plugins.environments import LightningEnvironment, SLURMEnvironment

    from lumiere.tasks.training import trainer_plugins
    from lumiere.training.checkpoint_io import AtomicCheckpointIO

    trainer_cfg = compose_config("train", ["experiment=tiny_stunet"], tmp_path).trainer
    for name in [n for n in os.environ if n.startswith("SLURM_")]:
        monkeypatch.delenv(name)
    (writer,) = trainer_plugins(trainer_cfg)
    assert isinstance(writer, AtomicCheckpointIO)

    for name, value in {"SLURM_NTASKS": "1", "SLURM_JOB_NAME": "stunet", "SLURM_JOB_ID": "77",
                        "SLURM_NODELIST": "gpu01", "SLURM_PROCID": "0", "SLURM_LOCALID": "0",
                        "SLURM_NODEID": "0"}.items():
        monkeypatch.setenv(name, value)
    writer, environment = trainer_plugins(trainer_cfg)
    assert isinstance(writer, AtomicCheckpointIO)
    assert isinstance(environment, SLURMEnvironment) and environment.auto_requeue is False
    # A cluster environment configured by the user is kept and not doubled.
    own = OmegaConf.create({"plugins": [{"_target_": "lightning.fabric.plugins.environments.LightningEnvironment"}]})
    (environment,) = trainer_plugins(own)
    assert isinstance(environment, LightningEnvironment)
    for nothing in ({}, {"plugins": None}, {"plugins": []}):  # no configured plugin: SLURM's alone
        assert [type(p) for p in trainer_plugins(OmegaConf.create(nothing))] == [SLURMEnvironment]


# ---------------------------------------------------------------------------- resume
def test_auto_resume_skips_a_truncated_last_ckpt_for_the_newest_step_checkpoint(workspace, caplog):
    folder = train_in_process(workspace, "truncated", short_run(2, 1))
    assert checkpoint_files(folder) == ["last.ckpt", "step_0000001.ckpt", "step_0000002.ckpt"]
    last = folder / "checkpoints" / "last.ckpt"
    last.write_bytes(last.read_bytes()[: last.stat().st_size // 2])  # a copy killed midway

    with caplog.at_level(logging.INFO, logger="lumiere"):
        train_in_process(workspace, "truncated", short_run(3, 1))
    step = folder / "checkpoints" / "step_0000002.ckpt"
    assert any(r.levelno == logging.WARNING and "skipping unreadable last.ckpt" in r.getMessage()
               for r in caplog.records)
    assert f"ckpt_path=auto: resuming from {step}" in caplog.text
    assert load(last)["global_step"] == 3  # continued from step 2, and last.ckpt is readable again


def loss_rows(folder: Path) -> Counter:
    with open(folder / "csv" / "metrics.csv", newline="") as handle:
        return Counter(int(row["step"]) for row in csv.DictReader(handle) if row.get("train/loss"))


def test_a_sigterm_stop_and_resume_logs_the_saved_steps_loss_exactly_once(workspace):
    every = "callbacks.model_checkpoint.every_n_train_steps=1000"  # the preemption checkpoint only
    status = train_in_child(workspace, "flushed", ["trainer.max_steps=4", every, *send_signal(1, "SIGTERM")])
    folder = run_dir(workspace, "flushed")
    assert status == 128 + signal.SIGTERM
    saved = load(folder / "checkpoints" / "last.ckpt")["global_step"]
    assert saved == 2  # SIGTERM during the second step: that step was completed and saved
    # The saved step's row (Lightning logs optimizer step k as row k - 1) is on disk before the resume.
    assert loss_rows(folder) == Counter({0: 1, 1: 1})
    train_in_process(workspace, "flushed", ["trainer.max_steps=4", every])
    assert loss_rows(folder) == Counter({0: 1, 1: 1, 2: 1, 3: 1})


# ---------------------------------------------------------------------------- refused before any file
def test_a_frame_count_the_stunet_cannot_take_is_refused_before_any_file(workspace):
    folder = run_dir(workspace, "six_frames")
    with pytest.raises(ConfigError) as refused:
        train_in_process(workspace, "six_frames", ["data.num_frames=6", *short_run(2, 1)])
    message = str(refused.value)
    assert "\n" not in message and message.startswith("data.num_frames=6: 6 frames is not divisible") and "N=4" in message
    assert not (folder / "checkpoints").exists() and not (folder / "samples").exists()
    assert not (folder / "csv").exists() and not (folder / "run.lock").exists()  # the lock was released
    # The validation clip length is checked as well.
    with pytest.raises(ConfigError, match=r"^model.val_num_frames=10: 10 frames is not divisible"):
        train_in_process(workspace, "six_frames", ["model.val_num_frames=10", *short_run(2, 1)])
    assert not (folder / "checkpoints").exists()


# ---------------------------------------------------------------------------- exports
def export_files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_a_t2i_export_failing_midway_leaves_the_previous_export_intact(tmp_path, monkeypatch):
    from lumiere.models import FrozenTextEncoder

    from tiny_chain import build_module, t2i_config

    torch.manual_seed(0)
    module = build_module(t2i_config())
    out = tmp_path / "t2i"
    module.export_pretrained(str(out))
    (out / "notes.txt").write_text("kept")  # not part of the export: left alone
    before = export_files(out)
    assert {"unet/lumiere_t2i.json", "text_encoder/config.json"} <= before.keys()

    with torch.no_grad():
        for parameter in module.network.parameters():
            parameter.add_(1.0)  # a new export would differ in every weight

    def disk_full(self, *args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(FrozenTextEncoder, "save_pretrained", disk_full)  # after unet/ was written
    with pytest.raises(InputFileError) as failed:
        module.export_pretrained(str(out))
    assert str(failed.value) == f"could not export to {out}: No space left on device; the previous export is intact"
    assert export_files(out) == before
    # the pipeline layout of the export and nothing else: no partial folder
    assert sorted(p.name for p in out.iterdir()) == ["model_index.json", "notes.txt", "scheduler", "text_encoder",
                                                     "tokenizer", "unet"]

    monkeypatch.undo()
    module.export_pretrained(str(out))
    after = export_files(out)
    assert after.keys() == before.keys() and after["unet/diffusion_pytorch_model.safetensors"] != \
        before["unet/diffusion_pytorch_model.safetensors"]
    assert sorted(p.name for p in out.iterdir()) == ["model_index.json", "notes.txt", "scheduler", "text_encoder", "tokenizer", "unet"]


def test_an_ssr_export_failing_midway_leaves_the_previous_export_and_a_first_failure_leaves_nothing(tmp_path):
    from test_ssr_sampling import HIGH, LOW, module_kwargs

    from lumiere.models import build_tiny_text_encoder, build_unet
    from lumiere.training.ssr import SSR_META_FILE, SuperResolutionModule

    torch.manual_seed(0)
    build_tiny_text_encoder().save_pretrained(tmp_path / "text_encoder")
    module = SuperResolutionModule(unet=build_unet("if_stage2_tiny", sample_size=HIGH),
                                   text_encoder_path=str(tmp_path / "text_encoder"), low_res_size=LOW, **module_kwargs())
    network = module.network
    save = network.save_pretrained

    def half_written(folder, **kwargs):  # writes part of the folder, then the disk is full
        os.makedirs(folder, exist_ok=True)
        Path(folder, "config.json").write_text("{")
        raise OSError(errno.EDQUOT, "Disk quota exceeded")

    first = tmp_path / "first"
    network.save_pretrained = half_written
    with pytest.raises(InputFileError, match="Disk quota exceeded; nothing was exported$"):
        module.export_pretrained(str(first))
    assert list(first.iterdir()) == []

    out = tmp_path / "ssr"
    network.save_pretrained = save
    module.export_pretrained(str(out))
    before = export_files(out)
    assert f"ssr_unet/{SSR_META_FILE}" in before
    network.save_pretrained = half_written
    with pytest.raises(InputFileError, match="the previous export is intact$"):
        module.export_pretrained(str(out))
    assert export_files(out) == before and [p.name for p in out.iterdir()] == ["ssr_unet"]
