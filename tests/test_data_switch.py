"""One switch for your data (issue 19, item 1): every shipped experiment takes its shard paths from
the data group, so `data=webdataset data.root=X` or `data=ucf101` replaces them all; a text-to-image
stage on video shards draws still frames by itself; `model.val_prompts: null` takes the validation
prompts from the validation split's captions."""

from __future__ import annotations

import logging
import re

import pytest
import webdataset as wds
from hydra.utils import instantiate
from omegaconf import OmegaConf

from lumiere.tasks.training import (
    NUM_CAPTION_VAL_PROMPTS,
    draw_stills_for_image_stage,
    fill_val_prompts_from_captions,
    wants_caption_val_prompts,
)

from training_helpers import CONFIG_DIR, compose_config, make_tiny_t2i_workspace

ENTRY_POINTS = {"demo_cascade": "generate", "demo_eval": "evaluate", "lumiere_cascade": "generate"}
TRAIN_EXPERIMENTS = sorted(p.stem for p in (CONFIG_DIR / "experiment").glob("*.yaml") if p.stem not in ENTRY_POINTS)
SPLITS = ("train_shards", "val_shards", "test_shards")


def _data(experiment: str, overrides: list[str], tmp_path):
    cfg = compose_config("train", [f"experiment={experiment}", *overrides], tmp_path)
    OmegaConf.resolve(cfg)
    return cfg


@pytest.mark.parametrize("experiment", TRAIN_EXPERIMENTS)
def test_data_webdataset_root_replaces_every_shard_path(experiment, tmp_path):
    data = _data(experiment, ["data=webdataset", "data.root=/data/my_shards"], tmp_path).data
    assert data.root == "/data/my_shards" and all(data[split] is None for split in SPLITS)
    assert data._target_ == "lumiere.data.VideoDataModule"


@pytest.mark.parametrize("experiment", TRAIN_EXPERIMENTS)
def test_data_ucf101_replaces_every_shard_path(experiment, tmp_path):
    cfg = _data(experiment, ["data=ucf101"], tmp_path)
    assert cfg.data.root == f"{cfg.paths.data_dir}/ucf101" and all(cfg.data[split] is None for split in SPLITS)


@pytest.mark.parametrize("experiment", TRAIN_EXPERIMENTS)
def test_shipped_experiments_read_their_own_root_by_default(experiment, tmp_path):
    cfg = _data(experiment, [], tmp_path)
    dataset = experiment.split("_")[0]  # demo_* read data/demo, tiny_* data/tiny
    # the paper's recipes train on the user's shards: data=webdataset, whose root the user gives
    expected = None if dataset == "lumiere" else f"{cfg.paths.data_dir}/{dataset}"
    assert cfg.data.root == expected and all(cfg.data[split] is None for split in SPLITS)


def test_no_shipped_config_outside_the_data_group_names_shard_paths():
    """The rule behind the three tests above: a `data:` block in an experiment is merged after the
    data group, so a shard path there would survive `data=...`."""
    for path in (CONFIG_DIR / "experiment").glob("*.yaml"):
        text = path.read_text()
        assert not re.search(r"^\s*(train_shards|val_shards|test_shards|root):", text, re.MULTILINE), path.name


@pytest.fixture(scope="module")
def tiny_root(tmp_path_factory):
    root = make_tiny_t2i_workspace(tmp_path_factory.mktemp("data_switch"))
    return root / "data" / "tiny"


def test_text_to_image_stage_on_video_shards_draws_still_frames(tiny_root, tmp_path, caplog):
    cfg = _data("tiny_t2i", ["data=webdataset", f"data.root={tiny_root}", "data.decoder=pyav",
                              "model.val_prompts=[]"], tmp_path)
    assert cfg.data.image_mode is False  # webdataset's default: clips
    model = instantiate(cfg.model, _convert_="partial")
    with caplog.at_level(logging.INFO, logger="lumiere"):
        draw_stills_for_image_stage(cfg, model)
    assert cfg.data.image_mode is True
    assert [r.getMessage() for r in caplog.records] == [
        "TextToImageModule is a text-to-image stage: data.image_mode=true (2 still frames per clip, T = 1)"]
    batch = next(iter(instantiate(cfg.data).train_dataloader()))
    assert tuple(batch["video"].shape) == (8, 3, 1, 16, 16)


