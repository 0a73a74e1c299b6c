"""Where the parts of a text-to-image model lie: a DeepFloyd IF pipeline folder or separate folders.

A DeepFloyd IF stage downloaded in diffusers format is one folder (``model_index.json``, ``unet/``,
``text_encoder/``, ``tokenizer/``, ``scheduler/``, ...; facts.md Sec. 7). ``resolve_model_parts``
turns ``t2i_path`` (that folder) and the separate ``unet_path`` / ``text_encoder_path`` /
``tokenizer_path`` into the four things a stage loads: the U-Net folder, the text-encoder folder,
the tokenizer folder and the scheduler configuration. A part given by its own path replaces that
part of ``t2i_path`` (``t2i_path`` is not read when the U-Net and the text encoder are both given,
and a warning line says so); nothing is looked up anywhere else, and nothing is downloaded.

Checks made before any weight is read, each failing in one line:

- a path that is not a local folder (a hub id such as ``DeepFloyd/IF-I-XL-v1.0``): download it first;
- a U-Net or text encoder without safetensors weights for the requested ``variant`` (``None``: the
  full-precision files; ``"fp16"``: the ``*.fp16*.safetensors`` files IF ships), single-file or
  sharded with an index json; a folder of pickled ``.bin`` weights only is refused, never loaded;
- a tokenizer folder without tokenizer files (``tokenizer_config.json`` plus a vocabulary:
  ``spiece.model`` or ``tokenizer.json``; a byte-level ByT5 tokenizer needs none);
- a pipeline folder (one with ``model_index.json``, as every download has) without
  ``scheduler/scheduler_config.json``. A stage-0 export of this project records its objective in
  ``unet/lumiere_t2i.json`` instead, which the inflating stage checks; a folder of parts assembled
  by hand (no ``model_index.json``) has its U-Net's schedule taken on trust, like a ``unet_path``.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

from lumiere.errors import InputFileError

log = logging.getLogger("lumiere")

SCHEDULER_CONFIG = Path("scheduler") / "scheduler_config.json"
MODEL_INDEX = "model_index.json"  # what marks a diffusers pipeline folder (a download, or a stage-0 export)
# Files a stage-0 export of this project writes beside its U-Net weights (lumiere.training.stages).
PROJECT_EXPORT_META = "lumiere_t2i.json"
UNET_WEIGHTS = "diffusion_pytorch_model"  # diffusers' weight file stem
TEXT_ENCODER_WEIGHTS = "model"  # transformers' weight file stem
VOCABULARY_FILES = ("spiece.model", "tokenizer.json")
BYTE_LEVEL_TOKENIZERS = ("ByT5Tokenizer",)  # tokenizers that need no vocabulary file
DOWNLOAD_HINT = ("nothing is downloaded at run time: download the model first (for DeepFloyd IF accept its licence, "
                 "then e.g. `huggingface-cli download DeepFloyd/IF-I-XL-v1.0 --local-dir /weights/IF-I-XL-v1.0`) "
                 "and pass that folder")


@dataclass(frozen=True)
class ModelParts:
    """The resolved locations of a text-to-image model's parts."""

    unet_dir: Path
    text_encoder_dir: Path
    tokenizer_dir: Path
    scheduler_config: dict | None  # scheduler/scheduler_config.json of the U-Net's pipeline; None: a stage-0 export
    variant: str | None


def warn_line(message: str) -> None:
    """One warning line in the run's log (rank zero only)."""
    from lightning.pytorch.utilities import rank_zero_only

    rank_zero_only(log.warning)(message)


def require_local_folder(path: str | Path, key: str) -> Path:
    """``path`` as a Path if it is an existing local folder; otherwise one line naming ``key``."""
    folder = Path(path).expanduser()
    if folder.is_dir():
        return folder
    if folder.exists():
        raise InputFileError(f"{key}={path} is a file, not a folder")
    raise InputFileError(f"{key}='{path}' is not a local folder; {DOWNLOAD_HINT}")


