"""Colour tracking of the prompted object: direction of travel on rendered benchmark clips."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lumiere.data.rendering import render_clip
from lumiere.data.vocabulary import RGB, parse_restrictions, sample_labels
from lumiere.errors import ConfigError
from lumiere.metrics.tracking import direction_from_track, track_colour, tracked_direction_accuracy


def _clips(count: int, restrictions: list[str], frames: int = 16, seed: int = 0):
    rng = np.random.default_rng(seed)
    allowed = parse_restrictions(restrictions)
    videos, colours, directions = [], [], []
    for index in range(count):
        labels = sample_labels(rng, allowed)
        clip = render_clip(labels, num_frames=frames, size=32, fps=8, seed=index)
        videos.append(torch.from_numpy(clip).permute(3, 0, 1, 2).float() / 127.5 - 1)
        colours.append(labels["color"])
        directions.append(labels["direction"])
    return torch.stack(videos), colours, directions


def test_real_linear_clips_are_tracked_in_their_direction_and_static_or_reversed_ones_are_not():
    videos, colours, directions = _clips(24, ["motion=linear", "num_objects=one", "speed=medium,fast"])
    real = tracked_direction_accuracy(videos, colours, directions, RGB)
    assert real["num_tracked"] == 24 and real["direction_accuracy"] >= 0.9 and real["visible"] > 0.8
    static = tracked_direction_accuracy(videos[:, :, :1].expand_as(videos), colours, directions, RGB)
    assert static["direction_accuracy"] == 0.0  # no travel: "none"
    reversed_time = tracked_direction_accuracy(videos.flip(2), colours, directions, RGB)
    assert reversed_time["direction_accuracy"] <= 0.1


def test_a_missing_colour_is_lost_and_other_motions_are_skipped():
    videos, colours, directions = _clips(4, ["motion=linear", "num_objects=one", "color=red"])
    result = tracked_direction_accuracy(videos, ["blue"] * 4, directions, RGB)
    assert result["direction_accuracy"] == 0.0 and result["visible"] == 0.0
    names = list(RGB)
    centroids, area = track_colour(videos, torch.full((4,), names.index("blue")),
                                   torch.tensor([RGB[n] for n in names], dtype=torch.float32))
    assert direction_from_track(centroids, area) == ["lost"] * 4
    skipped = tracked_direction_accuracy(videos, colours, ["clockwise"] * 4, RGB)
    assert skipped == {"direction_accuracy": None, "visible": None, "num_tracked": 0}


def test_a_square_moving_right_on_a_synthetic_canvas_is_tracked_right_despite_a_wrap():
    video = -torch.ones(1, 3, 8, 16, 16)
    for t in range(8):
        x = (2 + 3 * t) % 16  # wraps once: the long step back is ignored
        video[0, 0, t, 6:10, x:x + 3] = 1.0  # pure red (255, 0, 0) is nearest to the palette's red
    assert tracked_direction_accuracy(video, ["red"], ["right"], RGB)["direction_accuracy"] == 1.0


def test_mismatched_inputs_raise_config_error():
    with pytest.raises(ConfigError, match="RGB videos"):
        tracked_direction_accuracy(torch.zeros(1, 1, 4, 8, 8), ["red"], ["left"], RGB)
    with pytest.raises(ConfigError, match="not in the palette"):
        tracked_direction_accuracy(torch.zeros(1, 3, 4, 8, 8), ["purple"], ["left"], RGB)
    with pytest.raises(ConfigError, match="1 videos but 2"):
        tracked_direction_accuracy(torch.zeros(1, 3, 4, 8, 8), ["red", "red"], ["left"], RGB)