def test_video_stage_keeps_clips(tiny_root, tmp_path):
    cfg = _data("tiny_stunet", ["data=webdataset", f"data.root={tiny_root}",
                                f"model.unet_path={tiny_root.parents[1]}/artifacts/t2i/unet",
                                f"model.text_encoder_path={tiny_root.parents[1]}/artifacts/t2i/text_encoder",
                                "model.val_prompts=[]"], tmp_path)
    draw_stills_for_image_stage(cfg, instantiate(cfg.model, _convert_="partial"))
    assert cfg.data.image_mode is False


class _Stage:
    """What fill_val_prompts_from_captions touches on a stage module."""

    def __init__(self):
        self.val_prompts = []
        self.model_config = {"val_prompts": []}


def _distinct_captions(folder, limit):
    captions = []
    for sample in wds.WebDataset(sorted(str(p) for p in folder.glob("*.tar")), shardshuffle=False, empty_check=False):
        caption = sample["txt"].decode()
        if caption not in captions:
            captions.append(caption)
    return captions[:limit]


def test_null_val_prompts_are_the_validation_captions(tiny_root, tmp_path):
    cfg = _data("tiny_t2i", ["data=webdataset", f"data.root={tiny_root}"], tmp_path)
    assert wants_caption_val_prompts(cfg)
    stage = _Stage()
    fill_val_prompts_from_captions(cfg, stage, instantiate(cfg.data))
    expected = _distinct_captions(tiny_root / "val", NUM_CAPTION_VAL_PROMPTS)
    assert expected and stage.val_prompts == expected == list(cfg.model.val_prompts) == stage.model_config["val_prompts"]


def test_without_a_validation_split_the_training_captions_are_used(tiny_root, tmp_path):
    cfg = _data("tiny_t2i", ["data=webdataset", f"data.train_shards={tiny_root}/train"],
                tmp_path)
    stage = _Stage()
    fill_val_prompts_from_captions(cfg, stage, instantiate(cfg.data))
    assert stage.val_prompts == _distinct_captions(tiny_root / "train", NUM_CAPTION_VAL_PROMPTS)


def test_explicit_val_prompts_are_kept(tmp_path):
    assert not wants_caption_val_prompts(_data("tiny_t2i", [], tmp_path))  # the demo slice's prompt
    assert not wants_caption_val_prompts(_data("tiny_t2i", ["model.val_prompts=[]"], tmp_path))
    assert wants_caption_val_prompts(_data("tiny_t2i", ["model=t2i"], tmp_path)) is False  # experiment block wins
    assert wants_caption_val_prompts(compose_config("train", ["model=t2i"], tmp_path))  # the model group's default


def test_switching_the_data_drops_the_benchmarks_validation_prompts(tmp_path):
    """The tiny and demo data configs suggest prompts of the synthetic benchmark (conf/val_prompts/);
    on other shards the validation samples take that data's captions, with no extra override."""
    tiny = _data("tiny_stunet", [], tmp_path)
    assert list(tiny.model.val_prompts) == ["a red circle moving right at medium speed on a plain background"]
    assert len(_data("demo_t2i", [], tmp_path).model.val_prompts) == 4
    for experiment in ("tiny_stunet", "tiny_t2i", "demo_stunet", "demo_t2i"):
        assert wants_caption_val_prompts(_data(experiment, ["data=webdataset", "data.root=/data/mine"], tmp_path))
        assert wants_caption_val_prompts(_data(experiment, ["data=ucf101"], tmp_path))
    # a conditional stage keeps its own choice (held-out first frames, no prompts) on any data
    assert list(_data("tiny_conditional", [], tmp_path).model.val_prompts) == []
