"""A Hydra + Optuna sweep launched through submitit (locally): two jobs, one made to fail.

`python train.py hparams_search=optuna launcher=submitit_local ...` as a user would type it, with
two trials run at once as submitit subprocesses. Job 0 is given a batch size of 0 (a ConfigError),
job 1 trains the tiny STUNet for two steps and validates. The sweep must finish, the Optuna study
must hold both trials (the failed one as +inf, as run_task returns it), and the good job must have
left its checkpoint.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys

import pytest
import torch

from training_helpers import REPO_ROOT, make_tiny_dataset

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    from lumiere.models import build_tiny_text_encoder, build_unet, save_unet

    root = tmp_path_factory.mktemp("sweep")
    make_tiny_dataset(root / "data")
    torch.manual_seed(0)
    save_unet(build_unet("if_stage1_tiny"), root / "artifacts" / "t2i" / "unet")
    build_tiny_text_encoder().save_pretrained(root / "artifacts" / "t2i" / "text_encoder")
    storage = f"sqlite:///{root / 'optuna.db'}"
    command = [
        sys.executable, str(REPO_ROOT / "train.py"), "hparams_search=optuna", "launcher=submitit_local",
        "experiment=tiny_stunet", f"paths.data_dir={root / 'data'}", f"paths.artifacts_dir={root / 'artifacts'}",
        f"paths.log_dir={root / 'logs'}", f"hydra.sweep.dir={root / 'sweep'}",
        "hydra.sweeper.n_trials=2", "hydra.sweeper.n_jobs=2", f"hydra.sweeper.storage={storage}",
        "hydra.sweeper.study_name=tiny", "hydra.launcher.timeout_min=10",
        # Job 0 fails before training (batch size 0); job 1 trains.
        "data.batch_size=${hydra:job.num}",
        "trainer.max_steps=2", "data.epoch_length=2", "trainer.limit_val_batches=1", "logger=csv",
        "trainer.enable_progress_bar=false", "callbacks.sample_videos=null", "callbacks.first_batch=null",
        "callbacks.model_checkpoint.every_n_train_steps=2", "cpu_threads=1",
    ]
    env = {**os.environ, "PROJECT_ROOT": str(REPO_ROOT), "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600, cwd=REPO_ROOT)
    return root, storage, done


def test_optuna_sweep_through_submitit_records_both_trials(sweep):
    import optuna

    root, storage, done = sweep
    assert done.returncode == 0, done.stderr[-4000:]
    trials = sorted(optuna.load_study(study_name="tiny", storage=storage).trials, key=lambda t: t.number)
    assert [t.state.name for t in trials] == ["COMPLETE", "COMPLETE"]
    assert trials[0].value == math.inf  # the failed job
    assert math.isfinite(trials[1].value) and trials[1].value > 0  # job 1's val/loss
    assert "model.optimizer.lr" in trials[1].params
    results = (root / "sweep" / "optimization_results.yaml").read_text()
    assert f"best_value: {trials[1].value}" in results


def test_a_failing_job_leaves_the_other_job_finishing(sweep):
    root, _, done = sweep
    assert done.returncode == 0, done.stderr[-4000:]
    failed_log = (root / "sweep" / "0" / "tiny_stunet.log").read_text()
    assert "job failed" in failed_log and "batch_size" in failed_log
    assert not (root / "sweep" / "0" / "checkpoints").exists()
    good = root / "sweep" / "1"
    assert torch.load(good / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)["global_step"] == 2
