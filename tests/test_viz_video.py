"""Video/image files: value mapping, mp4 and gif writing, reading back, atomic writes."""

import os

import av
import numpy as np
import pytest
import torch
from PIL import Image

from lumiere.errors import ConfigError, InputFileError
from lumiere.viz import read_image, read_video, save_png, to_uint8, write_gif, write_mp4


def moving_video(frames=8, size=32):
    """A smooth colour gradient drifting right: compresses well, and every frame differs."""
    x = torch.linspace(0, 2 * torch.pi, size)
    t = torch.arange(frames, dtype=torch.float32).view(frames, 1, 1)
    red = torch.sin(x.view(1, 1, size) - 0.4 * t).expand(frames, size, size)
    green = torch.cos(x.view(1, size, 1) * 0.5 + 0.2 * t).expand(frames, size, size)
    blue = torch.zeros(frames, size, size) - 0.3
    return 0.8 * torch.stack([red, green, blue])  # (C, T, H, W) in [-0.8, 0.8]


def test_to_uint8_maps_the_value_range_and_layout():
    video = torch.tensor([-1.0, 0.0, 1.0, 3.0]).view(1, 1, 1, 4).expand(3, 2, 1, 4)
    frames = to_uint8(video)
    assert frames.shape == (2, 1, 4, 3) and frames.dtype == np.uint8
    assert frames[0, 0, :, 0].tolist() == [0, 128, 255, 255]  # 127.5 rounds to 128; out of range clips
    batch = to_uint8(torch.stack([video, -video]))  # a batch is laid out side by side
    assert batch.shape == (2, 1, 8, 3) and batch[0, 0, 4, 0] == 255
    assert to_uint8(torch.zeros(1, 2, 3, 3)).shape == (2, 3, 3, 3)  # grey
    with pytest.raises(ConfigError):
        to_uint8(torch.zeros(2, 2, 3, 3))


def test_mp4_round_trip_keeps_shape_and_values_within_codec_tolerance(tmp_path):
    video = moving_video()
    path = write_mp4(tmp_path / "clip.mp4", video, fps=8)
    decoded = read_video(path)
    assert decoded.shape == video.shape and decoded.dtype == torch.float32
    assert decoded.min() >= -1 and decoded.max() <= 1
    error = (decoded - video).abs()
    assert error.mean() < 0.04 and error.max() < 0.25  # yuv420p chroma subsampling + crf 18
    with av.open(path) as container:
        stream = container.streams.video[0]
        assert stream.codec_context.name == "h264" and stream.codec_context.pix_fmt == "yuv420p"
        assert stream.average_rate == 8
    assert os.listdir(tmp_path) == ["clip.mp4"]  # no temporary file left behind


def test_mp4_pads_odd_sizes(tmp_path):
    video = moving_video(frames=3, size=32)[:, :, :31, :29]
    decoded = read_video(write_mp4(tmp_path / "odd.mp4", video))
    assert decoded.shape == (3, 3, 32, 30)
    assert (decoded[:, :, :31, :29] - video).abs().mean() < 0.04


def test_gif_has_every_frame_and_upscales_small_clips(tmp_path):
    video = moving_video(frames=6, size=32)
    path = write_gif(tmp_path / "clip.gif", video, fps=10)
    with Image.open(path) as gif:
        assert gif.size == (128, 128) and gif.n_frames == 6
        assert gif.info["duration"] == 100 and gif.info["loop"] == 0
    with Image.open(write_gif(tmp_path / "small.gif", video, scale=1)) as gif:
        assert gif.size == (32, 32)


def test_png_and_image_round_trip_exactly(tmp_path):
    frames = to_uint8(moving_video(frames=1))[0]
    path = save_png(tmp_path / "frame.png", frames)
    image = read_image(path)
    assert image.shape == (3, 32, 32)
    assert np.array_equal(to_uint8(image.unsqueeze(1))[0], frames)


def test_missing_and_unreadable_files_raise_input_file_errors(tmp_path):
    with pytest.raises(InputFileError, match="not found"):
        read_video(tmp_path / "missing.mp4")
    with pytest.raises(InputFileError, match="not found"):
        read_image(tmp_path / "missing.png")
    garbage = tmp_path / "garbage.mp4"
    garbage.write_bytes(b"not a video" * 50)
    with pytest.raises(InputFileError, match="cannot decode"):
        read_video(garbage)
    with pytest.raises(InputFileError, match="cannot read image"):
        read_image(garbage)


def test_failed_write_leaves_no_partial_file_and_keeps_the_old_one(tmp_path, monkeypatch):
    path = tmp_path / "clip.mp4"
    write_mp4(path, moving_video(frames=4))
    original = path.read_bytes()
    encoded = []
    real_from_ndarray = av.VideoFrame.from_ndarray

    def failing_from_ndarray(array, format):
        if len(encoded) == 3:
            raise RuntimeError("disk full")
        encoded.append(1)
        return real_from_ndarray(array, format=format)

    monkeypatch.setattr(av.VideoFrame, "from_ndarray", failing_from_ndarray)
    with pytest.raises(RuntimeError, match="disk full"):
        write_mp4(path, moving_video(frames=8))
    with pytest.raises(RuntimeError, match="disk full"):
        write_mp4(tmp_path / "new.mp4", moving_video(frames=8))
    assert sorted(os.listdir(tmp_path)) == ["clip.mp4"]
    assert path.read_bytes() == original


def test_written_files_get_the_default_mode_not_mkstemps_owner_only(tmp_path):
    import stat

    umask = os.umask(0o022)
    try:
        path = write_gif(tmp_path / "clip.gif", torch.zeros(3, 2, 8, 8))
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o644
    finally:
        os.umask(umask)
