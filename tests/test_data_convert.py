"""Converter: UCF101-style folders and caption CSVs into shards, with skip reports."""

from __future__ import annotations

import json

import pytest
import webdataset as wds

from lumiere.data import VideoDataModule
from lumiere.data.convert import ConvertOptions, convert_ucf101, convert_videos, main, split_camel_case, ucf101_caption

from data_fixtures import write_avi


@pytest.fixture(scope="module")
def ucf_folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("ucf") / "UCF-101"
    for name in ("ApplyEyeMakeup", "YoYo"):
        for group in (1, 2):
            write_avi(root / name / f"v_{name}_g0{group}_c01.avi", num_frames=30, fps=25)
    (root / "YoYo" / "v_YoYo_g03_c01.avi").write_bytes(b"RIFF\x00\x00\x00\x00AVI broken on purpose" * 8)
    return root


def _read(out_dir):
    shards = sorted(str(p) for p in out_dir.glob("*.tar"))
    return {s["__key__"]: s for s in wds.WebDataset(shards, shardshuffle=False, empty_check=False)}


def test_class_names_become_captions():
    assert split_camel_case("ApplyEyeMakeup") == "apply eye makeup"
    assert split_camel_case("YoYo") == "yo yo"
    assert split_camel_case("PlayingDaf") == "playing daf"
    assert ucf101_caption("JumpingJack") == "a video of a person jumping jack"


def test_ucf101_folder_converts_with_captions_labels_and_a_skip_report(ucf_folder, tmp_path):
    out = tmp_path / "shards"
    options = ConvertOptions(resize=32, crop=32, fps=16)
    report = convert_ucf101(ucf_folder, out, options=options, progress=False)
    assert report["converted"] == 4 and report["skipped"] == 1
    assert report["skipped_by_reason"] == {"corrupt": 1}  # an AVI header with nothing behind it
    assert report["skipped_files"][0]["path"].endswith("v_YoYo_g03_c01.avi")
    assert json.loads((out / "convert_report.json").read_text())["skipped"] == 1
    samples = _read(out)
    assert set(samples) == {f"v_{n}_g0{g}_c01" for n in ("ApplyEyeMakeup", "YoYo") for g in (1, 2)}
    sample = samples["v_YoYo_g02_c01"]
    meta = json.loads(sample["json"])
    assert sample["txt"].decode() == meta["caption"] == "a video of a person yo yo"
    assert meta["labels"] == {"class": "YoYo", "class_index": 1}
    # 30 frames at 25 fps last 1.2 s: 19 frames at 16 fps, 32x32 after resize + crop
    assert (meta["num_frames"], meta["fps"], meta["width"], meta["height"]) == (19, 16.0, 32, 32)
    # the data module reads the converted shards as they are
    dm = VideoDataModule(train_shards=str(out), num_frames=16, batch_size=4, num_workers=0)
    batch = next(iter(dm.train_dataloader()))
    assert batch["video"].shape == (4, 3, 16, 32, 32) and batch["labels"]["class"][0] in ("ApplyEyeMakeup", "YoYo")


def test_rerun_with_same_options_is_a_noop(ucf_folder, tmp_path):
    out = tmp_path / "shards"
    first = convert_ucf101(ucf_folder, out, options=ConvertOptions(max_frames=8), progress=False)
    stamp = (out / "shard-000000.tar").stat().st_mtime_ns
    assert convert_ucf101(ucf_folder, out, options=ConvertOptions(max_frames=8), progress=False) == first
    assert (out / "shard-000000.tar").stat().st_mtime_ns == stamp


def test_folder_with_caption_csv(tmp_path):
    videos = tmp_path / "videos"
    write_avi(videos / "clip_a.avi", num_frames=10)
    write_avi(videos / "nested" / "clip_b.avi", num_frames=10)
    (tmp_path / "captions.csv").write_text("videoid,name\nclip_a,a bar moving\nclip_b,another bar\nclip_c,missing file\n")
    report = convert_videos(videos, tmp_path / "captions.csv", tmp_path / "out", options=ConvertOptions(max_frames=6),
                            progress=False, workers=2)
    assert (report["converted"], report["skipped_by_reason"]) == (2, {"missing_file": 1})
    samples = _read(tmp_path / "out")
    assert samples["clip_b"]["txt"].decode() == "another bar"
    assert json.loads(samples["clip_a"]["json"])["num_frames"] == 6


def test_cli_fails_in_one_line_on_a_missing_or_empty_folder(tmp_path, capsys):
    assert main(["--ucf101", str(tmp_path / "absent"), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: UCF101 folder not found")
    (tmp_path / "empty").mkdir()
    assert main(["--ucf101", str(tmp_path / "empty"), "--out", str(tmp_path / "out")]) == 2
    assert "no class folders" in capsys.readouterr().err


def test_cli_converts_and_prints_the_summary(ucf_folder, tmp_path, capsys):
    assert main(["--ucf101", str(ucf_folder), "--out", str(tmp_path / "o"), "--max-frames", "4", "--quiet"]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0] == "converted 4 videos into 1 shards, skipped 1 (corrupt=1)"
    # 30 frames at 25 fps kept at 25 fps, cut to 4: none holds the default 80-frame clip at 16 fps
    assert lines[1] == "  long enough for a clip of 80 frames at 16 fps: 0 of 4 converted (shortest: v_ApplyEyeMakeup_g01_c01.avi, 4 frames of the 159 needed)"
    assert lines[-1] == f"report: {tmp_path / 'o' / 'convert_report.json'}"
