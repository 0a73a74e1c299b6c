"""A rehearsal of DeepFloyd IF: tiny random pipeline folders with the real layout and configuration keys.

    python -m lumiere.models.rehearsal OUT [--captions FILE] [--seed 0] [--fp16-variant none|beside|only]

writes OUT/IF-I (stage I, 64 px text-to-image) and OUT/IF-II (stage II, 64 -> 256 px
super-resolution) exactly as a user's download of ``DeepFloyd/IF-I-XL-v1.0`` and
``DeepFloyd/IF-II-L-v1.0`` in diffusers format is laid out, so every loading path of the project
can run end to end on CPU without the licensed weights:

    model_index.json                      IFPipeline / IFSuperResolutionPipeline and its parts
    unet/config.json                      UNet2DConditionModel with IF's block types and keys
    unet/diffusion_pytorch_model.safetensors   (and/or .fp16.safetensors)
    text_encoder/config.json              T5EncoderModel (t5-v1_1 style: gated-gelu)
    text_encoder/model-0000k-of-0000n.safetensors + model.safetensors.index.json  (sharded, as T5-XXL)
    tokenizer/spiece.model, tokenizer_config.json, special_tokens_map.json     (T5Tokenizer)
    scheduler/scheduler_config.json       DDPMScheduler with IF's settings
    image_noising_scheduler/scheduler_config.json   (stage II only)

The configuration keys are those diffusers' ``scripts/convert_if.py`` writes (learned variance:
6 output channels; stage II: 6 input channels, the low-resolution noise level as a
``class_embed_type="timestep"`` class label, ``only_cross_attention``, per-level
``layers_per_block``) at tiny widths; ``sample_size`` keeps the real 64 and 256. The T5 encoder
is tiny (``TEXT_WIDTH`` wide, IF's ``encoder_hid_dim`` is T5-XXL's 4096) and the tokenizer is a
sentencepiece model trained here on the captions, so ordinary caption words are known tokens.
The safety checker, its feature extractor and the watermarker are listed as absent (null), as a
pipeline saved without them; this project never loads them. Weights are random and seeded:
the folders are for rehearsing the plumbing, never for judging quality.
"""

from __future__ import annotations

import argparse
import io
import json
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from diffusers import DDPMScheduler, UNet2DConditionModel
from transformers import T5Config, T5EncoderModel

from lumiere.errors import ConfigError, InputFileError

STAGE_FOLDERS = ("IF-I", "IF-II")
FP16_VARIANTS = ("none", "beside", "only")
TEXT_WIDTH = 32  # d_model of the tiny T5 (T5-XXL: 4096); every U-Net's encoder_hid_dim
EXTRA_IDS = 100  # T5's sentinel tokens <extra_id_0..99>, as in the real tokenizer
TOKENIZER_MAX_LENGTH = 77  # IF's pipeline encodes prompts to 77 tokens
SENTENCEPIECE_VOCAB = 600  # upper bound; sentencepiece stops earlier on a small caption set
TEXT_ENCODER_SHARD_SIZE = "60KB"  # forces several shards, like T5-XXL's index + shards

# diffusers scripts/convert_if.py: the schedulers of stage I and stage II.
IF_STAGE1_SCHEDULER = dict(variance_type="learned_range", beta_schedule="squaredcos_cap_v2",
                           prediction_type="epsilon", thresholding=True, dynamic_thresholding_ratio=0.95,
                           sample_max_value=1.5)
IF_STAGE2_SCHEDULER = dict(IF_STAGE1_SCHEDULER, sample_max_value=1.0)
IF_IMAGE_NOISING_SCHEDULER = dict(beta_schedule="squaredcos_cap_v2")

# Keys convert_if.py sets for both stages (its create_unet_diffusers_config).
_IF_COMMON_UNET = dict(
    act_fn="gelu",
    cross_attention_norm="group_norm",
    mid_block_type="UNetMidBlock2DSimpleCrossAttn",
    addition_embed_type="text",  # attention-pooled T5 states added to the time embedding
    resnet_time_scale_shift="scale_shift",
    upcast_attention=False,
    use_linear_projection=False,
    encoder_hid_dim=TEXT_WIDTH,
    norm_num_groups=8,
    attention_head_dim=8,
    addition_embed_type_num_heads=2,
)


def if_stage1_unet_config() -> dict:
    """IF-I's U-Net configuration (four levels; attention below the top one) at tiny widths."""
    return dict(
        _IF_COMMON_UNET,
        sample_size=64,
        in_channels=3,
        out_channels=6,  # epsilon + the learned-range variance interpolation
        down_block_types=("ResnetDownsampleBlock2D", "SimpleCrossAttnDownBlock2D", "SimpleCrossAttnDownBlock2D",
                          "SimpleCrossAttnDownBlock2D"),
        up_block_types=("SimpleCrossAttnUpBlock2D", "SimpleCrossAttnUpBlock2D", "SimpleCrossAttnUpBlock2D",
                        "ResnetUpsampleBlock2D"),
        block_out_channels=(16, 32, 48, 64),
        layers_per_block=1,
        cross_attention_dim=32,
        class_embed_type=None,
        # IF's residual scalings and GELU time embedding, as lumiere.models.t2i's if_stage1_paper preset
        # has them (convert_if.py's stage-I function leaves them at diffusers' defaults; the released
        # IF-I config.json is the authority).
        resnet_skip_time_act=True,
        resnet_out_scale_factor=1.414,
        mid_block_scale_factor=1.414,
        time_embedding_act_fn="gelu",
    )


