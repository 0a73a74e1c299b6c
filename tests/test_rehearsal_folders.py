"""The IF rehearsal folders: the real layout and keys, loadable offline by diffusers and transformers."""

import inspect
import json

import pytest
import torch
from diffusers import DDPMScheduler, IFPipeline, IFSuperResolutionPipeline, UNet2DConditionModel
from safetensors.torch import load_file
from transformers import T5EncoderModel, T5Tokenizer

from lumiere.models import STUNet
from lumiere.models.rehearsal import (
    IF_IMAGE_NOISING_SCHEDULER,
    IF_STAGE1_SCHEDULER,
    IF_STAGE2_SCHEDULER,
    TEXT_WIDTH,
    default_captions,
    if_stage1_unet_config,
    if_stage2_unet_config,
    main,
    write_if_folder,
    write_rehearsal,
)
from lumiere.models.t2i import check_inflatable_unet

CAPTIONS = ["a red circle moving right at medium speed on a plain background",
            "a blue square rotating clockwise slowly on a striped background",
            "a person playing guitar", "a person apply eye makeup"]


@pytest.fixture(scope="module")
def rehearsal(tmp_path_factory):
    return write_rehearsal(tmp_path_factory.mktemp("if"), fp16_variant="beside")


def test_folders_have_the_real_file_names(rehearsal):
    for stage, folder in rehearsal.items():
        for name in ("model_index.json", "unet/config.json", "unet/diffusion_pytorch_model.safetensors",
                     "unet/diffusion_pytorch_model.fp16.safetensors", "text_encoder/config.json",
                     "text_encoder/model.safetensors.index.json", "tokenizer/spiece.model",
                     "tokenizer/tokenizer_config.json", "tokenizer/special_tokens_map.json",
                     "scheduler/scheduler_config.json"):
            assert (folder / name).is_file(), f"{stage}: {name}"
        index = json.loads((folder / "text_encoder/model.safetensors.index.json").read_text())
        shards = sorted(set(index["weight_map"].values()))
        assert len(shards) >= 2 and all((folder / "text_encoder" / shard).is_file() for shard in shards)
        assert shards[0].startswith("model-00001-of-")
        assert not list(folder.rglob("*.bin"))  # safetensors only
    assert (rehearsal["IF-II"] / "image_noising_scheduler/scheduler_config.json").is_file()
    assert not (rehearsal["IF-I"] / "image_noising_scheduler").exists()
    model_index = json.loads((rehearsal["IF-I"] / "model_index.json").read_text())
    assert model_index["_class_name"] == "IFPipeline"
    assert model_index["unet"] == ["diffusers", "UNet2DConditionModel"]
    assert model_index["text_encoder"] == ["transformers", "T5EncoderModel"]
    assert model_index["tokenizer"] == ["transformers", "T5Tokenizer"]
    assert json.loads((rehearsal["IF-II"] / "model_index.json").read_text())["_class_name"] == \
        "IFSuperResolutionPipeline"


def test_the_pipelines_load_offline_with_diffusers(rehearsal):
    stage1 = IFPipeline.from_pretrained(rehearsal["IF-I"], local_files_only=True)
    stage2 = IFSuperResolutionPipeline.from_pretrained(rehearsal["IF-II"], local_files_only=True)
    assert isinstance(stage1.tokenizer, T5Tokenizer) and isinstance(stage1.text_encoder, T5EncoderModel)
    assert isinstance(stage2.image_noising_scheduler, DDPMScheduler)
    for key, value in IF_STAGE1_SCHEDULER.items():
        assert stage1.scheduler.config[key] == value
    for key, value in IF_STAGE2_SCHEDULER.items():
        assert stage2.scheduler.config[key] == value
    for key, value in IF_IMAGE_NOISING_SCHEDULER.items():
        assert stage2.image_noising_scheduler.config[key] == value
    assert stage2.image_noising_scheduler.config.variance_type == "fixed_small"


