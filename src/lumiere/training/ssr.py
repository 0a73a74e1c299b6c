"""Spatial super-resolution stage (paper Sec. 3.2, App. C): an IF stage-II style SSR, 2D or inflated.

The SSR network sees the noisy high-resolution video concatenated with the low-resolution video,
bilinearly upsampled and noise-augmented; the augmentation level enters as `class_labels`
(DeepFloyd IF stage II convention, facts.md Sec. 3). Two training stages use this module:

- stage 0 (`unet=`): a 2D SSR U-Net trained from scratch on still low/high-resolution pairs
  (T = 1), with the frozen text encoder of the T2I stage; `export_pretrained` writes it as
  `ssr_unet/` (diffusers format) for the next stage;
- inflation (`unet_path=` + `stunet=`): the frozen 2D SSR wrapped in a `STUNet` without temporal
  resampling (it keeps T, Sec. 3.2 "temporally-aware SSR"); only the temporal blocks train, on
  short clips.

Because the inflated SSR only fits short segments in memory at high resolution, `upsample` runs it
on temporal windows and reconciles them with MultiDiffusion at every denoising step (App. C:
windows overlapping by 2 frames, averaged predictions); `non_overlapping=True` is the Fig. 14
ablation (plain windowing, each segment denoised on its own).

Legend: B batch, C channels, T frames, h x w low resolution, H x W (= sample_size) high resolution.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from diffusers import UNet2DConditionModel
from einops import rearrange
from torch import Tensor

from lumiere.diffusion import multidiffusion_sample
from lumiere.errors import ConfigError
from lumiere.models import STUNet, load_unet
from lumiere.models.pipeline_folder import resolve_model_parts
from lumiere.training.base import DiffusionModule, configured_sample_size
from lumiere.training.export_meta import check_objective_matches, read_export_meta, write_export_meta
from lumiere.training.stages import apply_unet_per_frame, write_export
from lumiere.training.text_cache import frozen_text_encoder

# Written next to an exported SSR U-Net: the low-resolution size it was trained to upsample.
SSR_META_FILE = "lumiere_ssr.json"


def upsample_video(video: Tensor, size: int) -> Tensor:
    """Bilinear spatial upsampling of (B, C, T, h, w) to (B, C, T, size, size), frame by frame."""
    batch = video.shape[0]
    folded = rearrange(video, "b c t h w -> (b t) c h w")
    upsampled = F.interpolate(folded, size=(size, size), mode="bilinear", align_corners=False)
    return rearrange(upsampled, "(b t) c h w -> b c t h w", b=batch)


def read_ssr_meta(unet_path: str | os.PathLike) -> dict:
    """The metadata an SSR export carries (`{}` for a U-Net folder from elsewhere)."""
    return read_export_meta(unet_path, SSR_META_FILE)


class SuperResolutionModule(DiffusionModule):
    """Text-conditioned video super-resolution; `network` is a 2D U-Net or an inflated STUNet."""

    def __init__(
        self,
        *,
        low_res_size: int,                    # side of the low-resolution input (the base model's output)
        text_encoder_path: str | None = None,  # the frozen text encoder (the T2I stage's export, or IF's T5)
        unet: UNet2DConditionModel | None = None,   # stage 0: a fresh 2D SSR U-Net to train
        unet_path: str | None = None,         # inflation: a stage-0 `ssr_unet/` export, kept frozen
        t2i_path: str | None = None,          # inflation: a pipeline folder (IF stage II): U-Net, T5, tokenizer, scheduler
        tokenizer_path: str | None = None,    # replaces the tokenizer found with the text encoder
        variant: str | None = None,           # weight variant of the folders, e.g. "fp16"
        resolution: int | None = None,        # output frame size H (data.hr_resolution); None: the U-Net's sample_size
        stunet: Callable[..., STUNet] | None = None,  # inflation: STUNet partial (temporal_resampling=False)
        train_noise_level_max: int = 250,     # augmentation levels drawn uniformly in [0, max] in training
        sample_noise_level: int = 100,        # augmentation level of the low-res input at sampling
        window: int = 8,                      # frames per MultiDiffusion window at sampling
        overlap: int = 2,                     # frames shared by adjacent windows (App. C)
        window_weighting: str = "flat",       # "flat" (the paper's plain average) or "triangular"
        window_batch_size: int | None = None,  # windows per network forward (None: one, least memory)
        gradient_checkpointing: bool = False,  # 2D stage only; the STUNet partial has its own switch
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        inflating = unet_path is not None or t2i_path is not None
        if unet is None and not inflating:
            raise ConfigError("model.t2i_path is not set (an IF stage II folder, or unet_path + text_encoder_path of a "
                              "trained 2D SSR): set it to inflate one, or give `unet` to train a 2D SSR")
        if unet is not None and inflating:
            raise ConfigError("give exactly one of `unet` (train a 2D SSR) or `unet_path` / `t2i_path` (inflate one)")
        if inflating and stunet is None:
            raise ConfigError("`unet_path` / `t2i_path` load a trained 2D SSR to inflate: give the `stunet` partial too")
        if inflating:
            parts = resolve_model_parts(t2i_path, unet_path=unet_path, text_encoder_path=text_encoder_path,
                                        tokenizer_path=tokenizer_path, variant=variant)
            self.scheduler_config = parts.scheduler_config
            if parts.scheduler_config:
                check_objective_matches(parts.scheduler_config, self.objective, parts.unet_dir.parent / "scheduler")
            base = load_unet(parts.unet_dir, variant=variant)
            unet_path, text_encoder_path, tokenizer_path = str(parts.unet_dir), str(parts.text_encoder_dir), str(parts.tokenizer_dir)
        else:
            if text_encoder_path is None:
                raise ConfigError("the 2D SSR stage needs the frozen text encoder: set model.text_encoder_path")
            base = unet
        if base.config.in_channels != 6 or base.config.class_embed_type is None:
            raise ConfigError("the SSR U-Net must take 6 input channels (noisy high-res + upsampled low-res) and "
                              "a noise-level class embedding (class_embed_type), e.g. preset if_stage2_*")
        self.resolution = configured_sample_size(resolution, base, "model.resolution")
        self.inflated = stunet is not None
        if self.inflated:
            self.network = stunet(base)  # freezes the 2D SSR; only the temporal blocks train
        else:
            self.network = base
            if gradient_checkpointing:
                self.network.enable_gradient_checkpointing()
        self.unet_path, self.text_encoder_path, self.tokenizer_path = unet_path, text_encoder_path, tokenizer_path
        self.text_encoder = frozen_text_encoder(text_encoder_path, tokenizer_path=tokenizer_path, variant=variant,
                                                text_cache=self.text_cache, missing=self.text_cache_missing)

        if not 0 < int(low_res_size) <= self.sample_size:
            raise ConfigError(f"low_res_size must lie in [1, {self.sample_size}] (the SSR's output size), "
                              f"got {low_res_size}")
        if unet_path is not None:
            self._check_export_matches(unet_path, int(low_res_size))
        self.low_res_size = int(low_res_size)
        if not 0 <= train_noise_level_max < self.objective.num_train_timesteps:
            raise ConfigError(f"train_noise_level_max must lie in [0, {self.objective.num_train_timesteps})")
        self.train_noise_level_max = int(train_noise_level_max)
        self.sample_noise_level = int(sample_noise_level)
        self.window = int(window)
        self.overlap = int(overlap)
        self.window_weighting = window_weighting
        self.window_batch_size = window_batch_size
        self._val_pairs: tuple[Tensor, Tensor, list[str]] | None = None  # low-res, high-res, captions

    def _check_export_matches(self, unet_path: str, low_res_size: int) -> None:
        """The frozen 2D SSR only makes sense with the sizes and parameterisation it was trained with."""
        meta = read_ssr_meta(unet_path)
        trained_for = meta.get("low_res_size")
        if trained_for is not None and int(trained_for) != low_res_size:
            raise ConfigError(f"the SSR U-Net in {unet_path} was trained to upsample {trained_for} px frames, "
                              f"but low_res_size={low_res_size} (check data.resolution)")
        check_objective_matches(meta, self.objective, unet_path)

    # ------------------------------------------------------------------ structure
    @property
    def unet(self) -> UNet2DConditionModel:
        """The 2D SSR U-Net (frozen inside the STUNet when inflated)."""
        return self.network.unet if self.inflated else self.network

    def frozen_modules(self):
        return [self.text_encoder, self.network.unet] if self.inflated else [self.text_encoder]

    @property
    def sample_size(self) -> int:
        """The output frame size: the configured resolution (see ``configured_sample_size``)."""
        return self.resolution

    def check_low_res_size(self, height: int, width: int | None = None) -> None:
        """Raise ConfigError unless h x w frames are what this SSR was trained to upsample."""
        width = height if width is None else width
        if (height, width) != (self.low_res_size, self.low_res_size):
            raise ConfigError(
                f"this SSR upsamples {self.low_res_size}x{self.low_res_size} -> {self.sample_size}x{self.sample_size} "
                f"frames, but got {height}x{width} frames; use a base model / data.resolution of {self.low_res_size}")

    # ------------------------------------------------------------------ conditioning
    def augment_low_res(self, low_res: Tensor, noise_level: Tensor,
                        generator: torch.Generator | None = None, noise: Tensor | None = None) -> Tensor:
        """Upsample the low-res clip bilinearly and noise it to `noise_level` (IF-II noise augmentation).

        The augmentation makes the SSR robust to the artefacts of the base model's samples; the
        network is told the level through `class_labels`.
        """
        upsampled = upsample_video(low_res, self.sample_size)
        if noise is None:
            noise = torch.randn(upsampled.shape, generator=generator)
        noise = noise.to(upsampled)
        alpha_bar = self.objective.alphas_cumprod.to(upsampled.device)[noise_level.long()]
        alpha_bar = alpha_bar.view(-1, 1, 1, 1, 1).to(upsampled.dtype)
        return alpha_bar.sqrt() * upsampled + (1 - alpha_bar).sqrt() * noise

    def prepare_batch(self, batch: dict, generators) -> tuple[Tensor, dict[str, Tensor]]:
        """x0 is the high-resolution clip; the extra inputs are the augmented low-res clip and its level."""
        if "video_hr" not in batch:
            raise ConfigError("the SSR stage needs high-resolution pairs: set data.hr_resolution")
        low_res, high_res = batch["video"], batch["video_hr"]
        self.check_low_res_size(*low_res.shape[-2:])
        if tuple(high_res.shape[-2:]) != (self.sample_size, self.sample_size):
            raise ConfigError(f"this SSR outputs {self.sample_size}x{self.sample_size} frames, but the data's "
                              f"high-resolution clips are {high_res.shape[-2]}x{high_res.shape[-1]}; "
                              f"set data.hr_resolution={self.sample_size}")
        # Per-sample draws (see DiffusionModule.sample_generators): level, then augmentation noise.
        levels = torch.stack([torch.randint(0, self.train_noise_level_max + 1, (), generator=g)
                              for g in generators]).to(low_res.device)
        shape = (low_res.shape[1], low_res.shape[2], self.sample_size, self.sample_size)
        noise = torch.stack([torch.randn(shape, generator=g) for g in generators])
        if self._val_pairs is None and not self.training:  # kept for the validation samples
            self._val_pairs = (low_res[:4].detach(), high_res[:4].detach(), list(batch["caption"][:4]))
        return high_res, {"low_res": self.augment_low_res(low_res, levels, noise=noise), "class_labels": levels}

    def network_forward(self, x_t: Tensor, t: Tensor, cond: dict[str, Tensor]) -> Tensor:
        """The SSR on (B, 3, T, H, W): channel-concatenate the low-res conditioning (6 channels in)."""
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
        """Super-resolve whole clips (B, 3, T, h, w) -> (B, 3, T, H, W) in [-1, 1] (Sec. 3.2, App. C).

        Every denoising step runs the SSR on temporal windows of `window` frames overlapping by
        `overlap` frames, each window seeing its slice of the (shared) noisy video and of the
        low-res conditioning, and averages the windows' results frame by frame (MultiDiffusion).
        `non_overlapping=True` stitches independent windows instead (the Fig. 14 ablation).
        """
        if low_res.ndim != 5 or low_res.shape[1] != 3:
            raise ConfigError(f"upsample expects low-res videos (B, 3, T, h, w), got shape {tuple(low_res.shape)}")
        batch, _, frames = low_res.shape[:3]
        self.check_low_res_size(*low_res.shape[-2:])
        prompts = list(prompts)
        if len(prompts) != batch:
            raise ConfigError(f"upsample got {batch} videos but {len(prompts)} prompts")
        low_res = low_res.to(self.device, torch.float32)
        generator = torch.Generator().manual_seed(seed)
        level = self.sample_noise_level if noise_level is None else int(noise_level)
        if not 0 <= level < self.objective.num_train_timesteps:
            raise ConfigError(f"noise_level must lie in [0, {self.objective.num_train_timesteps}), got {level}")
        levels = torch.full((batch,), level, dtype=torch.long, device=self.device)
        conditioning = self.augment_low_res(low_res, levels, generator)
        # One noise tensor for the whole clip; windows are slices of it (facts.md Sec. 5).
        noise = torch.randn((batch, 3, frames, self.sample_size, self.sample_size), generator=generator)
        cond = {**self.encode_text(prompts), "low_res": conditioning, "class_labels": levels}
        uncond = {**self.encode_text([""] * batch), "low_res": conditioning, "class_labels": levels}
        with self.frozen_compute_scope():
            videos = multidiffusion_sample(
                self.network_forward, noise.to(self.device), self.make_scheduler(scheduler),
                num_inference_steps=num_inference_steps or self.sampler_config["num_inference_steps"],
                window=window or self.window, overlap=self.overlap if overlap is None else overlap,
                cond=cond, uncond=uncond, temporal_cond_keys=("low_res",),
                guidance_scale=self.sampler_config["guidance_scale"] if guidance_scale is None else guidance_scale,
                weighting=self.window_weighting, non_overlapping=non_overlapping,
                window_batch_size=window_batch_size or self.window_batch_size, generator=generator,
                progress=progress,
            )
        return videos.float()

    @torch.no_grad()
    def validation_samples(self) -> tuple[Tensor, list[str]] | None:
        """The first validation clips side by side: bilinear upsampling | SSR (EMA weights) | ground truth."""
        if self._val_pairs is None:
            return None
        low_res, high_res, captions = self._val_pairs
        with self.ema_scope():
            videos = self.upsample(low_res, captions, seed=self.val_seed, progress=False)
        bilinear = upsample_video(low_res.float(), self.sample_size).clamp(-1, 1)
        return torch.cat([bilinear, videos, high_res.to(videos)], dim=-1), captions  # along the width

    def on_validation_epoch_start(self) -> None:
        self._val_pairs = None

    # ------------------------------------------------------------------ export
    def export_pretrained(self, out_dir: str) -> None:
        """Write the EMA weights of the 2D SSR as `ssr_unet/` (diffusers) for the inflation stage."""
        if self.inflated:
            raise ConfigError("only the 2D SSR (stage 0) is exported; the inflated SSR is used from its checkpoint")

        def write(staging: str) -> None:  # beside the previous export, replacing it once complete
            folder = os.path.join(staging, "ssr_unet")
            with self.ema_scope():
                self.network.save_pretrained(folder, safe_serialization=True)
            write_export_meta(folder, SSR_META_FILE, self.objective, low_res_size=self.low_res_size,
                              sample_size=self.sample_size)

        write_export(out_dir, ("ssr_unet",), write)
