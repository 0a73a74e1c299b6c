"""The pre-trained text-to-image base: pixel-space diffusers U-Nets (paper Sec. 3, 3.1; Fig. 3b).

Lumiere inflates a pre-trained pixel-space text-to-image U-Net (Imagen) and keeps it frozen. Here
that base is a diffusers ``UNet2DConditionModel``; ``UNET_PRESETS`` holds config kwargs:

- ``if_stage1_*``: DeepFloyd-IF stage-I style (ResNet + "simple" cross-attention blocks whose
  text keys/values join the spatial self-attention, scale-shift time conditioning, attention-pooled
  text added to the time embedding). ``_tiny`` is for unit tests, ``_demo`` is the 32x32 model of
  the CPU demo, ``_paper`` a large IF-I-XL-like config for GPUs (not weight-compatible with a
  released checkpoint: load released weights with ``load_unet(folder)``).
- ``sd_tiny``: Stable-Diffusion style blocks (spatial transformers), to show the inflation is not
  tied to one family.
- ``if_stage2_*``: IF stage-II style super-resolution U-Nets: 6 input channels (noisy high-res
  frame + the low-res frame upsampled), the noise level of the low-res input enters through
  ``class_labels`` (``class_embed_type="timestep"``). ``if_stage2_demo`` upsamples 32 -> 64 px
  (128 px frames make CPU training of the SSR too slow for the demo).

Every preset's text width (``encoder_hid_dim`` for IF, ``cross_attention_dim`` for SD) equals the
tiny text encoder's ``d_model`` (``TINY_TEXT_DIM``) except ``if_stage1_paper`` (T5-XXL, 4096).
"""

from __future__ import annotations

from pathlib import Path

import torch
from diffusers.models.unets import UNet2DConditionModel
from safetensors.torch import load_file

from lumiere.errors import ConfigError, InputFileError

TINY_TEXT_DIM = 64  # d_model of lumiere.models.text.build_tiny_text_encoder()
T5_XXL_TEXT_DIM = 4096  # d_model of the T5-XXL encoder used by Imagen and DeepFloyd IF

# DeepFloyd-IF style conditioning shared by stage I and stage II.
_IF_CONDITIONING = dict(
    resnet_time_scale_shift="scale_shift",  # time embedding as per-channel scale and shift in every ResNet
    act_fn="gelu",
    cross_attention_norm="group_norm",  # text states normalised before they become keys/values
    addition_embed_type="text",  # attention-pooled text added to the time embedding
    encoder_hid_dim_type="text_proj",  # text width -> cross_attention_dim by a linear map
)

_IF_STAGE1_THREE_LEVELS = dict(
    down_block_types=("ResnetDownsampleBlock2D", "SimpleCrossAttnDownBlock2D", "SimpleCrossAttnDownBlock2D"),
    mid_block_type="UNetMidBlock2DSimpleCrossAttn",
    up_block_types=("SimpleCrossAttnUpBlock2D", "SimpleCrossAttnUpBlock2D", "ResnetUpsampleBlock2D"),
)

# IF stage I itself: four levels (three spatial downsamplings), attention below the top level, and
# IF's residual scalings and GELU time embedding.
_IF_STAGE1_FOUR_LEVELS = dict(
    down_block_types=("ResnetDownsampleBlock2D", "SimpleCrossAttnDownBlock2D", "SimpleCrossAttnDownBlock2D",
                      "SimpleCrossAttnDownBlock2D"),
    mid_block_type="UNetMidBlock2DSimpleCrossAttn",
    up_block_types=("SimpleCrossAttnUpBlock2D", "SimpleCrossAttnUpBlock2D", "SimpleCrossAttnUpBlock2D",
                    "ResnetUpsampleBlock2D"),
    resnet_skip_time_act=True,
    resnet_out_scale_factor=1.414,
    mid_block_scale_factor=1.414,
    time_embedding_act_fn="gelu",
)

# Super-resolution: attention only at the coarsest level, where it is cheap.
_IF_STAGE2_THREE_LEVELS = dict(
    down_block_types=("ResnetDownsampleBlock2D", "ResnetDownsampleBlock2D", "SimpleCrossAttnDownBlock2D"),
    mid_block_type="UNetMidBlock2DSimpleCrossAttn",
    up_block_types=("SimpleCrossAttnUpBlock2D", "ResnetUpsampleBlock2D", "ResnetUpsampleBlock2D"),
    in_channels=6,  # noisy high-res frame + bilinearly upsampled low-res frame
    out_channels=3,
    class_embed_type="timestep",  # the low-res noise level, embedded like a timestep, enters as class_labels
    mid_block_scale_factor=1.414,
    time_embedding_act_fn="gelu",
)

