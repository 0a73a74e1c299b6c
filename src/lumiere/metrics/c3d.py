"""C3D fine-tuned on UCF101, the classifier of the video Inception Score (TGANv2; paper App. D.2).

Paper App. D.2: "To compute Inception Score (IS), the same generated videos are used to extract
C3D embedding (Saito et al., 2020)". The weights are the ones released with the TGANv2 code
(``conv3d_deepnetA_ucf.npz``, converted from the Caffe C3D ``c3d_ucf101_finetune_whole_iter_20000``,
plus the clip mean ``mean2.npz``). They are not on any package registry, so the user supplies the
two files; they are read with ``np.load(allow_pickle=False)`` (no Chainer needed).

Layout (Chainer names, which are the npz keys ``<layer>/W`` and ``<layer>/b``):
    conv1a 3->64, pool (1,2,2), conv2a 64->128, pool 2, conv3a/b 128->256->256, pool 2,
    conv4a/b 256->512->512, pool 2, conv5a/b 512->512, pool 2 (ceil mode), fc6 8192->4096,
    fc7 4096->4096, fc8 4096->101, softmax. Convolutions are 3x3x3 with padding 1;
    ConvolutionND W is (out, in, kt, kh, kw), Linear W is (out, in).

Input preprocessing (TGANv2): the first 16 frames in [-1, 1] are resized to 112x112 (bilinear,
corners aligned, as Chainer's ``resize_images``), channels go RGB -> BGR, values become
``128 x + 128``, and the mean clip cropped to [8:120, 8:120] is subtracted.
"""

from __future__ import annotations

import os
import zipfile
import zlib
from pathlib import Path

import einops
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from lumiere.errors import ConfigError, InputFileError

# Tensor dimension legend: b batch, c channels, t time, h height, w width.

C3D_NUM_FRAMES = 16
C3D_SIZE = 112
WHERE_TO_GET = (
    "download conv3d_deepnetA_ucf.npz and mean2.npz, released with the TGANv2 code "
    "(github.com/pfnet-research/tgan2, see its README), and pass their paths"
)

CONV_LAYERS = (  # (name, in, out, pool after it: None or kernel)
    ("conv1a", 3, 64, (1, 2, 2)),
    ("conv2a", 64, 128, (2, 2, 2)),
    ("conv3a", 128, 256, None),
    ("conv3b", 256, 256, (2, 2, 2)),
    ("conv4a", 256, 512, None),
    ("conv4b", 512, 512, (2, 2, 2)),
    ("conv5a", 512, 512, None),
    ("conv5b", 512, 512, (2, 2, 2)),
)
FC_LAYERS = (("fc6", 8192, 4096), ("fc7", 4096, 4096), ("fc8", 4096, 101))


def c3d_npz_shapes(num_classes: int = 101) -> dict[str, tuple[int, ...]]:
    """Every key of ``conv3d_deepnetA_ucf.npz`` with its array shape (Chainer layout)."""
    shapes: dict[str, tuple[int, ...]] = {}
    for name, cin, cout, _ in CONV_LAYERS:
        shapes[f"{name}/W"], shapes[f"{name}/b"] = (cout, cin, 3, 3, 3), (cout,)
    for name, fin, fout in FC_LAYERS:
        fout = num_classes if name == "fc8" else fout
        shapes[f"{name}/W"], shapes[f"{name}/b"] = (fout, fin), (fout,)
    return shapes


