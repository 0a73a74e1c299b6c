"""Containers of the STUNet's temporal modules, and the feature layout they run in (issue 21, item 7).

The pre-trained 2D layers work on frame-folded maps ``((b t), c, h, w)``; temporal attention works
on every pixel's frames as a sequence, ``((b h w), t, c)``. Converting is a full copy of the
features each way. A :class:`TemporalStack` (the temporal modules after one pre-trained layer, or
the stacked attention after the mid block, Fig. 4c) converts once when it enters a run of
consecutive attention blocks and once when it leaves it, instead of around every block: the
stacked attention after the mid block does 2 conversions instead of 2 per block. The arithmetic is
the same, block by block.

``compile_temporal_modules`` wraps every stack and temporal resampler in ``torch.compile`` (in
place: parameter names and checkpoints are unchanged). Not in the paper and off by default: it is
a speed option for GPUs, where these small, memory-bound blocks gain most from fused kernels, and
compiling costs start-up time and needs a working compiler toolchain.

Dimension legend (einops): b batch, t frames (at the current level), c channels, h height, w width.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from lumiere.models.temporal import TemporalAttentionBlock, frames_to_tokens, tokens_to_frames


def _takes_tokens(block: nn.Module) -> bool:
    """Whether a block runs on tokens ((b h w), t, c): unmodulated temporal attention (the paper's)."""
    return isinstance(block, TemporalAttentionBlock) and block.modulation is None


class TemporalStack(nn.Module):
    """The temporal modules that follow one pre-trained spatial layer (an inflation block of Fig. 4b/c).

    Takes and returns frame-folded maps ((b t), c, h, w); a run of consecutive attention blocks
    inside shares one conversion to tokens and one back."""

    def __init__(self, blocks: Sequence[nn.Module]):
        super().__init__()
        self.blocks = nn.ModuleList(blocks)

    def forward(self, x: torch.Tensor, num_frames: int, emb: torch.Tensor | None = None) -> torch.Tensor:
        height, width = x.shape[-2:]
        tokens = None  # the features while in the token layout, else None (then x holds them)
        for block in self.blocks:
            if _takes_tokens(block):
                if tokens is None:
                    tokens = frames_to_tokens(x, num_frames)
                tokens = block(tokens, num_frames, emb)
            else:
                if tokens is not None:
                    x, tokens = tokens_to_frames(tokens, height, width), None
                x = block(x, num_frames, emb)
        return x if tokens is None else tokens_to_frames(tokens, height, width)


class LevelTemporalModules(nn.Module):
    """Temporal modules of one U-Net block: one TemporalStack per pre-trained layer, plus an optional temporal resampler."""

    def __init__(self, layers: Sequence[TemporalStack], resample: nn.Module | None):
        super().__init__()
        self.layers = nn.ModuleList(layers)
        self.resample = resample


def compile_temporal_modules(levels: Sequence[LevelTemporalModules], mid: TemporalStack) -> None:
    """``torch.compile`` every temporal stack and resampler in place (``nn.Module.compile``: same state-dict keys)."""
    for level in levels:
        for stack in level.layers:
            if len(stack.blocks):
                stack.compile(dynamic=False)
        if level.resample is not None:
            level.resample.compile(dynamic=False)
    if len(mid.blocks):
        mid.compile(dynamic=False)
