"""Models: the frozen text-to-image U-Net and text encoder, temporal blocks, the STUNet (paper Sec. 3.1, Fig. 4, App. B),
and the CPU demo's one extension (TemporalConditioning)."""

from lumiere.models.conditioning import expand_input_channels
from lumiere.models.stunet import STUNet, build_fixed_resolution_inflation
from lumiere.models.t2i import (
    T5_XXL_TEXT_DIM,
    TINY_TEXT_DIM,
    UNET_PRESETS,
    build_unet,
    count_parameters,
    load_unet,
    save_unet,
    unet_text_dim,
)
from lumiere.models.temporal import (
    FactorizedSpaceTimeConvBlock,
    TemporalAttentionBlock,
    TemporalDownsample,
    TemporalUpsample,
)
from lumiere.models.temporal_conditioning import TemporalConditioning
from lumiere.models.text import FrozenTextEncoder, build_tiny_text_encoder

__all__ = [
    "STUNet",
    "build_fixed_resolution_inflation",
    "expand_input_channels",
    "UNET_PRESETS",
    "TINY_TEXT_DIM",
    "T5_XXL_TEXT_DIM",
    "build_unet",
    "load_unet",
    "save_unet",
    "unet_text_dim",
    "count_parameters",
    "FrozenTextEncoder",
    "build_tiny_text_encoder",
    "TemporalDownsample",
    "TemporalUpsample",
    "FactorizedSpaceTimeConvBlock",
    "TemporalAttentionBlock",
    "TemporalConditioning",
]