class C3D(nn.Module):
    """C3D (UCF101 fine-tuned): videos (B, 3, T>=16, H, W) in [-1, 1] -> class probabilities (B, 101)."""

    def __init__(self, num_classes: int = 101, mean_clip: torch.Tensor | None = None):
        super().__init__()
        self.num_classes = num_classes
        for name, cin, cout, _ in CONV_LAYERS:
            setattr(self, name, nn.Conv3d(cin, cout, kernel_size=3, padding=1))
        for name, fin, fout in FC_LAYERS:
            setattr(self, name, nn.Linear(fin, num_classes if name == "fc8" else fout))
        # BGR mean clip (3, 16, 112, 112), already cropped; zeros when none is given (tests).
        mean_clip = torch.zeros(3, C3D_NUM_FRAMES, C3D_SIZE, C3D_SIZE) if mean_clip is None else mean_clip
        self.register_buffer("mean_clip", mean_clip.to(torch.float32))

    def preprocess(self, videos: torch.Tensor) -> torch.Tensor:
        """[-1, 1] RGB -> resized BGR in [0, 256] minus the mean clip (TGANv2's ``pre``)."""
        if videos.ndim != 5 or videos.shape[1] != 3:
            raise ConfigError(f"C3D expects videos of shape (B, 3, T, H, W), got {tuple(videos.shape)}")
        if videos.shape[2] < C3D_NUM_FRAMES:
            raise ConfigError(f"C3D uses {C3D_NUM_FRAMES} frames; the videos have {videos.shape[2]}")
        x = videos[:, :, :C3D_NUM_FRAMES].to(self.mean_clip.dtype)
        batch = x.shape[0]
        x = einops.rearrange(x, "b c t h w -> (b t) c h w")
        x = F.interpolate(x, size=(C3D_SIZE, C3D_SIZE), mode="bilinear", align_corners=True)
        x = einops.rearrange(x, "(b t) c h w -> b c t h w", b=batch)
        x = x.flip(dims=(1,)) * 128.0 + 128.0  # RGB -> BGR, [-1, 1] -> [0, 256]
        return x - self.mean_clip

    def logits(self, videos: torch.Tensor) -> torch.Tensor:
        x = self.preprocess(videos)
        for name, _, _, pool in CONV_LAYERS:
            x = F.relu(getattr(self, name)(x))
            if pool is not None:
                # Chainer's max_pooling_nd covers the whole input (ceil mode): 7x7 -> 4x4 at pool5.
                x = F.max_pool3d(x, kernel_size=pool, stride=pool, ceil_mode=True)
        x = x.flatten(1)  # (b, 512 * 1 * 4 * 4) in (c, t, h, w) order, as Chainer's reshape
        x = F.relu(self.fc6(x))
        x = F.relu(self.fc7(x))  # dropout is off at test time
        return self.fc8(x)

    def forward(self, videos: torch.Tensor) -> torch.Tensor:
        return self.logits(videos).softmax(dim=-1)

    @classmethod
    def from_tgan2_npz(cls, weights: str | os.PathLike | None, mean: str | os.PathLike | None) -> C3D:
        """Load ``conv3d_deepnetA_ucf.npz`` and ``mean2.npz`` (TGANv2 release); eval mode, frozen."""
        for label, path in (("C3D weights (conv3d_deepnetA_ucf.npz)", weights), ("C3D mean (mean2.npz)", mean)):
            if path is not None and Path(path).expanduser().is_dir():
                raise InputFileError(f"{label} path {path} is a directory; give the npz file: {WHERE_TO_GET}")
            if path is None or not Path(path).expanduser().is_file():
                raise InputFileError(f"{label} not found at {path}: {WHERE_TO_GET}")
        weights, mean = Path(weights).expanduser(), Path(mean).expanduser()
        expected = c3d_npz_shapes()
        arrays = _strip_prefix(read_npz_arrays(weights, "C3D weights"), expected)
        check_c3d_arrays(arrays, expected, weights)
        model = cls(mean_clip=load_mean_clip(mean))
        state = {}
        for key, array in arrays.items():
            if key in expected:
                layer, leaf = key.split("/")
                state[f"{layer}.{'weight' if leaf == 'W' else 'bias'}"] = torch.from_numpy(np.asarray(array, dtype=np.float32))
        model.load_state_dict({**state, "mean_clip": model.mean_clip}, strict=True)
        return model.eval().requires_grad_(False)


def _strip_prefix(arrays: dict[str, np.ndarray], expected: dict) -> dict[str, np.ndarray]:
    """Accept keys saved under a parent chain (``predictor/conv1a/W``) by keeping the last two parts."""
    if set(expected) <= set(arrays):
        return arrays
    return {"/".join(key.split("/")[-2:]): value for key, value in arrays.items()}


