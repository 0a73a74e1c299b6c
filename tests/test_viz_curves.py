"""Loss curves read from Lightning's sparse metrics.csv and drawn to a PNG."""

import numpy as np
import pytest
from PIL import Image

from lumiere.errors import InputFileError
from lumiere.viz.curves import main, plot_loss_curves, read_metric, run_label, smooth

HEADER = "epoch,lr-AdamW,step,train/loss\n"


def write_metrics(path, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(HEADER + "".join(rows))
    return path


def test_read_metric_skips_rows_without_the_key(tmp_path):
    path = write_metrics(tmp_path / "metrics.csv",
                         [",0.001,19,\n", "0,,19,0.5\n", ",0.001,39,\n", "0,,39,0.25\n"])
    steps, values = read_metric(path)
    np.testing.assert_array_equal(steps, [19, 39])
    np.testing.assert_allclose(values, [0.5, 0.25])


def test_smoothing_is_a_bias_corrected_moving_average():
    np.testing.assert_allclose(smooth(np.full(5, 3.0), 0.9), np.full(5, 3.0))  # no start-up bias
    values = np.array([1.0, 0.0])
    # second value: (0.5 * 0.5 * 1 + 0.5 * 0) / (1 - 0.25)
    np.testing.assert_allclose(smooth(values, 0.5), [1.0, 0.25 / 0.75])
    np.testing.assert_allclose(smooth(values, 0.0), values)
    with pytest.raises(ValueError):
        smooth(values, 1.0)


def test_plot_writes_one_panel_per_run(tmp_path):
    first = write_metrics(tmp_path / "outputs/demo_t2i/demo/csv/metrics.csv",
                          [f"0,,{s},{1.0 / (s + 1)}\n" for s in range(0, 200, 20)])
    second = write_metrics(tmp_path / "outputs/demo_stunet/demo/csv/metrics.csv",
                           [f"0,,{s},{0.1 + 0.01 * np.sin(s)}\n" for s in range(0, 200, 20)])
    assert run_label(first) == "demo_t2i/demo"
    out = plot_loss_curves([first, second], tmp_path / "plots/loss.png")
    image = np.asarray(Image.open(out).convert("RGB"))
    assert image.shape[1] > image.shape[0]  # two panels side by side
    assert (image < 128).any()  # something was drawn
    assert not list((tmp_path / "plots").glob(".*partial*"))


def test_missing_column_or_file_is_a_clear_error(tmp_path, capsys):
    empty = tmp_path / "metrics.csv"
    empty.write_text("epoch,step,val/loss\n0,1,0.3\n")
    with pytest.raises(InputFileError, match="no 'train/loss' column"):
        read_metric(empty)
    with pytest.raises(SystemExit, match="error: metrics file not found"):
        main([str(tmp_path / "missing.csv"), "--out", str(tmp_path / "x.png")])
    assert not (tmp_path / "x.png").exists()
