"""The generate task that ``generate.py`` runs: sample clips for prompts from a base checkpoint, and
upsample them with an SSR checkpoint when one is given (the cascade).

Every option is checked before a checkpoint is loaded, and every checkpoint (its stage, its frozen
weights, the sizes of the cascade) before anything is sampled: a bad value ends the run with one
``error: ...`` line (exit code 2, by ``lumiere.tasks.runner.run_task``). Each batch is written to a
temporary folder inside ``out_dir`` and renamed into place (``base/batch_*``, ``ssr/batch_*``) only
when all its files are complete: a failed write leaves the batches before it, never half of one.

The option checks at the top of this module are shared by the generate, apps and evaluate tasks.
"""

from __future__ import annotations

import logging
import math
import os
import shutil
import tempfile
from collections.abc import Mapping
from typing import Any

import torch
from omegaconf import DictConfig, ListConfig, OmegaConf

from lumiere.errors import ConfigError, InputFileError

log = logging.getLogger("lumiere")

# The stages that sample text-to-video clips (the conditional one generates from text alone too).
BASE_STAGES = ("TextToVideoModule", "ConditionalVideoModule")
SSR_STAGES = ("SuperResolutionModule",)
# Frame rate of written clips when neither `fps` nor the checkpoint's training data says one.
DEFAULT_FPS = 8.0
# `ssr.*` options: the keyword arguments of SuperResolutionModule.upsample a user may set.
SSR_OPTIONS = ("window", "overlap", "num_inference_steps", "guidance_scale", "noise_level", "non_overlapping",
               "scheduler", "window_batch_size")
# Classifier-free guidance (lumiere.diffusion.guidance): uncond + scale * (cond - uncond).
GUIDANCE_RANGE = ">= 0 (0: ignore the prompt, 1: no guidance, > 1: follow the prompt more)"


# ---------------------------------------------------------------------------- option checks (shared)
def _placeholder(key: str) -> str:
    return "PATH" if key.rsplit(".", 1)[-1].endswith(("_path", "_dir", "_file", "_root", "path", "dir")) else "VALUE"


def check_no_missing(cfg: DictConfig, skip: tuple[str, ...] = ()) -> None:
    """Raise a one-line ConfigError for the first mandatory value (``???``) left unset, e.g. "set ckpt_path=PATH"."""

    def walk(node, prefix: str):
        for key in (range(len(node)) if isinstance(node, ListConfig) else list(node.keys())):
            name = f"{prefix}{key}" if isinstance(node, DictConfig) else f"{prefix[:-1]}[{key}]"
            if OmegaConf.is_missing(node, key):
                if name not in skip:
                    raise ConfigError(f"{name} is not set: set {name}={_placeholder(name)}")
                continue
            child = node._get_node(key)
            if isinstance(child, (DictConfig, ListConfig)) and not child._is_missing() and not child._is_none() \
                    and not child._is_interpolation():
                walk(child, f"{name}.")

    walk(cfg, "")


def required(cfg: DictConfig, key: str, needed_by: str | None = None) -> Any:
    """The value of `key`; a ConfigError saying "set key=PATH" when it is ``???``, null or empty."""
    value = None if OmegaConf.is_missing(cfg, key) else cfg.get(key)
    if value is None or (isinstance(value, str) and not value.strip()):
        reason = f"{needed_by} needs {key}" if needed_by else f"{key} is not set"
        raise ConfigError(f"{reason}: set {key}={_placeholder(key)}")
    return value


def _with_null(requirement: str, null: str | None) -> str:
    """"a number >= 0 (0: ...)" + null -> "a number >= 0 (0: ...; null: ...)"."""
    if not null:
        return requirement
    if requirement.endswith(")"):
        return f"{requirement[:-1]}; null: {null})"
    return f"{requirement} (null: {null})"


def _as_number(value: Any, name: str, requirement: str) -> float:
    """A finite float from an int, float or numeric string; ConfigError naming `requirement` otherwise."""
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise ConfigError(f"{name} must be {requirement}, got {value!r}")
    try:
        number = float(value)
    except ValueError:
        raise ConfigError(f"{name} must be {requirement}, got {value!r}") from None
    if not math.isfinite(number):
        raise ConfigError(f"{name} must be {requirement}, got {value!r}")
    return number


def whole_number(value: Any, name: str, *, minimum: int | None = 1, null: str | None = None) -> int | None:
    """`value` as an int >= `minimum`. None is allowed only when `null` says what it means (then None is returned):
    0 or a negative number never silently means "the default"."""
    bound = f" >= {minimum}" if minimum is not None else ""
    requirement = _with_null(f"a whole number{bound}", null)
    if value is None:
        if null is None:
            raise ConfigError(f"{name} must be {requirement}, got null")
        return None
    number = _as_number(value, name, requirement)
    if number != int(number) or (minimum is not None and number < minimum):
        raise ConfigError(f"{name} must be {requirement}, got {value!r}")
    return int(number)