def read_npz_arrays(path: str | os.PathLike, what: str) -> dict[str, np.ndarray]:
    """Every array of an npz, read with ``allow_pickle=False``; a one-line :class:`InputFileError`
    for a file that is not an npz, is damaged, or holds an object (pickled) array, which could run
    code when unpickled and is refused whatever it claims to be."""
    try:
        loaded = np.load(path, allow_pickle=False)
    except ValueError:  # numpy's "pickled (object) data" for a pickle or a text file
        raise InputFileError(f"{what} {path} is not an npz archive of plain arrays (it is a pickle or another "
                             "kind of file); refused: only npz files are read, never pickles") from None
    except (OSError, EOFError, zipfile.BadZipFile) as error:
        raise InputFileError(f"{what} {path} is not a readable npz archive: {_first_line(error)}") from None
    if not isinstance(loaded, np.lib.npyio.NpzFile):
        raise InputFileError(f"{what} {path} is a single .npy array, not an npz archive of named arrays")
    arrays: dict[str, np.ndarray] = {}
    with loaded as data:
        for key in data.files:
            try:
                arrays[key] = data[key]
            except ValueError as error:
                if "allow_pickle" in str(error) or "Object arrays" in str(error):
                    raise InputFileError(f"{what} {path}: array '{key}' holds pickled Python objects; refused "
                                         "(only plain numeric arrays are read, a pickle could run code)") from None
                raise InputFileError(f"{what} {path}: array '{key}' cannot be read ({_first_line(error)})") from None
            except (OSError, EOFError, zipfile.BadZipFile, zlib.error) as error:  # a damaged member
                raise InputFileError(f"{what} {path}: array '{key}' cannot be read ({_first_line(error)})") from None
    return arrays


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def check_c3d_arrays(arrays: dict[str, np.ndarray], expected: dict[str, tuple[int, ...]], source: str | os.PathLike) -> None:
    """Refuse, naming the array, weights that are not the TGANv2 C3D: missing layers, other shapes,
    non-numeric or non-finite values, or a layer whose weights are all one value (all-zero weights
    give every video the uniform distribution and an IS of exactly 1, silently)."""
    for key, shape in expected.items():
        if key not in arrays:
            continue
        array = arrays[key]
        if tuple(array.shape) != shape:
            raise InputFileError(f"{source}: array '{key}' has shape {tuple(array.shape)}, the C3D needs {shape}")
        if not (np.issubdtype(array.dtype, np.floating) or np.issubdtype(array.dtype, np.integer)):
            raise InputFileError(f"{source}: array '{key}' has dtype {array.dtype}, not a number type")
        if not np.isfinite(array).all():
            raise InputFileError(f"{source}: array '{key}' holds NaN or infinite values")
        if key.endswith("/W") and array.size > 1 and (array == array.flat[0]).all():
            raise InputFileError(f"{source}: array '{key}' is constant ({float(array.flat[0]):g} everywhere); "
                                 f"these are not trained C3D weights: {WHERE_TO_GET}")
    missing = sorted(set(expected) - set(arrays))
    if missing:
        raise InputFileError(f"{source} is not the TGANv2 C3D: missing {missing[:4]}{' ...' if len(missing) > 4 else ''} "
                             f"(it holds {sorted(arrays)[:4]})")


def load_mean_clip(path: str | os.PathLike) -> torch.Tensor:
    """The BGR mean clip of ``mean2.npz`` (key ``mean``, (3, 16, >=120, >=120)) cropped to [8:120, 8:120]."""
    data = read_npz_arrays(path, "C3D mean")
    key = "mean" if "mean" in data else (next(iter(data)) if len(data) == 1 else None)
    if key is None:
        raise InputFileError(f"{path} holds no 'mean' array (keys {sorted(data)[:6]})")
    try:
        mean = np.asarray(data[key], dtype=np.float32)
    except (TypeError, ValueError) as error:
        raise InputFileError(f"{path}: array '{key}' is not numeric ({error})") from None
    if not np.isfinite(mean).all():
        raise InputFileError(f"{path}: array '{key}' holds NaN or infinite values")
    while mean.ndim > 4 and mean.shape[0] == 1:
        mean = mean[0]
    if mean.ndim != 4 or mean.shape[0] != 3 or mean.shape[1] != C3D_NUM_FRAMES or min(mean.shape[2:]) < 120:
        raise InputFileError(f"{path}: expected a (3, 16, H>=120, W>=120) mean clip, got {mean.shape}")
    return torch.from_numpy(np.ascontiguousarray(mean[:, :, 8:120, 8:120]))
