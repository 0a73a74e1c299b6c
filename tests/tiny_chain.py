"""A tiny model chain for the applications, trained in about a minute on two CPU cores.

T2I stage (Sec. 3) -> STUNet base (Sec. 3.1) -> conditional model (Sec. 4.2), plus a style T2I
(Sec. 4.1), all at 16x16 pixels and 8 frames, on clips rendered by the synthetic benchmark.
It goes through the real code paths: model configs instantiated by Hydra, Lightning
`Trainer.fit` and `save_checkpoint`, `load_module_from_checkpoint`, diffusers exports. The
tests share one such chain (`apps_fixtures.shared_tiny_chain`), and the notebook test runs
`notebooks/applications.ipynb` on it. It is far from converged: it shows that everything runs,
not what a trained model looks like.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import lightning.pytorch as pl
import torch
from hydra.utils import instantiate
from torch.utils.data import DataLoader, Dataset

from lumiere.data.rendering import synthetic_clips

SIZE = 16   # synthetic_clips' defaults: 8 frames of 16x16 pixels
FRAMES = 8  # the tiny U-Net has two spatial downsamplers: temporal factor 4, so >= 8 frames


class ClipDataset(Dataset):
    """Clips as the dict samples a `VideoDataModule` batch holds (video, caption)."""

    def __init__(self, videos: torch.Tensor, captions: list[str]) -> None:
        self.videos, self.captions = videos, captions

    def __len__(self) -> int:
        return len(self.captions)

    def __getitem__(self, index: int) -> dict:
        return {"video": self.videos[index], "caption": self.captions[index]}


def collate(samples: list[dict]) -> dict:
    return {"video": torch.stack([s["video"] for s in samples]), "caption": [s["caption"] for s in samples]}


def fit(module, videos: torch.Tensor, captions: list[str], steps: int, batch_size: int, seed: int) -> pl.Trainer:
    """Lightning fit for a fixed number of optimizer steps on CPU, no logger, no checkpoint callback."""
    pl.seed_everything(seed, workers=False, verbose=False)
    loader = DataLoader(ClipDataset(videos, captions), batch_size=batch_size, shuffle=True, collate_fn=collate,
                        generator=torch.Generator().manual_seed(seed))
    trainer = pl.Trainer(max_steps=steps, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0,
                         num_sanity_val_steps=0)
    if steps > 0:
        trainer.fit(module, train_dataloaders=loader)
    return trainer


def save_checkpoint(module, trainer: pl.Trainer | None, path: str) -> str:
    """A stage checkpoint: Lightning's own after a fit, else the same dict Lightning would write."""
    if trainer is not None and trainer.global_step > 0:
        trainer.save_checkpoint(path)
        return path
    module.setup("fit")  # creates the EMA, as at the start of a fit
    checkpoint = {"state_dict": module.state_dict()}
    module.on_save_checkpoint(checkpoint)  # keeps trainable weights only, adds EMA and model config
    torch.save(checkpoint, path)
    return path


# ---------------------------------------------------------------------------- model configs
def common_config(lr: float) -> dict:
    return {"objective": {"_target_": "lumiere.diffusion.DiffusionObjective", "num_train_timesteps": 1000,
                          "beta_schedule": "squaredcos_cap_v2", "prediction_type": "epsilon",
                          "loss_weighting": "min_snr"},
            "optimizer": {"_target_": "torch.optim.AdamW", "_partial_": True, "lr": lr, "weight_decay": 0.0},
            "lr_warmup_steps": 0, "ema_decay": 0.9, "caption_dropout": 0.1, "val_prompts": [],
            "val_num_frames": FRAMES,
            "sampler": {"scheduler": "ddim", "num_inference_steps": 10, "guidance_scale": 2.0}}


def t2i_config(lr: float = 2e-3) -> dict:
    return {"_target_": "lumiere.training.TextToImageModule",
            "unet": {"_target_": "lumiere.models.build_unet", "preset": "if_stage1_tiny"},
            # 32 byte tokens, as when the tests' thresholds on this chain were measured: with the encoder's
            # default 112 the conditional stage's preservation margin fell to 0.50 dB (threshold 0.5).
            "text_encoder": {"_target_": "lumiere.models.build_tiny_text_encoder", "max_length": 32},
            **common_config(lr)}


def base_config(t2i_dir: str, lr: float = 1e-3) -> dict:
    return {"_target_": "lumiere.training.TextToVideoModule",
            "unet_path": os.path.join(t2i_dir, "unet"), "text_encoder_path": os.path.join(t2i_dir, "text_encoder"),
            "stunet": {"_target_": "lumiere.models.STUNet", "_partial_": True, "num_temporal_attention_layers": 1,
                       "temporal_attention_head_dim": 16},
            **common_config(lr)}


