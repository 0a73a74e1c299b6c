"""Spatial super-resolution stage (Sec. 3.2, App. C): an IF stage-II style SSR, 2D or inflated.

The SSR network sees the noisy high-resolution video concatenated with the low-resolution video,
bilinearly upsampled and noise-augmented; the augmentation level enters as `class_labels`
(DeepFloyd IF stage II convention). Stage 0 trains the 2D SSR on still pairs; the inflated SSR
wraps the frozen 2D SSR in a `STUNet` without temporal resampling (it keeps T) and trains only
the temporal blocks. Because the inflated SSR is too expensive for whole clips at full
resolution, sampling runs it on overlapping temporal windows combined by MultiDiffusion.
"""

from __future__ import annotations

import os
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from diffusers import UNet2DConditionModel
from torch import Tensor

from lumiere.diffusion import multidiffusion_sample
from lumiere.errors import ConfigError
from lumiere.models import STUNet, FrozenTextEncoder, load_unet
from lumiere.training.base import DiffusionModule
from lumiere.training.stages import apply_unet_per_frame


def upsample_video(video: Tensor, size: int) -> Tensor:
    """Bilinear spatial upsampling of (B, C, T, h, w) to (B, C, T, size, size), frame by frame."""
    batch, channels, frames = video.shape[:3]
    folded = video.transpose(1, 2).reshape(batch * frames, channels, *video.shape[-2:])
    up = F.interpolate(folded, size=(size, size), mode="bilinear", align_corners=False)
    return up.reshape(batch, frames, channels, size, size).transpose(1, 2)


