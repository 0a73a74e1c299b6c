"""The generate task that ``generate.py`` runs: sample clips for prompts from a base checkpoint, and
upsample them with an SSR checkpoint when one is given (the cascade)."""

from __future__ import annotations

import logging
import os

import torch
from omegaconf import DictConfig

from lumiere.errors import ConfigError

log = logging.getLogger("lumiere")


def read_prompts(prompts: list[str] | None, prompt_file: str | None) -> list[str]:
    from lumiere.errors import InputFileError

    collected = list(prompts or [])
    if prompt_file:
        if not os.path.isfile(prompt_file):
            raise InputFileError(f"prompt file not found: {prompt_file}")
        with open(prompt_file) as handle:
            lines = [line.strip() for line in handle if line.strip() and not line.startswith("#")]
        if not lines:
            raise InputFileError(f"prompt file is empty: {prompt_file}")
        collected.extend(lines)
    if not collected:
        raise ConfigError("give prompts=[...] or prompt_file=PATH")
    return collected


def generate(cfg: DictConfig) -> dict[str, float]:
    """Sample clips for prompts from a base checkpoint (and an SSR checkpoint: the cascade)."""
    from tqdm.auto import tqdm

    from lumiere.training import load_module_from_checkpoint
    from lumiere.training.callbacks import write_video_set
    from lumiere.training.ssr import SuperResolutionModule
    from lumiere.utils import default_device, set_cpu_threads
    from lumiere.viz import write_gif

    set_cpu_threads(cfg.get("cpu_threads"))
    prompts = read_prompts(cfg.get("prompts"), cfg.get("prompt_file"))
    device = torch.device(cfg.device) if cfg.get("device") else default_device()
    base = load_module_from_checkpoint(cfg.ckpt_path, use_ema=True).to(device)
    ssr = None
    if cfg.get("ssr_ckpt_path"):
        ssr = load_module_from_checkpoint(cfg.ssr_ckpt_path, use_ema=True).to(device)
        if not isinstance(ssr, SuperResolutionModule):
            raise ConfigError(f"ssr_ckpt_path holds a {type(ssr).__name__} checkpoint, not an SSR stage")
        # The SSR upsamples the base clips: fail before sampling if their sizes do not chain.
        ssr.check_low_res_size(base.sample_size)
    os.makedirs(cfg.out_dir, exist_ok=True)
    batch_size = cfg.get("batch_size") or len(prompts)
    written = 0
    for start in tqdm(range(0, len(prompts), batch_size), desc="generate", unit="batch"):
        batch_prompts = prompts[start:start + batch_size]
        videos = base.generate(batch_prompts, num_frames=cfg.num_frames, seed=cfg.seed + start,
                               num_inference_steps=cfg.num_inference_steps,
                               guidance_scale=cfg.guidance_scale, scheduler=cfg.get("scheduler"))
        batch_dir = os.path.join(cfg.out_dir, "base")
        write_video_set(os.path.join(batch_dir, f"batch_{start:05d}"), videos.cpu(), batch_prompts, fps=cfg.fps)
        if ssr is not None:
            high = ssr.upsample(videos, batch_prompts, seed=cfg.seed + start, **(cfg.get("ssr") or {}))
            ssr_dir = os.path.join(cfg.out_dir, "ssr", f"batch_{start:05d}")
            write_video_set(ssr_dir, high.cpu(), batch_prompts, fps=cfg.fps)
            # One look at the cascade: each base clip (pixels enlarged) above its SSR output.
            factor = high.shape[-1] // videos.shape[-1]
            enlarged = videos.repeat_interleave(factor, dim=-2).repeat_interleave(factor, dim=-1)
            write_gif(os.path.join(ssr_dir, "cascade.gif"), torch.cat([enlarged, high], dim=-2).cpu(), fps=cfg.fps)
        written += len(batch_prompts)
    log.info("wrote %d clips under %s", written, cfg.out_dir)
    return {"num_videos": float(written)}
