"""The `apps` task behind `python apps.py mode=<application> ...` (paper Sec. 4, Figs. 6-9).

It reads the config into the tensors an application of `lumiere.apps` takes, runs it and writes
the clips.

Modes and what they read (see conf/apps.yaml for every key):

- `image_to_video`: `image`, `num_frames`                      (conditional checkpoint)
- `inpaint`:        `video` and `mask` (png/mp4) or `box`      (conditional checkpoint)
- `outpaint`:       `video` and `pad` (pixels per side)        (conditional checkpoint)
- `cinemagraph`:    `image` and `mask` (png) or `box`          (conditional checkpoint)
- `sdedit`:         `video`, `strength` in (0, 1]              (base or conditional checkpoint)
- `stylize`:        `style_dir`, `alpha` in [0, 1], `num_frames` (base or conditional checkpoint)

`style_dir` + `alpha` also stylize any other mode. Masks mark the region to generate (white);
`invert_mask=true` flips that. Every option and input is checked before the model is loaded, and
the checkpoint's stage against the mode (Sec. 4.2 modes: a ConditionalVideoModule checkpoint;
sdedit and stylize: a TextToVideoModule or ConditionalVideoModule one) before anything is sampled;
a bad one ends the run with one `error: ...` line (exit code 2, by `lumiere.tasks.runner.run_task`).
Results are written to a temporary folder and moved into `out_dir` only when every file is complete.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from dataclasses import dataclass, field

import torch
from omegaconf import DictConfig, OmegaConf

from lumiere.apps.conditioning import (
    cinemagraph_conditioning,
    image_to_video_conditioning,
    inpainting_conditioning,
    outpainting_conditioning,
)
from lumiere.apps.inputs import check_canvas, check_pad, keep_mask_from_region, load_image, load_video, region_for
from lumiere.apps.stylize import check_alpha, load_style_unet_state_dict
from lumiere.errors import ConfigError, InputFileError
from lumiere.tasks.generation import (
    BASE_STAGES,
    check_no_missing,
    flag,
    fps_option,
    output_fps,
    pick_device,
    prepare_out_dir,
    read_prompts,
    required,
    sampling_options,
    whole_number,
)

log = logging.getLogger("lumiere")

MODES = ("image_to_video", "inpaint", "outpaint", "cinemagraph", "sdedit", "stylize")
CONDITIONAL_MODES = ("image_to_video", "inpaint", "outpaint", "cinemagraph")
# The checkpoint stages each mode can run on (class names, see load_module_from_checkpoint).
CONDITIONAL_STAGES = ("ConditionalVideoModule",)


def expected_stages(mode: str) -> tuple[str, ...]:
    return CONDITIONAL_STAGES if mode in CONDITIONAL_MODES else BASE_STAGES


@dataclass
class AppInputs:
    """Everything a mode needs, read and checked before the model is loaded."""

    prompts: list[str]
    image: torch.Tensor | None = None        # (3, H, W)
    video: torch.Tensor | None = None        # (3, T, H, W)
    keep_mask: torch.Tensor | None = None    # (1, 1, T', H, W), 1 = keep
    region: torch.Tensor | None = None       # (H, W), 1 = animate
    pad: list[int] = field(default_factory=list)
    style: dict | None = None                # style U-Net state dict


def _required(cfg: DictConfig, key: str, mode: str):
    return required(cfg, key, needed_by=f"mode={mode}")


def check_mode(cfg: DictConfig) -> str:
    mode = None if OmegaConf.is_missing(cfg, "mode") else cfg.get("mode")
    if mode is None:
        raise ConfigError(f"give mode=<one of {', '.join(MODES)}>")
    if mode not in MODES:
        raise ConfigError(f"unknown mode {mode!r}; choose one of {list(MODES)}")
    return mode


def check_strength(value) -> float:
    """SDEdit's strength: a number in (0, 1]."""
    try:
        if isinstance(value, bool):
            raise TypeError
        strength = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"SDEdit strength must be a number in (0, 1], got {value!r}") from None
    if not 0.0 < strength <= 1.0:
        raise ConfigError(f"SDEdit strength must lie in (0, 1], got {strength}")
    return strength