UNET_PRESETS: dict[str, dict] = {
    "if_stage1_tiny": dict(
        **_IF_CONDITIONING,
        **_IF_STAGE1_THREE_LEVELS,
        sample_size=16,
        in_channels=3,
        out_channels=3,
        block_out_channels=(16, 32, 64),
        layers_per_block=1,
        norm_num_groups=8,
        attention_head_dim=8,
        cross_attention_dim=32,
        encoder_hid_dim=TINY_TEXT_DIM,
        addition_embed_type_num_heads=2,
    ),
    "sd_tiny": dict(
        down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
        mid_block_type="UNetMidBlock2DCrossAttn",
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
        sample_size=16,
        in_channels=3,
        out_channels=3,
        block_out_channels=(16, 32, 64),
        layers_per_block=1,
        norm_num_groups=8,
        attention_head_dim=8,
        cross_attention_dim=TINY_TEXT_DIM,
    ),
    "if_stage1_demo": dict(
        **_IF_CONDITIONING,
        **_IF_STAGE1_THREE_LEVELS,
        sample_size=32,
        in_channels=3,
        out_channels=3,
        block_out_channels=(32, 64, 128),  # 32x32 -> 16x16 -> 8x8
        layers_per_block=1,
        norm_num_groups=8,
        attention_head_dim=32,
        cross_attention_dim=128,
        encoder_hid_dim=TINY_TEXT_DIM,
        addition_embed_type_num_heads=2,
    ),
    "if_stage1_paper": dict(
        **_IF_CONDITIONING,
        **_IF_STAGE1_FOUR_LEVELS,
        sample_size=128,  # Lumiere's base model works at 128x128 (Sec. 5); IF stage I at 64x64
        in_channels=3,
        out_channels=6,  # epsilon and the learned variance interpolation, as IF stage I
        block_out_channels=(512, 1024, 1536, 2048),
        layers_per_block=3,
        norm_num_groups=32,
        attention_head_dim=64,
        cross_attention_dim=2048,
        encoder_hid_dim=T5_XXL_TEXT_DIM,
        addition_embed_type_num_heads=64,
    ),
    "if_stage2_tiny": dict(
        **_IF_CONDITIONING,
        **_IF_STAGE2_THREE_LEVELS,
        sample_size=32,
        block_out_channels=(16, 32, 64),
        layers_per_block=1,
        norm_num_groups=8,
        attention_head_dim=8,
        cross_attention_dim=32,
        encoder_hid_dim=TINY_TEXT_DIM,
        addition_embed_type_num_heads=2,
    ),
    "if_stage2_demo": dict(
        **_IF_CONDITIONING,
        **_IF_STAGE2_THREE_LEVELS,
        sample_size=64,  # 32 -> 64 px super-resolution for the CPU demo
        block_out_channels=(24, 48, 96),  # 64x64 -> 32x32 -> 16x16; narrow full-resolution level keeps CPU cost low
        layers_per_block=1,
        norm_num_groups=8,
        attention_head_dim=32,
        cross_attention_dim=96,
        encoder_hid_dim=TINY_TEXT_DIM,
        addition_embed_type_num_heads=2,
    ),
}
# The paper-shaped IF stage-I U-Net (four levels, three spatial downsamplings, so the STUNet
# compresses time 8x) at CPU widths: for cost benchmarks of the architecture, not for quality.
UNET_PRESETS["if_stage1_paper_narrow"] = dict(
    UNET_PRESETS["if_stage1_paper"], sample_size=64, out_channels=3, block_out_channels=(32, 64, 96, 128),
    layers_per_block=1, norm_num_groups=8, attention_head_dim=32, cross_attention_dim=128,
    encoder_hid_dim=TINY_TEXT_DIM, addition_embed_type_num_heads=2,
)
UNET_PRESETS["if_stage1_tiny_learned_variance"] = dict(UNET_PRESETS["if_stage1_tiny"], out_channels=6)


def build_unet(preset: str, **overrides) -> UNet2DConditionModel:
    """A randomly initialised U-Net from ``UNET_PRESETS[preset]`` with config overrides applied."""
    if preset not in UNET_PRESETS:
        raise ConfigError(f"unknown U-Net preset {preset!r}; choose one of {sorted(UNET_PRESETS)}")
    config = dict(UNET_PRESETS[preset])
    config.update(overrides)
    try:
        return UNet2DConditionModel(**config)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"invalid U-Net config for preset {preset!r}: {err}") from err


def unet_text_dim(unet: UNet2DConditionModel) -> int:
    """Width of the text states this U-Net expects (encoder_hid_dim if it projects them, else cross_attention_dim)."""
    cfg = unet.config
    return int(cfg.encoder_hid_dim if cfg.encoder_hid_dim is not None else cfg.cross_attention_dim)


