"""The CSV logger keeps a resumed run's earlier rows (Lightning's deletes its metrics.csv)."""

from __future__ import annotations

import csv

from lumiere.training.loggers import ResumableCSVLogger


def log_steps(root, steps, value):
    logger = ResumableCSVLogger(root, name="csv", version="")
    for step in steps:
        logger.log_metrics({"train/loss": value + step}, step=step)
    logger.finalize("success")
    with open(root / "csv" / "metrics.csv", newline="") as handle:
        return [(int(row["step"]), float(row["train/loss"])) for row in csv.DictReader(handle)]


def test_resuming_appends_and_replaces_rows_past_the_checkpoint(tmp_path):
    assert log_steps(tmp_path, range(6), 0.0) == [(s, float(s)) for s in range(6)]
    # resumed from the step-4 checkpoint: steps 0-3 stay, 4-5 are logged again by the rerun
    rows = log_steps(tmp_path, range(4, 8), 100.0)
    assert rows == [(s, float(s)) for s in range(4)] + [(s, 100.0 + s) for s in range(4, 8)]


def test_a_resumed_run_that_logs_nothing_leaves_the_file_alone(tmp_path):
    log_steps(tmp_path, range(3), 0.0)
    ResumableCSVLogger(tmp_path, name="csv", version="").finalize("success")  # e.g. max_steps already reached
    assert log_steps(tmp_path, [], 0.0) == [(s, float(s)) for s in range(3)]


def test_new_keys_after_resume_extend_the_header(tmp_path):
    log_steps(tmp_path, range(2), 0.0)
    logger = ResumableCSVLogger(tmp_path, name="csv", version="")
    logger.log_metrics({"train/loss": 5.0, "val/loss": 1.0}, step=2)
    logger.finalize("success")
    with open(tmp_path / "csv" / "metrics.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [row["step"] for row in rows] == ["0", "1", "2"]
    assert rows[-1]["val/loss"] == "1.0" and rows[0]["val/loss"] == ""
