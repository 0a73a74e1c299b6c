"""One path to a DeepFloyd IF pipeline folder (issue 20, item 1): `model.t2i_path` sets the U-Net, the T5
encoder, its tokenizer and the scheduler configuration; variants and sharded safetensors load; bad
folders are refused in one line.

`write_pipeline_folder` is this file's tiny stand-in for an IF stage-I download (facts.md Sec. 7): the
real layout (model_index.json, unet/, text_encoder/ sharded, tokenizer/ with a locally trained
sentencepiece model, scheduler/) at tiny widths. The other tests of this issue import it.
"""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import sys
from functools import partial
from pathlib import Path

import pytest
import torch
from transformers import T5Config, T5EncoderModel

from lumiere.diffusion import DiffusionObjective
from lumiere.errors import ConfigError, InputFileError
from lumiere.models import STUNet, build_tiny_text_encoder, build_unet
from lumiere.models.pipeline_folder import resolve_model_parts
from lumiere.training import TextToImageModule, TextToVideoModule

from training_helpers import make_tiny_dataset

REPO_ROOT = Path(__file__).resolve().parents[1]
COLOURS = ["red", "blue", "green", "yellow", "purple", "orange", "white", "black"]
SHAPES = ["circle", "square", "triangle", "star", "dog", "cat", "car", "bird"]
MOTIONS = ["moving left", "moving right", "moving up", "moving down", "rotating clockwise", "bouncing around"]
CAPTIONS = [f"a {colour} {shape} {motion} slowly on a plain background"
            for colour in COLOURS for shape in SHAPES for motion in MOTIONS]
# IF stage I's scheduler settings (diffusers scripts/convert_if.py), with a fixed variance: the tiny
# U-Net here predicts epsilon only (3 output channels).
IF_SCHEDULER = {"_class_name": "DDPMScheduler", "num_train_timesteps": 1000, "beta_schedule": "squaredcos_cap_v2",
                "prediction_type": "epsilon", "variance_type": "fixed_small", "thresholding": True,
                "dynamic_thresholding_ratio": 0.95, "sample_max_value": 1.5, "clip_sample": True}


def write_spiece_tokenizer(folder: Path, sentences: list[str], model_max_length: int = 77, vocab_size: int = 200) -> Path:
    """A T5Tokenizer folder as IF ships it (spiece.model, tokenizer_config.json, special_tokens_map.json),
    the sentencepiece model trained here on `sentences`."""
    import sentencepiece

    model = io.BytesIO()
    words = sorted({word for sentence in sentences for word in sentence.split()})
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter([*sentences, *words]), model_writer=model, model_type="unigram", vocab_size=vocab_size,
        hard_vocab_limit=False, character_coverage=1.0, pad_id=0, eos_id=1, unk_id=2, bos_id=-1,
        num_threads=1, minloglevel=2)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "spiece.model").write_bytes(model.getvalue())
    special = {"eos_token": "</s>", "unk_token": "<unk>", "pad_token": "<pad>"}
    (folder / "special_tokens_map.json").write_text(json.dumps(special))
    (folder / "tokenizer_config.json").write_text(json.dumps(
        {**special, "extra_ids": 0, "model_max_length": model_max_length, "tokenizer_class": "T5Tokenizer"}))
    return folder


def write_pipeline_folder(root: Path, *, variant: str | None = None, unet_preset: str = "if_stage1_tiny",
                          unet_overrides: dict | None = None, seed: int = 0) -> Path:
    """A tiny IF stage-I-like pipeline folder; `variant="fp16"` writes only `.fp16.` weight files (as a
    user who downloaded the fp16 variant alone has). Both weight folders are sharded with an index json."""
    import sentencepiece

    torch.manual_seed(seed)
    tokenizer_dir = write_spiece_tokenizer(root / "tokenizer", CAPTIONS)
    vocab = sentencepiece.SentencePieceProcessor(model_file=str(tokenizer_dir / "spiece.model")).get_piece_size()
    encoder = T5EncoderModel(T5Config(vocab_size=vocab, d_model=64, d_kv=16, d_ff=128, num_layers=2, num_heads=4,
                                      feed_forward_proj="gated-gelu", dropout_rate=0.0, is_encoder_decoder=False,
                                      use_cache=False, pad_token_id=0, eos_token_id=1))
    unet = build_unet(unet_preset, **(unet_overrides or {}))
    if variant == "fp16":
        encoder, unet = encoder.half(), unet.half()
    encoder.save_pretrained(root / "text_encoder", safe_serialization=True, variant=variant, max_shard_size="60KB")
    unet.save_pretrained(root / "unet", safe_serialization=True, variant=variant, max_shard_size="500KB")
    (root / "scheduler").mkdir(parents=True, exist_ok=True)
    (root / "scheduler" / "scheduler_config.json").write_text(json.dumps(IF_SCHEDULER))
    (root / "model_index.json").write_text(json.dumps({
        "_class_name": "IFPipeline", "unet": ["diffusers", "UNet2DConditionModel"],
        "text_encoder": ["transformers", "T5EncoderModel"], "tokenizer": ["transformers", "T5Tokenizer"],
        "scheduler": ["diffusers", "DDPMScheduler"], "safety_checker": [None, None], "feature_extractor": [None, None],
        "watermarker": [None, None]}))
    return root


