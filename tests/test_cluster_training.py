"""Training at cluster scale on CPU: DDP equals one process, preemption leaves an exact resume point.

Tiny STUNet (inflated from a tiny T2I export built here) on the tiny synthetic benchmark, a few
steps each. Signals are sent by the training process to itself at a chosen step (`SendSignal`),
so the point of interruption is deterministic: SIGKILL lands between backward and the optimizer
update, SIGTERM / SIGUSR1 likewise and must be handled at the end of that step.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch

from training_helpers import REPO_ROOT, compose_config, make_tiny_t2i_workspace

pytestmark = pytest.mark.slow
TESTS_DIR = Path(__file__).resolve().parent


# ---------------------------------------------------------------------------- test callbacks
class SendSignal(pl.Callback):
    """Send signal `name` to this process after the backward of the step that starts at `at_step`."""

    def __init__(self, at_step: int, name: str):
        self.at_step = at_step
        self.signum = getattr(signal, name)

    def on_before_optimizer_step(self, trainer, pl_module, optimizer):
        if trainer.global_step == self.at_step:
            os.kill(os.getpid(), self.signum)


class LossRecorder(pl.Callback):
    """Write this rank's per-step training losses and batch sizes to `<directory>/rank<r>.json`."""

    def __init__(self, directory: str):
        self.directory = directory
        self.losses: list[float] = []
        self.batch_sizes: list[int] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.losses.append(float(outputs["loss"]))
        self.batch_sizes.append(len(batch["key"]))

    def on_train_end(self, trainer, pl_module):
        os.makedirs(self.directory, exist_ok=True)
        with open(os.path.join(self.directory, f"rank{trainer.global_rank}.json"), "w") as handle:
            json.dump({"losses": self.losses, "batch_sizes": self.batch_sizes}, handle)