def real_number(value: Any, name: str, *, minimum: float | None = None, maximum: float | None = None,
                exclusive_minimum: bool = False, null: str | None = None, requirement: str | None = None) -> float | None:
    """`value` as a finite float in [minimum, maximum] ((minimum, maximum] with `exclusive_minimum`); None only
    when `null` says what it means."""
    if requirement is None:
        parts = []
        if minimum is not None:
            parts.append(f"{'>' if exclusive_minimum else '>='} {minimum:g}")
        if maximum is not None:
            parts.append(f"<= {maximum:g}")
        requirement = "a number" + (" " + " and ".join(parts) if parts else "")
    requirement = _with_null(requirement, null)
    if value is None:
        if null is None:
            raise ConfigError(f"{name} must be {requirement}, got null")
        return None
    number = _as_number(value, name, requirement)
    too_small = minimum is not None and (number <= minimum if exclusive_minimum else number < minimum)
    if too_small or (maximum is not None and number > maximum):
        raise ConfigError(f"{name} must be {requirement}, got {value!r}")
    return number


def flag(value: Any, name: str) -> bool:
    """A true/false option; anything else (a typo such as `replace_known=ture`) is an error."""
    if not isinstance(value, bool):
        raise ConfigError(f"{name} must be true or false, got {value!r}")
    return value


def scheduler_name(value: Any, name: str = "scheduler") -> str | None:
    if value is None:
        return None
    from lumiere.diffusion.schedulers import SCHEDULER_NAMES

    if value not in SCHEDULER_NAMES:
        raise ConfigError(f"{name} must be one of {', '.join(SCHEDULER_NAMES)} (null: the checkpoint's sampler), "
                          f"got {value!r}")
    return str(value)


def sampling_options(cfg: Mapping, prefix: str = "") -> dict[str, Any]:
    """num_inference_steps, guidance_scale and scheduler, checked; None means the checkpoint's own setting."""
    return {
        "num_inference_steps": whole_number(cfg.get("num_inference_steps"), f"{prefix}num_inference_steps",
                                            null="the checkpoint's sampler setting"),
        "guidance_scale": real_number(cfg.get("guidance_scale"), f"{prefix}guidance_scale", minimum=0.0,
                                      requirement=f"a number {GUIDANCE_RANGE}", null="the checkpoint's sampler setting"),
        "scheduler": scheduler_name(cfg.get("scheduler"), f"{prefix}scheduler"),
    }


def pick_device(value: Any) -> torch.device:
    """`device` (cpu, cuda, cuda:N; null: cuda if available); an unusable one is a one-line error."""
    from lumiere.utils import default_device

    if value is None:
        return default_device()
    try:
        device = torch.device(str(value))
    except RuntimeError:
        raise ConfigError(f"device must be cpu, cuda or cuda:N (null: cuda if available), got {value!r}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device={value} but no CUDA device is available: set device=cpu or leave it null")
    return device


def prepare_out_dir(path: Any, name: str = "out_dir") -> str:
    """Create `path` and make sure a file can be written in it, before anything is computed."""
    if path is None or not str(path).strip():
        raise ConfigError(f"{name} is not set: set {name}=PATH")
    path = str(path)
    try:
        os.makedirs(path, exist_ok=True)
        handle, probe = tempfile.mkstemp(prefix=".write-test-", dir=path)
        os.close(handle)
        os.unlink(probe)
    except OSError as error:
        raise InputFileError(f"cannot write to {name} {path}: {error.strerror or error}") from None
    return path


def _positive_number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        return None
    return float(value)


def training_fps(ckpt_path: str) -> float | None:
    """The frame rate a checkpoint's stage was trained at, if it says one: the most common real rate of
    its training clips (``data_fps``, counted by the stage: a rounded stride makes it differ from the
    target), else its datamodule's target_fps.

    Lightning stores the datamodule's arguments in every checkpoint it writes; a stage trained with
    `frame_stride` instead of `target_fps` before ``data_fps`` was kept (or a checkpoint written
    otherwise) gives None."""
    from lumiere.training.base import DATA_FPS_KEY

    try:
        checkpoint = torch.load(ckpt_path, map_location="cpu", weights_only=True, mmap=True)
    except Exception:  # unreadable files are reported by the loader; this only looks for a number
        return None
    if not isinstance(checkpoint, dict):
        return None
    record = checkpoint.get(DATA_FPS_KEY)
    measured = _positive_number(record.get("most_common")) if isinstance(record, dict) else None
    if measured is not None:
        return measured
    data = checkpoint.get("datamodule_hyper_parameters")
    return _positive_number(data.get("target_fps")) if isinstance(data, dict) else None


