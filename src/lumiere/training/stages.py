"""The stage modules: text-to-image (stage 0) and the STUNet text-to-video base model (Sec. 3.1).

Stage 0 exists because no pretrained pixel-space T2I model can be downloaded here: it trains a
`UNet2DConditionModel` and a small text encoder on still frames, and exports them as a pipeline
folder with DeepFloyd IF's layout. The STUNet stage loads such an export (or a downloaded IF stage I,
`model.t2i_path`), freezes it, and trains only the temporal blocks that `STUNet` inserts.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

from diffusers import UNet2DConditionModel
from einops import rearrange
from torch import Tensor

from lumiere.errors import ConfigError, InputFileError
from lumiere.models import FrozenTextEncoder, STUNet, load_unet
from lumiere.models.pipeline_folder import resolve_model_parts
from lumiere.training.base import DiffusionModule, configured_sample_size
from lumiere.training.export_meta import check_objective_matches, read_export_meta, write_export_meta
from lumiere.training.text_cache import frozen_text_encoder

T2I_META_FILE = "lumiere_t2i.json"  # beside the exported unet/ weights
MODEL_INDEX_FILE = "model_index.json"
PIPELINE_COMPONENTS = ("unet", "text_encoder", "tokenizer", "scheduler", MODEL_INDEX_FILE)
EXPORT_STAGING_PREFIX = ".export-partial-"  # the temporary folder an export is written into


def write_export(out_dir: str | os.PathLike, components: Sequence[str], write: Callable[[str], None]) -> None:
    """Write the components of an export (folders `unet/`, `text_encoder/`, ..., or files such as
    `model_index.json`) so that no failure leaves half of one.

    `write(staging)` writes them into a temporary folder beside them (`<out_dir>/.export-partial-*`,
    same file system); only once all are complete is each renamed into place, replacing the previous
    export's folder of that name (anything else in `out_dir` stays). A failure (full disk, quota)
    removes the partial export, leaves the previous one as it was and says so in one line."""
    out = Path(out_dir)
    had_previous = any((out / name).exists() for name in components)
    kept = "the previous export is intact" if had_previous else "nothing was exported"
    try:
        out.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(dir=out, prefix=EXPORT_STAGING_PREFIX))
    except OSError as error:
        raise InputFileError(f"could not export to {out}: {error.strerror or error}; {kept}") from None
    moved_aside: list[str] = []  # previous components renamed into the staging folder
    installed: list[str] = []  # new components renamed into place
    try:
        write(str(staging))
        missing = [name for name in components if not (staging / name).exists()]
        if missing:
            raise FileNotFoundError(f"the export wrote no {', '.join(missing)}")
        for name in components:
            if (out / name).exists():
                os.rename(out / name, staging / f"{name}.previous")
                moved_aside.append(name)
            os.rename(staging / name, out / name)
            installed.append(name)
    except BaseException as error:
        try:  # a rename failed midway (or an interrupt): take the new components out, put the previous back
            for name in reversed(installed):
                os.rename(out / name, staging / f"{name}.new")
            for name in moved_aside:
                os.rename(staging / f"{name}.previous", out / name)
        except OSError:
            raise InputFileError(f"could not export to {out}: {error}; the previous export is in {staging} "
                                 "(*.previous): move it back by hand") from None
        shutil.rmtree(staging, ignore_errors=True)
        if isinstance(error, OSError):
            raise InputFileError(f"could not export to {out}: {error.strerror or error}; {kept}") from None
        raise
    shutil.rmtree(staging, ignore_errors=True)  # the previous components, no longer needed


def write_scheduler_config(folder: str, objective) -> None:
    """`scheduler/scheduler_config.json` of a stage-0 export: the DDPM schedule the U-Net was trained
    with. Clipping and thresholding off, variance fixed: the settings this project samples a
    stage-0 model with (lumiere.diffusion.build_scheduler's defaults)."""
    from diffusers import DDPMScheduler

    DDPMScheduler(num_train_timesteps=objective.num_train_timesteps, beta_schedule=objective.beta_schedule,
                  prediction_type=objective.prediction_type, variance_type="fixed_small", clip_sample=False,
                  thresholding=False).save_pretrained(folder)


def write_model_index(path: str, tokenizer_class: str) -> None:
    """The pipeline folder's `model_index.json`: which library and class each component folder holds."""
    import json

    import diffusers

    index = {"_class_name": "LumiereTextToImageExport", "_diffusers_version": diffusers.__version__,
             "unet": ["diffusers", "UNet2DConditionModel"], "text_encoder": ["transformers", "T5EncoderModel"],
             "tokenizer": ["transformers", tokenizer_class], "scheduler": ["diffusers", "DDPMScheduler"]}
    with open(path, "w") as handle:
        json.dump(index, handle, indent=2)


def check_frame_size(video: Tensor, size: int, key: str) -> None:
    """Refuse training clips whose frames are not ``size`` x ``size`` (the configured resolution)."""
    if tuple(video.shape[-2:]) != (size, size):
        raise ConfigError(f"this stage works on {size}x{size} frames (model.resolution), but the data's clips are "
                          f"{video.shape[-2]}x{video.shape[-1]}; set {key}={size}")


def repeat_per_frame(tensor: Tensor | None, num_frames: int) -> Tensor | None:
    """Repeat a per-video tensor (B, ...) to per-frame (B*T, ...) in frame-major `(b t)` order."""
    if tensor is None:
        return None
    return tensor.repeat_interleave(num_frames, dim=0)


def apply_unet_per_frame(unet: UNet2DConditionModel, x_t: Tensor, t: Tensor, cond: dict[str, Tensor]) -> Tensor:
    """The 2D U-Net on every frame independently: (B, C, T, H, W) -> (B, C_out, T, H, W)."""
    batch, _, frames = x_t.shape[:3]
    folded = rearrange(x_t, "b c t h w -> (b t) c h w")
    timesteps = t.expand(batch) if t.ndim == 0 else t
    output = unet(
        folded,
        repeat_per_frame(timesteps, frames),
        encoder_hidden_states=repeat_per_frame(cond["encoder_hidden_states"], frames),
        encoder_attention_mask=repeat_per_frame(cond.get("encoder_attention_mask"), frames),
        class_labels=repeat_per_frame(cond.get("class_labels"), frames),
    ).sample
    return rearrange(output, "(b t) c h w -> b c t h w", b=batch)


class TextToImageModule(DiffusionModule):
    """Stage 0: a pixel-space T2I diffusion model trained on still frames (T = 1 videos)."""

    def __init__(self, *, unet: UNet2DConditionModel, text_encoder: FrozenTextEncoder,
                 train_text_encoder: bool = True, gradient_checkpointing: bool = False,
                 resolution: int | None = None,  # frame size (data.resolution); None: the U-Net's sample_size
                 **kwargs) -> None:
        super().__init__(**kwargs)
        self.resolution = configured_sample_size(resolution, unet, "model.resolution")
        self.network = unet
        self.text_encoder = text_encoder
        self.text_encoder.set_trainable(train_text_encoder)
        self.train_text_encoder = train_text_encoder
        if gradient_checkpointing:
            self.network.enable_gradient_checkpointing()

    def frozen_modules(self):
        return [] if self.train_text_encoder else [self.text_encoder]

    def network_forward(self, x_t: Tensor, t: Tensor, cond: dict[str, Tensor]) -> Tensor:
        return apply_unet_per_frame(self.network, x_t, t, cond)

    @property
    def sample_size(self) -> int:
        return self.resolution

    def export_pretrained(self, out_dir: str) -> None:
        """Write the EMA weights as a pipeline folder with DeepFloyd IF's layout: `unet/` (diffusers),
        `text_encoder/` (transformers; its tokenizer files beside it too, so the folder stands alone),
        `tokenizer/`, `scheduler/scheduler_config.json` (the objective's noise schedule) and
        `model_index.json`. `model.t2i_path=<out_dir>` then loads it like a downloaded IF stage.

        All are written beside the previous export and replace it only once complete (`write_export`)."""
        def write(staging: str) -> None:
            with self.ema_scope():
                self.network.save_pretrained(os.path.join(staging, "unet"), safe_serialization=True)
                self.text_encoder.save_pretrained(os.path.join(staging, "text_encoder"))
            self.text_encoder.tokenizer.save_pretrained(os.path.join(staging, "tokenizer"))
            write_export_meta(os.path.join(staging, "unet"), T2I_META_FILE, self.objective)
            write_scheduler_config(os.path.join(staging, "scheduler"), self.objective)
            write_model_index(os.path.join(staging, MODEL_INDEX_FILE), type(self.text_encoder.tokenizer).__name__)

        write_export(out_dir, PIPELINE_COMPONENTS, write)


class TextToVideoModule(DiffusionModule):
    """The Lumiere base model: a frozen T2I U-Net inflated into a Space-Time U-Net (Fig. 4).

    The frozen parts come from ``t2i_path``, a pipeline folder (a DeepFloyd IF stage I download, or
    this project's stage-0 export), and/or the separate ``unet_path`` / ``text_encoder_path`` /
    ``tokenizer_path``, each of which replaces that part of the folder
    (``lumiere.models.pipeline_folder``). Frames are ``resolution`` pixels square, whatever the
    U-Net's ``sample_size``."""

    def __init__(self, *, stunet: Callable[..., STUNet], t2i_path: str | None = None, unet_path: str | None = None,
                 text_encoder_path: str | None = None, tokenizer_path: str | None = None, variant: str | None = None,
                 resolution: int | None = None, **kwargs) -> None:
        super().__init__(**kwargs)
        parts = resolve_model_parts(t2i_path, unet_path=unet_path, text_encoder_path=text_encoder_path,
                                    tokenizer_path=tokenizer_path, variant=variant,
                                    check_text_encoder_weights=self.text_cache is None)
        self.t2i_path = t2i_path
        self.unet_path, self.text_encoder_path = str(parts.unet_dir), str(parts.text_encoder_dir)
        self.tokenizer_path = str(parts.tokenizer_dir)
        self.scheduler_config = parts.scheduler_config
        # The temporal layers learn the objective the frozen T2I was trained with (Sec. 3.1).
        check_objective_matches(read_export_meta(parts.unet_dir, T2I_META_FILE), self.objective, parts.unet_dir)
        if parts.scheduler_config:  # a downloaded pipeline's noise schedule, the one its U-Net was trained with
            check_objective_matches(parts.scheduler_config, self.objective, parts.unet_dir.parent / "scheduler")
        unet = load_unet(parts.unet_dir, variant=variant)
        self.resolution = configured_sample_size(resolution, unet, "model.resolution")
        self.network = stunet(unet)
        self.text_encoder = frozen_text_encoder(parts.text_encoder_dir, tokenizer_path=parts.tokenizer_dir, variant=variant,
                                                text_cache=self.text_cache, missing=self.text_cache_missing)

    def frozen_modules(self):
        return [self.text_encoder, self.network.unet]

    def network_forward(self, x_t: Tensor, t: Tensor, cond: dict[str, Tensor]) -> Tensor:
        return self.network(x_t, t, cond["encoder_hidden_states"],
                            encoder_attention_mask=cond.get("encoder_attention_mask"),
                            class_labels=cond.get("class_labels"))

    def check_num_frames(self, num_frames: int) -> None:
        self.network.check_num_frames(num_frames)

    def prepare_batch(self, batch: dict, generators) -> tuple[Tensor, dict[str, Tensor]]:
        self.check_num_frames(batch["video"].shape[2])
        check_frame_size(batch["video"], self.sample_size, "data.resolution")
        return batch["video"], {}

    @property
    def sample_size(self) -> int:
        # A stage built around this one without running __init__ (the conditional model) may not
        # have set it: then the U-Net's size, as before model.resolution existed.
        resolution = self.__dict__.get("resolution")
        return int(resolution) if resolution is not None else int(self.network.unet.config.sample_size)
