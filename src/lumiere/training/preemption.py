"""Preemption-safe training: on a signal, save `last.ckpt` at the next step boundary, requeue, exit.

Training the base model of Sec. 5 on 30M clips takes longer than any SLURM time limit, so a run
is a chain of jobs that resume each other. A job ends early in one of three ways:

* its time limit: SLURM sends the requeue signal ahead of it (`#SBATCH --signal=USR1@120`:
  SIGUSR1 120 s before the end, to every task). This callback saves `last.ckpt`, runs
  `scontrol requeue <job>` from rank 0 and exits; the requeued job runs the same command, lands
  in the same run folder (Hydra's run folder is named by `run_name`, a sweep job's by its number)
  and resumes from `last.ckpt` (`ckpt_path: auto`).
* preemption, `scancel` or a requeue by the scheduler: SIGTERM, then SIGKILL after KillWait. This
  callback saves `last.ckpt` and exits; whether the job comes back is the scheduler's decision.
* SIGKILL, a node failure or a crash: nothing can be saved; the periodic `last.ckpt` that
  ModelCheckpoint writes every N steps is the resume point, and the resumed run repeats those
  steps exactly (per-sample noise seeded by step and key, and a stateful data loader).

Requeueing has one owner: this callback. Lightning's own SLURM handler
(`SLURMEnvironment(auto_requeue=True)`) does the same two things but saves its checkpoint inside
the signal handler, i.e. in the middle of whatever the process was doing (between an optimizer
update and the step counter, or on one DDP rank while the others sit in an all-reduce); it is
switched off (`lumiere.training.distributed.slurm_plugins`). submitit's handler (SIGUSR2, used by
the Hydra submitit launcher) never fires: `conf/launcher/submitit_slurm.yaml` asks SLURM for
SIGUSR1 instead and sets `max_num_timeout: 0`.

Saving happens at the end of a training batch that completed an optimizer step (never in the
middle of gradient accumulation), after all ranks agree that a signal arrived on any of them,
so every rank saves the same step and collective checkpointing (FSDP) stays in lockstep. That
step's metrics go to the loggers, flushed to disk, before the checkpoint: the resumed run starts at
the next step, so metrics.csv holds every step's row exactly once.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import threading
from collections.abc import Sequence
from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.callbacks import ModelCheckpoint

log = logging.getLogger("lumiere")


class PreemptionExit(SystemExit):
    """Raised after the preemption checkpoint is saved: the run stopped early, it did not finish.

    The exit status is 128 + the signal number (143 for SIGTERM, 138 for SIGUSR1), the shell's
    convention for "ended by this signal". A SystemExit, so a multirun job ends without reporting
    a (partial) result: submitit writes no result for it and waits for the requeued job."""

    def __init__(self, signum: int, checkpoint: str):
        super().__init__(128 + int(signum))
        self.signum = int(signum)
        self.checkpoint = checkpoint


def _signal_number(value: str | int) -> int:
    if isinstance(value, int):
        return value
    name = value.upper()
    return int(getattr(signal, name if name.startswith("SIG") else "SIG" + name))


def slurm_job_id(environ: dict[str, str] | None = None) -> str | None:
    """The id `scontrol requeue` takes: `<array job>_<task>` for array jobs, else the job id."""
    environ = os.environ if environ is None else environ
    if environ.get("SLURM_ARRAY_JOB_ID") and environ.get("SLURM_ARRAY_TASK_ID"):
        return f"{environ['SLURM_ARRAY_JOB_ID']}_{environ['SLURM_ARRAY_TASK_ID']}"
    return environ.get("SLURM_JOB_ID")


class PreemptionCheckpoint(pl.Callback):
    """Save `<dirpath>/<filename>` at the first step boundary after a preemption signal, then exit.

    Signals in `requeue_signals` also requeue the SLURM job (rank 0 runs `requeue_command` with
    `{job_id}` filled in) when the process runs inside one; `exit_signals` only save and exit."""

    def __init__(
        self,
        dirpath: str,
        filename: str = "last.ckpt",  # what `ckpt_path: auto` resumes from
        requeue_signals: Sequence[str | int] = ("SIGUSR1",),  # SLURM's `--signal=USR1@<seconds>` warning
        exit_signals: Sequence[str | int] = ("SIGTERM",),  # preemption, scancel, scheduler requeue
        requeue: bool = True,  # run requeue_command on a requeue signal inside a SLURM job
        requeue_command: Sequence[str] = ("scontrol", "requeue", "{job_id}"),
    ):
        super().__init__()
        self.dirpath = str(dirpath)
        self.filename = filename
        self.requeue_signals = tuple(_signal_number(s) for s in requeue_signals)
        self.exit_signals = tuple(_signal_number(s) for s in exit_signals)
        self.requeue = bool(requeue)
        self.requeue_command = [str(part) for part in requeue_command]
        self.received: list[int] = []  # signals seen by this process, in order
        self.saved_checkpoint: str | None = None  # set once the preemption checkpoint is written
        self._previous_handlers: dict[int, Any] = {}
        self._armed = False  # True from setup("fit") to the end of that fit
        self._step_at_batch_start: int | None = None

    @property
    def checkpoint_path(self) -> str:
        return os.path.join(self.dirpath, self.filename)

    # -- signal handling --------------------------------------------------------------------------
    def _handle(self, signum: int, frame: Any) -> None:
        previous = self._previous_handlers.get(signum, signal.SIG_DFL)
        if not self._armed:
            # Outside a fit (Lightning's teardown may reinstall this handler after an exception):
            # give the signal back to whoever had it before, as if we had never been there.
            signal.signal(signum, previous if previous is not None else signal.SIG_DFL)
            signal.raise_signal(signum)
            return
        # Only note the signal: the checkpoint is written at a step boundary (on_train_batch_end).
        self.received.append(signum)
        log.warning("received %s: saving %s at the next step boundary", signal.Signals(signum).name,
                    self.checkpoint_path)
        # Chain a Python handler that was there before us (submitit logs SIGTERM, for instance);
        # never the default action, which would end the process before the checkpoint.
        # A stale handler of an earlier fit in this process (a notebook, an in-process sweep) is not chained:
        # it is no longer armed and would hand the signal to the default action.
        stale = isinstance(getattr(previous, "__self__", None), PreemptionCheckpoint)
        if signum in self.exit_signals and callable(previous) and not stale:
            previous(signum, frame)

    def _install(self) -> None:
        self._armed = True
        if threading.current_thread() is not threading.main_thread() or self._previous_handlers:
            return  # signal handlers can only be set from the main thread
        for signum in dict.fromkeys(self.requeue_signals + self.exit_signals):
            self._previous_handlers[signum] = signal.getsignal(signum)
            signal.signal(signum, self._handle)

    def _restore(self) -> None:
        self._armed = False
        if threading.current_thread() is not threading.main_thread():
            return
        for signum, handler in self._previous_handlers.items():
            if signal.getsignal(signum) == self._handle and handler is not None:
                signal.signal(signum, handler)

    # -- Lightning hooks --------------------------------------------------------------------------
    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        # Installed before Lightning registers its own handlers (after the setup hooks): its SIGTERM
        # handler then calls ours, and it installs none for SIGUSR1 where one exists.
        if stage == "fit":
            self.received, self.saved_checkpoint = [], None
            self._previous_handlers = {}
            self._install()

    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        self._restore()

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        # Lightning raises SIGTERMException itself when SIGTERM lands where this callback does not
        # look (during validation, or in DDP between our check and its own per-step broadcast).
        # All ranks raise it together and the loop state is consistent there: save too.
        from lightning.pytorch.utilities.exceptions import SIGTERMException

        if isinstance(exception, SIGTERMException) and self.saved_checkpoint is None:
            # Lightning raises it after the step's metrics went to the loggers: only flush them.
            self._save(trainer, requeue=any(s in self.requeue_signals for s in self.received), log_step=False)
        self._restore()

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any,
                             batch_idx: int) -> None:
        self._step_at_batch_start = trainer.global_step

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        if self._step_at_batch_start is not None and trainer.global_step == self._step_at_batch_start:
            return  # mid gradient accumulation: the accumulated gradients are in no checkpoint
        strategy = trainer.strategy
        # Ranks receive the signal at slightly different times: agree on "any rank got one" so that
        # all of them save (and stop) at the same step.
        if not strategy.reduce_boolean_decision(bool(self.received), all=False):
            return
        requeue = strategy.reduce_boolean_decision(any(s in self.requeue_signals for s in self.received),
                                                   all=False)
        self._save(trainer, requeue=requeue, log_step=True)
        raise PreemptionExit(self.exit_signal(), self.checkpoint_path)

    def exit_signal(self) -> int:
        """The signal this process stopped for (another rank's, when it arrived there first)."""
        return self.received[0] if self.received else self.exit_signals[0]

    @staticmethod
    def _flush_loggers(trainer: pl.Trainer, *, log_step: bool) -> None:
        """Put the metrics of the step being saved on disk before its checkpoint.

        At the end of a training batch Lightning has not yet sent that step's logged values to the
        loggers (it does so after the `on_train_batch_end` hooks, which this callback leaves by
        exiting): without this, the resumed run starts at the next step and the saved step's
        `train/loss` row is in no file. `log_step` sends them, as Lightning would have (same step,
        same `log_every_n_steps` rule); then every logger writes what it holds (metrics.csv)."""
        if log_step:
            update = getattr(getattr(trainer, "_logger_connector", None), "update_train_step_metrics", None)
            if callable(update):
                update()
        for logger in trainer.loggers:
            logger.save()

    def _save(self, trainer: pl.Trainer, *, requeue: bool, log_step: bool = False) -> None:
        os.makedirs(self.dirpath, exist_ok=True)
        self._flush_loggers(trainer, log_step=log_step)
        # Tell a ModelCheckpoint that keeps `last.ckpt` in this folder that this file is its own
        # (its state goes into the checkpoint): otherwise the resumed run's ModelCheckpoint finds
        # a `last.ckpt` it did not write and saves `last-v1.ckpt` beside it, and the next
        # requeue resumes from the stale file.
        for callback in trainer.checkpoint_callbacks:
            if isinstance(callback, ModelCheckpoint) and callback.save_last and callback.dirpath and \
                    os.path.realpath(callback.dirpath) == os.path.realpath(self.dirpath) and \
                    callback.CHECKPOINT_NAME_LAST + callback.FILE_EXTENSION == self.filename:
                callback.last_model_path = os.path.join(callback.dirpath, self.filename)
        trainer.save_checkpoint(self.checkpoint_path)  # every rank: a collective under FSDP
        self.saved_checkpoint = self.checkpoint_path
        log.warning("preempted at step %d: saved %s", trainer.global_step, self.checkpoint_path)
        if requeue and self.requeue and trainer.is_global_zero:
            self._requeue_job()

    def _requeue_job(self) -> None:
        job_id = slurm_job_id()
        if job_id is None:
            log.warning("not inside a SLURM job: exiting without requeue")
            return
        command = [part.format(job_id=job_id) for part in self.requeue_command]
        try:
            result = subprocess.run(command, capture_output=True, text=True, timeout=60)
        except (OSError, subprocess.TimeoutExpired) as error:
            log.error("requeue of job %s failed: %s", job_id, error)
            return
        if result.returncode == 0:
            log.warning("requeued SLURM job %s", job_id)
        else:
            log.error("requeue of job %s failed (%d): %s", job_id, result.returncode, result.stderr.strip())