def fps_option(value: Any) -> float | None:
    """The `fps` option: a positive number, or null (see `output_fps`)."""
    return real_number(value, "fps", minimum=0.0, exclusive_minimum=True,
                       null=f"the checkpoint's training frame rate, else {DEFAULT_FPS:g}")


def output_fps(fps: float | None, ckpt_path: str) -> float:
    """The frame rate clips are written at: `fps` if set, else the checkpoint's training frame rate, else
    DEFAULT_FPS (call after the checkpoint loaded)."""
    if fps is not None:
        return fps
    trained = training_fps(ckpt_path)
    if trained is None:
        log.info("%s does not record its training frame rate: writing clips at %g fps", ckpt_path, DEFAULT_FPS)
    return trained or DEFAULT_FPS


# ---------------------------------------------------------------------------- prompts
def read_prompts(prompts: Any, prompt_file: str | None) -> list[str]:
    """`prompts` (a list, or one string) and the lines of `prompt_file` (# comments skipped); an empty prompt
    is an error naming its index or line."""
    collected = []
    if isinstance(prompts, str):
        prompts = [prompts]
    for index, prompt in enumerate(prompts or []):
        if prompt is None or isinstance(prompt, (Mapping, list, ListConfig, DictConfig)):
            raise ConfigError(f"prompts[{index}] is not a prompt: {prompt!r}")
        if not str(prompt).strip():
            raise ConfigError(f"prompts[{index}] is empty: an empty prompt is not a prompt")
        collected.append(str(prompt).strip())
    if prompt_file:
        if not os.path.isfile(prompt_file):
            raise InputFileError(f"prompt file not found: {prompt_file}")
        try:
            with open(prompt_file, encoding="utf-8") as handle:
                lines = handle.read().splitlines()
        except (OSError, UnicodeDecodeError) as error:
            raise InputFileError(f"cannot read prompt file {prompt_file}: {error}") from None
        while lines and not lines[-1].strip():  # trailing blank lines end the file, they are no prompts
            lines.pop()
        from_file = [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]
        if not from_file:
            raise InputFileError(f"prompt file is empty: {prompt_file}")
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                raise InputFileError(f"{prompt_file} line {number} is empty: an empty prompt is not a prompt "
                                     "(remove the line, or comment it out with #)")
        collected.extend(from_file)
    if not collected:
        raise ConfigError("give prompts=[...] or prompt_file=PATH")
    return collected


def check_ssr_options(options: Any) -> dict[str, Any]:
    """The `ssr.*` sampling options, checked before anything is loaded; None values mean the SSR's own."""
    options = dict(options or {})
    unknown = sorted(set(options) - set(SSR_OPTIONS))
    if unknown:
        raise ConfigError(f"unknown ssr option(s) {', '.join(unknown)}; the SSR takes {', '.join(SSR_OPTIONS)}")
    checked: dict[str, Any] = {}
    for key, value in options.items():
        name = f"ssr.{key}"
        if key in ("window", "window_batch_size"):
            checked[key] = whole_number(value, name, null="the SSR checkpoint's setting")
        elif key in ("overlap", "noise_level"):
            checked[key] = whole_number(value, name, minimum=0, null="the SSR checkpoint's setting")
        elif key == "non_overlapping":
            checked[key] = flag(value, name)
    checked.update({key: value for key, value in sampling_options(options, "ssr.").items() if key in options})
    return checked


