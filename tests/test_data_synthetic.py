"""Synthetic motion benchmark: determinism, captions, SR pairs, shards and manifest."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import webdataset as wds

from lumiere.data.rendering import render_clip
from lumiere.data.synthetic import generate_synthetic_benchmark, main
from lumiere.data.vocabulary import (
    ATTRIBUTE_VOCAB,
    DIRECTIONS_BY_MOTION,
    SPEED_ADVERB,
    caption_from_labels,
    label_ids,
    labels_from_caption,
    sample_labels,
)
from lumiere.errors import ConfigError

from data_fixtures import tiny_synthetic


def test_same_seed_renders_identical_frames_and_other_seeds_differ():
    labels = sample_labels(np.random.default_rng(3))
    first = render_clip(labels, num_frames=8, size=32, fps=16, seed=11)
    again = render_clip(labels, num_frames=8, size=32, fps=16, seed=11)
    other = render_clip(labels, num_frames=8, size=32, fps=16, seed=12)
    assert first.dtype == np.uint8 and first.shape == (8, 32, 32, 3)
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, other)
    assert sample_labels(np.random.default_rng(5)) == sample_labels(np.random.default_rng(5))


@pytest.mark.parametrize("motion", sorted(DIRECTIONS_BY_MOTION))
def test_every_motion_moves_the_picture(motion):
    """Each motion changes the frames over time (a static clip would teach no motion; single
    pairs may repeat, e.g. at a pendulum's turning point)."""
    labels = dict(sample_labels(np.random.default_rng(0)), motion=motion, direction=DIRECTIONS_BY_MOTION[motion][0],
                  shape="star", speed="fast", period="short" if motion in ("pendulum", "hopping", "pulsing") else "none")
    frames = render_clip(labels, num_frames=6, size=32, fps=16, seed=1).astype(np.float32)
    assert np.abs(np.diff(frames, axis=0)).mean() > 1.0


def test_captions_name_every_label_and_are_distinct():
    rng = np.random.default_rng(0)
    seen: dict[str, dict] = {}
    for _ in range(300):
        labels = sample_labels(rng)
        assert set(labels) == set(ATTRIBUTE_VOCAB)
        assert all(labels[k] in ATTRIBUTE_VOCAB[k] for k in labels)
        caption = caption_from_labels(labels)
        words = set(re.findall(r"[a-z]+", caption))
        for key in ("shape", "color", "background"):
            assert labels[key] in words, (key, caption)
        assert SPEED_ADVERB[labels["speed"]] in caption
        if labels["direction"] != "none":
            assert labels["direction"] in words
        if labels["num_objects"] == "two":
            assert labels["second_shape"] in words and labels["second_color"] in words
        assert seen.setdefault(caption, labels) == labels, "two label sets share a caption"
        assert labels_from_caption(caption) == labels  # the caption determines the labels
    # the draw covers the whole vocabulary of the main attributes
    for key in ("shape", "color", "motion", "speed", "background"):
        drawn = {labels[key] for labels in seen.values()}
        assert drawn == set(ATTRIBUTE_VOCAB[key]), key


def test_label_ids_index_the_vocabulary():
    ids = label_ids({"shape": ["circle", "star", None], "motion": ["pulsing", "linear", "linear"]})
    assert ids["shape"].tolist() == [0, ATTRIBUTE_VOCAB["shape"].index("star"), -1]
    assert ids["motion"].tolist() == [ATTRIBUTE_VOCAB["motion"].index("pulsing"), 0, 0]
    with pytest.raises(ConfigError):
        labels_from_caption("a cat playing the piano")


def test_high_resolution_render_is_the_same_scene():
    """The 128 px render, area-downsampled to 32 px, matches the 32 px render (SR pairs)."""
    labels = sample_labels(np.random.default_rng(7))
    low = render_clip(labels, num_frames=4, size=32, fps=16, seed=2).astype(np.float32)
    high = render_clip(labels, num_frames=4, size=128, fps=16, seed=2).astype(np.float32)
    pooled = high.reshape(4, 32, 4, 32, 4, 3).mean(axis=(2, 4))
    assert np.abs(pooled - low).mean() < 4.0  # on a 0..255 scale: anti-aliasing differences only


def test_benchmark_shards_hold_the_documented_sample_format():
    root = tiny_synthetic()
    manifest = json.loads((root / "manifest.json").read_text())
    assert manifest["complete"] and manifest["splits"]["train"]["num_samples"] == 12
    assert len(manifest["splits"]["train"]["shards"]) == 4  # min_shards=4 -> 3 clips per shard
    shards = sorted(str(p) for p in (root / "train").glob("*.tar"))
    samples = list(wds.WebDataset(shards, shardshuffle=False, empty_check=False))
    assert len(samples) == 12
    sample = samples[0]
    assert {"mp4", "hr.mp4", "txt", "json"} <= set(sample)
    meta = json.loads(sample["json"])
    assert meta["caption"] == sample["txt"].decode() == caption_from_labels(meta["labels"])
    assert (meta["fps"], meta["num_frames"], meta["width"], meta["hr_width"]) == (16.0, 16, 32, 64)


def test_generation_is_reproducible_byte_for_byte_and_independent_of_workers(tmp_path):
    kwargs = dict(num_train=4, num_val=0, num_test=0, num_frames=8, fps=16, size=32, hr_size=64, progress=False)
    generate_synthetic_benchmark(tmp_path / "a", **kwargs)
    generate_synthetic_benchmark(tmp_path / "b", workers=2, **kwargs)

    def samples(root):
        shards = sorted(str(p) for p in (root / "train").glob("*.tar"))
        return [(s["__key__"], s["mp4"], s["hr.mp4"], s["json"]) for s in wds.WebDataset(shards, shardshuffle=False, empty_check=False)]

    assert samples(tmp_path / "a") == samples(tmp_path / "b")


def test_regenerating_is_a_noop_and_another_config_needs_overwrite(tmp_path):
    kwargs = dict(num_train=2, num_val=1, num_test=0, num_frames=4, fps=8, size=16, hr_size=None, progress=False)
    first = generate_synthetic_benchmark(tmp_path, **kwargs)
    shard = tmp_path / first["splits"]["train"]["shards"][0]["path"]
    stamp = shard.stat().st_mtime_ns
    assert generate_synthetic_benchmark(tmp_path, **kwargs) == first
    assert shard.stat().st_mtime_ns == stamp  # untouched
    with pytest.raises(ConfigError, match="num_train"):
        generate_synthetic_benchmark(tmp_path, **dict(kwargs, num_train=3))
    third = generate_synthetic_benchmark(tmp_path, **dict(kwargs, num_train=3), overwrite=True)
    assert third["splits"]["train"]["num_samples"] == 3


def test_cli_reports_config_errors_in_one_line(tmp_path, capsys):
    assert main(["--out", str(tmp_path), "--train", "1", "--val", "0", "--test", "0", "--frames", "2", "--size", "15", "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "even" in err and "\n" not in err


def test_restrictions_draw_only_allowed_labels_and_are_recorded_in_the_manifest(tmp_path):
    from lumiere.data.vocabulary import parse_restrictions

    restrictions = parse_restrictions(["motion=linear", "num_objects=one", "color=red,blue", "background=plain"])
    rng = np.random.default_rng(0)
    drawn = [sample_labels(rng, restrictions) for _ in range(200)]
    assert {d["motion"] for d in drawn} == {"linear"} and {d["num_objects"] for d in drawn} == {"one"}
    assert {d["color"] for d in drawn} == {"red", "blue"} and {d["background"] for d in drawn} == {"plain"}
    assert {d["direction"] for d in drawn} == {"left", "right", "up", "down"}
    # Captions of a restricted benchmark are captions of the full one.
    assert all(labels_from_caption(caption_from_labels(d)) == d for d in drawn)

    manifest = generate_synthetic_benchmark(tmp_path / "bench", num_train=3, num_val=0, num_test=0, num_frames=2,
                                            size=16, hr_size=None, progress=False,
                                            restrictions=["motion=linear", "num_objects=one"])
    assert manifest["config"]["restrictions"] == {"motion": ["linear"], "num_objects": ["one"]}
    # The unrestricted benchmark's config has no such key (its existing manifests stay valid).
    assert "restrictions" not in generate_synthetic_benchmark(tmp_path / "full", num_train=1, num_val=0, num_test=0,
                                                              num_frames=2, size=16, hr_size=None,
                                                              progress=False)["config"]


@pytest.mark.parametrize("restriction,message", [
    (["motio=linear"], "cannot restrict 'motio'"),
    (["color=purple"], "color must be among"),
    (["motion=rotation", "shape=circle"], "rotation excludes circles"),
    (["motion=linear", "direction=clockwise"], "no direction"),
    (["color=red"], "two colours"),
])
def test_bad_restrictions_fail_in_one_line_before_writing(tmp_path, capsys, restriction, message):
    args = ["--out", str(tmp_path / "bench"), "--train", "2", "--val", "0", "--test", "0", "--frames", "2",
            "--size", "16", "--hr-size", "0", "--quiet"]
    for item in restriction:
        args += ["--restrict", item]
    assert main(args) == 2
    error = capsys.readouterr().err.strip()
    assert message in error and "\n" not in error
    assert not (tmp_path / "bench").exists()


def test_captions_use_an_before_vowel_colours():
    labels = dict(sample_labels(np.random.default_rng(0)), color="orange", num_objects="two", second_color="orange")
    caption = caption_from_labels(labels)
    assert caption.startswith("an orange ") and " and an orange " in caption
    assert labels_from_caption(caption)["color"] == "orange"


def test_object_scale_enlarges_the_shape_and_is_recorded(tmp_path):
    labels = dict(sample_labels(np.random.default_rng(2)), motion="pulsing", direction="none", shape="square",
                  period="long", speed="slow", background="plain", num_objects="one", second_shape="none",
                  second_color="none")
    background = render_clip(labels, 1, 32, 8, seed=0)[0].astype(np.float32)
    normal = render_clip(labels, 1, 32, 8, seed=0)
    large = render_clip(labels, 1, 32, 8, seed=0, object_scale=1.5)

    def area(frames):  # pixels far from the (plain) background's corner colour
        return int((np.abs(frames[0].astype(np.float32) - background[0, 0]).sum(-1) > 60).sum())

    assert 1.8 < area(large) / area(normal) < 2.7  # about 1.5^2
    manifest = generate_synthetic_benchmark(tmp_path / "b", num_train=1, num_val=0, num_test=0, num_frames=2, size=16,
                                            hr_size=None, progress=False, object_scale=1.5)
    assert manifest["config"]["object_scale"] == 1.5
    with pytest.raises(ConfigError, match="object_scale"):
        generate_synthetic_benchmark(tmp_path / "c", num_train=1, num_val=0, num_test=0, num_frames=2, size=16,
                                     hr_size=None, progress=False, object_scale=5.0)


@pytest.mark.parametrize("direction", ["left", "right", "up", "down"])
def test_behind_start_crosses_the_frame_in_the_named_direction_and_keeps_other_draws(direction):
    from lumiere.data.rendering import build_scene

    labels = dict(sample_labels(np.random.default_rng(4), {"motion": ["linear"], "num_objects": ["one"]}),
                  direction=direction, speed="medium")
    anywhere = build_scene(labels, seed=9)
    behind = build_scene(labels, seed=9, linear_start="behind")
    along = behind["objects"][0]["along0"]
    forward = direction in ("right", "down")
    assert (0.15 <= along <= 0.30) if forward else (0.70 <= along <= 0.85)
    # the same random draws otherwise: only the start moves (the benchmark's scenes are unchanged)
    assert behind["objects"][0]["across"] == anywhere["objects"][0]["across"]
    assert behind["background"] == anywhere["background"]

    frames = render_clip(labels, num_frames=16, size=32, fps=8, seed=9, linear_start="behind").astype(np.float32)
    background = frames[0, 0, 0]
    mask = np.abs(frames - background).sum(-1) > 60  # (T, H, W) object pixels
    across_axis = 0 if direction in ("left", "right") else 1  # sum out y for horizontal motion, x for vertical
    coords = np.arange(32, dtype=np.float32)
    centres = [float((m.sum(axis=across_axis) * coords).sum() / m.sum()) for m in mask]  # centroid along the motion
    travel = centres[-1] - centres[0]
    assert (travel > 12) if forward else (travel < -12)  # 0.6 frame widths in 2 s, no wrap-around


def test_linear_start_is_recorded_and_checked(tmp_path):
    manifest = generate_synthetic_benchmark(tmp_path / "b", num_train=1, num_val=0, num_test=0, num_frames=2, size=16,
                                            hr_size=None, progress=False, linear_start="behind")
    assert manifest["config"]["linear_start"] == "behind"
    plain = generate_synthetic_benchmark(tmp_path / "a", num_train=1, num_val=0, num_test=0, num_frames=2, size=16,
                                         hr_size=None, progress=False)
    assert "linear_start" not in plain["config"]  # the benchmark's manifests are unchanged
    with pytest.raises(ConfigError, match="linear_start"):
        generate_synthetic_benchmark(tmp_path / "c", num_train=1, num_val=0, num_test=0, num_frames=2, size=16,
                                     hr_size=None, progress=False, linear_start="ahead")
