"""Inflated 3D ConvNet (I3D, Carreira & Zisserman 2017), the FVD feature extractor (paper App. D.2).

Lumiere's Table 1 FVD follows Unterthiner et al. (2018): the Kinetics-400 I3D of TF-Hub
(``i3d-kinetics-400``) applied to 16 frames at 224x224 in [-1, 1], its 400 logits averaged over
time used as the embedding. This module is that network in PyTorch, written from the published
architecture (DeepMind ``kinetics-i3d``):

- every ``Unit3D`` is conv (no bias) -> BatchNorm (eps 1e-3, no learned scale) -> ReLU;
- convolutions and max-pools use TF "SAME" padding, computed from the input size at run time
  (TF pads the extra pixel after, not before, when the total padding is odd);
- max-pools pad with -inf, so padded positions never win (TF's SAME max-pool ignores them);
- the head is AvgPool (2, 7, 7) VALID -> 1x1x1 conv with bias -> mean over the remaining time.

The state-dict layout is the common PyTorch one (``Conv3d_1a_7x7.conv3d.weight``,
``Conv3d_1a_7x7.bn.running_mean``, ``Mixed_5b.b1b.conv3d.weight``, ``logits.conv3d.bias``);
``lumiere.metrics.i3d_weights`` converts the TF-Hub weights into it.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from lumiere.errors import ConfigError, InputFileError

# Tensor dimension legend: b batch, c channels, t time, h height, w width.

BN_EPS = 1e-3  # Sonnet v1 / TF-Hub value; 1e-5 (PyTorch default) moves FVD by about +0.4%.


def tf_same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TF "SAME" padding (before, after) along one axis: output size ceil(size / stride)."""
    out = math.ceil(size / stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


def _pad_same(x: torch.Tensor, kernel: tuple[int, int, int], stride: tuple[int, int, int], value: float) -> torch.Tensor:
    """Pad a (b, c, t, h, w) tensor the way TF "SAME" does for the given kernel and stride."""
    pads: list[int] = []
    # F.pad lists the last dimension first: (w_before, w_after, h_before, h_after, t_before, t_after).
    for size, k, s in zip(reversed(x.shape[2:]), reversed(kernel), reversed(stride)):
        pads.extend(tf_same_padding(int(size), k, s))
    if not any(pads):
        return x
    return F.pad(x, pads, value=value)


class Unit3D(nn.Module):
    """Conv3d with TF-SAME padding, optional BatchNorm (eps 1e-3) and ReLU."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel: tuple[int, int, int] = (1, 1, 1),
        stride: tuple[int, int, int] = (1, 1, 1),
        use_batch_norm: bool = True,
        use_bias: bool = False,
        activation: bool = True,
    ):
        super().__init__()
        self.kernel, self.stride, self.activation = tuple(kernel), tuple(stride), activation
        self.conv3d = nn.Conv3d(in_channels, out_channels, kernel, stride, padding=0, bias=use_bias)
        # TF-Hub's BatchNorm has no learned scale: the converter writes ones into bn.weight.
        self.bn = nn.BatchNorm3d(out_channels, eps=BN_EPS, momentum=0.001) if use_batch_norm else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv3d(_pad_same(x, self.kernel, self.stride, value=0.0))
        if self.bn is not None:
            x = self.bn(x)
        return F.relu(x) if self.activation else x


class MaxPool3dSame(nn.Module):
    """Max-pool with TF-SAME padding; padded positions are -inf so they never win."""

    def __init__(self, kernel: tuple[int, int, int], stride: tuple[int, int, int]):
        super().__init__()
        self.kernel, self.stride = tuple(kernel), tuple(stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.max_pool3d(_pad_same(x, self.kernel, self.stride, value=float("-inf")), self.kernel, self.stride)


class InceptionModule(nn.Module):
    """Four parallel branches concatenated on channels (1x1 | 1x1-3x3 | 1x1-3x3 | pool-1x1)."""

    def __init__(self, in_channels: int, widths: tuple[int, int, int, int, int, int]):
        super().__init__()
        b0, b1a, b1b, b2a, b2b, b3b = widths
        self.b0 = Unit3D(in_channels, b0)
        self.b1a = Unit3D(in_channels, b1a)
        self.b1b = Unit3D(b1a, b1b, kernel=(3, 3, 3))
        self.b2a = Unit3D(in_channels, b2a)
        self.b2b = Unit3D(b2a, b2b, kernel=(3, 3, 3))  # 3x3x3 as in the released model (the paper says 5x5)
        self.b3a = MaxPool3dSame((3, 3, 3), (1, 1, 1))
        self.b3b = Unit3D(in_channels, b3b)
        self.out_channels = b0 + b1b + b2b + b3b

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.b0(x), self.b1b(self.b1a(x)), self.b2b(self.b2a(x)), self.b3b(self.b3a(x))], dim=1)


# (name, output widths of b0, b1a, b1b, b2a, b2b, b3b) in the order of the network.
INCEPTION_WIDTHS = {
    "Mixed_3b": (64, 96, 128, 16, 32, 32),
    "Mixed_3c": (128, 128, 192, 32, 96, 64),
    "Mixed_4b": (192, 96, 208, 16, 48, 64),
    "Mixed_4c": (160, 112, 224, 24, 64, 64),
    "Mixed_4d": (128, 128, 256, 24, 64, 64),
    "Mixed_4e": (112, 144, 288, 32, 64, 64),
    "Mixed_4f": (256, 160, 320, 32, 128, 128),
    "Mixed_5b": (256, 160, 320, 32, 128, 128),
    "Mixed_5c": (384, 192, 384, 48, 128, 128),
}


class I3D(nn.Module):
    """InceptionI3d for Kinetics-400: (B, 3, T, 224, 224) in [-1, 1] -> time-averaged logits (B, 400).

    ``I3D.from_pretrained()`` loads the converted TF-Hub weights (converting them on first use);
    a bare ``I3D()`` is randomly initialised (shape tests, benchmarks).
    """

    feature_dim = 400

    def __init__(self, num_classes: int = 400, in_channels: int = 3):
        super().__init__()
        self.feature_dim = num_classes
        self.Conv3d_1a_7x7 = Unit3D(in_channels, 64, kernel=(7, 7, 7), stride=(2, 2, 2))
        self.MaxPool3d_2a_3x3 = MaxPool3dSame((1, 3, 3), (1, 2, 2))
        self.Conv3d_2b_1x1 = Unit3D(64, 64)
        self.Conv3d_2c_3x3 = Unit3D(64, 192, kernel=(3, 3, 3))
        self.MaxPool3d_3a_3x3 = MaxPool3dSame((1, 3, 3), (1, 2, 2))
        channels = 192
        for name in ("Mixed_3b", "Mixed_3c"):
            setattr(self, name, InceptionModule(channels, INCEPTION_WIDTHS[name]))
            channels = getattr(self, name).out_channels
        self.MaxPool3d_4a_3x3 = MaxPool3dSame((3, 3, 3), (2, 2, 2))
        for name in ("Mixed_4b", "Mixed_4c", "Mixed_4d", "Mixed_4e", "Mixed_4f"):
            setattr(self, name, InceptionModule(channels, INCEPTION_WIDTHS[name]))
            channels = getattr(self, name).out_channels
        self.MaxPool3d_5a_2x2 = MaxPool3dSame((2, 2, 2), (2, 2, 2))
        for name in ("Mixed_5b", "Mixed_5c"):
            setattr(self, name, InceptionModule(channels, INCEPTION_WIDTHS[name]))
            channels = getattr(self, name).out_channels
        self.logits = Unit3D(channels, num_classes, use_batch_norm=False, use_bias=True, activation=False)

    _BACKBONE = (
        "Conv3d_1a_7x7", "MaxPool3d_2a_3x3", "Conv3d_2b_1x1", "Conv3d_2c_3x3", "MaxPool3d_3a_3x3",
        "Mixed_3b", "Mixed_3c", "MaxPool3d_4a_3x3", "Mixed_4b", "Mixed_4c", "Mixed_4d", "Mixed_4e",
        "Mixed_4f", "MaxPool3d_5a_2x2", "Mixed_5b", "Mixed_5c",
    )

    def forward(self, videos: torch.Tensor) -> torch.Tensor:
        """Time-averaged Kinetics-400 logits of ``videos`` (b, 3, t, 224, 224) in [-1, 1]."""
        if videos.ndim != 5 or videos.shape[1] != 3:
            raise ConfigError(f"I3D expects videos of shape (B, 3, T, H, W), got {tuple(videos.shape)}")
        x = videos
        for name in self._BACKBONE:
            x = getattr(self, name)(x)
        if x.shape[2] < 2 or x.shape[3] < 7 or x.shape[4] < 7:
            raise ConfigError(
                f"I3D input {tuple(videos.shape[2:])} (T, H, W) is too small: it needs at least 9 frames "
                "at 224x224 (use lumiere.metrics.preprocess_for_fvd)"
            )
        x = F.avg_pool3d(x, kernel_size=(2, 7, 7), stride=1)  # VALID, as in TF-Hub
        if x.shape[3] != 1 or x.shape[4] != 1:
            raise ConfigError(f"I3D expects 224x224 frames, got {tuple(videos.shape[3:])}")
        logits = self.logits(x)[:, :, :, 0, 0]  # (b, classes, t')
        return logits.mean(dim=2)

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike | None = None, map_location: str | torch.device = "cpu") -> I3D:
        """The Kinetics-400 I3D in eval mode with frozen weights.

        ``path=None`` uses the default converted file (``$LUMIERE_CACHE/i3d/i3d_kinetics400.safetensors``,
        else ``~/.cache/lumiere/i3d/...``), fetching and converting the weights first if it is missing.
        """
        from lumiere.metrics.i3d_weights import ensure_i3d_weights

        if path is None:
            weights_path = ensure_i3d_weights()
        else:
            weights_path = Path(path).expanduser()
            if weights_path.is_dir():
                raise InputFileError(f"I3D weights path {weights_path} is a directory; give the converted .safetensors file")
            if not weights_path.is_file():
                raise InputFileError(
                    f"I3D weights not found at {weights_path} (create them with `python -m lumiere.metrics.i3d_weights --out {weights_path}`)"
                )
        model = cls()
        state = read_i3d_safetensors(weights_path, device=str(map_location))
        check_i3d_state_dict(model, state, weights_path)
        model.load_state_dict(state, strict=False)
        model.to(map_location).eval().requires_grad_(False)
        return model


def read_i3d_safetensors(path: str | os.PathLike, device: str = "cpu") -> dict[str, torch.Tensor]:
    """The tensors of a safetensors file; a one-line :class:`InputFileError` for anything else
    (a pickle or text file named .safetensors, a truncated download, an unreadable file)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(str(path), device=device)
    except (SafetensorError, OSError, ValueError) as error:
        detail = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise InputFileError(f"{path} is not a safetensors file of I3D weights ({detail}); "
                             "convert them with `python -m lumiere.metrics.i3d_weights`") from None


def check_i3d_state_dict(model: nn.Module, state: dict[str, torch.Tensor], source: str | os.PathLike) -> None:
    """Refuse, naming the tensor, a state dict that does not fit ``model``: missing or unexpected
    names, other shapes, non-finite values, or a convolution whose weights are all one value
    (zeros from a failed conversion would give every video the same features and an FVD of 0)."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in state and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in state if k not in expected]
    if missing or unexpected:
        raise InputFileError(f"{source} is not an InceptionI3d state dict (missing {missing[:3]}, unexpected {unexpected[:3]})")
    for name, tensor in state.items():
        if tuple(tensor.shape) != tuple(expected[name].shape):
            raise InputFileError(f"{source}: {name} has shape {tuple(tensor.shape)}, the I3D needs {tuple(expected[name].shape)}")
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise InputFileError(f"{source}: {name} holds NaN or infinite values")
        if name.endswith("conv3d.weight") and tensor.numel() > 1 and bool((tensor == tensor.reshape(-1)[0]).all()):
            raise InputFileError(f"{source}: {name} is constant ({float(tensor.reshape(-1)[0]):g} everywhere); "
                                 "these are not trained I3D weights")
