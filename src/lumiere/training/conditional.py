"""The conditional base model (paper Sec. 4.2): STUNet fine-tuned to denoise J given <C, M>.

"We add the masked conditioning video C and its corresponding binary mask M, such that the
overall input to the model is the concatenated tensor <J, C, M> ... We expand the channel
dimension of the first convolution layer from 3 to 7 ... and fine-tune our base T2V model to
denoise J based on C, M. During this fine-tuning process, we take J to be the noisy version of
the training video, and C to be a masked version of the clean video."

`ConditionalVideoModule` starts from a trained base (STUNet) checkpoint: it takes the base's
network (frozen T2I U-Net + trained temporal blocks) and frozen text encoder, grows `conv_in`
from 3 to 7 input channels with zero weights for C and M (so at initialisation it *is* the
unconditional model), and fine-tunes on random masks (`lumiere.apps.masks`): first frame only
(image-to-video), boxes (inpainting), borders (outpainting), static regions (cinemagraphs) and
"nothing known" (plain text-to-video, kept so the model still generates from text alone).

Conventions: M = 1 on known pixels; C = video * M (known pixels, 0 = mid-grey elsewhere);
M enters as a (B, 1, T, H, W) map in {0, 1}. The loss is the usual diffusion loss on the whole
clip. Classifier-free guidance drops the text only: C and M stay in the unconditional branch.

What trains (`conv_in_training`):
- `"new_channels"` (default): the temporal blocks and only the conv_in weights of the 4 new
  input channels. The RGB weights and bias of conv_in stay the frozen T2I weights, so (1) with
  M = 0 the spatial layers see exactly the first-layer features they were trained on, the same
  reason the paper keeps all T2I weights fixed, and (2) the T2I part of the conditional model
  stays identical to the T2I model, so stylization (Sec. 4.1) can interpolate it with a style
  T2I fine-tuned from the same weights.
- `"all"`: the whole expanded conv_in trains too; a little more capacity, at the cost of both
  properties above.
Both are `lumiere.models.expand_input_channels(..., trainable=conv_in_training)`.

Checkpoints hold the config (with `base_ckpt_path`) and the trainable weights; rebuilding one
(`load_module_from_checkpoint`) reads the base checkpoint for the STUNet's architecture and the
paths of the frozen T2I U-Net and text encoder, then overwrites the temporal and new conv_in
weights with the fine-tuned ones. Keep the base checkpoint where the conditional run found it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import Tensor

from lumiere.apps.conditioning import check_pair, image_to_video_conditioning
from lumiere.apps.masks import TrainingMaskSampler
from lumiere.apps.replacement import paste_known_region, replace_known_region
from lumiere.diffusion import make_noise, sample
from lumiere.errors import ConfigError
from lumiere.models import STUNet, expand_input_channels
from lumiere.models.conditioning import CONV_IN_TRAINING
from lumiere.training.base import DiffusionModule, load_module_from_checkpoint
from lumiere.training.stages import TextToVideoModule

VIDEO_CHANNELS = 3
CONDITION_CHANNELS = 4  # C (3) + M (1)


def expand_for_conditioning(stunet: STUNet, conv_in_training: str = "new_channels") -> STUNet:
    """Grow conv_in from 3 to 7 input channels (zeros for C and M) and mark what trains; in place."""
    if conv_in_training not in CONV_IN_TRAINING:
        raise ConfigError(f"conv_in_training must be one of {CONV_IN_TRAINING}, got {conv_in_training!r}")
    if stunet.in_channels != VIDEO_CHANNELS:
        raise ConfigError(f"the base model must take {VIDEO_CHANNELS} input channels, it takes {stunet.in_channels}")
    return expand_input_channels(stunet, VIDEO_CHANNELS + CONDITION_CHANNELS, trainable=conv_in_training)


class ConditionalVideoModule(TextToVideoModule):
    """Fine-tunes a trained STUNet on <J, C, M> (Sec. 4.2); generates from text plus a known region."""

    def __init__(
        self,
        *,
        base_ckpt_path: str,                             # a trained base (TextToVideoModule) checkpoint
        mask_kinds: Mapping[str, float] | None = None,   # probabilities of the training mask kinds
        conv_in_training: str = "new_channels",          # "new_channels" | "all" (see module docstring)
        replace_known: bool = False,                     # default of generate_conditional (RePaint-style)
        objective=None,                                  # None: the base's (same schedule and parameterisation)
        sampler: dict | None = None,                     # None: the base's sampler settings
        val_batch_size: int = 4,                         # held-out clips conditioned for validation samples
        **kwargs,
    ) -> None:
        base = load_module_from_checkpoint(base_ckpt_path, use_ema=True)
        if not isinstance(base, TextToVideoModule) or isinstance(base, ConditionalVideoModule):
            raise ConfigError(f"{base_ckpt_path} is a {type(base).__name__} checkpoint; the conditional model "
                              "starts from a base text-to-video (STUNet) checkpoint")
        # The base network is taken over, not rebuilt: skip TextToVideoModule.__init__.
        DiffusionModule.__init__(self, objective=objective or base.objective,
                                 sampler=sampler or base.sampler_config, **kwargs)
        self.base_ckpt_path = base_ckpt_path
        self.unet_path, self.text_encoder_path = base.unet_path, base.text_encoder_path
        self.resolution, self.scheduler_config = base.resolution, base.scheduler_config
        self.network = expand_for_conditioning(base.network, conv_in_training)
        self.text_encoder = base.text_encoder
        self.conv_in_training = conv_in_training
        self.mask_sampler = TrainingMaskSampler(mask_kinds)
        self.replace_known = replace_known
        self.val_batch_size = val_batch_size
        self._val_clips: tuple[Tensor, list[str]] | None = None

    # ------------------------------------------------------------------ training
    def prepare_batch(self, batch: dict, generators: Sequence[torch.Generator]) -> tuple[Tensor, dict[str, Tensor]]:
        """x0 is the clip; C = clip * M and M come from a random mask per sample, drawn from its generator."""
        video = batch["video"]
        _, _, frames, height, width = video.shape
        self.check_num_frames(frames)
        mask, _ = self.mask_sampler.per_sample(generators, frames, height, width)
        mask = mask.to(video.device, video.dtype)
        if self._val_clips is None and not self.training:  # kept for the validation samples
            self._val_clips = (video[:self.val_batch_size].detach(), list(batch["caption"][:self.val_batch_size]))
        return video, {"cond_video": video * mask, "mask": mask}

    def network_forward(self, x_t: Tensor, t: Tensor, cond: dict[str, Tensor]) -> Tensor:
        """STUNet on <x_t, C, M>; without C and M nothing is known (C = 0, M = 0): text-to-video."""
        cond_video, mask = cond.get("cond_video"), cond.get("mask")
        if cond_video is None or mask is None:
            batch, _, frames, height, width = x_t.shape
            cond_video = x_t.new_zeros(batch, VIDEO_CHANNELS, frames, height, width)
            mask = x_t.new_zeros(batch, 1, frames, height, width)
        model_input = torch.cat([x_t, cond_video.to(x_t.dtype), mask.to(x_t.dtype)], dim=1)
        return self.network(model_input, t, cond["encoder_hidden_states"],
                            encoder_attention_mask=cond.get("encoder_attention_mask"),
                            class_labels=cond.get("class_labels"))

    # ------------------------------------------------------------------ sampling
    @torch.no_grad()
    def generate_conditional(
        self,
        prompts: Sequence[str],
        cond_video: Tensor,
        mask: Tensor,
        *,
        seed: int = 0,
        num_inference_steps: int | None = None,
        guidance_scale: float | None = None,
        scheduler: str | None = None,
        replace_known: bool | None = None,
        progress: bool = True,
    ) -> Tensor:
        """Sample clips given C (B, 3, T, H, W) and M (B, 1, T, H, W) at the model resolution; (B, 3, T, H, W) out.

        `replace_known=True` also replaces the known region at every step (see
        `lumiere.apps.replacement`); by default the model alone decides what to copy.
        """
        prompts = list(prompts)
        check_pair(cond_video, mask)
        if len(prompts) != cond_video.shape[0]:
            raise ConfigError(f"{len(prompts)} prompts for {cond_video.shape[0]} conditioning videos")
        frames, height, width = cond_video.shape[2:]
        self.check_num_frames(frames)
        if (height, width) != (self.sample_size, self.sample_size):
            raise ConfigError(f"the conditioning video is {height}x{width}; this model generates "
                              f"{self.sample_size}x{self.sample_size} (resize with lumiere.apps.fit_to_model)")
        replace = self.replace_known if replace_known is None else replace_known
        generator = torch.Generator().manual_seed(seed)
        noise = make_noise(cond_video.shape, generator=generator, device=self.device)
        known = {"cond_video": cond_video.to(self.device, torch.float32), "mask": mask.to(self.device, torch.float32)}
        cond = {**self.encode_text(prompts), **known}
        uncond = {**self.encode_text([""] * len(prompts)), **known}  # CFG drops the text only
        denoiser = self.network_forward
        if replace:
            denoiser = replace_known_region(denoiser, self.objective.alphas_cumprod, self.objective.prediction_type)
        with self.frozen_compute_scope():  # bf16/fp16 frozen parts meet the float32 temporal layers
            video = sample(
                denoiser, noise, self.make_scheduler(scheduler),
                num_inference_steps=num_inference_steps or self.sampler_config["num_inference_steps"],
                cond=cond, uncond=uncond,
                guidance_scale=self.sampler_config["guidance_scale"] if guidance_scale is None else guidance_scale,
                generator=generator, progress=progress,
            ).float()
        return paste_known_region(video, known["cond_video"], known["mask"]) if replace else video

    @torch.no_grad()
    def validation_samples(self):
        """Image-to-video from the first frames of held-out clips, drawn with the EMA weights."""
        if self._val_clips is None:
            return None
        clips, captions = self._val_clips
        cond_video, mask = image_to_video_conditioning(clips[:, :, 0], clips.shape[2])
        with self.ema_scope():
            videos = self.generate_conditional(captions, cond_video, mask, seed=self.val_seed, progress=False)
        return videos, [f"image-to-video: {caption}" for caption in captions]

    def on_validation_epoch_start(self) -> None:
        self._val_clips = None

