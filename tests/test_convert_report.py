"""The converter reports everything it leaves out (issue 19, item 6): files no caption row names,
videos under --min-frames (a single frame is never a video), images named as videos, and how many
converted videos hold an 80-frame clip at the target frame rate."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lumiere.data.codec import encode_h264
from lumiere.data.convert import ConvertOptions, convert_videos, main
from lumiere.data.convert_report import clip_span

from data_fixtures import moving_bar_frames


def write_video(path: Path, num_frames: int, fps: float) -> Path:
    """A moving-bar H.264 mp4 written with PyAV (lumiere.data.codec)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(encode_h264(moving_bar_frames(num_frames, 16, 16), fps))
    return path


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    """Mixed inputs: long and short videos at 25 and 30 fps, a one-frame video, a PNG renamed .mp4,
    and a video that no caption row names."""
    root = tmp_path_factory.mktemp("own_videos")
    videos = root / "videos"
    write_video(videos / "long25.mp4", 130, 25)     # 5.2 s: 83 frames at 16 fps
    write_video(videos / "long30.mp4", 160, 30)     # 5.33 s: 86 frames at 16 fps
    write_video(videos / "short30.mp4", 45, 30)     # 1.5 s: 24 frames at 16 fps
    write_video(videos / "one_frame.mp4", 1, 25)    # a single frame: an image
    Image.fromarray(np.full((16, 16, 3), 200, np.uint8)).save(videos / "still.png")
    (videos / "still.png").rename(videos / "still.mp4")
    write_video(videos / "extra" / "nobody_named_me.mp4", 30, 25)
    (root / "captions.csv").write_text(
        "video,caption\nlong25.mp4,a long clip\nlong30.mp4,another long clip\nshort30.mp4,a short clip\n"
        "one_frame.mp4,one frame\nstill.mp4,a picture\n")
    return root


def test_report_counts_every_file_left_out_and_the_clip_check(folder, tmp_path):
    report = convert_videos(folder / "videos", folder / "captions.csv", tmp_path / "out",
                            options=ConvertOptions(fps=16, min_frames=1), progress=False)
    assert report["converted"] == 3
    assert report["skipped_by_reason"] == {"image": 2}  # the PNG by its container, the mp4 by its one frame
    assert report["options"]["min_frames"] == 2  # --min-frames 1 still refuses single frames
    assert report["unnamed"] == {"count": 1, "files": ["extra/nobody_named_me.mp4"]}
    check = report["clip_check"]
    # converted at 16 fps, read at 16 fps: stride 1, an 80-frame clip spans 80 frames
    assert (check["clip_frames"], check["clip_fps"], check["converted"], check["long_enough"]) == (80, 16.0, 3, 2)
    assert check["too_short"] == [{"source": "short30.mp4", "frames": 24, "needed": 80}]
    assert json.loads((tmp_path / "out" / "convert_report.json").read_text())["clip_check"] == check


def test_min_frames_skips_are_counted_with_the_frames_they_had(folder, tmp_path):
    report = convert_videos(folder / "videos", folder / "captions.csv", tmp_path / "out",
                            options=ConvertOptions(fps=16, min_frames=30), progress=False)
    assert report["skipped_by_reason"] == {"image": 2, "too_few_frames": 1}
    short = [entry for entry in report["skipped_files"] if entry["reason"] == "too_few_frames"]
    assert Path(short[0]["path"]).name == "short30.mp4" and short[0]["error"] == "24 frames, need 30"


def test_clip_check_follows_the_data_modules_stride():
    """At the source rate (no --fps) 30 fps is read every 2nd frame for 16 fps: 80 frames span 159;
    25 fps rounds to stride 2 as well (12.5 fps); 16 fps needs exactly 80."""
    assert (clip_span(80, 30.0, 16.0), clip_span(80, 25.0, 16.0), clip_span(80, 16.0, 16.0)) == (159, 159, 80)


def test_cli_prints_one_summary_block(folder, tmp_path, capsys):
    out_dir = tmp_path / "out"
    code = main(["--videos", str(folder / "videos"), "--captions", str(folder / "captions.csv"), "--out", str(out_dir),
                 "--fps", "16", "--min-frames", "30", "--clip-frames", "20", "--quiet"])
    assert code == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines == [
        "converted 2 videos into 1 shards, skipped 3 (image=2, too_few_frames=1)",
        "  not named by any caption row, not converted: 1 file(s): extra/nobody_named_me.mp4",
        "  shorter than 30 frames (--min-frames): 1: short30.mp4 (24 frames, need 30)",
        "  images, not videos: 2: one_frame.mp4, still.mp4",
        "  long enough for a clip of 20 frames at 16 fps: 2 of 2 converted",
        f"report: {out_dir / 'convert_report.json'}",
    ]


def test_min_frames_below_one_is_an_error(folder, tmp_path, capsys):
    assert main(["--videos", str(folder / "videos"), "--captions", str(folder / "captions.csv"),
                 "--out", str(tmp_path / "out"), "--min-frames", "0", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: min_frames must be >= 1")