def load_unet(path: str | Path, preset: str | None = None, variant: str | None = None, **overrides) -> UNet2DConditionModel:
    """Load a U-Net from a local diffusers folder (``config.json`` + safetensors weights, single-file or
    sharded, of ``variant`` e.g. "fp16"; or a pipeline folder with ``unet/``), or from a ``.safetensors``
    state dict plus the ``preset`` it was built from. Nothing is downloaded: a hub id is rejected.

    Weights load in float32 whatever the variant's storage dtype (diffusers upcasts them); the stage
    casts its frozen parts to its ``frozen_dtype`` afterwards."""
    from lumiere.models.pipeline_folder import UNET_WEIGHTS, check_weight_files

    path = Path(path)
    if path.is_dir():
        folder = path / "unet" if not (path / "config.json").is_file() and (path / "unet" / "config.json").is_file() else path
        if not (folder / "config.json").is_file():
            raise InputFileError(f"{path} is not a diffusers U-Net folder (no config.json)")
        check_weight_files(folder, UNET_WEIGHTS, variant, "U-Net")  # safetensors only: a pickled .bin is never loaded
        try:
            return UNet2DConditionModel.from_pretrained(folder, local_files_only=True, use_safetensors=True, variant=variant)
        except (OSError, ValueError) as err:
            raise InputFileError(f"cannot load the U-Net in {folder}: {str(err).splitlines()[0]}") from err
    if path.is_file():
        if path.suffix != ".safetensors":
            raise InputFileError(f"{path}: U-Net weights must be a diffusers folder or a .safetensors file")
        if preset is None:
            raise ConfigError(f"loading the bare state dict {path} needs the preset it was built from (preset=...)")
        unet = build_unet(preset, **overrides)
        state_dict = load_file(str(path))
        try:
            unet.load_state_dict(state_dict, strict=True)
        except RuntimeError as err:
            raise InputFileError(f"{path} does not match U-Net preset {preset!r}: {str(err).splitlines()[0]}") from err
        return unet
    raise InputFileError(
        f"U-Net not found at '{path}': give a local diffusers folder or a .safetensors file "
        "(nothing is downloaded at run time; a hub id must be downloaded first)"
    )


def save_unet(unet: UNet2DConditionModel, folder: str | Path) -> Path:
    """Save in diffusers format (config.json + safetensors) so ``load_unet(folder)`` reads it back."""
    folder = Path(folder)
    unet.save_pretrained(folder, safe_serialization=True)
    return folder


def count_parameters(module: torch.nn.Module, trainable_only: bool = False) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)


# Blocks whose internals (resnets / attentions / resamplers) the layer walk knows how to call.
SUPPORTED_DOWN_BLOCKS = ("DownBlock2D", "ResnetDownsampleBlock2D", "CrossAttnDownBlock2D", "SimpleCrossAttnDownBlock2D")
SUPPORTED_UP_BLOCKS = ("UpBlock2D", "ResnetUpsampleBlock2D", "CrossAttnUpBlock2D", "SimpleCrossAttnUpBlock2D")
SUPPORTED_MID_BLOCKS = ("UNetMidBlock2D", "UNetMidBlock2DCrossAttn", "UNetMidBlock2DSimpleCrossAttn")


def check_inflatable_unet(unet) -> None:
    """Raise ConfigError unless the STUNet's layer walk knows every block and embedding of this U-Net."""
    if not isinstance(unet, UNet2DConditionModel):
        raise ConfigError(f"STUNet inflates a diffusers UNet2DConditionModel, got {type(unet).__name__}")
    cfg = unet.config
    for block in unet.down_blocks:
        if type(block).__name__ not in SUPPORTED_DOWN_BLOCKS:
            raise ConfigError(f"the U-Net has a down block of type {type(block).__name__}, which the STUNet cannot inflate; "
                              f"supported: {', '.join(SUPPORTED_DOWN_BLOCKS)}")
    for block in unet.up_blocks:
        if type(block).__name__ not in SUPPORTED_UP_BLOCKS:
            raise ConfigError(f"the U-Net has an up block of type {type(block).__name__}, which the STUNet cannot inflate; "
                              f"supported: {', '.join(SUPPORTED_UP_BLOCKS)}")
    if unet.mid_block is not None and type(unet.mid_block).__name__ not in SUPPORTED_MID_BLOCKS:
        raise ConfigError(f"the U-Net has a mid block of type {type(unet.mid_block).__name__}, which the STUNet cannot "
                          f"inflate; supported: {', '.join(SUPPORTED_MID_BLOCKS)}")
    if cfg.addition_embed_type not in (None, "text"):
        raise ConfigError(f"addition_embed_type={cfg.addition_embed_type!r} is not supported (only None or 'text')")
    if cfg.encoder_hid_dim_type not in (None, "text_proj"):
        raise ConfigError(f"encoder_hid_dim_type={cfg.encoder_hid_dim_type!r} is not supported (only None or 'text_proj')")
