"""Helpers for tests that run the real Hydra configs in-process (compose API, tmp folders)."""

from __future__ import annotations

import os
from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, open_dict

REPO_ROOT = Path(__file__).resolve().parents[1]
CONFIG_DIR = REPO_ROOT / "conf"

TINY_DATA = dict(num_train=12, num_val=4, num_test=4, num_frames=16, fps=16, size=16, hr_size=32, seed=0)


def compose_config(config_name: str, overrides: list[str], output_dir: str | os.PathLike) -> DictConfig:
    """Compose `conf/<config_name>.yaml` as the entry point would, with outputs under `output_dir`."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
        cfg = compose(config_name, overrides=list(overrides), return_hydra_config=True)
    with open_dict(cfg):
        cfg.hydra.runtime.output_dir = str(output_dir)
        cfg.hydra.runtime.cwd = str(REPO_ROOT)
        cfg.hydra.job.num = 0
    HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):
        del cfg["hydra"]
    return cfg


def make_tiny_dataset(data_dir: Path) -> Path:
    """The tiny synthetic benchmark the tiny experiments read (`<data_dir>/tiny/{train,val,test}`)."""
    from lumiere.data import generate_synthetic_benchmark

    generate_synthetic_benchmark(data_dir / "tiny", **TINY_DATA, shard_max_bytes=200_000)
    return data_dir / "tiny"


def make_tiny_t2i_workspace(root: Path) -> Path:
    """The tiny benchmark plus a tiny T2I export (random IF-like U-Net, tiny T5) for a STUNet to inflate."""
    import torch

    from lumiere.models import build_tiny_text_encoder, build_unet, save_unet

    make_tiny_dataset(root / "data")
    torch.manual_seed(0)
    save_unet(build_unet("if_stage1_tiny"), root / "artifacts" / "t2i" / "unet")
    build_tiny_text_encoder().save_pretrained(root / "artifacts" / "t2i" / "text_encoder")
    return root