def stage_kwargs(**overrides):
    kwargs = dict(stunet=partial(STUNet, num_temporal_attention_layers=1), objective=DiffusionObjective(),
                  optimizer=partial(torch.optim.AdamW, lr=1e-4), ema_decay=None)
    kwargs.update(overrides)
    return kwargs


@pytest.fixture(scope="module")
def if_folder(tmp_path_factory) -> Path:
    return write_pipeline_folder(tmp_path_factory.mktemp("if") / "IF-I-tiny")


def one_line(error) -> str:
    message = str(error.value)
    assert "\n" not in message, message
    return message


def test_t2i_path_sets_unet_text_encoder_tokenizer_and_scheduler_config(if_folder):
    module = TextToVideoModule(t2i_path=str(if_folder), **stage_kwargs())
    assert module.unet_path == str(if_folder / "unet") and module.text_encoder_path == str(if_folder / "text_encoder")
    assert module.tokenizer_path == str(if_folder / "tokenizer")
    assert module.scheduler_config == IF_SCHEDULER  # the folder's scheduler config, for the sampler
    assert module.text_encoder.max_length == 77  # the folder's tokenizer_config model_max_length
    assert type(module.text_encoder.tokenizer).__name__ == "T5Tokenizer"
    assert module.text_encoder.unknown_word_fraction(CAPTIONS[:20])[0] == 0.0
    hidden, mask = module.text_encoder(["a red circle moving left", ""])
    assert hidden.shape == (2, 77, 64)
    # the attention mask marks the real tokens: the words' pieces plus </s>; the empty prompt is </s> only
    assert 6 <= int(mask[0].sum()) < 77 and int(mask[1].sum()) == 1
    assert isinstance(module.scheduler_config, dict) and module.make_scheduler().config.num_train_timesteps == 1000


def test_fp16_variant_and_sharded_safetensors_load(tmp_path, if_folder):
    folder = write_pipeline_folder(tmp_path / "IF-fp16", variant="fp16")  # same seed as if_folder: same weights
    assert (folder / "unet" / "diffusion_pytorch_model.safetensors.index.fp16.json").is_file()
    assert (folder / "text_encoder" / "model.safetensors.index.fp16.json").is_file()
    assert (if_folder / "unet" / "diffusion_pytorch_model.safetensors.index.json").is_file()
    half = TextToVideoModule(t2i_path=str(folder), variant="fp16", **stage_kwargs())
    full = TextToVideoModule(t2i_path=str(if_folder), **stage_kwargs())
    for (name, loaded), (_, reference) in zip(
            [*half.network.unet.named_parameters(), *half.text_encoder.named_parameters()],
            [*full.network.unet.named_parameters(), *full.text_encoder.named_parameters()]):
        # fp16 storage: relative rounding at most 2**-11 (10 mantissa bits), absolute 2**-24 near zero (subnormals)
        assert torch.allclose(loaded.float(), reference, rtol=2**-11, atol=2**-24), name
    with pytest.raises(InputFileError, match=r"no full-precision safetensors weights \(found: fp16\); "
                                             "set model.variant=fp16") as error:
        TextToVideoModule(t2i_path=str(folder), **stage_kwargs())
    one_line(error)


def test_a_variant_the_folder_lacks_is_refused(if_folder):
    with pytest.raises(InputFileError, match=r"U-Net .* has no variant=fp16 safetensors weights \(found: full\); "
                                             "set model.variant=null") as error:
        resolve_model_parts(if_folder, variant="fp16")
    one_line(error)


def test_pickled_weights_only_are_refused(tmp_path, if_folder):
    folder = tmp_path / "IF-bin"
    shutil.copytree(if_folder, folder)
    for weights in (folder / "unet").glob("*.safetensors*"):
        weights.unlink()
    (folder / "unet" / "diffusion_pytorch_model.bin").write_bytes(b"not loaded")
    with pytest.raises(InputFileError, match="only pickled weights .*never loaded") as error:
        resolve_model_parts(folder)
    one_line(error)


@pytest.mark.parametrize("name", ["DeepFloyd/IF-I-XL-v1.0", "/weights/IF-I-XL-v1.0-missing"])
def test_a_hub_id_or_missing_folder_is_refused_with_the_download_hint(name):
    with pytest.raises(InputFileError, match="not a local folder; nothing is downloaded at run time") as error:
        resolve_model_parts(name)
    assert "huggingface-cli download" in one_line(error)


def test_missing_scheduler_config_is_refused(tmp_path, if_folder):
    folder = tmp_path / "IF-no-scheduler"
    shutil.copytree(if_folder, folder)
    shutil.rmtree(folder / "scheduler")
    with pytest.raises(InputFileError, match=r"has no scheduler/scheduler_config.json") as error:
        TextToVideoModule(t2i_path=str(folder), **stage_kwargs())
    one_line(error)