class SuperResolutionModule(DiffusionModule):
    """Text-conditioned video super-resolution; `network` is a 2D U-Net or an inflated STUNet."""

    def __init__(
        self,
        *,
        text_encoder_path: str,
        unet: UNet2DConditionModel | None = None,
        unet_path: str | None = None,
        stunet: Callable[..., STUNet] | None = None,
        train_noise_level_max: int = 250,
        sample_noise_level: int = 100,
        window: int = 8,
        overlap: int = 2,
        window_weighting: str = "flat",
        gradient_checkpointing: bool = False,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        if (unet is None) == (unet_path is None):
            raise ConfigError("give exactly one of `unet` (train a 2D SSR) or `unet_path` (inflate one)")
        base = unet if unet is not None else load_unet(unet_path)
        self.inflated = stunet is not None
        if self.inflated:
            self.network = stunet(base)  # freezes the 2D SSR
        else:
            self.network = base
            if gradient_checkpointing:
                self.network.enable_gradient_checkpointing()
        self.text_encoder = FrozenTextEncoder.from_pretrained(text_encoder_path)  # frozen by default
        self.train_noise_level_max = train_noise_level_max
        self.sample_noise_level = sample_noise_level
        self.window = window
        self.overlap = overlap
        self.window_weighting = window_weighting
        self._val_low_res: tuple[Tensor, list[str]] | None = None

    @property
    def unet(self) -> UNet2DConditionModel:
        return self.network.unet if self.inflated else self.network

    def frozen_modules(self):
        return [self.text_encoder, self.network.unet] if self.inflated else [self.text_encoder]

    @property
    def sample_size(self) -> int:
        return int(self.unet.config.sample_size)

    # ------------------------------------------------------------------ conditioning
    def augment_low_res(self, low_res: Tensor, noise_level: Tensor, generator=None) -> Tensor:
        """Upsample the low-res clip and noise it to `noise_level` (IF-II noise augmentation)."""
        up = upsample_video(low_res, self.sample_size)
        noise = torch.randn(up.shape, generator=generator).to(up)
        alpha_bar = self.objective.alphas_cumprod.to(up.device)[noise_level].view(-1, 1, 1, 1, 1).to(up.dtype)
        return alpha_bar.sqrt() * up + (1 - alpha_bar).sqrt() * noise

    def prepare_batch(self, batch: dict, generator=None) -> tuple[Tensor, dict[str, Tensor]]:
        if "video_hr" not in batch:
            raise ConfigError("the SSR stage needs high-resolution pairs: set data.hr_resolution")
        low_res, high_res = batch["video"], batch["video_hr"]
        levels = torch.randint(0, self.train_noise_level_max + 1, (low_res.shape[0],), generator=generator)
        levels = levels.to(low_res.device)
        if self._val_low_res is None and not self.training:
            self._val_low_res = (low_res[:4].detach(), list(batch["caption"][:4]))
        return high_res, {"low_res": self.augment_low_res(low_res, levels, generator), "class_labels": levels}

    def diffusion_loss(self, batch, generator=None, caption_dropout: float = 0.0) -> Tensor:
        # Same as the base, but the low-res augmentation draws from the same generator.
        from lumiere.diffusion import drop_conditions

        x0, extra = self.prepare_batch(batch, generator)
        captions = batch["caption"]
        if caption_dropout > 0:
            captions = drop_conditions(captions, caption_dropout, generator)
        cond = {**self.encode_text(captions), **extra}
        loss, _ = self.objective.loss(self.network_forward, x0, cond, generator=generator)
        return loss

    def network_forward(self, x_t: Tensor, t: Tensor, cond: dict[str, Tensor]) -> Tensor:
        model_input = torch.cat([x_t, cond["low_res"].to(x_t.dtype)], dim=1)
        if self.inflated:
            return self.network(model_input, t, cond["encoder_hidden_states"],
                                encoder_attention_mask=cond.get("encoder_attention_mask"),
                                class_labels=cond["class_labels"])
        return apply_unet_per_frame(self.network, model_input, t, cond)

    # ------------------------------------------------------------------ sampling
    @torch.no_grad()
    def upsample(
        self,
        low_res: Tensor,
        prompts: Sequence[str],
        *,
        seed: int = 0,
        window: int | None = None,
        overlap: int | None = None,
        num_inference_steps: int | None = None,
        guidance_scale: float | None = None,
        noise_level: int | None = None,
        non_overlapping: bool = False,
        scheduler: str | None = None,
        window_batch_size: int | None = None,
        progress: bool = True,
    ) -> Tensor:
        """Super-resolve a whole clip with temporal MultiDiffusion over windows (App. C)."""
        low_res = low_res.to(self.device, torch.float32)
        batch, _, frames = low_res.shape[:3]
        generator = torch.Generator().manual_seed(seed)
        level = self.sample_noise_level if noise_level is None else noise_level
        levels = torch.full((batch,), level, dtype=torch.long, device=self.device)
        conditioning = self.augment_low_res(low_res, levels, generator)
        noise = torch.randn((batch, 3, frames, self.sample_size, self.sample_size), generator=generator)
        cond = {**self.encode_text(list(prompts)), "low_res": conditioning, "class_labels": levels}
        uncond = {**self.encode_text([""] * batch), "low_res": conditioning, "class_labels": levels}
        return multidiffusion_sample(
            self.network_forward, noise.to(self.device), self.make_scheduler(scheduler),
            num_inference_steps=num_inference_steps or self.sampler_config["num_inference_steps"],
            window=window or self.window, overlap=self.overlap if overlap is None else overlap,
            cond=cond, uncond=uncond, temporal_cond_keys=("low_res",),
            guidance_scale=self.sampler_config["guidance_scale"] if guidance_scale is None else guidance_scale,
            weighting=self.window_weighting, non_overlapping=non_overlapping,
            window_batch_size=window_batch_size, generator=generator, progress=progress,
        )

    @torch.no_grad()
    def validation_samples(self):
        if self._val_low_res is None:
            return None
        low_res, captions = self._val_low_res
        with self.ema_scope():
            videos = self.upsample(low_res, captions, seed=self.val_seed, progress=False)
        return videos, captions

    def on_validation_epoch_start(self) -> None:
        self._val_low_res = None

    def export_pretrained(self, out_dir: str) -> None:
        """Write the EMA weights of a 2D SSR as `ssr_unet/` (diffusers), for the inflation stage."""
        if self.inflated:
            raise ConfigError("export the 2D SSR (stage 0); the inflated SSR is used from its checkpoint")
        with self.ema_scope():
            self.network.save_pretrained(os.path.join(out_dir, "ssr_unet"), safe_serialization=True)
