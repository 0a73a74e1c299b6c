"""Visualisation: mp4/gif files, X-T slices and frame-difference curves (Fig. 2, 14), sample sheets."""

from lumiere.viz.sheets import save_sample_sheet
from lumiere.viz.slices import (
    boundary_to_median_ratio,
    frame_difference_curve,
    plot_frame_difference,
    save_xt_slice,
    xt_slice,
)
from lumiere.viz.video import read_image, read_video, save_png, to_uint8, write_gif, write_mp4

__all__ = [
    "boundary_to_median_ratio",
    "frame_difference_curve",
    "plot_frame_difference",
    "read_image",
    "read_video",
    "save_png",
    "save_sample_sheet",
    "save_xt_slice",
    "to_uint8",
    "write_gif",
    "write_mp4",
    "xt_slice",
]
