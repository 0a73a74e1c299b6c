"""Result tables of the evaluation (paper Table 1 style): markdown, CSV, json and logger tables.

A ``ResultTable`` is a list of rows (dicts of raw values) with the columns to show, and notes
that travel with the numbers: the metric variants (FVD preprocessing and covariance ``ddof``),
the number of videos behind every number, and sanity checks. ``write_table`` writes
``<stem>.md``, ``<stem>.csv`` and ``<stem>.json`` into the run folder; ``log_table`` sends the
table to the run's loggers (a ``wandb.Table`` under ``logger=wandb``, scalars to CSV loggers).
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Column:
    """One table column: ``key`` in the row dicts, the header shown, and a format spec."""

    key: str
    header: str
    fmt: str = ".2f"

    def render(self, value: Any) -> str:
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return "n/a"
        if isinstance(value, (int, float)) and not isinstance(value, bool) and self.fmt:
            return format(value, self.fmt)
        return str(value)


@dataclass
class ResultTable:
    """Rows of results with the columns to display and the notes that qualify them."""

    title: str
    columns: list[Column]
    rows: list[dict[str, Any]]
    notes: list[str] = field(default_factory=list)
    metadata: dict[str, Any] = field(default_factory=dict)

    def header(self) -> list[str]:
        return [column.header for column in self.columns]

    def rendered_rows(self) -> list[list[str]]:
        return [[column.render(row.get(column.key)) for column in self.columns] for row in self.rows]

    def to_markdown(self) -> str:
        lines = [f"## {self.title}", ""]
        lines.append("| " + " | ".join(self.header()) + " |")
        lines.append("|" + "|".join("---" if i == 0 else "---:" for i in range(len(self.columns))) + "|")
        lines.extend("| " + " | ".join(cells) + " |" for cells in self.rendered_rows())
        if self.notes:
            lines.append("")
            lines.extend(f"- {note}" for note in self.notes)
        return "\n".join(lines) + "\n"

    def csv_keys(self) -> list[str]:
        """Every key of every row, the displayed columns first (the CSV holds the raw values)."""
        keys = [column.key for column in self.columns]
        for row in self.rows:
            keys.extend(key for key in row if key not in keys)
        return keys

    def to_csv(self) -> str:
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=self.csv_keys(), lineterminator="\n")
        writer.writeheader()
        for row in self.rows:
            writer.writerow({key: _csv_value(row.get(key)) for key in self.csv_keys()})
        return buffer.getvalue()

    def to_json(self) -> dict[str, Any]:
        return {
            "title": self.title,
            "columns": [{"key": c.key, "header": c.header} for c in self.columns],
            "rows": self.rows,
            "notes": self.notes,
            **self.metadata,
        }


def _csv_value(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, (dict, list)):
        return json.dumps(value, sort_keys=True)
    return value


def _json_safe(value: Any) -> Any:
    """NaN/inf are not json: write them as null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


def write_table(table: ResultTable, out_dir: str | os.PathLike, stem: str) -> dict[str, Path]:
    """Write ``<stem>.md``, ``<stem>.csv`` and ``<stem>.json`` under ``out_dir``; return their paths."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"markdown": out_dir / f"{stem}.md", "csv": out_dir / f"{stem}.csv", "json": out_dir / f"{stem}.json"}
    _write_atomic(paths["markdown"], table.to_markdown())
    _write_atomic(paths["csv"], table.to_csv())
    _write_atomic(paths["json"], json.dumps(_json_safe(table.to_json()), indent=2) + "\n")
    return paths


def _write_atomic(path: Path, text: str) -> None:
    partial = path.with_name(path.name + ".partial")
    partial.write_text(text)
    os.replace(partial, path)


def flat_metrics(table: ResultTable, row_key: str = "row") -> dict[str, float]:
    """``{"<row id>/<column key>": value}`` for every finite number shown in the table."""
    metrics = {}
    for row in table.rows:
        for column in table.columns:
            value = row.get(column.key)
            if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
                metrics[f"{row[row_key]}/{column.key}"] = float(value)
    return metrics


def log_table(loggers: Iterable[Any], key: str, table: ResultTable, row_key: str = "row") -> None:
    """Send the table to Lightning loggers: ``log_table`` where the logger has it (W&B), and the
    numbers as scalars ``<key>/<row>/<column>`` to every logger."""
    metrics = {f"{key}/{name}": value for name, value in flat_metrics(table, row_key).items()}
    for logger in loggers:
        if hasattr(logger, "log_table"):
            logger.log_table(key=key, columns=table.header(), data=table.rendered_rows())
            if table.notes:
                logger.log_text(key=f"{key}_notes", columns=["note"], data=[[note] for note in table.notes])
        if metrics:
            logger.log_metrics(metrics)
        if hasattr(logger, "save"):
            logger.save()


def ordering_check(name: str, values: Sequence[tuple[str, float | None]]) -> str:
    """A sanity line: do the labelled values increase in the given order? ``holds`` / ``FAILS``."""
    shown = " < ".join(f"{label} {value:.4g}" if value is not None else f"{label} n/a" for label, value in values)
    numbers = [value for _, value in values]
    if any(value is None or not math.isfinite(value) for value in numbers):
        return f"sanity ({name}): {shown}: not checked (a value is missing)"
    holds = all(a < b for a, b in zip(numbers, numbers[1:]))
    return f"sanity ({name}): {shown}: {'holds' if holds else 'FAILS'}"