def if_stage2_unet_config() -> dict:
    """IF-II's U-Net configuration (convert_if.py's get_super_res_unet) at tiny widths."""
    return dict(
        _IF_COMMON_UNET,
        sample_size=256,
        in_channels=6,  # the noisy 256 px image + the 64 px input upsampled
        out_channels=6,
        down_block_types=("ResnetDownsampleBlock2D", "ResnetDownsampleBlock2D", "SimpleCrossAttnDownBlock2D"),
        up_block_types=("SimpleCrossAttnUpBlock2D", "ResnetUpsampleBlock2D", "ResnetUpsampleBlock2D"),
        block_out_channels=(16, 32, 64),
        layers_per_block=(1, 1, 2),  # per level, as the super-resolution configs give it
        cross_attention_dim=32,
        class_embed_type="timestep",  # the noise level of the low-resolution input, as class_labels
        time_embedding_dim=64,  # model_channels * the last channel multiplier
        time_embedding_act_fn="gelu",
        resnet_skip_time_act=True,
        resnet_out_scale_factor=1 / 0.7071,
        mid_block_scale_factor=1 / 0.7071,
        only_cross_attention=True,
    )


def default_captions(num_synthetic: int = 400, seed: int = 0) -> list[str]:
    """The synthetic benchmark's captions (a seeded draw of its labels) and the UCF101 class prompts."""
    from lumiere.data.vocabulary import caption_from_labels, sample_labels
    from lumiere.evaluation.ucf101_protocol import ucf101_prompts

    rng = np.random.default_rng(seed)
    captions = [caption_from_labels(sample_labels(rng)) for _ in range(num_synthetic)]
    captions += [prompt for prompts in ucf101_prompts().values() for prompt in prompts]
    return captions


def read_captions(path: str | Path) -> list[str]:
    path = Path(path)
    if not path.is_file():
        raise InputFileError(f"captions file not found: {path} (one caption per line)")
    captions = [line.strip() for line in path.read_text().splitlines() if line.strip()]
    if not captions:
        raise InputFileError(f"{path} holds no captions (one caption per line)")
    return captions


# ---------------------------------------------------------------------------------------------- parts
def write_tokenizer(folder: Path, captions: Sequence[str]) -> Path:
    """A T5 tokenizer folder: a unigram sentencepiece model trained on `captions`, T5's special ids.

    Every distinct caption word is also a training sentence: on a few hundred short captions the
    unigram trainer otherwise keeps mostly character pairs, where T5's vocabulary has whole words.
    """
    import sentencepiece

    words = sorted({word for caption in captions for word in caption.split()})
    model = io.BytesIO()
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter([*captions, *words]), model_writer=model, model_type="unigram",
        vocab_size=SENTENCEPIECE_VOCAB, hard_vocab_limit=False, character_coverage=1.0,
        pad_id=0, eos_id=1, unk_id=2, bos_id=-1,  # T5's ids: <pad> 0, </s> 1, <unk> 2, no <s>
        pad_piece="<pad>", eos_piece="</s>", unk_piece="<unk>",
        num_threads=1, minloglevel=2,
    )
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "spiece.model").write_bytes(model.getvalue())
    sentinels = [f"<extra_id_{index}>" for index in range(EXTRA_IDS)]
    special = {"eos_token": "</s>", "unk_token": "<unk>", "pad_token": "<pad>",
               "additional_special_tokens": sentinels}
    (folder / "special_tokens_map.json").write_text(json.dumps(special, indent=2))
    config = dict(special, extra_ids=EXTRA_IDS, model_max_length=TOKENIZER_MAX_LENGTH, sp_model_kwargs={},
                  tokenizer_class="T5Tokenizer")
    (folder / "tokenizer_config.json").write_text(json.dumps(config, indent=2))
    return folder


def tokenizer_vocab_size(folder: Path) -> int:
    """Ids the T5 embedding must cover: the sentencepiece pieces plus the sentinel tokens."""
    import sentencepiece

    return sentencepiece.SentencePieceProcessor(model_file=str(folder / "spiece.model")).get_piece_size() + EXTRA_IDS