def test_missing_tokenizer_is_refused(tmp_path, if_folder):
    folder = tmp_path / "IF-no-tokenizer"
    shutil.copytree(if_folder, folder)
    shutil.rmtree(folder / "tokenizer")
    with pytest.raises(InputFileError, match="no tokenizer in .*set model.tokenizer_path") as error:
        TextToVideoModule(t2i_path=str(folder), **stage_kwargs())
    one_line(error)


def test_unsupported_unet_block_type_is_refused(tmp_path):
    folder = write_pipeline_folder(tmp_path / "IF-attn", unet_preset="sd_tiny", unet_overrides=dict(
        down_block_types=("AttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"), cross_attention_dim=64))
    with pytest.raises(ConfigError, match="down block of type AttnDownBlock2D, which the STUNet cannot inflate") as error:
        TextToVideoModule(t2i_path=str(folder), **stage_kwargs())
    one_line(error)


def test_separate_paths_still_work_and_replace_the_folders_parts(tmp_path, if_folder):
    other_unet = tmp_path / "other" / "unet"
    torch.manual_seed(5)
    build_unet("if_stage1_tiny").save_pretrained(other_unet, safe_serialization=True)
    module = TextToVideoModule(t2i_path=str(if_folder), unet_path=str(other_unet), **stage_kwargs())
    assert module.unet_path == str(other_unet) and module.text_encoder_path == str(if_folder / "text_encoder")
    assert module.scheduler_config is None  # the replacing U-Net has no pipeline folder of its own
    separate = TextToVideoModule(unet_path=str(if_folder / "unet"), text_encoder_path=str(if_folder / "text_encoder"),
                                 tokenizer_path=str(if_folder / "tokenizer"), **stage_kwargs())
    assert separate.scheduler_config == IF_SCHEDULER  # unet/ of a pipeline folder: its scheduler/ beside it
    # <pipeline>/text_encoder alone: its tokenizer is the pipeline's tokenizer/ beside it
    alone = TextToVideoModule(unet_path=str(other_unet), text_encoder_path=str(if_folder / "text_encoder"),
                              **stage_kwargs())
    assert alone.tokenizer_path == str(if_folder / "tokenizer")
    with pytest.raises(InputFileError, match="model.text_encoder_path is not set"):
        TextToVideoModule(unet_path=str(other_unet), **stage_kwargs())


def test_no_path_at_all_names_t2i_path_and_the_download():
    with pytest.raises(InputFileError, match=r"^model.t2i_path is not set: give model.t2i_path \(a pipeline folder\) or "
                                             r"both model.unet_path and model.text_encoder_path; nothing is downloaded .*"
                                             r"huggingface-cli download DeepFloyd/IF-I-XL-v1.0"):
        TextToVideoModule(**stage_kwargs())


def test_the_stage0_export_writes_the_pipeline_layout_that_t2i_path_loads(tmp_path):
    torch.manual_seed(0)
    objective = DiffusionObjective(prediction_type="v_prediction")
    t2i = TextToImageModule(unet=build_unet("if_stage1_tiny"), text_encoder=build_tiny_text_encoder(),
                            objective=objective, optimizer=partial(torch.optim.AdamW, lr=1e-4), ema_decay=None)
    t2i.export_pretrained(str(tmp_path / "t2i"))
    for part in ("unet/config.json", "text_encoder/config.json", "tokenizer/tokenizer_config.json",
                 "scheduler/scheduler_config.json", "model_index.json", "unet/lumiere_t2i.json"):
        assert (tmp_path / "t2i" / part).is_file(), part
    index = json.loads((tmp_path / "t2i" / "model_index.json").read_text())
    assert index["unet"] == ["diffusers", "UNet2DConditionModel"] and index["tokenizer"][1] == "ByT5Tokenizer"
    module = TextToVideoModule(t2i_path=str(tmp_path / "t2i"), **stage_kwargs(objective=objective))
    assert module.scheduler_config["prediction_type"] == "v_prediction"
    assert module.scheduler_config["beta_schedule"] == objective.beta_schedule
    assert module.tokenizer_path == str(tmp_path / "t2i" / "text_encoder")  # the encoder's own tokenizer files
    # a second export replaces every component, model_index.json included
    t2i.export_pretrained(str(tmp_path / "t2i"))
    assert not list((tmp_path / "t2i").glob(".export-partial-*"))


@pytest.mark.slow
def test_train_py_refuses_a_hub_id_in_one_line_with_a_non_zero_exit(tmp_path):
    make_tiny_dataset(tmp_path / "data")  # the shards are checked first (tasks/training.py check_training_shards)
    result = subprocess.run(
        [sys.executable, "train.py", "experiment=tiny_stunet", "model.t2i_path=DeepFloyd/IF-I-XL-v1.0",
         f"paths.root_dir={tmp_path}", "logger=none"],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode != 0
    lines = [line for line in result.stderr.strip().splitlines() if line.strip()]
    assert lines[-1].startswith("error: ") and "model.t2i_path='DeepFloyd/IF-I-XL-v1.0' is not a local folder" in lines[-1], \
        result.stderr[-2000:]
