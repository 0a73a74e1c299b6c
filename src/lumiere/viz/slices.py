"""Temporal-consistency views of a video: X-T slices and frame-difference curves.

The paper shows temporal coherence with X-T slices (Fig. 2, Fig. 14: one image row followed
through time, so smooth motion draws smooth curves and a temporal seam draws a horizontal cut),
and the MultiDiffusion ablation with a "Frame Diff." curve (App. C, Fig. 14): the squared
difference between adjacent frames, which peaks at every boundary between independently
generated segments.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

import numpy as np
import torch
from torch import Tensor

from lumiere.errors import ConfigError
from lumiere.viz.video import atomic_path, auto_scale, save_png, to_uint8, upscale_nearest


def xt_slice(video: Tensor, row: int | None = None) -> Tensor:
    """The X-T slice (C, T, W) of a video (C, T, H, W) at image row `row` (default: the middle)."""
    if video.ndim != 4:
        raise ConfigError(f"xt_slice expects a video (C, T, H, W), got shape {tuple(video.shape)}")
    height = video.shape[2]
    row = height // 2 if row is None else row
    if not -height <= row < height:
        raise ConfigError(f"row {row} is outside a video of height {height}")
    return video[:, :, row, :]


def save_xt_slice(path: str | os.PathLike, video: Tensor, row: int | None = None, scale: int | None = None) -> str:
    """Save the X-T slice as a PNG: x across, time going down; small slices upscaled (nearest)."""
    if video.ndim == 5:
        if video.shape[0] != 1:
            raise ConfigError("save_xt_slice takes one video (C, T, H, W) or a batch of one")
        video = video[0]
    image = to_uint8(xt_slice(video, row).unsqueeze(2))[:, 0]  # (C, T, 1, W) -> (T, W, 3)
    image = upscale_nearest(image, auto_scale(image.shape[0], image.shape[1], scale))
    return save_png(path, image)


def frame_difference_curve(video: Tensor) -> np.ndarray:
    """Mean squared difference between adjacent frames, shape (T - 1,), float64.

    Entry i compares frames i and i + 1 (averaged over channels, pixels and, for a batch
    (B, C, T, H, W), over samples).
    """
    if video.ndim == 4:
        video = video.unsqueeze(0)
    if video.ndim != 5 or video.shape[2] < 2:
        raise ConfigError(f"frame_difference_curve needs a video with >= 2 frames, got shape {tuple(video.shape)}")
    video = video.detach().to(torch.float64)
    squared = (video[:, :, 1:] - video[:, :, :-1]).pow(2)
    return squared.mean(dim=(0, 1, 3, 4)).cpu().numpy()


def boundary_to_median_ratio(curve: np.ndarray, boundaries: Sequence[int]) -> float:
    """Mean frame difference across window boundaries over the median difference elsewhere.

    A boundary b is the first frame of a new window, i.e. the transition from frame b - 1 to b
    (curve index b - 1). About 1 means no seams; the App. C ablation shows large values without
    MultiDiffusion. Returns inf if the other transitions do not change at all but a boundary does.
    """
    curve = np.asarray(curve, dtype=np.float64)
    indices = sorted({int(b) - 1 for b in boundaries})
    if not indices or indices[0] < 0 or indices[-1] >= len(curve):
        raise ConfigError(f"boundaries must lie in [1, {len(curve)}] for a curve of {len(curve)} transitions")
    others = np.delete(curve, indices)
    if others.size == 0:
        raise ConfigError("every transition is a boundary; nothing to compare against")
    at_boundaries, median = float(curve[indices].mean()), float(np.median(others))
    if median == 0.0:
        return float("inf") if at_boundaries > 0 else 1.0
    return at_boundaries / median


def plot_frame_difference(
    curves: Mapping[str, np.ndarray],
    path: str | os.PathLike,
    window_boundaries: Sequence[int] | None = None,
    title: str = "Frame difference",
) -> str:
    """Plot frame-difference curves (label -> (T - 1,) array) to a PNG, as in Fig. 14.

    The transition between frames i and i + 1 is drawn at x = i + 0.5; a window boundary b
    (first frame of a window) is a dashed vertical line at x = b - 0.5.
    """
    # The object-oriented Agg API leaves pyplot's global state (and any interactive backend) alone.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    if not curves:
        raise ConfigError("plot_frame_difference needs at least one curve")
    figure = Figure(figsize=(6.0, 3.0), dpi=120)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot(1, 1, 1)
    for label, curve in curves.items():
        curve = np.asarray(curve, dtype=np.float64)
        axes.plot(np.arange(len(curve)) + 0.5, curve, marker=".", label=label)
    for number, boundary in enumerate(window_boundaries or ()):
        axes.axvline(boundary - 0.5, color="grey", linestyle="--", linewidth=0.8,
                     label="window boundary" if number == 0 else None)
    axes.set_xlabel("frame")
    axes.set_ylabel("mean squared difference")
    axes.set_title(title)
    axes.legend(loc="upper right", fontsize="small")
    figure.tight_layout()
    with atomic_path(path) as temporary:
        figure.savefig(temporary, format="png")
    return os.fspath(path)
