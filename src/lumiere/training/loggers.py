"""A CSV logger whose `metrics.csv` survives resumption.

Lightning's `CSVLogger` deletes an existing `metrics.csv` when it opens its folder, so a run
resumed into the same folder (``ckpt_path=auto``) keeps only the rows logged after the resume,
and resuming a finished run leaves no loss curve at all. This logger keeps the earlier rows.
Rows at or after the first step the resumed run logs are dropped on its first save: they came
from training past the checkpoint the run went back to, and the resumed run logs those steps again.
Each save writes the whole file to a temporary file in its folder and renames it over the old one
(`lumiere.utils.atomic_write`): a full disk or a kill mid-write never truncates it.
"""

from __future__ import annotations

import csv
import io

from fsspec.implementations.local import LocalFileSystem
from lightning.fabric.loggers.logger import rank_zero_experiment
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter

from lumiere.utils import atomic_write


def _row_step(row: dict) -> float | None:
    try:
        return float(row.get("step") or "")
    except ValueError:
        return None


class _ResumingExperimentWriter(ExperimentWriter):
    def _check_log_dir_exists(self) -> None:
        self._earlier_rows: list[dict] | None = None  # the resumed run's file, until its first save
        self._rows: list[dict] = []  # every row in metrics.csv as last written
        if not self._fs.isfile(self.metrics_file_path):
            return
        with self._fs.open(self.metrics_file_path, "r", newline="") as handle:
            reader = csv.DictReader(handle)
            self._earlier_rows = list(reader)
            self.metrics_keys = sorted(reader.fieldnames or [])

    def save(self) -> None:
        """Write metrics.csv whole, through a temporary file beside it that is renamed over it: a
        failed write (full disk, a kill) leaves the previous file intact and says so in one line."""
        if not self.metrics:
            return
        if not isinstance(self._fs, LocalFileSystem):  # a remote file system: Lightning's appending writer
            self._save_remote()
            return
        rows = self._rows
        if self._earlier_rows is not None:
            first_new_step = min(float(row["step"]) for row in self.metrics)
            rows = [row for row in self._earlier_rows
                    if (step := _row_step(row)) is not None and step < first_new_step]
        self._record_new_keys()
        rows = rows + self.metrics

        def write(stream) -> None:
            text = io.TextIOWrapper(stream, encoding="utf-8", newline="")
            writer = csv.DictWriter(text, fieldnames=self.metrics_keys)
            writer.writeheader()
            writer.writerows(rows)
            text.flush()
            text.detach()  # atomic_write fsyncs and closes the file itself

        atomic_write(self.metrics_file_path, write)
        self._rows, self._earlier_rows, self.metrics = rows, None, []

    def _save_remote(self) -> None:
        if self._earlier_rows is not None:
            first_new_step = min(float(row["step"]) for row in self.metrics)
            kept = [row for row in self._earlier_rows
                    if (step := _row_step(row)) is not None and step < first_new_step]
            self._record_new_keys()
            with self._fs.open(self.metrics_file_path, "w", newline="") as handle:
                writer = csv.DictWriter(handle, fieldnames=self.metrics_keys)
                writer.writeheader()
                writer.writerows(kept)
            self._earlier_rows = None
        super().save()


class ResumableCSVLogger(CSVLogger):
    """`lightning.pytorch.loggers.CSVLogger` that appends to the `metrics.csv` of a resumed run
    instead of deleting it (same arguments)."""

    @property
    @rank_zero_experiment  # other ranks get a no-op writer, as in CSVLogger
    def experiment(self) -> ExperimentWriter:
        if self._experiment is None:
            self._fs.makedirs(self.root_dir, exist_ok=True)
            self._experiment = _ResumingExperimentWriter(log_dir=self.log_dir)
        return self._experiment
