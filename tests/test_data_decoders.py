"""Decoders: decord and PyAV agree, stride/offset selection, one error type for bad bytes."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lumiere.data.codec import encode_h264
from lumiere.data.decoders import (
    TooFewFramesError,
    VideoDecodeError,
    choose_start,
    classify_undecodable,
    decode_clip,
    decode_frames,
    stride_for_fps,
)
from lumiere.data.rendering import render_clip
from lumiere.data.vocabulary import sample_labels
from lumiere.errors import ConfigError

from data_fixtures import bad_samples, moving_bar_frames


@pytest.fixture(scope="module")
def clip_bytes():
    frames = render_clip(sample_labels(np.random.default_rng(1)), num_frames=24, size=32, fps=16, seed=4)
    return frames, encode_h264(frames, fps=16)


def test_h264_round_trip_is_close_to_the_source(clip_bytes):
    frames, data = clip_bytes
    decoded, info = decode_clip(data, num_frames=24, offset="start")
    assert decoded.dtype == torch.uint8 and decoded.shape == (24, 32, 32, 3)
    assert info["source_fps"] == pytest.approx(16.0) and info["num_source_frames"] == 24
    assert (decoded.float() - torch.from_numpy(frames).float()).abs().mean() < 6.0  # crf 18 + yuv420p


def test_decord_and_pyav_return_the_same_frames(clip_bytes):
    _, data = clip_bytes
    a, info_a = decode_clip(data, num_frames=6, frame_stride=3, offset="center", backend="decord")
    b, info_b = decode_clip(data, num_frames=6, frame_stride=3, offset="center", backend="pyav")
    assert info_a["indices"] == info_b["indices"] == [4, 7, 10, 13, 16, 19]  # span 16 of 24: centre start 4
    assert (a.float() - b.float()).abs().mean() < 1.0


def test_target_fps_picks_the_stride_and_reports_the_clip_rate(clip_bytes):
    _, data = clip_bytes
    frames, info = decode_clip(data, num_frames=5, target_fps=8, offset="start")
    assert (info["stride"], info["fps"], info["indices"]) == (2, 8.0, [0, 2, 4, 6, 8])
    every_frame, _ = decode_frames(data, list(range(9)))
    torch.testing.assert_close(frames, every_frame[::2])
    assert stride_for_fps(30, 16) == 2 and stride_for_fps(25, 16) == 2 and stride_for_fps(16, 24) == 1
    assert stride_for_fps(60, 8) == 8


def test_offset_policies():
    rng = np.random.default_rng(0)
    assert choose_start(20, 11, "start", rng) == 0
    assert choose_start(20, 11, "center", rng) == 4
    starts = {choose_start(20, 11, "random", rng) for _ in range(200)}
    assert starts == set(range(10))
    with pytest.raises(TooFewFramesError):
        choose_start(10, 11, "center", rng)
    with pytest.raises(ConfigError):
        choose_start(20, 11, "middle", rng)


@pytest.mark.parametrize("backend", ["decord", "pyav"])
def test_bad_bytes_raise_video_decode_error_with_a_reason(backend):
    cases = bad_samples(num_frames_needed=16)
    for reason in ("truncated", "empty", "not_video"):
        with pytest.raises(VideoDecodeError) as caught:
            decode_clip(cases[reason]["mp4"], num_frames=4, backend=backend)
        assert caught.value.reason == reason
        assert not isinstance(caught.value, TooFewFramesError)
    with pytest.raises(TooFewFramesError) as caught:
        decode_clip(cases["too_short"]["mp4"], num_frames=16, backend=backend)
    assert (caught.value.available, caught.value.required, caught.value.reason) == (8, 16, "too_short")
    with pytest.raises(TooFewFramesError):  # (num_frames - 1) * stride + 1 = 17 > 16
        decode_clip(encode_h264(moving_bar_frames(16), 16), num_frames=9, frame_stride=2, backend=backend)


def test_classify_undecodable():
    data = encode_h264(moving_bar_frames(4), 16)
    assert classify_undecodable(b"") == "empty"
    assert classify_undecodable(b"\x89PNG\r\n\x1a\n" + bytes(100)) == "not_video"
    assert classify_undecodable(data[: len(data) - 10]) == "truncated"
    damaged = bytearray(data)
    damaged[40:200] = bytes(160)  # header intact, payload zeroed
    assert classify_undecodable(bytes(damaged)) in ("corrupt", "truncated")


def test_decord_width_bug_falls_back_to_pyav():
    """decord 0.6 fails on some valid widths (48 px); the decord backend retries with PyAV."""
    frames = moving_bar_frames(6, height=32, width=48)
    clip, info = decode_clip(encode_h264(frames, 16), num_frames=6, offset="start", backend="decord")
    assert clip.shape == (6, 32, 48, 3) and info["backend"] == "pyav"
    assert (clip.float() - torch.from_numpy(frames).float()).abs().mean() < 6.0


def test_encode_h264_rejects_odd_sizes_and_wrong_dtypes():
    with pytest.raises(ConfigError, match="even"):
        encode_h264(np.zeros((2, 15, 16, 3), np.uint8), 16)
    with pytest.raises(ConfigError, match="uint8"):
        encode_h264(np.zeros((2, 16, 16, 3), np.float32), 16)
    # a clip that x264's AVX-512 code encoded to varying bytes before the encoder was pinned
    frames = render_clip(sample_labels(np.random.default_rng(3226724236)), num_frames=16, size=64, fps=16, seed=3226724236)
    assert len({encode_h264(frames, 16) for _ in range(16)}) == 1  # the same bytes every time