def weight_files(folder: Path, stem: str, variant: str | None) -> list[Path]:
    """The safetensors weight files of ``folder`` for ``variant``: one file, or the index json of a
    sharded checkpoint (``<stem>.safetensors.index[.<variant>].json``)."""
    name = f"{stem}.{variant}.safetensors" if variant else f"{stem}.safetensors"
    index = f"{stem}.safetensors.index.{variant}.json" if variant else f"{stem}.safetensors.index.json"
    return [folder / candidate for candidate in (name, index) if (folder / candidate).is_file()]


def _variants_present(folder: Path, stem: str) -> list[str]:
    """The variants whose safetensors weights ``folder`` holds ("full" for the unsuffixed files)."""
    found = set()
    for file in folder.glob(f"{stem}*.safetensors*"):
        rest = file.name[len(stem):]
        if rest in (".safetensors", ".safetensors.index.json") or rest.startswith("-0"):
            found.add("full")
        elif rest.startswith(".safetensors.index.") and rest.endswith(".json"):
            found.add(rest[len(".safetensors.index."):-len(".json")])
        elif rest.startswith("."):
            found.add(rest[1:].split(".")[0].split("-")[0])
    return sorted(found)


def check_weight_files(folder: Path, stem: str, variant: str | None, what: str) -> None:
    """Refuse, in one line, a folder without safetensors weights of ``variant``."""
    if weight_files(folder, stem, variant):
        return
    present = _variants_present(folder, stem)
    wanted = f"variant={variant}" if variant else "full-precision"
    if not present:
        pickled = sorted(p.name for p in folder.glob("*.bin"))
        if pickled:
            raise InputFileError(f"the {what} in {folder} has only pickled weights ({pickled[0]}), which are never "
                                 "loaded: use a download with .safetensors files or convert them")
        raise InputFileError(f"the {what} in {folder} has no {stem}*.safetensors weights")
    hint = ", ".join("model.variant=null" if v == "full" else f"model.variant={v}" for v in present)
    raise InputFileError(f"the {what} in {folder} has no {wanted} safetensors weights (found: {', '.join(present)}); "
                         f"set {hint}")


def has_tokenizer_files(folder: Path) -> bool:
    """Whether ``folder`` holds a loadable tokenizer: its config and a vocabulary (none for byte-level ones)."""
    config = folder / "tokenizer_config.json"
    if not config.is_file():
        return False
    if any((folder / name).is_file() for name in VOCABULARY_FILES):
        return True
    try:
        tokenizer_class = json.loads(config.read_text()).get("tokenizer_class")
    except (OSError, ValueError):
        return False
    return tokenizer_class in BYTE_LEVEL_TOKENIZERS


def require_tokenizer_files(folder: Path, key: str) -> None:
    if not has_tokenizer_files(folder):
        raise InputFileError(f"{key}: {folder} holds no tokenizer (needs tokenizer_config.json and "
                             f"{' or '.join(VOCABULARY_FILES)}); point model.tokenizer_path at the tokenizer/ "
                             "folder that came with the text encoder")


def read_scheduler_config(pipeline: Path) -> dict:
    path = pipeline / SCHEDULER_CONFIG
    if not path.is_file():
        raise InputFileError(f"{pipeline} has no {SCHEDULER_CONFIG}: the U-Net's noise schedule is unknown; "
                             "use the complete pipeline folder as downloaded")
    try:
        config = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise InputFileError(f"cannot read {path}: {str(error).splitlines()[0]}") from None
    if not isinstance(config, dict):
        raise InputFileError(f"{path} is not a JSON object")
    return config


def _tokenizer_dir(text_encoder_dir: Path, pipeline: Path | None, key: str) -> Path:
    """The tokenizer of a text encoder given without tokenizer_path: in its own folder (this project's
    exports keep them together), else the pipeline's ``tokenizer/``."""
    if has_tokenizer_files(text_encoder_dir):
        return text_encoder_dir
    candidates = [pipeline / "tokenizer"] if pipeline is not None else []
    if text_encoder_dir.name == "text_encoder":  # <pipeline>/text_encoder given on its own
        candidates.append(text_encoder_dir.parent / "tokenizer")
    for candidate in candidates:
        if has_tokenizer_files(candidate):
            return candidate
    where = " or ".join(str(c) for c in [text_encoder_dir, *candidates])
    raise InputFileError(f"{key}: no tokenizer in {where} (needs tokenizer_config.json and "
                         f"{' or '.join(VOCABULARY_FILES)}); set model.tokenizer_path")


