"""The applications of paper Sec. 4 as library functions: tensors in, videos (B, 3, T, H, W) out.

Conditional generation (Sec. 4.2) takes a `ConditionalVideoModule`; SDEdit and stylized
generation (Sec. 4, 4.1) take any text-to-video stage (the base model or the conditional one,
which generates from text alone when nothing is known). Inputs are in [-1, 1] at any resolution:
they are centre-cropped to a square and resized to the model's resolution (masks with nearest
neighbour, so they stay binary). Frame counts must suit the model (`check_num_frames`).

The modules are used through their public methods only (`generate_conditional`, `generate`,
`network_forward`, called inside `frozen_compute_scope`, `encode_text`, `make_scheduler`,
`sample_size`, `network`), so this file needs nothing from `lumiere.training`.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager

import torch
from torch import Tensor

from lumiere.apps.conditioning import (
    as_image_batch,
    center_square,
    cinemagraph_conditioning,
    fit_to_model,
    image_to_video_conditioning,
    inpainting_conditioning,
    outpainting_conditioning,
    resize_video,
)
from lumiere.apps.stylize import interpolate_spatial_weights
from lumiere.diffusion import sdedit
from lumiere.errors import ConfigError


def _prompts(prompts: str | Sequence[str]) -> list[str]:
    prompts = [prompts] if isinstance(prompts, str) else list(prompts)
    if not prompts:
        raise ConfigError("give at least one prompt")
    return prompts


def _batch(tensor: Tensor, size: int) -> Tensor:
    """Repeat a single conditioning (batch 1) for every prompt."""
    if tensor.shape[0] == size:
        return tensor
    if tensor.shape[0] != 1:
        raise ConfigError(f"{tensor.shape[0]} inputs for {size} prompts: give one input or one per prompt")
    return tensor.expand(size, *tensor.shape[1:])


def _as_video_batch(video: Tensor) -> Tensor:
    if video.ndim == 4:
        video = video[None]
    if video.ndim != 5 or video.shape[1] != 3:
        raise ConfigError(f"expected a video (B, 3, T, H, W) or (3, T, H, W), got shape {tuple(video.shape)}")
    return video


def _conditional(module, prompts, cond_video, mask, **sampling) -> Tensor:
    if not hasattr(module, "generate_conditional"):
        raise ConfigError(f"this application needs a conditional model checkpoint (Sec. 4.2), got a "
                          f"{type(module).__name__}")
    prompts = _prompts(prompts)
    cond_video, mask = fit_to_model(cond_video, mask, module.sample_size)
    return module.generate_conditional(prompts, _batch(cond_video, len(prompts)), _batch(mask, len(prompts)),
                                       **sampling)


# ---------------------------------------------------------------------------- Sec. 4.2
def image_to_video(module, image: Tensor, prompts: str | Sequence[str], num_frames: int, **sampling) -> Tensor:
    """Animate an image (3, H, W) / (B, 3, H, W): C = the image then blank frames, M = 1 on frame 0."""
    image = resize_video(center_square(as_image_batch(image))[:, :, None], module.sample_size)[:, :, 0]
    cond_video, mask = image_to_video_conditioning(image, num_frames)
    return _conditional(module, prompts, cond_video, mask, **sampling)


def inpaint(module, video: Tensor, keep_mask: Tensor, prompts: str | Sequence[str], **sampling) -> Tensor:
    """Regenerate where `keep_mask` (B or 1, 1, T or 1, H, W) is 0; keep the video where it is 1."""
    cond_video, mask = inpainting_conditioning(_as_video_batch(video), keep_mask)
    return _conditional(module, prompts, cond_video, mask, **sampling)


def outpaint(module, video: Tensor, border: Sequence[int], prompts: str | Sequence[str], **sampling) -> Tensor:
    """Extend the canvas by (top, bottom, left, right) pixels (then to a square) and generate the border."""
    cond_video, mask = outpainting_conditioning(_as_video_batch(video), border, square=True)
    return _conditional(module, prompts, cond_video, mask, **sampling)


def cinemagraph(module, image: Tensor, region: Tensor, prompts: str | Sequence[str], num_frames: int,
                **sampling) -> Tensor:
    """Animate `region` (H, W), 1 = animate, of an image; the rest stays the image (Fig. 8)."""
    cond_video, mask = cinemagraph_conditioning(image, region, num_frames)
    return _conditional(module, prompts, cond_video, mask, **sampling)


# ---------------------------------------------------------------------------- Sec. 4: SDEdit
@torch.no_grad()
def sdedit_video(module, video: Tensor, prompts: str | Sequence[str], strength: float, *, seed: int = 0,
                 num_inference_steps: int | None = None, guidance_scale: float | None = None,
                 scheduler: str | None = None, progress: bool = True) -> Tensor:
    """Video-to-video editing with SDEdit (Meng et al. 2022): noise the video to `strength`, denoise with a new prompt.

    strength in (0, 1]: near 0 returns the input, 1 ignores it. Works with the base model or the
    conditional one (as a text-to-video model: C = 0, M = 0).
    """
    if not 0.0 < float(strength) <= 1.0:
        raise ConfigError(f"SDEdit strength must lie in (0, 1], got {strength}")
    prompts = _prompts(prompts)
    video = resize_video(center_square(_as_video_batch(video)), module.sample_size).clamp(-1, 1)
    video = _batch(video, len(prompts)).to(module.device, torch.float32)
    module.check_num_frames(video.shape[2])
    generator = torch.Generator().manual_seed(seed)
    cond, uncond = module.encode_text(prompts), module.encode_text([""] * len(prompts))
    with module.frozen_compute_scope():  # bf16/fp16 frozen parts meet the float32 temporal layers
        return sdedit(
            module.network_forward, video, module.make_scheduler(scheduler), float(strength),
            num_inference_steps=num_inference_steps or module.sampler_config["num_inference_steps"],
            cond=cond, uncond=uncond,
            guidance_scale=module.sampler_config["guidance_scale"] if guidance_scale is None else guidance_scale,
            generator=generator, progress=progress,
        ).float()


# ---------------------------------------------------------------------------- Sec. 4.1: style
@contextmanager
def stylized(module, style_unet_state_dict: Mapping[str, Tensor], alpha: float) -> Iterator:
    """Within the block, `module.network`'s spatial weights are interpolated towards the style; restored after."""
    original = copy.deepcopy(module.network.unet.state_dict())
    interpolate_spatial_weights(module.network, style_unet_state_dict, alpha, inplace=True)
    try:
        yield module
    finally:
        module.network.unet.load_state_dict(original)


def stylized_generation(module, style_unet_state_dict: Mapping[str, Tensor], alpha: float,
                        prompts: str | Sequence[str], num_frames: int, **sampling) -> Tensor:
    """Text-to-video with W = alpha * W_style + (1 - alpha) * W_orig on the spatial layers (Sec. 4.1)."""
    with stylized(module, style_unet_state_dict, alpha):
        return module.generate(_prompts(prompts), num_frames=num_frames, **sampling)