# ---------------------------------------------------------------------------- workspace
@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One intra-op thread in every run of this module (the train task sets it from cpu_threads=1).

    Same thread count, same float reductions, in all runs compared here; and forking is safe:
    a child forked after the parent used a multi-threaded OpenMP team hangs in its first parallel
    region (libgomp is not fork-safe)."""
    threads, omp = torch.get_num_threads(), os.environ.get("OMP_NUM_THREADS")
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
    if omp is None:
        os.environ.pop("OMP_NUM_THREADS", None)
    else:
        os.environ["OMP_NUM_THREADS"] = omp


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    return make_tiny_t2i_workspace(tmp_path_factory.mktemp("cluster"))


MAX_STEPS = 6


def common_overrides(root: Path) -> list[str]:
    # 4 batches per epoch, 6 steps: an interruption at step 2-3 is mid-epoch and the resumed run
    # crosses into epoch 1. No validation (the same in every run, and faster).
    return ["experiment=tiny_stunet", f"paths.data_dir={root / 'data'}", f"paths.artifacts_dir={root / 'artifacts'}",
            f"paths.log_dir={root / 'logs'}", "logger=csv", "trainer.enable_progress_bar=false",
            f"trainer.max_steps={MAX_STEPS}", "trainer.limit_val_batches=0", "data.epoch_length=4",
            "model.lr_warmup_steps=3", "callbacks.sample_videos=null", "callbacks.first_batch=null", "cpu_threads=1"]


def run_dir(root: Path, run_name: str) -> Path:
    return root / "logs" / "tiny_stunet" / run_name


def train_in_process(root: Path, run_name: str, extra: list[str] = ()) -> Path:
    from lumiere.tasks import train

    out = run_dir(root, run_name)
    cfg = compose_config("train", [*common_overrides(root), f"run_name={run_name}", *extra], out)
    train(cfg)
    return out


def train_subprocess(root: Path, run_name: str, extra: list[str]) -> subprocess.CompletedProcess:
    env = {**os.environ, "PROJECT_ROOT": str(REPO_ROOT),
           "PYTHONPATH": os.pathsep.join([str(TESTS_DIR), os.environ.get("PYTHONPATH", "")])}
    command = [sys.executable, str(REPO_ROOT / "train.py"), *common_overrides(root), f"run_name={run_name}", *extra]
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=300, cwd=REPO_ROOT)


def train_in_child(root: Path, run_name: str, extra: list[str]) -> int:
    """The train task (through run_task, as train.py calls it) in a forked child: no re-import.
    Returns its exit status, or -N if signal N ended it."""
    from lumiere.tasks import run_task, train

    cfg = compose_config("train", [*common_overrides(root), f"run_name={run_name}", *extra], run_dir(root, run_name))
    pid = os.fork()
    if pid == 0:  # the child
        status = 1
        try:
            run_task(train, cfg)
            status = 0
        except SystemExit as stop:
            status = stop.code if isinstance(stop.code, int) else 1
        finally:
            os._exit(status)
    _, wait_status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(wait_status)


def send_signal(at_step: int, name: str) -> list[str]:
    return ["+callbacks.signal._target_=test_cluster_training.SendSignal",
            f"+callbacks.signal.at_step={at_step}", f"+callbacks.signal.name={name}"]


def load(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


def assert_same_weights(resumed: dict, reference: dict, key: str = "state_dict", atol: float = 1e-6) -> None:
    tensors = resumed[key] if key == "state_dict" else resumed[key]["shadow"]
    expected = reference[key] if key == "state_dict" else reference[key]["shadow"]
    assert resumed["global_step"] == reference["global_step"] == MAX_STEPS
    assert tensors.keys() == expected.keys()
    for name, value in expected.items():
        torch.testing.assert_close(tensors[name], value, rtol=0, atol=atol, msg=f"{key}: {name}")


@pytest.fixture(scope="module")
def reference(workspace) -> dict:
    """An uninterrupted run of MAX_STEPS steps."""
    out = train_in_process(workspace, "reference", [f"callbacks.model_checkpoint.every_n_train_steps={MAX_STEPS}"])
    return load(out / "checkpoints" / "last.ckpt")


@pytest.fixture(scope="module")
def killed(workspace):
    """SIGKILL inside step 4 with a checkpoint every step; then a resume to MAX_STEPS."""
    done = train_subprocess(workspace, "killed", ["callbacks.model_checkpoint.every_n_train_steps=1",
                                                  *send_signal(3, "SIGKILL")])
    interrupted = load(run_dir(workspace, "killed") / "checkpoints" / "last.ckpt")
    resumed_dir = train_in_process(workspace, "killed", ["callbacks.model_checkpoint.every_n_train_steps=1"])
    return done, interrupted, load(resumed_dir / "checkpoints" / "last.ckpt")


@pytest.fixture(scope="module")
def terminated(workspace):
    """SIGTERM inside step 3 with no periodic checkpoint; then a resume to MAX_STEPS."""
    status = train_in_child(workspace, "terminated", ["callbacks.model_checkpoint.every_n_train_steps=1000",
                                                      *send_signal(2, "SIGTERM")])
    files = sorted(p.name for p in (run_dir(workspace, "terminated") / "checkpoints").iterdir())
    interrupted = load(run_dir(workspace, "terminated") / "checkpoints" / "last.ckpt")
    resumed_dir = train_in_process(workspace, "terminated", ["callbacks.model_checkpoint.every_n_train_steps=1000"])
    files_after = sorted(p.name for p in (run_dir(workspace, "terminated") / "checkpoints").iterdir())
    return status, files, files_after, interrupted, load(resumed_dir / "checkpoints" / "last.ckpt")


# ---------------------------------------------------------------------------- preemption and resume
def test_sigkill_mid_epoch_then_resume_from_last_ckpt_matches_an_uninterrupted_run(killed, reference):
    done, interrupted, resumed = killed
    assert done.returncode == -signal.SIGKILL, done.stderr[-3000:]
    # Killed inside step 4 (global step 3 -> 4), in the middle of epoch 0 (4 batches per epoch):
    # the checkpoint holds the data stream's position, which the resumed run continues from.
    assert interrupted["global_step"] == 3
    assert interrupted["loops"]["fit_loop"]["state_dict"]["combined_loader"] == [
        {"epoch": 0, "batches": 3, "batch_size": 2, "num_workers": 0, "world_size": 1}]
    assert_same_weights(resumed, reference)


def test_sigterm_saves_last_ckpt_at_the_step_boundary_and_resumes_exactly(terminated, reference):
    status, files, files_after, interrupted, resumed = terminated
    assert status == 128 + signal.SIGTERM
    assert files == ["last.ckpt"]  # no periodic checkpoints: this one was written for the signal
    assert interrupted["global_step"] == 3  # the step during which SIGTERM arrived was completed first
    assert_same_weights(resumed, reference)
    # The resumed run kept writing last.ckpt (a last-v1.ckpt would leave the next requeue a stale file).
    assert files_after == ["last.ckpt"]


def test_resumed_runs_also_reproduce_the_ema(killed, terminated, reference):
    assert_same_weights(killed[2], reference, key="ema")
    assert_same_weights(terminated[4], reference, key="ema")


def test_sigusr1_inside_a_slurm_job_saves_requeues_the_job_and_exits(workspace, monkeypatch):
    from lumiere.training.preemption import PreemptionExit

    monkeypatch.setenv("SLURM_JOB_ID", "4242")
    marker = workspace / "requeued.txt"
    fake_scontrol = [sys.executable, "-c", f"import sys; open({str(marker)!r}, 'w').write(' '.join(sys.argv[1:]))",
                     "requeue", "{job_id}"]
    preemption = ["+callbacks.preemption._target_=lumiere.training.preemption.PreemptionCheckpoint",
                  f"+callbacks.preemption.dirpath={run_dir(workspace, 'requeued') / 'checkpoints'}",
                  "+callbacks.preemption.requeue_command=[" + ",".join(json.dumps(p) for p in fake_scontrol) + "]"]
    before: list[int] = []
    previous = signal.signal(signal.SIGUSR1, lambda signum, frame: before.append(signum))
    try:
        with pytest.raises(PreemptionExit) as stopped:
            train_in_process(workspace, "requeued", [*preemption, *send_signal(1, "SIGUSR1"),
                                                     "callbacks.model_checkpoint.every_n_train_steps=1000"])
        assert stopped.value.code == 128 + signal.SIGUSR1
        assert load(run_dir(workspace, "requeued") / "checkpoints" / "last.ckpt")["global_step"] == 2
        assert marker.read_text() == "requeue 4242"
        assert before == [], "the signal also reached the handler the callback replaced"
        # After the run, the signal goes to the handler that was there before it.
        signal.raise_signal(signal.SIGUSR1)
        assert before == [signal.SIGUSR1]
    finally:
        signal.signal(signal.SIGUSR1, previous)


# ---------------------------------------------------------------------------- DDP
def ddp_overrides(root: Path, name: str) -> list[str]:
    # Exact partition of one process's batches over two ranks: the tiny benchmark has one clip per
    # shard, shards go round-robin to ranks, no shuffle buffer and centred clips; the global batch
    # of 4 is 4 per step on one process and 2 per rank on two. Plain SGD: the property is that DDP's
    # averaged gradient is the full batch's gradient. (Adam divides by sqrt(v) + 1e-8, so for the
    # weights behind the zero-initialised output projections, whose gradients start near 1e-8, it
    # turns last-bit differences of summation order into visible update differences.)
    return ["++global_batch_size=4", "model.optimizer._target_=torch.optim.SGD", "model.optimizer.lr=0.05",
            "data.shuffle_buffer=0", "data.temporal_crop=center", "data.epoch_length=null", "trainer.max_steps=3",
            "callbacks.model_checkpoint.every_n_train_steps=3",
            "+callbacks.recorder._target_=test_cluster_training.LossRecorder",
            f"+callbacks.recorder.directory={root / 'losses' / name}"]


def test_two_process_ddp_matches_one_process_with_the_same_global_batch(workspace):
    single_dir = train_in_process(workspace, "single", ddp_overrides(workspace, "single"))
    ddp_dir = train_in_process(workspace, "ddp", [*ddp_overrides(workspace, "ddp"), "trainer=ddp_cpu",
                                                  "trainer.strategy.start_method=fork"])

    single = json.loads((workspace / "losses" / "single" / "rank0.json").read_text())
    ranks = [json.loads((workspace / "losses" / "ddp" / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert single["batch_sizes"] == [4, 4, 4]
    assert ranks[0]["batch_sizes"] == ranks[1]["batch_sizes"] == [2, 2, 2]
    # Each rank's loss is the mean over its half of the batch; their mean is the full batch's loss.
    ddp_losses = [(a + b) / 2 for a, b in zip(ranks[0]["losses"], ranks[1]["losses"])]
    assert ddp_losses == pytest.approx(single["losses"], abs=1e-5)
    assert ranks[0]["losses"] != ranks[1]["losses"], "the ranks trained on the same samples"

    single_state = load(single_dir / "checkpoints" / "last.ckpt")["state_dict"]
    ddp_state = load(ddp_dir / "checkpoints" / "last.ckpt")["state_dict"]
    assert single_state.keys() == ddp_state.keys()
    # The zero-initialised output projections moved: the runs did train.
    assert single_state["network.mid_temporal.blocks.0.proj_out.weight"].abs().max() > 1e-4
    for name, value in single_state.items():
        # float32 gradients reduced in another order (2 + 2 all-reduced vs 4): ~1e-6 relative.
        torch.testing.assert_close(ddp_state[name], value, rtol=1e-6, atol=1e-6, msg=name)
