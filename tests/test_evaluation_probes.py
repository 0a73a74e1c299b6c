"""The prompt-following probes: their prompts are the demo slice's captions, and their any-colour
tracking follows rendered motion (the probes themselves need trained checkpoints)."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import torch

from lumiere.data.rendering import render_clip
from lumiere.data.vocabulary import DEMO_SLICE, labels_from_caption, sample_labels
from lumiere.evaluation.probes import COLOURS, DIRECTIONS, SHAPES, any_colour_tracks, demo_caption, flip_direction


def _demo_clips(count: int, frames: int = 16, seed: int = 0):
    """Clips of the demo slice as the Makefile renders it (1.5x shapes starting behind the centre)."""
    rng = np.random.default_rng(seed)
    labels = [sample_labels(rng, DEMO_SLICE) for _ in range(count)]
    videos = torch.stack([torch.from_numpy(render_clip(label, frames, 32, 8, seed=i, object_scale=1.5,
                                                       linear_start="behind")).permute(3, 0, 1, 2).float() / 127.5 - 1
                          for i, label in enumerate(labels)])
    return videos, labels


def test_the_probe_prompts_are_captions_of_the_demo_slice():
    for colour in COLOURS:
        for shape in SHAPES:
            for direction in DIRECTIONS:
                labels = labels_from_caption(demo_caption(colour, shape, direction))
                assert (labels["color"], labels["shape"], labels["direction"]) == (colour, shape, direction)
                assert all(labels[key] in values for key, values in DEMO_SLICE.items())


def test_flipping_the_direction_word_changes_only_that_word():
    _, labels = _demo_clips(8)
    for label, flipped in zip(labels, flip_direction(labels)):
        parsed = labels_from_caption(flipped)
        assert parsed["direction"] != label["direction"]
        assert {k: v for k, v in parsed.items() if k != "direction"} == {k: v for k, v in label.items() if k != "direction"}


def test_any_colour_tracking_follows_rendered_demo_clips_and_not_their_reversal():
    videos, labels = _demo_clips(12)
    directions = [label["direction"] for label in labels]
    forward = any_colour_tracks(videos, directions)
    assert forward["any_colour_direction_accuracy"] >= 0.9 and forward["any_colour_opposite_direction_rate"] == 0.0
    assert forward["colour_consistency"] == 1.0 and forward["frames_with_object"] == 1.0
    backward = any_colour_tracks(videos.flip(2), directions)
    assert backward["any_colour_opposite_direction_rate"] >= 0.9


def test_the_probe_command_fails_in_one_line_without_a_checkpoint(tmp_path):
    result = subprocess.run([sys.executable, "-m", "lumiere.evaluation.probes", "stunet", str(tmp_path / "none.ckpt")],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [f"error: checkpoint not found: {tmp_path / 'none.ckpt'}"]