def conditional_config(base_ckpt: str, lr: float = 2e-3, conv_in_training: str = "new_channels") -> dict:
    return {"_target_": "lumiere.training.conditional.ConditionalVideoModule", "base_ckpt_path": base_ckpt,
            "conv_in_training": conv_in_training, **common_config(lr)}


def style_config(t2i_dir: str, kind: str = "palette", lr: float = 2e-3) -> dict:
    return {"_target_": "lumiere.training.style_finetune.StyleFineTuneModule",
            "unet_path": os.path.join(t2i_dir, "unet"), "text_encoder_path": os.path.join(t2i_dir, "text_encoder"),
            "style": {"_target_": "lumiere.data.style.StyleTransform", "kind": kind}, **common_config(lr)}


def build_module(config: dict):
    """Instantiate a stage from its config, and keep the config in it as the train task does."""
    module = instantiate(config, _convert_="partial")
    module.model_config = config
    return module


def still_frames(videos: torch.Tensor, captions: list[str], every: int = 4):
    """Every `every`-th frame of each clip as a one-frame video, for the T2I stages."""
    stills = videos[:, :, ::every]
    per_clip = stills.shape[2]
    stills = stills.permute(0, 2, 1, 3, 4).reshape(-1, 3, 1, *videos.shape[-2:])
    return stills, [caption for caption in captions for _ in range(per_clip)]


# ---------------------------------------------------------------------------- the chain
@contextmanager
def intra_op_threads(num_threads: int | None) -> Iterator[None]:
    """Run with `num_threads` torch threads, then restore the previous count.

    At 16x16 pixels the tensors are so small that a second intra-op thread gains little, and on a
    busy machine (other processes on the same cores) a multi-threaded op stalls waiting for its
    threads: one thread is both the cheapest and the most predictable choice for the tiny chain.
    """
    previous = torch.get_num_threads()
    if num_threads:
        torch.set_num_threads(num_threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


@dataclass
class TinyChain:
    root: str
    t2i_dir: str                     # exported T2I stage: unet/ + text_encoder/
    style_dir: str                   # exported style T2I (palette style): unet/ + text_encoder/
    base_ckpt: str                   # base STUNet checkpoint
    conditional_ckpt: str            # conditional (7-channel) checkpoint, fine-tuned
    untrained_conditional_ckpt: str  # the conditional model at initialisation (equals the base)
    videos: torch.Tensor             # held-out clips (B, 3, T, H, W)
    captions: list[str]


def build_tiny_chain(root: str, *, t2i_steps: int = 200, base_steps: int = 20, conditional_steps: int = 200,
                     style_steps: int = 40, num_clips: int = 48, seed: int = 0,
                     num_threads: int | None = 1) -> TinyChain:
    """Train the stages at tiny size under `root`; return the paths of their exports and checkpoints."""
    with intra_op_threads(num_threads):
        return _build_tiny_chain(root, t2i_steps, base_steps, conditional_steps, style_steps, num_clips, seed)


def _build_tiny_chain(root: str, t2i_steps: int, base_steps: int, conditional_steps: int, style_steps: int,
                      num_clips: int, seed: int) -> TinyChain:
    os.makedirs(root, exist_ok=True)
    videos, captions = synthetic_clips(num_clips, seed=seed)
    held_out, held_out_captions = synthetic_clips(4, seed=seed + 1)
    stills, still_captions = still_frames(videos, captions)

    # Stage 0: text-to-image on still frames; and its style fine-tune (Sec. 4.1).
    t2i = build_module(t2i_config())
    fit(t2i, stills, still_captions, t2i_steps, batch_size=8, seed=seed)
    t2i_dir = os.path.join(root, "t2i")
    t2i.export_pretrained(t2i_dir)
    style = build_module(style_config(t2i_dir))
    fit(style, stills, still_captions, style_steps, batch_size=8, seed=seed)
    style_dir = os.path.join(root, "style_t2i")
    style.export_pretrained(style_dir)

    # Stage 1: the STUNet base (frozen T2I, trained temporal blocks).
    base = build_module(base_config(t2i_dir))
    trainer = fit(base, videos, captions, base_steps, batch_size=4, seed=seed)
    base_ckpt = save_checkpoint(base, trainer, os.path.join(root, "base.ckpt"))

    # Stage 2: the conditional model, at initialisation and fine-tuned on random masks.
    untrained = build_module(conditional_config(base_ckpt))
    untrained_ckpt = save_checkpoint(untrained, None, os.path.join(root, "conditional_init.ckpt"))
    conditional = build_module(conditional_config(base_ckpt))
    trainer = fit(conditional, videos, captions, conditional_steps, batch_size=4, seed=seed)
    conditional_ckpt = save_checkpoint(conditional, trainer, os.path.join(root, "conditional.ckpt"))
    return TinyChain(root, t2i_dir, style_dir, base_ckpt, conditional_ckpt, untrained_ckpt, held_out,
                     held_out_captions)
