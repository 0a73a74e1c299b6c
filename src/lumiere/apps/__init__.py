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
This package's `__init__` imports no Lightning code (the training package imports `masks`), and
imports its attributes on first use (PEP 562): `lumiere.apps.inputs` does not load the samplers.
"""

from lumiere._lazy import lazy_exports

_EXPORTS = {
    "cinemagraph": "lumiere.apps.applications",
    "image_to_video": "lumiere.apps.applications",
    "inpaint": "lumiere.apps.applications",
    "outpaint": "lumiere.apps.applications",
    "sdedit_video": "lumiere.apps.applications",
    "stylized": "lumiere.apps.applications",
    "stylized_generation": "lumiere.apps.applications",
    "cinemagraph_conditioning": "lumiere.apps.conditioning",
    "fit_to_model": "lumiere.apps.conditioning",
    "image_to_video_conditioning": "lumiere.apps.conditioning",
    "inpainting_conditioning": "lumiere.apps.conditioning",
    "masked_video": "lumiere.apps.conditioning",
    "outpainting_conditioning": "lumiere.apps.conditioning",
    "MASK_KINDS": "lumiere.apps.masks",
    "TrainingMaskSampler": "lumiere.apps.masks",
    "border_keep_mask": "lumiere.apps.masks",
    "box_keep_mask": "lumiere.apps.masks",
    "first_frame_mask": "lumiere.apps.masks",
    "region_from_box": "lumiere.apps.masks",
    "static_region_mask": "lumiere.apps.masks",
    "paste_known_region": "lumiere.apps.replacement",
    "replace_known_region": "lumiere.apps.replacement",
    "interpolate_spatial_weights": "lumiere.apps.stylize",
    "load_style_unet_state_dict": "lumiere.apps.stylize",
}

__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, globals(), _EXPORTS)