def resolve_model_parts(
    t2i_path: str | Path | None = None,
    *,
    unet_path: str | Path | None = None,
    text_encoder_path: str | Path | None = None,
    tokenizer_path: str | Path | None = None,
    variant: str | None = None,
    check_text_encoder_weights: bool = True,
) -> ModelParts:
    """Resolve and check the U-Net, text-encoder and tokenizer folders and the scheduler configuration.

    ``t2i_path``: a pipeline folder (``unet/``, ``text_encoder/``, ``tokenizer/``, ``scheduler/``).
    Each of ``unet_path`` / ``text_encoder_path`` / ``tokenizer_path`` replaces that part of it;
    without ``t2i_path`` the U-Net and text encoder must both be given. ``variant``: the weight
    variant to load (e.g. "fp16"), from every weight folder."""
    if unet_path is not None and text_encoder_path is not None:
        if t2i_path is not None:
            warn_line(f"model.t2i_path={t2i_path} is not used: model.unet_path and model.text_encoder_path are set "
                      "(set them to null to load the whole pipeline folder)")
        pipeline = None
    elif t2i_path is None and unet_path is None and text_encoder_path is None:
        raise InputFileError("model.t2i_path is not set: give model.t2i_path (a pipeline folder) or both "
                             f"model.unet_path and model.text_encoder_path; {DOWNLOAD_HINT}")
    elif t2i_path is None:
        missing = "model.unet_path" if unet_path is None else "model.text_encoder_path"
        raise InputFileError(f"{missing} is not set: give model.t2i_path (a pipeline folder) or both "
                             "model.unet_path and model.text_encoder_path")
    else:
        pipeline = require_local_folder(t2i_path, "model.t2i_path")

    if unet_path is not None:
        unet_dir = require_local_folder(unet_path, "model.unet_path")
        unet_pipeline = unet_dir.parent if (unet_dir.parent / SCHEDULER_CONFIG).is_file() else None
    else:
        unet_dir, unet_pipeline = pipeline / "unet", pipeline
    if not (unet_dir / "config.json").is_file():
        raise InputFileError(f"{unet_dir} is not a diffusers U-Net folder (no config.json)")
    check_weight_files(unet_dir, UNET_WEIGHTS, variant, "U-Net")

    if text_encoder_path is not None:
        text_encoder_dir = require_local_folder(text_encoder_path, "model.text_encoder_path")
        if not (text_encoder_dir / "config.json").is_file() and (text_encoder_dir / "text_encoder" / "config.json").is_file():
            text_encoder_dir = text_encoder_dir / "text_encoder"  # a pipeline folder given as the text encoder
    else:
        text_encoder_dir = pipeline / "text_encoder"
    if not (text_encoder_dir / "config.json").is_file():
        raise InputFileError(f"{text_encoder_dir} holds no text encoder (no config.json)")
    if check_text_encoder_weights:
        check_weight_files(text_encoder_dir, TEXT_ENCODER_WEIGHTS, variant, "text encoder")

    if tokenizer_path is not None:
        tokenizer_dir = require_local_folder(tokenizer_path, "model.tokenizer_path")
        require_tokenizer_files(tokenizer_dir, "model.tokenizer_path")
    else:
        tokenizer_dir = _tokenizer_dir(text_encoder_dir, pipeline if text_encoder_path is None else None,
                                       "model.text_encoder_path" if text_encoder_path is not None else "model.t2i_path")

    if unet_pipeline is not None and (unet_pipeline / SCHEDULER_CONFIG).is_file():
        scheduler_config = read_scheduler_config(unet_pipeline)
    elif unet_path is None and (pipeline / MODEL_INDEX).is_file() and not (unet_dir / PROJECT_EXPORT_META).is_file():
        scheduler_config = read_scheduler_config(pipeline)  # raises: a downloaded pipeline without its schedule
    else:
        # A stage-0 export (its objective is in lumiere_t2i.json), or folders assembled by hand without a
        # model_index.json: their U-Net's schedule is taken on trust, as a U-Net given by unet_path is.
        scheduler_config = None
    return ModelParts(unet_dir, text_encoder_dir, tokenizer_dir, scheduler_config, variant)