def test_unet_configs_carry_ifs_keys_and_are_inflatable(rehearsal):
    accepted = set(inspect.signature(UNet2DConditionModel.__init__).parameters)
    for config in (if_stage1_unet_config(), if_stage2_unet_config()):
        assert set(config) <= accepted  # every key is a real UNet2DConditionModel argument
    stage1 = UNet2DConditionModel.from_pretrained(rehearsal["IF-I"], subfolder="unet", local_files_only=True)
    stage2 = UNet2DConditionModel.from_pretrained(rehearsal["IF-II"], subfolder="unet", local_files_only=True)
    for unet in (stage1, stage2):
        config = unet.config
        assert config.addition_embed_type == "text" and config.encoder_hid_dim == TEXT_WIDTH
        assert config.encoder_hid_dim_type == "text_proj"  # diffusers' default for an encoder_hid_dim
        assert config.cross_attention_norm == "group_norm" and config.act_fn == "gelu"
        assert config.resnet_time_scale_shift == "scale_shift"
        assert config.mid_block_type == "UNetMidBlock2DSimpleCrossAttn"
        assert config.out_channels == 6
        check_inflatable_unet(unet)
    assert stage1.config.in_channels == 3 and stage1.config.sample_size == 64
    assert stage1.config.class_embed_type is None
    assert set(stage1.config.down_block_types) == {"ResnetDownsampleBlock2D", "SimpleCrossAttnDownBlock2D"}
    assert stage2.config.in_channels == 6 and stage2.config.sample_size == 256
    assert stage2.config.class_embed_type == "timestep"


@torch.no_grad()
def test_inflated_stage2_at_initialisation_is_the_unet_per_frame(rehearsal):
    """IF-II's extras (only_cross_attention, per-level layers, class labels) pass through the STUNet walk."""
    unet = UNet2DConditionModel.from_pretrained(rehearsal["IF-II"], subfolder="unet", local_files_only=True).eval()
    stunet = STUNet(unet, temporal_resampling=False)
    generator = torch.Generator().manual_seed(0)
    video = torch.randn(1, 6, 2, 16, 16, generator=generator)
    text = torch.randn(1, 5, TEXT_WIDTH, generator=generator)
    noise_level = torch.tensor([250])
    ours = stunet(video, torch.tensor([400]), text, class_labels=noise_level)
    frames = [unet(video[:, :, f], torch.tensor([400]), encoder_hidden_states=text, class_labels=noise_level).sample
              for f in range(2)]
    torch.testing.assert_close(ours, torch.stack(frames, dim=2), atol=1e-5, rtol=1e-5)


def test_text_encoder_and_tokenizer_load_and_know_the_caption_words(rehearsal):
    folder = rehearsal["IF-I"]
    tokenizer = T5Tokenizer.from_pretrained(folder / "tokenizer", local_files_only=True)
    assert (tokenizer.pad_token_id, tokenizer.eos_token_id, tokenizer.unk_token_id) == (0, 1, 2)
    assert tokenizer.model_max_length == 77
    encoder = T5EncoderModel.from_pretrained(folder / "text_encoder", local_files_only=True)  # from the shards
    assert encoder.config.vocab_size == len(tokenizer) and encoder.config.d_model == TEXT_WIDTH
    half = T5EncoderModel.from_pretrained(folder / "text_encoder", variant="fp16", local_files_only=True)
    assert half.dtype == torch.float16
    words = sorted({word for caption in default_captions() for word in caption.split()})
    unknown = [word for word in words if tokenizer.unk_token_id in tokenizer(word).input_ids]
    assert not unknown
    ids = tokenizer(CAPTIONS[0]).input_ids
    assert ids[-1] == tokenizer.eos_token_id and len(ids) <= 16  # common words are whole pieces
    hidden = encoder(input_ids=torch.tensor([ids])).last_hidden_state
    assert hidden.shape == (1, len(ids), TEXT_WIDTH)


def test_fp16_only_folders_and_seeded_weights(tmp_path):
    only = write_if_folder(tmp_path / "a", "IF-I", CAPTIONS, seed=3, fp16_variant="only")
    assert not (only / "unet/diffusion_pytorch_model.safetensors").exists()
    assert not (only / "text_encoder/model.safetensors.index.json").exists()
    unet = UNet2DConditionModel.from_pretrained(only, subfolder="unet", variant="fp16", local_files_only=True,
                                                torch_dtype=torch.float16)
    assert unet.dtype == torch.float16
    again = write_if_folder(tmp_path / "b", "IF-I", CAPTIONS, seed=3, fp16_variant="only")
    first = load_file(str(only / "unet/diffusion_pytorch_model.fp16.safetensors"))
    second = load_file(str(again / "unet/diffusion_pytorch_model.fp16.safetensors"))
    assert first.keys() == second.keys() and all(torch.equal(first[k], second[k]) for k in first)
    assert all(tensor.dtype == torch.float16 for tensor in first.values())


def test_command_line(tmp_path, capsys):
    captions = tmp_path / "captions.txt"
    captions.write_text("\n".join(CAPTIONS) + "\n")
    assert main([str(tmp_path / "out"), "--captions", str(captions)]) == 0
    assert (tmp_path / "out/IF-II/unet/config.json").is_file()
    assert main([str(tmp_path / "out"), "--captions", str(tmp_path / "missing.txt")]) == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1 and "captions file not found" in error[0]
