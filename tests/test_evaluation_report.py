"""The evaluation's small parts: result tables and their writers, sanity lines, logger tables,
settings parsing, the vigilance-test rows (App. D.1), label ids and generated-video folders."""

from __future__ import annotations

import csv
import json
import math

import pytest
import torch

from lumiere.errors import ConfigError, InputFileError
from lumiere.evaluation import Column, ResultTable, log_table, ordering_check, write_table


def small_table():
    rows = [
        {"row": "real", "label": "real held-out (floor)", "num_videos": 4, "fvd": 12.3456, "adherence": 0.75,
         "fvd_variant": "tf1-legacy-bilinear-224, first16, eps1e-3, logits400, ddof1"},
        {"row": "noise", "label": "random noise (ceiling)", "num_videos": 4, "fvd": 987.6, "adherence": None,
         "fvd_variant": "tf1-legacy-bilinear-224, first16, eps1e-3, logits400, ddof1", "extra": float("nan")},
    ]
    columns = [Column("label", "row", ""), Column("num_videos", "videos", "d"), Column("fvd", "FVD ↓", ".1f"),
               Column("adherence", "adherence ↑", ".3f")]
    return ResultTable("A table", columns, rows, notes=["variant: ddof1", "sanity: holds"], metadata={"seconds": 1.5})


def test_markdown_csv_and_json_hold_the_values_counts_variants_and_notes(tmp_path):
    paths = write_table(small_table(), tmp_path, "eval")
    markdown = paths["markdown"].read_text()
    assert "| real held-out (floor) | 4 | 12.3 | 0.750 |" in markdown
    assert "| random noise (ceiling) | 4 | 987.6 | n/a |" in markdown  # a missing value is shown, not hidden
    assert "- variant: ddof1" in markdown and markdown.startswith("## A table")
    with open(paths["csv"]) as handle:
        rows = list(csv.DictReader(handle))
    assert rows[0]["fvd"] == "12.3456"  # the CSV keeps the raw numbers ...
    assert rows[0]["fvd_variant"].endswith("ddof1")  # ... and the keys not shown in the markdown
    assert rows[1]["adherence"] == ""
    data = json.loads(paths["json"].read_text())
    assert data["rows"][1]["extra"] is None  # NaN is not json: written as null
    assert data["seconds"] == 1.5 and data["notes"] == ["variant: ddof1", "sanity: holds"]


def test_sanity_holds_reads_floor_model_ceiling_from_the_rows():
    from lumiere.evaluation import sanity_holds

    def table(model_fvd):
        rows = [{"row": "real", "fvd": 1.0}, {"row": "model", "fvd": model_fvd}, {"row": "noise", "fvd": 9.0}]
        return ResultTable("t", [Column("fvd", "FVD")], rows)

    assert sanity_holds(table(4.0), "fvd") is True
    assert sanity_holds(table(10.0), "fvd") is False
    assert sanity_holds(table(None), "fvd") is None


def test_ordering_check_says_holds_fails_or_not_checked():
    assert ordering_check("FVD", [("real", 1.0), ("model", 2.0), ("noise", 3.0)]).endswith(": holds")
    assert ordering_check("FVD", [("real", 1.0), ("model", 5.0), ("noise", 3.0)]).endswith(": FAILS")
    assert ordering_check("FVD", [("real", 1.0), ("model", 1.0), ("noise", 3.0)]).endswith(": FAILS")  # strict
    assert "not checked" in ordering_check("FVD", [("real", 1.0), ("model", None), ("noise", 3.0)])
    assert "not checked" in ordering_check("FVD", [("real", 1.0), ("model", math.nan), ("noise", 3.0)])


class RecordingWandbLogger:
    """Has the methods of Lightning's WandbLogger that the evaluation calls."""

    def __init__(self):
        self.tables, self.texts, self.metrics = [], [], []

    def log_table(self, key, columns, data):
        self.tables.append((key, columns, data))

    def log_text(self, key, columns, data):
        self.texts.append((key, columns, data))

    def log_metrics(self, metrics):
        self.metrics.append(metrics)


def test_loggers_receive_the_table_and_its_numbers(tmp_path):
    from lightning.pytorch.loggers import CSVLogger

    wandb_like, csv_logger = RecordingWandbLogger(), CSVLogger(tmp_path, name="csv", version="")
    log_table([wandb_like, csv_logger], "evaluation/synthetic", small_table())
    key, columns, data = wandb_like.tables[0]
    assert key == "evaluation/synthetic" and columns == ["row", "videos", "FVD ↓", "adherence ↑"]
    assert data[1] == ["random noise (ceiling)", "4", "987.6", "n/a"]
    assert wandb_like.texts[0][2] == [["variant: ddof1"], ["sanity: holds"]]
    assert wandb_like.metrics[0]["evaluation/synthetic/real/fvd"] == 12.3456
    assert "evaluation/synthetic/noise/adherence" not in wandb_like.metrics[0]  # None is not a number
    header = (tmp_path / "csv" / "metrics.csv").read_text().splitlines()[0]
    assert "evaluation/synthetic/noise/fvd" in header


