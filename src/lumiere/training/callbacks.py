"""Callbacks that make training visible: sample videos, X-T slices and the first training batch.

Media are written as files under the run folder always (mp4, gif, X-T slice png, a sample
sheet), and the written GIFs are also logged as `wandb.Video` when a W&B logger is attached. Only rank 0 writes.
"""

from __future__ import annotations

import os
import re

import lightning.pytorch as pl
from lightning.pytorch.loggers import WandbLogger
from lightning.pytorch.utilities import rank_zero_only

from lumiere.viz import save_sample_sheet, save_xt_slice, write_gif, write_mp4


def slugify(text: str, max_length: int = 48) -> str:
    return re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")[:max_length] or "sample"


def write_video_set(out_dir: str, videos, captions, fps: int = 16) -> list[str]:
    """Write each video as mp4 + gif + X-T slice, and all of them as one sheet and one GIF; return
    the per-clip gif paths."""
    os.makedirs(out_dir, exist_ok=True)
    gifs = []
    for index, (video, caption) in enumerate(zip(videos, captions)):
        stem = os.path.join(out_dir, f"{index:02d}_{slugify(caption)}")
        write_mp4(stem + ".mp4", video, fps=fps)
        write_gif(stem + ".gif", video, fps=fps)
        save_xt_slice(stem + "_xt.png", video)
        gifs.append(stem + ".gif")
    save_sample_sheet(os.path.join(out_dir, "sheet.png"), videos, list(captions))
    write_gif(os.path.join(out_dir, "all.gif"), videos, fps=fps)  # the clips side by side, in order
    with open(os.path.join(out_dir, "prompts.txt"), "w") as handle:
        handle.write("\n".join(captions) + "\n")
    return gifs


class SampleVideoLogger(pl.Callback):
    """After validation, sample the module's validation prompts with its EMA weights."""

    def __init__(self, out_dir: str, every_n_validations: int = 1, fps: int = 8) -> None:
        self.out_dir = out_dir
        self.every_n_validations = max(1, every_n_validations)
        self.fps = fps
        self._validations = 0

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        self._validations += 1
        if (self._validations - 1) % self.every_n_validations:
            return
        if trainer.is_global_zero:
            self._sample_and_write(trainer, pl_module)

    def _sample_and_write(self, trainer: pl.Trainer, pl_module) -> None:
        result = pl_module.validation_samples()
        if result is None:
            return
        videos, captions = result
        out_dir = os.path.join(self.out_dir, f"step_{trainer.global_step:07d}")
        gifs = write_video_set(out_dir, videos.float().cpu(), captions, fps=self.fps)
        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger):
                import wandb

                # the written GIFs themselves (a video from an array would need moviepy to encode)
                logger.experiment.log(
                    {"samples": [wandb.Video(gif, caption=c, format="gif") for gif, c in zip(gifs, captions)],
                     "samples_xt": [wandb.Image(os.path.join(out_dir, name)) for name in
                                    sorted(os.listdir(out_dir)) if name.endswith("_xt.png")],
                     "trainer/global_step": trainer.global_step})


class FirstBatchVideo(pl.Callback):
    """Save the first training batch as videos: the cheapest check that the data look right."""

    def __init__(self, out_dir: str, max_videos: int = 8, fps: int = 8) -> None:
        self.out_dir = out_dir
        self.max_videos = max_videos
        self.fps = fps
        self._done = False

    @rank_zero_only
    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx: int) -> None:
        if self._done or trainer.global_step > 0:
            return
        self._done = True
        videos = batch["video"][: self.max_videos].float().cpu()
        write_video_set(os.path.join(self.out_dir, "first_batch"), videos,
                        batch["caption"][: self.max_videos], fps=self.fps)
