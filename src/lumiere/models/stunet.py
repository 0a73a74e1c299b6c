"""Space-Time U-Net (STUNet): a frozen text-to-image U-Net inflated in space and time (paper Sec. 3.1, Fig. 4, App. B).

The STUNet holds a pre-trained diffusers ``UNet2DConditionModel`` (kept frozen) and walks its
``down_blocks``, ``mid_block`` and ``up_blocks`` itself, layer by layer, on frame-folded video
features ``((b t), c, h, w)``. Into that walk it interleaves the new, trainable temporal modules:

- after every pre-trained spatial downsampler (up-sampler) a temporal downsampler (up-sampler),
  so the video is compressed in space *and* time (Fig. 4a); the frame count ``t`` therefore
  changes from level to level;
- after every pre-trained layer (ResNet block, plus its spatial/cross attention) at every level
  but the coarsest, a factorized space-time convolution (Fig. 4b);
- at the coarsest level, temporal attention after every pre-trained layer, plus a stack of
  ``num_temporal_attention_layers`` temporal attention blocks after the mid block (Fig. 4c):
  attention is quadratic in frames, so it only runs where the video is most compressed.

Every inflation block is residual with a zero-initialised output projection and the temporal
resampling modules start as frame striding / frame duplication (App. B), so at initialisation
every N-th output frame equals the text-to-image model's output on that frame, with N the total
temporal downsampling factor (``temporal_factor``). With ``temporal_resampling=False`` (the SSR
model, Sec. 3.2) the whole network equals the 2D U-Net applied frame by frame at initialisation.

Time and text conditioning is computed once per video, the way ``UNet2DConditionModel.forward``
does it, and repeated to the frame count of the current level in frame-major ``(b t)`` order.

Frame-count rule: with N = 2^(number of temporal downsamplings) > 1 the clip length must be a
multiple of N and at least 2N, so the coarsest level keeps >= 2 frames (with a single frame
there, temporal attention and convolution would see no other frame). Without temporal
resampling any T >= 1 works.

The paper's temporal blocks see the video features only. One optional argument,
``temporal_conditioning``, adds the CPU demo's extension (a per-frame caption embedding read by
every temporal block; ``lumiere.models.temporal_conditioning``); ``None`` is the paper.

Two more optional arguments are not in the paper and are off by default: ``activation_checkpointing``
(which blocks recompute their activations in backward, per level; ``lumiere.models.checkpointing``)
and ``compile_temporal`` (``torch.compile`` of the temporal modules; ``lumiere.models.temporal_layout``,
which also holds the containers of the temporal modules and the layout they run in).

Dimension legend (einops): b batch, t frames (at the current level), c channels, h height,
w width, l text tokens, d text width.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import partial

import torch
from diffusers.models.attention_processor import Attention
from diffusers.models.resnet import ResnetBlock2D
from diffusers.models.transformers.transformer_2d import Transformer2DModel
from diffusers.models.unets import UNet2DConditionModel
from einops import rearrange
from torch import nn

from lumiere.errors import ConfigError
from lumiere.models.checkpointing import CheckpointingSpec, CheckpointPolicy, LevelSpec, resolve_levels
from lumiere.models.t2i import check_inflatable_unet, unet_text_dim
from lumiere.models.temporal import (
    FactorizedSpaceTimeConvBlock,
    TemporalAttentionBlock,
    TemporalDownsample,
    TemporalUpsample,
)
from lumiere.models.temporal_conditioning import PerFrameEmbedding, TemporalConditioning
from lumiere.models.temporal_layout import LevelTemporalModules, TemporalStack, compile_temporal_modules

__all__ = ["LevelSpec", "STUNet", "build_fixed_resolution_inflation"]


# ----------------------------------------------------------------------------------------------
# Conditioning, computed once per video and broadcast to each level's frame count
# ----------------------------------------------------------------------------------------------


@dataclass
class _VideoConditioning:
    """Per-video time embedding and text states, repeated to any frame count in (b t) order."""

    time: torch.Tensor  # (b, d_time)
    text: torch.Tensor | None  # (b, l, d)
    text_bias: torch.Tensor | None  # (b, 1, l): 0 keep, -10000 drop (diffusers' additive mask)
    temporal: PerFrameEmbedding | None = None  # what the temporal blocks read (temporal_conditioning only)
    _per_frame_count: dict = field(default_factory=dict)

    def at(self, num_frames: int) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        if num_frames not in self._per_frame_count:
            # repeat_interleave puts the t copies of video b next to each other: the (b t) order.
            self._per_frame_count[num_frames] = tuple(
                None if x is None else x.repeat_interleave(num_frames, dim=0) for x in (self.time, self.text, self.text_bias)
            )
        return self._per_frame_count[num_frames]

    def temporal_at(self, num_frames: int) -> torch.Tensor | None:
        return None if self.temporal is None else self.temporal.at(num_frames)


def _has_only_cross_attention(unet: nn.Module) -> bool:
    return any(isinstance(module, Attention) and module.only_cross_attention for module in unet.modules())


def _cross_attention(attn: nn.Module, x: torch.Tensor, text, text_bias) -> torch.Tensor:
    """Call a pre-trained attention layer the way its diffusers block does."""
    if isinstance(attn, Transformer2DModel):  # SD-style spatial transformer
        return attn(
            x,
            encoder_hidden_states=text,
            cross_attention_kwargs=None,
            attention_mask=None,
            encoder_attention_mask=text_bias,
            return_dict=False,
        )[0]
    if isinstance(attn, Attention):  # IF-style: text keys/values added to the spatial self-attention
        return attn(x, encoder_hidden_states=text, attention_mask=text_bias)
    raise ConfigError(f"unsupported attention layer {type(attn).__name__} in the text-to-image U-Net")


def _spatial_resample(sampler: nn.Module, x: torch.Tensor, temb: torch.Tensor, upsample_size=None) -> torch.Tensor:
    """Run a pre-trained spatial down/up-sampler (a ResNet block with down/up=True in IF, a conv in SD)."""
    if isinstance(sampler, ResnetBlock2D):
        return sampler(x, temb)
    if upsample_size is not None:
        return sampler(x, upsample_size)
    return sampler(x)


def _num_heads(channels: int, head_dim: int) -> int:
    heads = max(1, channels // head_dim)
    while channels % heads:
        heads -= 1
    return heads


# ----------------------------------------------------------------------------------------------
# STUNet
# ----------------------------------------------------------------------------------------------


class STUNet(nn.Module):
    """Space-Time U-Net of Sec. 3.1 / Fig. 4: a frozen 2D U-Net with trainable temporal blocks and temporal down/up-sampling."""

    def __init__(
        self,
        unet: UNet2DConditionModel,
        temporal_resampling: bool = True,  # False keeps T at every level (the SSR model, Sec. 3.2)
        temporal_downsample_levels: Sequence[int] | None = None,  # down blocks whose spatial downsampler also halves time; None: all
        conv_block_levels: LevelSpec = None,  # levels with factorized (2+1)D conv blocks; None: all but the coarsest (Fig. 4b)
        attention_levels: LevelSpec = None,  # levels with temporal attention after each layer; None: the coarsest (Fig. 4c)
        num_temporal_attention_layers: int = 4,  # temporal attention blocks stacked after the mid block (Fig. 4c)
        temporal_attention_head_dim: int = 64,  # heads = channels // head_dim (at least 1)
        temporal_kernel_size: int = 3,  # taps of every temporal 1D conv
        resampling_init: str = "identity",  # "identity" (App. B) or "he" (the Fig. 12 ablation)
        gradient_checkpointing: bool = False,  # the same as activation_checkpointing="all" (kept for older configs)
        # Not in the paper (a memory-for-compute trade, lumiere.models.checkpointing): which blocks recompute
        # their activations in backward, "none" | "spatial" | "temporal" | "all" | {spatial: levels, temporal: levels}.
        activation_checkpointing: CheckpointingSpec = None,
        # Not in the paper (a GPU speed option, lumiere.models.temporal_layout): torch.compile the temporal modules.
        compile_temporal: bool = False,
        # Not in the paper: a factory (text_dim=, emb_dim=) -> TemporalConditioning that gives every temporal
        # block a per-frame caption embedding (the CPU demo's extension); None is the paper.
        temporal_conditioning: Callable[..., TemporalConditioning] | None = None,
    ):
        super().__init__()
        check_inflatable_unet(unet)
        self.unet = unet
        self.unet.requires_grad_(False)  # the text-to-image weights stay fixed (Sec. 3.1)
        self.unet.eval()
        self._trainable_unet_modules: list[str] = []  # e.g. "conv_in" after channel expansion (Sec. 4.2)

        down_blocks, up_blocks = unet.down_blocks, unet.up_blocks
        num_levels = len(down_blocks)
        coarsest = num_levels - 1
        spatially_downsampling = [i for i, block in enumerate(down_blocks) if block.downsamplers is not None]

        if temporal_resampling:
            levels = spatially_downsampling if temporal_downsample_levels is None else sorted(set(temporal_downsample_levels))
            not_resizing = [i for i in levels if i not in spatially_downsampling]
            if not_resizing:
                raise ConfigError(
                    f"temporal_downsample_levels {not_resizing} name down blocks without a spatial downsampler; "
                    f"choose among {spatially_downsampling} (temporal resizing follows spatial resizing, Fig. 4a)"
                )
        else:
            levels = []
        self.temporal_downsample_levels = tuple(levels)
        if gradient_checkpointing and activation_checkpointing not in (None, "none", "all"):
            raise ConfigError(f"gradient_checkpointing=true means activation_checkpointing='all'; got both it and "
                              f"activation_checkpointing={activation_checkpointing!r}: set only activation_checkpointing")
        self.checkpointing = CheckpointPolicy.parse("all" if gradient_checkpointing else activation_checkpointing, num_levels)
        self.conv_block_levels = resolve_levels(conv_block_levels, range(coarsest), num_levels, "conv_block_levels")
        self.attention_levels = resolve_levels(attention_levels, [coarsest], num_levels, "attention_levels")
        self.temporal_conditioning = (
            temporal_conditioning(text_dim=unet_text_dim(unet), emb_dim=self._embedding_dim(unet))
            if temporal_conditioning is not None
            else None
        )

        def modulation(channels: int) -> nn.Module | None:
            return None if self.temporal_conditioning is None else self.temporal_conditioning.block_modulation(channels)

        def stack(level: int, channels: int) -> TemporalStack:
            blocks: list[nn.Module] = []
            if level in self.conv_block_levels:
                blocks.append(FactorizedSpaceTimeConvBlock(channels, temporal_kernel=temporal_kernel_size,
                                                           modulation=modulation(channels)))
            if level in self.attention_levels:
                blocks.append(TemporalAttentionBlock(channels, _num_heads(channels, temporal_attention_head_dim),
                                                     modulation=modulation(channels)))
            return TemporalStack(blocks)

        # Down path: level i is down block i (its layers run at the level's resolution and frame count).
        self.down_temporal = nn.ModuleList()
        for level, block in enumerate(down_blocks):
            channels = block.resnets[-1].out_channels
            resample = None
            if level in self.temporal_downsample_levels:
                resample = TemporalDownsample(channels, temporal_kernel_size, init=resampling_init)
            layers = [stack(level, resnet.out_channels) for resnet in block.resnets]
            self.down_temporal.append(LevelTemporalModules(layers, resample))

        # Coarsest level, mid block: several temporal attention blocks on the compact representation.
        mid_channels = down_blocks[-1].resnets[-1].out_channels
        heads = _num_heads(mid_channels, temporal_attention_head_dim)
        self.mid_temporal = TemporalStack(
            [TemporalAttentionBlock(mid_channels, heads, modulation=modulation(mid_channels)) for _ in range(num_temporal_attention_layers)]
        )

        # Up path: up block j works at level L-1-j and its upsampler undoes down block L-2-j's downsampler.
        self.up_temporal = nn.ModuleList()
        for j, block in enumerate(up_blocks):
            level = coarsest - j
            channels = block.resnets[-1].out_channels
            resample = None
            if block.upsamplers is not None and (level - 1) in self.temporal_downsample_levels:
                resample = TemporalUpsample(channels, temporal_kernel_size, init=resampling_init)
            layers = [stack(level, resnet.out_channels) for resnet in block.resnets]
            self.up_temporal.append(LevelTemporalModules(layers, resample))

        num_up = sum(m.resample is not None for m in self.up_temporal)
        if num_up != len(self.temporal_downsample_levels):  # e.g. a U-Net whose up path does not mirror its down path
            raise ConfigError("this U-Net's up-samplers do not mirror its down-samplers; cannot place temporal up-sampling")
        if compile_temporal:
            compile_temporal_modules([*self.down_temporal, *self.up_temporal], self.mid_temporal)

    # -- properties ---------------------------------------------------------------------------

    @property
    def gradient_checkpointing(self) -> bool:
        """True when any block recomputes its activations (older name; see ``activation_checkpointing``)."""
        return self.checkpointing.enabled

    @gradient_checkpointing.setter
    def gradient_checkpointing(self, enabled: bool) -> None:
        self.checkpointing = CheckpointPolicy.parse("all" if enabled else "none", len(self.down_temporal))

    @staticmethod
    def _embedding_dim(unet: UNet2DConditionModel) -> int:
        """Width of the conditioning embedding the ResNets receive (time, plus a concatenated class embedding)."""
        width = unet.time_embedding.linear_2.out_features
        if unet.class_embedding is not None and unet.config.class_embeddings_concat:
            width *= 2
        return width

    @property
    def temporal_factor(self) -> int:
        """N: the total temporal downsampling factor, 2^(number of temporal downsamplings)."""
        return 2 ** len(self.temporal_downsample_levels)

    @property
    def in_channels(self) -> int:
        return self.unet.config.in_channels

    @property
    def out_channels(self) -> int:
        return self.unet.config.out_channels

    def check_num_frames(self, num_frames: int) -> None:
        """Raise ConfigError unless num_frames is a multiple of N and (for N > 1) leaves >= 2 frames at the coarsest level."""
        n = self.temporal_factor
        if num_frames < 1:
            raise ConfigError(f"a clip needs at least 1 frame, got {num_frames}")
        if num_frames % n != 0:
            raise ConfigError(
                f"{num_frames} frames is not divisible by the STUNet's temporal factor N={n} "
                f"({len(self.temporal_downsample_levels)} temporal downsamplings); use a multiple of {n}"
            )
        if n > 1 and num_frames < 2 * n:
            raise ConfigError(
                f"{num_frames} frames is too short for temporal factor N={n}: the coarsest level needs >= 2 frames, "
                f"so use at least {2 * n} frames"
            )

    # -- trainable parameters -------------------------------------------------------------------

    def _is_trainable(self, name: str) -> bool:
        if not name.startswith("unet."):
            return True
        return any(name.startswith(f"unet.{module}.") for module in self._trainable_unet_modules)

    def mark_unet_module_trainable(self, module_name: str) -> None:
        """Train one sub-module of the 2D U-Net too (used by channel expansion for ``conv_in``, Sec. 4.2)."""
        module = self.unet.get_submodule(module_name)
        module.requires_grad_(True)
        if module_name not in self._trainable_unet_modules:
            self._trainable_unet_modules.append(module_name)

    def trainable_named_parameters(self) -> Iterator[tuple[str, nn.Parameter]]:
        for name, param in self.named_parameters():
            if self._is_trainable(name):
                yield name, param

    def trainable_parameters(self) -> Iterator[nn.Parameter]:
        """The new temporal parameters (and any U-Net module marked trainable); the T2I weights are excluded."""
        for _, param in self.trainable_named_parameters():
            yield param

    def trainable_state_dict(self) -> dict[str, torch.Tensor]:
        """State dict of the trainable parameters only (what a STUNet checkpoint needs beside the T2I weights)."""
        return {k: v for k, v in self.state_dict().items() if self._is_trainable(k)}

    def load_trainable_state_dict(self, state_dict: dict[str, torch.Tensor], strict: bool = True) -> tuple[list[str], list[str]]:
        """Load a ``trainable_state_dict``; returns (missing, unexpected) keys, raising ConfigError on any when strict."""
        expected = set(self.trainable_state_dict())
        given = set(state_dict)
        missing, unexpected = sorted(expected - given), sorted(given - expected)
        if strict and (missing or unexpected):
            raise ConfigError(
                f"temporal weights do not match this STUNet: {len(missing)} missing (e.g. {missing[:3]}), "
                f"{len(unexpected)} unexpected (e.g. {unexpected[:3]})"
            )
        try:
            self.load_state_dict({k: v for k, v in state_dict.items() if k in expected}, strict=False)
        except RuntimeError as err:  # shape mismatch: weights from a differently configured STUNet
            raise ConfigError(f"temporal weights do not fit this STUNet: {str(err).splitlines()[-1].strip()}") from err
        return missing, unexpected

    def train(self, mode: bool = True) -> STUNet:
        super().train(mode)
        self.unet.eval()  # frozen layers behave deterministically (no dropout) whatever the wrapper's mode
        return self

    # -- forward ----------------------------------------------------------------------------------

    def _video_conditioning(self, sample, timestep, encoder_hidden_states, encoder_attention_mask, class_labels) -> _VideoConditioning:
        """Time, class (SSR noise level) and pooled-text embeddings per video, as UNet2DConditionModel.forward computes them."""
        unet = self.unet
        t_emb = unet.get_time_embed(sample=sample, timestep=timestep)
        emb = unet.time_embedding(t_emb, None)
        if unet.class_embedding is not None and class_labels is None:
            raise ConfigError("this U-Net is conditioned on class_labels (the SSR noise level); pass class_labels")
        class_emb = unet.get_class_embed(sample=sample, class_labels=class_labels)
        if class_emb is not None:
            emb = torch.cat([emb, class_emb], dim=-1) if unet.config.class_embeddings_concat else emb + class_emb
        aug_emb = unet.get_aug_embed(emb=emb, encoder_hidden_states=encoder_hidden_states, added_cond_kwargs={})
        if aug_emb is not None:  # IF: attention-pooled text added to the time embedding
            emb = emb + aug_emb
        if unet.time_embed_act is not None:
            emb = unet.time_embed_act(emb)
        text = unet.process_encoder_hidden_states(encoder_hidden_states=encoder_hidden_states, added_cond_kwargs={})
        text_bias = None
        # A U-Net with key/value-only text attention (IF stage II's only_cross_attention) is run
        # unmasked, as IF's pipelines run it: diffusers' added-KV processor pads a text mask by the
        # pixel count, which only fits when the pixels are keys too.
        if encoder_attention_mask is not None and not _has_only_cross_attention(unet):
            # Same conversion as UNet2DConditionModel.forward: keep -> 0, drop -> -10000, (b, 1, l).
            text_bias = ((1 - encoder_attention_mask.to(sample.dtype)) * -10000.0).unsqueeze(1)
        return _VideoConditioning(emb, text, text_bias)

    @staticmethod
    def _spatial_layer(resnet, attn, temb, text, text_bias, x, skip=None):
        """One pre-trained layer: a ResNet block (on x and the level's skip, in the up path) and its attention."""
        x = resnet(x if skip is None else torch.cat([x, skip], dim=1), temb)
        return x if attn is None else _cross_attention(attn, x, text, text_bias)

    @staticmethod
    def _spatial_resamplers(samplers, temb, upsample_size, x):
        for sampler in samplers:
            x = _spatial_resample(sampler, x, temb, upsample_size)
        return x

    def _mid_block(self, temb, text, text_bias, x):
        mid = self.unet.mid_block
        if mid is None:
            return x
        if getattr(mid, "has_cross_attention", False):
            return mid(x, temb, encoder_hidden_states=text, attention_mask=None, cross_attention_kwargs=None,
                       encoder_attention_mask=text_bias)
        return mid(x, temb)

    def forward(
        self,
        sample: torch.Tensor,  # (b, c, t, h, w) noisy video (plus any concatenated conditioning channels)
        timestep: torch.Tensor | float | int,  # scalar or (b,)
        encoder_hidden_states: torch.Tensor,  # (b, l, d) text states
        encoder_attention_mask: torch.Tensor | None = None,  # (b, l) bool, True = real token
        class_labels: torch.Tensor | None = None,  # (b,) SSR noise level (IF stage II)
    ) -> torch.Tensor:
        if sample.ndim != 5:
            raise ConfigError(f"STUNet expects a video batch (B, C, T, H, W), got shape {tuple(sample.shape)}")
        b, c, t, h, w = sample.shape
        self.check_num_frames(t)
        if c != self.in_channels:
            raise ConfigError(f"STUNet expects {self.in_channels} input channels, got {c}")
        if encoder_hidden_states.shape[0] != b:
            raise ConfigError(f"text batch {encoder_hidden_states.shape[0]} does not match video batch {b}")
        unet = self.unet
        for block in unet.up_blocks:
            if getattr(block, "s1", None):
                raise ConfigError("FreeU is enabled on the U-Net; the STUNet walk does not implement it")

        cond = self._video_conditioning(sample, timestep, encoder_hidden_states, encoder_attention_mask, class_labels)
        if self.temporal_conditioning is not None:
            cond.temporal = self.temporal_conditioning(cond.time, encoder_hidden_states, encoder_attention_mask, t)
        if unet.config.center_input_sample:
            sample = 2 * sample - 1.0
        # Spatial sizes that are not multiples of the total spatial factor need explicit upsample sizes.
        forward_upsample_size = any(s % (2**unet.num_upsamplers) for s in (h, w))

        frames = t
        x = unet.conv_in(rearrange(sample, "b c t h w -> (b t) c h w"))
        skips = [x]

        # Each pre-trained part runs with the temporal modules after it, through the checkpointing
        # policy (functools.partial: a recomputed part is called again in backward, after the loop moved on).
        run = self.checkpointing.run
        coarsest = len(unet.down_blocks) - 1

        # Down path: pre-trained layers + temporal blocks; spatial then temporal downsampling.
        for level, (block, temporal) in enumerate(zip(unet.down_blocks, self.down_temporal)):
            temb, text, text_bias = cond.at(frames)
            attentions = getattr(block, "attentions", None) or [None] * len(block.resnets)
            for resnet, attn, layer_temporal in zip(block.resnets, attentions, temporal.layers):
                x = run(level, partial(self._spatial_layer, resnet, attn, temb, text, text_bias),
                        partial(layer_temporal, num_frames=frames, emb=cond.temporal_at(frames)), x)
                skips.append(x)
            if block.downsamplers is not None:
                x = run(level, partial(self._spatial_resamplers, block.downsamplers, temb, None), _temporal_resampler(temporal, frames), x)
                if temporal.resample is not None:
                    frames //= 2
                # The downsampled tensor is also the skip of the next level: it carries the new frame count.
                skips.append(x)

        # Coarsest level: mid block, then the stacked temporal attention.
        temb, text, text_bias = cond.at(frames)
        x = run(coarsest, partial(self._mid_block, temb, text, text_bias),
                partial(self.mid_temporal, num_frames=frames, emb=cond.temporal_at(frames)), x)

        # Up path: pre-trained layers (concatenating skips) + temporal blocks; spatial then temporal upsampling.
        for j, (block, temporal) in enumerate(zip(unet.up_blocks, self.up_temporal)):
            level = coarsest - j
            temb, text, text_bias = cond.at(frames)
            level_skips, skips = skips[-len(block.resnets) :], skips[: -len(block.resnets)]
            attentions = getattr(block, "attentions", None) or [None] * len(block.resnets)
            for resnet, attn, layer_temporal in zip(block.resnets, attentions, temporal.layers):
                skip = level_skips.pop()
                if skip.shape[0] != x.shape[0]:
                    raise RuntimeError(f"skip with {skip.shape[0]} folded frames meets features with {x.shape[0]}")
                x = run(level, partial(self._spatial_layer, resnet, attn, temb, text, text_bias, skip=skip),
                        partial(layer_temporal, num_frames=frames, emb=cond.temporal_at(frames)), x)
            if block.upsamplers is not None:
                is_final = j == len(unet.up_blocks) - 1
                upsample_size = skips[-1].shape[2:] if forward_upsample_size and not is_final else None
                x = run(level, partial(self._spatial_resamplers, block.upsamplers, temb, upsample_size),
                        _temporal_resampler(temporal, frames), x)
                if temporal.resample is not None:
                    frames *= 2

        if unet.conv_norm_out is not None:
            x = unet.conv_act(unet.conv_norm_out(x))
        x = unet.conv_out(x)
        return rearrange(x, "(b t) c h w -> b c t h w", b=b)


def _identity(x: torch.Tensor) -> torch.Tensor:
    return x


def _temporal_resampler(temporal: LevelTemporalModules, num_frames: int) -> Callable[[torch.Tensor], torch.Tensor]:
    """The level's temporal down/up-sampler at ``num_frames`` frames, or the identity where it has none."""
    return _identity if temporal.resample is None else partial(temporal.resample, num_frames=num_frames)


def build_fixed_resolution_inflation(unet: UNet2DConditionModel, **kwargs) -> STUNet:
    """The conventional inflation baseline (AnimateDiff / ModelScope style, Sec. 2): temporal conv and
    attention at every level, no temporal resampling, so every layer sees all frames."""
    options = dict(temporal_resampling=False, conv_block_levels="all", attention_levels="all")
    options.update(kwargs)
    return STUNet(unet, **options)
