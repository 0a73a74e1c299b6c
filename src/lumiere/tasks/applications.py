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
`invert_mask=true` flips that. Every input is checked before the model is loaded; a bad one
ends the run with one `error: ...` line (exit code 2, by `lumiere.tasks.runner.run_task`). Results are
written to a temporary folder and moved into `out_dir` only when every file is complete.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from dataclasses import dataclass, field

import torch
from omegaconf import DictConfig, OmegaConf

from lumiere.apps import applications
from lumiere.apps.conditioning import (
    cinemagraph_conditioning,
    image_to_video_conditioning,
    inpainting_conditioning,
    outpainting_conditioning,
)
from lumiere.apps.inputs import check_pad, keep_mask_from_region, load_image, load_video, region_for
from lumiere.apps.stylize import check_alpha, load_style_unet_state_dict
from lumiere.errors import ConfigError

log = logging.getLogger("lumiere")

MODES = ("image_to_video", "inpaint", "outpaint", "cinemagraph", "sdedit", "stylize")
CONDITIONAL_MODES = ("image_to_video", "inpaint", "outpaint", "cinemagraph")


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
    value = None if OmegaConf.is_missing(cfg, key) else cfg.get(key)
    if value in (None, ""):
        raise ConfigError(f"mode={mode} needs {key}=...")
    return value


def read_inputs(cfg: DictConfig) -> AppInputs:
    """Read and check the files and numbers of `cfg.mode`; raise a LumiereError on the first problem."""
    from lumiere.tasks.generation import read_prompts

    mode = None if OmegaConf.is_missing(cfg, "mode") else cfg.mode
    if mode is None:
        raise ConfigError(f"give mode=<one of {', '.join(MODES)}>")
    if mode not in MODES:
        raise ConfigError(f"unknown mode {mode!r}; choose one of {list(MODES)}")
    prompts = ([cfg.prompt] if cfg.get("prompt") else []) + list(cfg.get("prompts") or [])
    inputs = AppInputs(prompts=read_prompts(prompts, cfg.get("prompt_file")))
    if mode == "sdedit":
        strength = float(_required(cfg, "strength", mode))
        if not 0.0 < strength <= 1.0:
            raise ConfigError(f"SDEdit strength must lie in (0, 1], got {strength}")
    if mode == "stylize" or cfg.get("style_dir"):
        check_alpha(_required(cfg, "alpha", mode))
        inputs.style = load_style_unet_state_dict(_required(cfg, "style_dir", mode))
    if mode in ("image_to_video", "cinemagraph"):
        inputs.image = load_image(_required(cfg, "image", mode))
    if mode in ("inpaint", "outpaint", "sdedit"):
        inputs.video = load_video(_required(cfg, "video", mode))
    box = list(cfg.box) if cfg.get("box") is not None else None
    if mode == "inpaint":
        _, frames, height, width = inputs.video.shape
        region = region_for(height, width, mask_path=cfg.get("mask"), box=box, num_frames=frames,
                            invert=bool(cfg.get("invert_mask")), what="video")
        inputs.keep_mask = keep_mask_from_region(region)
    if mode == "cinemagraph":
        height, width = inputs.image.shape[-2:]
        region = region_for(height, width, mask_path=cfg.get("mask"), box=box, num_frames=1,
                            invert=bool(cfg.get("invert_mask")), what="image")
        inputs.region = region[0]
    if mode == "outpaint":
        inputs.pad = check_pad(_required(cfg, "pad", mode))
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


def run_mode(module, mode: str, inputs: AppInputs, cfg: DictConfig) -> torch.Tensor:
    """Run one application; (B, 3, T, H, W) in [-1, 1], one clip per prompt."""
    sampling = dict(seed=int(cfg.seed), num_inference_steps=cfg.get("num_inference_steps"),
                    guidance_scale=cfg.get("guidance_scale"), scheduler=cfg.get("scheduler"), progress=True)
    if mode in CONDITIONAL_MODES:
        sampling["replace_known"] = bool(cfg.get("replace_known"))
    num_frames = int(cfg.num_frames)
    if mode == "image_to_video":
        return applications.image_to_video(module, inputs.image, inputs.prompts, num_frames, **sampling)
    if mode == "inpaint":
        return applications.inpaint(module, inputs.video, inputs.keep_mask, inputs.prompts, **sampling)
    if mode == "outpaint":
        return applications.outpaint(module, inputs.video, inputs.pad, inputs.prompts, **sampling)
    if mode == "cinemagraph":
        return applications.cinemagraph(module, inputs.image, inputs.region, inputs.prompts, num_frames, **sampling)
    if mode == "sdedit":
        return applications.sdedit_video(module, inputs.video, inputs.prompts, float(cfg.strength), **sampling)
    return module.generate(inputs.prompts, num_frames=num_frames, **sampling)


def write_results(out_dir: str, mode: str, videos: torch.Tensor, prompts: list[str], preview: torch.Tensor | None,
                  fps: float) -> list[str]:
    """Write every file into a temporary sibling folder, then move them into `out_dir` (no partial results)."""
    from lumiere.training.callbacks import write_video_set

    os.makedirs(out_dir, exist_ok=True)
    staging = tempfile.mkdtemp(prefix=f".{mode}.partial-", dir=out_dir)
    try:
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
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return moved


def quiet_model_loading() -> None:
    """Silence the libraries' load-time warnings and progress bars: a CLI error stays one line."""
    import diffusers
    import transformers

    for library in (transformers, diffusers):
        library.utils.logging.set_verbosity_error()
        library.utils.logging.disable_progress_bar()


def apps(cfg: DictConfig) -> dict[str, float]:
    """Task of `apps.py`: read and check inputs, load the checkpoint, run the mode, write the clips."""
    from lumiere.apps.applications import stylized
    from lumiere.training import load_module_from_checkpoint
    from lumiere.utils import default_device, set_cpu_threads

    set_cpu_threads(cfg.get("cpu_threads"))
    inputs = read_inputs(cfg)
    device = torch.device(cfg.device) if cfg.get("device") else default_device()
    quiet_model_loading()
    module = load_module_from_checkpoint(_required(cfg, "ckpt_path", cfg.mode), use_ema=True).to(device)
    if cfg.mode in ("image_to_video", "cinemagraph", "stylize"):
        module.check_num_frames(int(cfg.num_frames))
    if inputs.video is not None:
        module.check_num_frames(inputs.video.shape[1])
    if inputs.style is not None:
        with stylized(module, inputs.style, float(cfg.alpha)):
            videos = run_mode(module, cfg.mode, inputs, cfg)
    else:
        videos = run_mode(module, cfg.mode, inputs, cfg)
    preview = conditioning_preview(cfg.mode, inputs, int(cfg.num_frames))
    written = write_results(cfg.out_dir, cfg.mode, videos, inputs.prompts, preview, float(cfg.fps))
    log.info("%s: wrote %d files under %s", cfg.mode, len(written), cfg.out_dir)
    return {"num_videos": float(videos.shape[0])}