def build_text_encoder(vocab_size: int) -> T5EncoderModel:
    config = T5Config(vocab_size=vocab_size, d_model=TEXT_WIDTH, d_kv=8, d_ff=64, num_layers=2, num_heads=4,
                      feed_forward_proj="gated-gelu", dropout_rate=0.0, is_encoder_decoder=False, use_cache=False,
                      tie_word_embeddings=False, pad_token_id=0, eos_token_id=1)
    return T5EncoderModel(config)


def _save_weights(model, folder: Path, fp16_variant: str, **kwargs) -> None:
    """save_pretrained in fp32 and/or as the fp16 variant (file names with `.fp16.`)."""
    if fp16_variant in ("none", "beside"):
        model.save_pretrained(folder, safe_serialization=True, **kwargs)
    if fp16_variant in ("beside", "only"):
        half = model.to(torch.float16)
        half.save_pretrained(folder, safe_serialization=True, variant="fp16", **kwargs)
        model.to(torch.float32)


def _write_scheduler(folder: Path, settings: dict) -> None:
    DDPMScheduler(**settings).save_config(folder)


def _write_model_index(folder: Path, stage: str) -> None:
    """model_index.json as diffusers' IF pipelines write it (parts saved without a safety checker)."""
    parts = {
        "feature_extractor": [None, None],
        "safety_checker": [None, None],
        "scheduler": ["diffusers", "DDPMScheduler"],
        "text_encoder": ["transformers", "T5EncoderModel"],
        "tokenizer": ["transformers", "T5Tokenizer"],
        "unet": ["diffusers", "UNet2DConditionModel"],
        "watermarker": [None, None],
    }
    if stage == "IF-II":
        parts["image_noising_scheduler"] = ["diffusers", "DDPMScheduler"]
    import diffusers

    name = "IFPipeline" if stage == "IF-I" else "IFSuperResolutionPipeline"
    index = {"_class_name": name, "_diffusers_version": diffusers.__version__, "requires_safety_checker": False,
             **parts}
    (folder / "model_index.json").write_text(json.dumps(index, indent=2, sort_keys=True) + "\n")


# ---------------------------------------------------------------------------------------------- folders
def write_if_folder(out: str | Path, stage: str, captions: Sequence[str], *, seed: int = 0,
                    fp16_variant: str = "none") -> Path:
    """One pipeline folder OUT/<stage> ("IF-I" or "IF-II"), replacing what was there."""
    if stage not in STAGE_FOLDERS:
        raise ConfigError(f"stage must be one of {STAGE_FOLDERS}, got {stage!r}")
    if fp16_variant not in FP16_VARIANTS:
        raise ConfigError(f"fp16_variant must be one of {FP16_VARIANTS}, got {fp16_variant!r}")
    folder = Path(out) / stage
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    torch.manual_seed(seed + STAGE_FOLDERS.index(stage))
    tokenizer_dir = write_tokenizer(folder / "tokenizer", captions)
    unet_config = if_stage1_unet_config() if stage == "IF-I" else if_stage2_unet_config()
    _save_weights(UNet2DConditionModel(**unet_config), folder / "unet", fp16_variant)
    _save_weights(build_text_encoder(tokenizer_vocab_size(tokenizer_dir)), folder / "text_encoder", fp16_variant,
                  max_shard_size=TEXT_ENCODER_SHARD_SIZE)
    _write_scheduler(folder / "scheduler", IF_STAGE1_SCHEDULER if stage == "IF-I" else IF_STAGE2_SCHEDULER)
    if stage == "IF-II":
        _write_scheduler(folder / "image_noising_scheduler", IF_IMAGE_NOISING_SCHEDULER)
    _write_model_index(folder, stage)
    return folder


def write_rehearsal(out: str | Path, captions: Sequence[str] | None = None, *, seed: int = 0,
                    fp16_variant: str = "none") -> dict[str, Path]:
    """Both stages under `out`: {"IF-I": OUT/IF-I, "IF-II": OUT/IF-II}."""
    captions = list(captions) if captions is not None else default_captions(seed=seed)
    return {stage: write_if_folder(out, stage, captions, seed=seed, fp16_variant=fp16_variant)
            for stage in STAGE_FOLDERS}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lumiere.models.rehearsal", description=__doc__.splitlines()[0])
    parser.add_argument("out", help="folder to write IF-I/ and IF-II/ into")
    parser.add_argument("--captions", help="text file, one caption per line, to train the tokenizer on "
                                           "(default: the synthetic benchmark's captions and UCF101's class prompts)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--fp16-variant", choices=FP16_VARIANTS, default="none",
                        help="also ('beside') or only ('only') write the .fp16. weight files")
    args = parser.parse_args(argv)
    import diffusers
    import transformers

    diffusers.utils.logging.set_verbosity_error()  # the fp16 cast's advice and shard progress bars
    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    try:
        captions = read_captions(args.captions) if args.captions else None
        folders = write_rehearsal(args.out, captions, seed=args.seed, fp16_variant=args.fp16_variant)
    except (ConfigError, InputFileError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    for stage, folder in folders.items():
        print(f"{stage}: {folder}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
