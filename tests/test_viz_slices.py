"""X-T slices, frame-difference curves (App. C / Fig. 14) and sample sheets."""

import numpy as np
import pytest
import torch
from PIL import Image

from lumiere.errors import ConfigError
from lumiere.viz import (
    boundary_to_median_ratio,
    frame_difference_curve,
    plot_frame_difference,
    save_sample_sheet,
    save_xt_slice,
    to_uint8,
    xt_slice,
)


def test_xt_slice_is_the_indexed_row():
    video = torch.randn(3, 7, 6, 5)
    assert torch.equal(xt_slice(video), video[:, :, 3, :])
    assert torch.equal(xt_slice(video, row=1), video[:, :, 1, :])
    assert xt_slice(video).shape == (3, 7, 5)
    with pytest.raises(ConfigError):
        xt_slice(video, row=6)


def test_saved_xt_slice_shows_time_down_and_x_across(tmp_path):
    video = torch.rand(3, 16, 8, 32) * 2 - 1
    path = save_xt_slice(tmp_path / "xt.png", video, row=2, scale=2)
    image = np.asarray(Image.open(path))
    assert image.shape == (32, 64, 3)  # (T * 2, W * 2)
    expected = to_uint8(video[:, :, 2:3, :])[:, 0]  # (T, W, 3)
    assert np.array_equal(image[::2, ::2], expected)


def test_frame_difference_is_zero_for_a_static_video_and_peaks_at_a_jump():
    static = torch.rand(3, 1, 8, 8).expand(3, 10, 8, 8)
    assert np.array_equal(frame_difference_curve(static), np.zeros(9))

    drifting = torch.linspace(-0.5, 0.5, 12).view(1, 12, 1, 1).expand(3, 12, 8, 8).clone()
    drifting[:, 6:] += 0.4  # a seam between frames 5 and 6
    curve = frame_difference_curve(drifting)
    assert curve.shape == (11,) and int(np.argmax(curve)) == 5
    assert curve[5] == pytest.approx((1 / 11 + 0.4) ** 2, rel=1e-6)
    assert boundary_to_median_ratio(curve, [6]) == pytest.approx((1 / 11 + 0.4) ** 2 / (1 / 11) ** 2, rel=1e-6)
    assert boundary_to_median_ratio(frame_difference_curve(drifting[:, :6]), [3]) == pytest.approx(1.0)
    batch = torch.stack([drifting, drifting])
    np.testing.assert_allclose(frame_difference_curve(batch), curve)
    with pytest.raises(ConfigError):
        boundary_to_median_ratio(curve, [0])


def test_frame_difference_plot_is_written(tmp_path):
    curves = {"MultiDiffusion": np.full(15, 0.01), "no MultiDiffusion": np.r_[np.full(7, 0.01), 0.2, np.full(7, 0.01)]}
    path = plot_frame_difference(curves, tmp_path / "frame_diff.png", window_boundaries=[8])
    with Image.open(path) as image:
        assert image.format == "PNG" and image.size[0] > 300


def test_sample_sheet_grid_has_one_row_per_sample(tmp_path):
    videos = torch.rand(2, 3, 12, 16, 16) * 2 - 1
    path = save_sample_sheet(tmp_path / "sheet.png", videos, ["a red circle", ""], num_frames_shown=4, scale=2)
    sheet = np.asarray(Image.open(path))
    gap, cell = 4, 32
    assert sheet.shape[1] == 4 * cell + 5 * gap
    # The second sample has no caption: its row starts right below the first row's frames.
    second_top = sheet.shape[0] - gap - cell
    first_frame_of_second = to_uint8(videos[1, :, :1]).repeat(2, axis=1).repeat(2, axis=2)[0]
    assert np.array_equal(sheet[second_top:second_top + cell, gap:gap + cell], first_frame_of_second)
    last_frame_of_second = to_uint8(videos[1, :, 11:12]).repeat(2, axis=1).repeat(2, axis=2)[0]
    left = gap + 3 * (cell + gap)
    assert np.array_equal(sheet[second_top:second_top + cell, left:left + cell], last_frame_of_second)
    with pytest.raises(ConfigError):
        save_sample_sheet(tmp_path / "bad.png", videos, ["only one caption"])
