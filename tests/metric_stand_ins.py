"""Cheap stand-ins for the metric networks in evaluation tests (the real ones are too slow at 224 px)."""

from __future__ import annotations

import torch
from torch import nn


class PooledColour(nn.Module):
    """Stand-in for the I3D: per-channel mean and spread of the preprocessed clip."""

    feature_dim = 6

    def forward(self, videos):
        return torch.cat([videos.mean(dim=(2, 3, 4)), videos.std(dim=(2, 3, 4))], dim=1)


class TopColour(nn.Module):
    """Stand-in for the C3D: three 'classes' from the clip's mean colour (``sharpness`` scales the logits)."""

    def __init__(self, sharpness: float = 1.0):
        super().__init__()
        self.sharpness = sharpness

    def forward(self, videos):
        return (self.sharpness * videos.mean(dim=(2, 3, 4))).softmax(dim=-1)