# ---------------------------------------------------------------------------- writing
def _move_into_place(source: str, target: str) -> None:
    """Rename the finished folder `source` to `target`, replacing an earlier run's folder of that name."""
    os.makedirs(os.path.dirname(target), exist_ok=True)
    old = None
    if os.path.exists(target):
        old = tempfile.mkdtemp(prefix=f".{os.path.basename(target)}.old-", dir=os.path.dirname(target))
        os.replace(target, os.path.join(old, "previous"))
    os.replace(source, target)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def write_batch(out_dir: str, start: int, prompts: list[str], videos: torch.Tensor, high: torch.Tensor | None,
                fps: float) -> None:
    """Write one batch (base clips, and the SSR's with the cascade GIF) into a temporary folder inside
    `out_dir`, then rename `base/batch_<start>` (and `ssr/batch_<start>`) into place."""
    import av

    from lumiere.training.callbacks import write_video_set
    from lumiere.viz import write_gif

    name = f"batch_{start:05d}"
    staging = None
    try:
        staging = tempfile.mkdtemp(prefix=f".{name}.partial-", dir=out_dir)
        write_video_set(os.path.join(staging, "base"), videos.cpu(), prompts, fps=fps)
        if high is not None:
            ssr_dir = os.path.join(staging, "ssr")
            write_video_set(ssr_dir, high.cpu(), prompts, fps=fps)
            # One look at the cascade: each base clip (pixels enlarged) above its SSR output.
            factor = high.shape[-1] // videos.shape[-1]
            enlarged = videos.repeat_interleave(factor, dim=-2).repeat_interleave(factor, dim=-1)
            write_gif(os.path.join(ssr_dir, "cascade.gif"), torch.cat([enlarged, high], dim=-2).cpu(), fps=fps)
        for part in ("base", "ssr"):
            if os.path.isdir(os.path.join(staging, part)):
                _move_into_place(os.path.join(staging, part), os.path.join(out_dir, part, name))
    except (OSError, av.error.FFmpegError) as error:
        reason = getattr(error, "strerror", None) or str(error).strip().splitlines()[0]
        kept = f"; the {start} clip(s) before it are complete" if start else ""
        raise InputFileError(f"could not write {name} under {out_dir}: {reason}{kept}") from None
    finally:
        if staging is not None:
            shutil.rmtree(staging, ignore_errors=True)


# ---------------------------------------------------------------------------- the task
def generate(cfg: DictConfig) -> dict[str, float]:
    """Sample clips for prompts from a base checkpoint (and an SSR checkpoint: the cascade)."""
    from tqdm.auto import tqdm

    from lumiere.utils import set_cpu_threads

    # 1. Options, before anything is loaded.
    check_no_missing(cfg)
    set_cpu_threads(whole_number(cfg.get("cpu_threads"), "cpu_threads", null="torch's default"))
    ckpt_path = str(required(cfg, "ckpt_path"))
    ssr_ckpt_path = cfg.get("ssr_ckpt_path") or None
    prompts = read_prompts(cfg.get("prompts"), cfg.get("prompt_file"))
    num_frames = whole_number(cfg.get("num_frames"), "num_frames", null="the checkpoint's clip length")
    sampling = sampling_options(cfg)
    seed = whole_number(cfg.get("seed", 0), "seed", minimum=0)
    batch_size = whole_number(cfg.get("batch_size"), "batch_size", null="all prompts at once") or len(prompts)
    allow_frozen_mismatch = flag(cfg.get("allow_frozen_mismatch", False), "allow_frozen_mismatch")
    ssr_options = check_ssr_options(cfg.get("ssr")) if ssr_ckpt_path else {}
    fps = fps_option(cfg.get("fps"))
    device = pick_device(cfg.get("device"))
    out_dir = prepare_out_dir(cfg.get("out_dir"))

    # 2. Checkpoints: their stages, frozen weights and sizes, before anything is sampled.
    from lumiere.diffusion.multidiffusion import temporal_windows
    from lumiere.training import load_module_from_checkpoint

    base = load_module_from_checkpoint(ckpt_path, use_ema=True, expected=BASE_STAGES,
                                       allow_frozen_mismatch=allow_frozen_mismatch).to(device)
    num_frames = num_frames or int(base.val_num_frames)
    base.check_num_frames(num_frames)
    ssr = None
    if ssr_ckpt_path:
        ssr = load_module_from_checkpoint(str(ssr_ckpt_path), use_ema=True, expected=SSR_STAGES,
                                          allow_frozen_mismatch=allow_frozen_mismatch).to(device)
        if not ssr.inflated:
            log.warning("%s is a 2D SSR (stage 0): it upsamples every frame on its own; the inflated SSR "
                        "(experiment=demo_ssr) is the temporally-aware one of the paper", ssr_ckpt_path)
        # The SSR upsamples the base clips: fail before sampling if their sizes do not chain.
        ssr.check_low_res_size(base.sample_size)
        window = ssr_options.get("window") or ssr.window
        overlap = ssr.overlap if ssr_options.get("overlap") is None else ssr_options["overlap"]
        temporal_windows(num_frames, window, overlap)
    fps = output_fps(fps, ckpt_path)

    # 3. Sample and write, batch by batch.
    written = 0
    for start in tqdm(range(0, len(prompts), batch_size), desc="generate", unit="batch"):
        batch_prompts = prompts[start:start + batch_size]
        videos = base.generate(batch_prompts, num_frames=num_frames, seed=seed + start, **sampling)
        high = None
        if ssr is not None:
            high = ssr.upsample(videos, batch_prompts, seed=seed + start, **ssr_options)
        write_batch(out_dir, start, batch_prompts, videos, high, fps)
        written += len(batch_prompts)
    log.info("wrote %d clips under %s (%g fps)", written, out_dir, fps)
    return {"num_videos": float(written)}