def read_inputs(cfg: DictConfig) -> AppInputs:
    """Read and check the files and numbers of `cfg.mode`; raise a LumiereError on the first problem."""
    mode = check_mode(cfg)
    prompt = cfg.get("prompt")
    if prompt is not None and not str(prompt).strip():
        raise ConfigError("prompt is empty: an empty prompt is not a prompt")
    prompts = ([prompt] if prompt is not None else []) + list(cfg.get("prompts") or [])
    inputs = AppInputs(prompts=read_prompts(prompts, cfg.get("prompt_file")))
    if mode == "sdedit":
        check_strength(_required(cfg, "strength", mode))
    if mode == "stylize" or cfg.get("style_dir"):
        check_alpha(_required(cfg, "alpha", mode))
        inputs.style = load_style_unet_state_dict(_required(cfg, "style_dir", mode))
    if mode in ("image_to_video", "cinemagraph"):
        inputs.image = load_image(_required(cfg, "image", mode))
    if mode in ("inpaint", "outpaint", "sdedit"):
        inputs.video = load_video(_required(cfg, "video", mode))
    box = cfg.get("box")
    if box is not None:
        box = list(box) if not isinstance(box, (str, int, float)) else [box]
    invert = flag(cfg.get("invert_mask", False), "invert_mask")
    if mode == "inpaint":
        _, frames, height, width = inputs.video.shape
        region = region_for(height, width, mask_path=cfg.get("mask"), box=box, num_frames=frames,
                            invert=invert, what="video")
        inputs.keep_mask = keep_mask_from_region(region)
    if mode == "cinemagraph":
        height, width = inputs.image.shape[-2:]
        region = region_for(height, width, mask_path=cfg.get("mask"), box=box, num_frames=1,
                            invert=invert, what="image")
        inputs.region = region[0]
    if mode == "outpaint":
        inputs.pad = check_pad(_required(cfg, "pad", mode))
        check_canvas(*inputs.video.shape[1:], inputs.pad)
    return inputs


def conditioning_preview(mode: str, inputs: AppInputs, num_frames: int) -> torch.Tensor | None:
    """The <C> the model is given (unknown pixels grey), for the output folder."""
    if mode == "image_to_video":
        return image_to_video_conditioning(inputs.image, num_frames)[0]
    if mode == "inpaint":
        return inpainting_conditioning(inputs.video[None], inputs.keep_mask)[0]
    if mode == "outpaint":
        return outpainting_conditioning(inputs.video[None], inputs.pad)[0]
    if mode == "cinemagraph":
        return cinemagraph_conditioning(inputs.image, inputs.region, num_frames)[0]
    if mode == "sdedit":
        return inputs.video[None]
    return None


def run_mode(module, mode: str, inputs: AppInputs, cfg: DictConfig, num_frames: int | None = None) -> torch.Tensor:
    """Run one application; (B, 3, T, H, W) in [-1, 1], one clip per prompt (`num_frames`: image_to_video,
    cinemagraph and stylize; None: cfg.num_frames, else the checkpoint's clip length)."""
    from lumiere.apps import applications

    sampling = dict(seed=whole_number(cfg.get("seed", 0), "seed", minimum=0), **sampling_options(cfg), progress=True)
    if mode in CONDITIONAL_MODES:
        sampling["replace_known"] = flag(cfg.get("replace_known", False), "replace_known")
    if num_frames is None:
        num_frames = whole_number(cfg.get("num_frames"), "num_frames", null="the checkpoint's clip length") \
            or int(module.val_num_frames)
    if mode == "image_to_video":
        return applications.image_to_video(module, inputs.image, inputs.prompts, num_frames, **sampling)
    if mode == "inpaint":
        return applications.inpaint(module, inputs.video, inputs.keep_mask, inputs.prompts, **sampling)
    if mode == "outpaint":
        return applications.outpaint(module, inputs.video, inputs.pad, inputs.prompts, **sampling)
    if mode == "cinemagraph":
        return applications.cinemagraph(module, inputs.image, inputs.region, inputs.prompts, num_frames, **sampling)
    if mode == "sdedit":
        return applications.sdedit_video(module, inputs.video, inputs.prompts, check_strength(cfg.strength),
                                         **sampling)
    return module.generate(inputs.prompts, num_frames=num_frames, **sampling)


