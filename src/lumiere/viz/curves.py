"""Loss curves from Lightning's CSV logs, one panel per run, as a PNG.

Lightning's `CSVLogger` writes `metrics.csv` with one column per logged key and mostly empty
cells (each row holds the keys logged at that step). The plot reads one key per run, draws the raw
values faintly and an exponential moving average on top (the raw diffusion loss is noisy: its
value depends on the timesteps drawn for the batch).

    python -m lumiere.viz.curves outputs/demo_t2i/demo/csv/metrics.csv outputs/demo_stunet/demo/csv/metrics.csv \
        --out outputs/demo/loss_curves.png
"""

from __future__ import annotations

import argparse
import csv
import math
import os
from collections.abc import Sequence

import numpy as np

from lumiere.errors import InputFileError
from lumiere.viz.video import atomic_path


def read_metric(path: str | os.PathLike, key: str = "train/loss") -> tuple[np.ndarray, np.ndarray]:
    """(steps, values) of one key in a Lightning `metrics.csv`, in logging order."""
    if not os.path.isfile(path):
        raise InputFileError(f"metrics file not found: {path}")
    steps, values = [], []
    with open(path, newline="") as handle:
        reader = csv.DictReader(handle)
        if reader.fieldnames is None or key not in reader.fieldnames or "step" not in reader.fieldnames:
            raise InputFileError(f"{path} has no {key!r} column (columns: {reader.fieldnames})")
        for row in reader:
            if row[key] not in ("", None):
                steps.append(int(float(row["step"])))
                values.append(float(row[key]))
    if not values:
        raise InputFileError(f"{path} has a {key!r} column but no values in it")
    return np.asarray(steps), np.asarray(values)


def smooth(values: np.ndarray, weight: float = 0.8) -> np.ndarray:
    """Bias-corrected exponential moving average (TensorBoard's smoothing), same length."""
    if not 0.0 <= weight < 1.0:
        raise ValueError(f"smoothing weight must lie in [0, 1), got {weight}")
    out = np.empty(len(values), dtype=np.float64)
    average = 0.0
    for index, value in enumerate(values):
        average = weight * average + (1.0 - weight) * value
        out[index] = average / (1.0 - weight ** (index + 1))
    return out


def run_label(path: str | os.PathLike) -> str:
    """outputs/<task>/<run>/csv/metrics.csv -> "<task>/<run>" (the path itself otherwise)."""
    parts = os.path.normpath(path).split(os.sep)
    if len(parts) >= 4 and parts[-2] == "csv":
        return f"{parts[-4]}/{parts[-3]}"
    return str(path)


def plot_loss_curves(paths: Sequence[str | os.PathLike], out: str | os.PathLike, key: str = "train/loss",
                     smoothing: float = 0.6, log_y: bool = True) -> str:
    """One panel per metrics file: raw `key` faintly, its moving average on top; returns `out`."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    if not paths:
        raise InputFileError("no metrics files to plot")
    series = [(run_label(path), *read_metric(path, key)) for path in paths]
    columns = math.ceil(math.sqrt(len(series)))  # 4 runs: 2 x 2
    rows = math.ceil(len(series) / columns)
    figure = Figure(figsize=(4.2 * columns, 3.2 * rows))
    FigureCanvasAgg(figure)
    axes = figure.subplots(rows, columns, squeeze=False)
    for axis, (label, steps, values) in zip(axes.flat, series):
        axis.plot(steps, values, color="tab:blue", alpha=0.3, linewidth=1)
        axis.plot(steps, smooth(values, smoothing), color="tab:blue", linewidth=2)
        axis.set_title(label, fontsize=10)
        axis.set_xlabel("step")
        axis.set_ylabel(key)
        if log_y and (values > 0).all():
            axis.set_yscale("log")
        axis.grid(alpha=0.3)
    for axis in list(axes.flat)[len(series):]:
        axis.axis("off")
    figure.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    with atomic_path(out) as temporary:
        figure.savefig(temporary, dpi=110, format="png")
    return str(out)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("metrics", nargs="+", help="Lightning metrics.csv files, one panel each")
    parser.add_argument("--out", required=True, help="PNG to write")
    parser.add_argument("--key", default="train/loss", help="column to plot (default train/loss)")
    parser.add_argument("--smoothing", type=float, default=0.6, help="EMA weight in [0, 1)")
    args = parser.parse_args(argv)
    try:
        print(plot_loss_curves(args.metrics, args.out, key=args.key, smoothing=args.smoothing))
    except InputFileError as error:
        raise SystemExit(f"error: {error}") from None


if __name__ == "__main__":
    main()
