"""FVD input preprocessing as published (Unterthiner et al. 2018; paper App. D.2).

The reference FVD code takes uint8 videos, resizes every frame to 224x224 with TF1's
``tf.image.resize_bilinear`` (``align_corners=False`` and *no* half-pixel offset: the source
coordinate of output pixel ``i`` is ``i * in / out``), then scales to [-1, 1] for the I3D.
PyTorch's ``interpolate(..., align_corners=False)`` uses half-pixel centres instead and moves
I3D logits by up to 2.4%, so the legacy resize is implemented here with explicit gathers and
lerps. Paper App. D.2 writes "244x244"; the I3D's 7x7 head only fits 224, the published size.

Every FVD number carries the name of the variant it was computed with (``fvd_variant``).
"""

from __future__ import annotations

import einops
import torch
import torch.nn.functional as F

from lumiere.errors import ConfigError

# Tensor dimension legend: b batch, c channels, t time, h height, w width.

FVD_NUM_FRAMES = 16
FVD_SIZE = 224


def fvd_variant(num_frames: int = FVD_NUM_FRAMES, size: int = FVD_SIZE, ddof: int = 1, features: str = "logits400") -> str:
    """Name of an FVD variant, recorded next to every number (e.g. in the metric's result dict)."""
    return f"tf1-legacy-bilinear-{size}, first{num_frames}, eps1e-3, {features}, ddof{ddof}"


FVD_VARIANT = fvd_variant()  # "tf1-legacy-bilinear-224, first16, eps1e-3, logits400, ddof1"


def _legacy_source_indices(in_size: int, out_size: int, device: torch.device):
    """Low/high source indices and lerp weights of TF1 legacy bilinear along one axis.

    TF computes ``in = out_index * (in_size / out_size)`` in float32; ``low = floor(in)``,
    ``high = min(low + 1, in_size - 1)``, weight ``in - low``.
    """
    scale = torch.tensor(float(in_size), dtype=torch.float32) / out_size
    source = torch.arange(out_size, dtype=torch.float32) * scale
    low = source.floor().to(torch.long).clamp(max=in_size - 1)
    high = (low + 1).clamp(max=in_size - 1)
    weight = source - low.to(torch.float32)
    return low.to(device), high.to(device), weight.to(device)


def tf1_legacy_bilinear_resize(images: torch.Tensor, size: int | tuple[int, int]) -> torch.Tensor:
    """Resize ``images`` (..., H, W) to ``size`` like TF1 ``tf.image.resize_bilinear`` (float32 out).

    Rows are interpolated first (left/right lerp on the two source rows), then the two rows are
    lerped vertically, in the same order as TF's kernel.
    """
    out_h, out_w = (size, size) if isinstance(size, int) else size
    images = images.to(torch.float32)
    in_h, in_w = images.shape[-2:]
    y_low, y_high, y_weight = _legacy_source_indices(in_h, out_h, images.device)
    x_low, x_high, x_weight = _legacy_source_indices(in_w, out_w, images.device)
    top, bottom = images.index_select(-2, y_low), images.index_select(-2, y_high)
    top = top.index_select(-1, x_low) + (top.index_select(-1, x_high) - top.index_select(-1, x_low)) * x_weight
    bottom = bottom.index_select(-1, x_low) + (bottom.index_select(-1, x_high) - bottom.index_select(-1, x_low)) * x_weight
    return top + (bottom - top) * y_weight[:, None]


def quantize_to_uint8_range(videos: torch.Tensor) -> torch.Tensor:
    """[-1, 1] -> integer-valued float in [0, 255], the values the video would have when saved."""
    return ((videos.clamp(-1, 1) + 1) * 127.5).round()


def preprocess_for_fvd(videos: torch.Tensor, num_frames: int = FVD_NUM_FRAMES, size: int = FVD_SIZE,
                       resize: str = "tf1") -> torch.Tensor:
    """(B, 3, T, H, W) in [-1, 1] -> the I3D input (B, 3, num_frames, size, size) in [-1, 1].

    First ``num_frames`` frames, quantisation to 0-255, a bilinear resize, scaling ``2 x / 255 - 1``.
    ``resize="tf1"``: TF1's legacy resize (the reference FVD code); ``"torch"``: PyTorch's
    (half-pixel centres, no antialias), as StyleGAN-V's evaluation resizes.
    """
    if resize not in ("tf1", "torch"):
        raise ConfigError(f"resize must be 'tf1' or 'torch', got {resize!r}")
    if videos.ndim != 5 or videos.shape[1] != 3:
        raise ConfigError(f"FVD expects RGB videos of shape (B, 3, T, H, W), got {tuple(videos.shape)}")
    if videos.shape[2] < num_frames:
        raise ConfigError(f"FVD uses the first {num_frames} frames; the videos have only {videos.shape[2]}")
    frames = quantize_to_uint8_range(videos[:, :, :num_frames].to(torch.float32))
    batch = frames.shape[0]
    frames = einops.rearrange(frames, "b c t h w -> (b t) c h w")
    if resize == "tf1":
        frames = tf1_legacy_bilinear_resize(frames, size)
    else:
        frames = F.interpolate(frames, size=(size, size), mode="bilinear", align_corners=False)
    frames = einops.rearrange(frames, "(b t) c h w -> b c t h w", b=batch)
    return 2.0 * frames / 255.0 - 1.0
