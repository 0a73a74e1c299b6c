"""Applications of the base model (paper Sec. 4): conditional generation, SDEdit, stylization.

- `masks`, `conditioning`: the binary mask M and masked video C of Sec. 4.2 for image-to-video,
  inpainting, outpainting and cinemagraphs, and the random training masks;
- `replacement`: optional RePaint-style replacement of the known region while sampling;
- `applications`: the applications as functions of a trained module and input tensors;
- `stylize`: spatial-weight interpolation towards a style T2I (Sec. 4.1);
- `inputs`: reading and checking user files;
- `gallery`: every application on a held-out clip (`python -m lumiere.apps.gallery`).

The conditional LightningModule is `lumiere.training.conditional.ConditionalVideoModule`; the
demo's synthetic styles are `lumiere.data.style` and the style fine-tune of the T2I stage is
`lumiere.training.style_finetune`; the `apps.py` task is `lumiere.tasks.applications`.
This package's `__init__` imports no Lightning code (the training package imports `masks`).
"""

from lumiere.apps.applications import (
    cinemagraph,
    image_to_video,
    inpaint,
    outpaint,
    sdedit_video,
    stylized,
    stylized_generation,
)
from lumiere.apps.conditioning import (
    cinemagraph_conditioning,
    fit_to_model,
    image_to_video_conditioning,
    inpainting_conditioning,
    masked_video,
    outpainting_conditioning,
)
from lumiere.apps.masks import (
    MASK_KINDS,
    TrainingMaskSampler,
    border_keep_mask,
    box_keep_mask,
    first_frame_mask,
    region_from_box,
    static_region_mask,
)
from lumiere.apps.replacement import paste_known_region, replace_known_region
from lumiere.apps.stylize import interpolate_spatial_weights, load_style_unet_state_dict

__all__ = [
    "MASK_KINDS",
    "TrainingMaskSampler",
    "border_keep_mask",
    "box_keep_mask",
    "cinemagraph",
    "cinemagraph_conditioning",
    "first_frame_mask",
    "fit_to_model",
    "image_to_video",
    "image_to_video_conditioning",
    "inpaint",
    "inpainting_conditioning",
    "interpolate_spatial_weights",
    "load_style_unet_state_dict",
    "masked_video",
    "outpaint",
    "outpainting_conditioning",
    "paste_known_region",
    "region_from_box",
    "replace_known_region",
    "sdedit_video",
    "static_region_mask",
    "stylized",
    "stylized_generation",
]