def test_settings_come_from_the_config_and_unknown_keys_are_errors():
    from lumiere.evaluation.synthetic_settings import settings_from_dict
    from lumiere.evaluation.ucf101 import settings_from_dict as ucf101_settings

    settings = settings_from_dict({"mode": "synthetic", "data_dir": "d", "reference_splits": ["train"],
                                   "i3d": {"enabled": False, "num_videos": 3},
                                   "domain_classifier": {"epochs": 2, "width": 4, "is_head": "speed",
                                                         "adherence_heads": ["color"]}})
    assert settings.i3d.num_videos == 3 and not settings.i3d.enabled
    assert settings.domain.training.epochs == 2 and settings.domain.training.width == 4
    assert settings.domain.is_head == "speed" and settings.domain.adherence_heads == ("color",)
    assert settings.reference_splits == ("train",)
    with pytest.raises(ConfigError, match="evaluation.i3d.num_clips"):
        settings_from_dict({"data_dir": "d", "i3d": {"num_clips": 3}})
    with pytest.raises(ConfigError, match="evaluation.colour"):
        settings_from_dict({"data_dir": "d", "colour": 1})
    assert ucf101_settings({"mode": "ucf101", "num_videos": 6}).num_videos == 6
    with pytest.raises(ConfigError, match="evaluation.sampling.steps"):
        ucf101_settings({"sampling": {"steps": 3}})


def test_static_row_repeats_the_first_frame_and_noise_row_is_seeded_uniform_noise():
    from lumiere.evaluation.clips import ClipSet
    from lumiere.evaluation.synthetic_rows import noise_clips, static_clips

    videos = torch.randint(0, 256, (3, 3, 8, 6, 6), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    clips = ClipSet(videos, ["a", "b", "c"], {"shape": ["circle", "star", "cross"]}, ["k0", "k1", "k2"])
    still = static_clips(clips)
    assert torch.equal(still.videos, videos[:, :, :1].expand_as(videos))
    assert still.captions == clips.captions and still.labels == clips.labels
    noise, again = noise_clips(clips, seed=3), noise_clips(clips, seed=3)
    assert torch.equal(noise.videos, again.videos) and noise.videos.shape == videos.shape
    assert abs(noise.videos.float().mean().item() - 127.5) < 5  # uniform over 0..255
    assert noise.labels == clips.labels  # scored against the same prompts


def test_label_ids_follow_the_vocabulary_and_unknown_labels_are_ignored():
    from lumiere.evaluation.clips import attribute_vocab, label_ids

    vocab = attribute_vocab()
    ids = label_ids({"shape": ["circle", "star", "blob"], "color": ["red", None, "white"]}, vocab, 3)
    assert ids["shape"].tolist() == [vocab["shape"].index("circle"), vocab["shape"].index("star"), -1]
    assert ids["color"].tolist() == [vocab["color"].index("red"), -1, vocab["color"].index("white")]
    assert ids["motion"].tolist() == [-1, -1, -1]  # a head without labels
    with pytest.raises(ConfigError):
        label_ids({"shape": ["circle"]}, vocab, 3)


def test_a_folder_of_user_mp4s_without_labels_is_read_for_scoring(tmp_path):
    from lumiere.evaluation.generated import read_videos_dir
    from lumiere.viz import write_mp4

    generator = torch.Generator().manual_seed(0)
    for name in ("a.mp4", "b.mp4"):
        write_mp4(tmp_path / name, torch.rand(3, 12, 16, 16, generator=generator) * 2 - 1, fps=8)
    (tmp_path / "videos.jsonl").write_text('{"file": "a.mp4", "caption": "a red circle"}\n\n'
                                           '{"file": "b.mp4", "caption": "a blue star"}\n')
    clips = read_videos_dir(tmp_path, num_frames=10, progress=False)
    assert clips.videos.shape == (2, 3, 10, 16, 16) and clips.videos.dtype == torch.uint8
    assert clips.captions == ["a red circle", "a blue star"] and clips.labels == {}  # no adherence then
    with pytest.raises(InputFileError, match="has 12 frames"):
        read_videos_dir(tmp_path, num_frames=16, progress=False)
    (tmp_path / "videos.jsonl").write_text('{"file": "a.mp4"}\n')
    with pytest.raises(InputFileError, match="videos.jsonl:1: needs string fields"):
        read_videos_dir(tmp_path, progress=False)


def test_ucf101_statistics_path_names_the_subset_and_variant(tmp_path):
    from lumiere.evaluation.ucf101 import UCF101Settings, real_statistics_path

    full = real_statistics_path(UCF101Settings(stats_cache_dir=str(tmp_path)), "variant-a")
    subset = real_statistics_path(UCF101Settings(stats_cache_dir=str(tmp_path), real_max_per_class=2), "variant-a")
    other = real_statistics_path(UCF101Settings(stats_cache_dir=str(tmp_path)), "variant-b")
    assert full.name.startswith("ucf101_i3d_all_") and subset.name.startswith("ucf101_i3d_max2_")
    assert len({full, subset, other}) == 3  # another subset or variant never reuses a cache
    assert real_statistics_path(UCF101Settings(real_statistics="x.npz"), "v").name == "x.npz"