def write_results(out_dir: str, mode: str, videos: torch.Tensor, prompts: list[str], preview: torch.Tensor | None,
                  fps: float) -> list[str]:
    """Write every file into a temporary sibling folder, then move them into `out_dir` (no partial results)."""
    import av

    from lumiere.training.callbacks import write_video_set

    staging = None
    try:
        os.makedirs(out_dir, exist_ok=True)
        staging = tempfile.mkdtemp(prefix=f".{mode}.partial-", dir=out_dir)
        write_video_set(staging, videos.float().cpu(), prompts, fps=fps)
        if preview is not None:
            write_video_set(os.path.join(staging, "input"), preview.float().cpu(), ["conditioning"], fps=fps)
        moved = []
        for root, _, files in os.walk(staging):
            for name in sorted(files):
                relative = os.path.relpath(os.path.join(root, name), staging)
                target = os.path.join(out_dir, relative)
                os.makedirs(os.path.dirname(target), exist_ok=True)
                os.replace(os.path.join(root, name), target)
                moved.append(target)
    except (OSError, av.error.FFmpegError) as error:
        reason = getattr(error, "strerror", None) or str(error).strip().splitlines()[0]
        raise InputFileError(f"could not write the {mode} results under {out_dir}: {reason}") from None
    finally:
        if staging is not None:
            shutil.rmtree(staging, ignore_errors=True)
    return moved


def apps(cfg: DictConfig) -> dict[str, float]:
    """Task of `apps.py`: check options and inputs, load the checkpoint, run the mode, write the clips."""
    from lumiere.utils import set_cpu_threads

    # 1. Options and input files, before the model is loaded.
    mode = check_mode(cfg)
    check_no_missing(cfg, skip=("ckpt_path",))  # ckpt_path: "mode=... needs ckpt_path" below
    set_cpu_threads(whole_number(cfg.get("cpu_threads"), "cpu_threads", null="torch's default"))
    ckpt_path = str(_required(cfg, "ckpt_path", mode))
    num_frames = whole_number(cfg.get("num_frames"), "num_frames", null="the checkpoint's clip length")
    sampling_options(cfg)
    whole_number(cfg.get("seed", 0), "seed", minimum=0)
    flag(cfg.get("replace_known", False), "replace_known")
    allow_frozen_mismatch = flag(cfg.get("allow_frozen_mismatch", False), "allow_frozen_mismatch")
    fps = fps_option(cfg.get("fps"))
    inputs = read_inputs(cfg)
    device = pick_device(cfg.get("device"))
    out_dir = prepare_out_dir(cfg.get("out_dir"))

    # 2. The checkpoint: its stage must suit the mode; frame counts must suit its network.
    from lumiere.training import load_module_from_checkpoint

    module = load_module_from_checkpoint(ckpt_path, use_ema=True, expected=expected_stages(mode),
                                         allow_frozen_mismatch=allow_frozen_mismatch).to(device)
    num_frames = num_frames or int(module.val_num_frames)
    if mode in ("image_to_video", "cinemagraph", "stylize"):
        module.check_num_frames(num_frames)
    if inputs.video is not None:
        module.check_num_frames(inputs.video.shape[1])
    fps = output_fps(fps, ckpt_path)

    # 3. Run and write.
    from lumiere.apps.applications import stylized

    if inputs.style is not None:
        with stylized(module, inputs.style, check_alpha(cfg.alpha)):
            videos = run_mode(module, mode, inputs, cfg, num_frames)
    else:
        videos = run_mode(module, mode, inputs, cfg, num_frames)
    preview = conditioning_preview(mode, inputs, num_frames)
    written = write_results(out_dir, mode, videos, inputs.prompts, preview, fps)
    log.info("%s: wrote %d files under %s", mode, len(written), out_dir)
    return {"num_videos": float(videos.shape[0])}
