"""The stage modules: text-to-image (stage 0) and the STUNet text-to-video base model (Sec. 3.1).

Stage 0 exists because no pretrained pixel-space T2I model can be downloaded here: it trains a
`UNet2DConditionModel` and a small text encoder on still frames, and exports them in diffusers /
transformers format. The STUNet stage loads such an export (or real IF stage-I / T5 weights from
local folders), freezes it, and trains only the temporal blocks that `STUNet` inserts.
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

from lumiere.errors import InputFileError
from lumiere.models import FrozenTextEncoder, STUNet, load_unet
from lumiere.training.base import DiffusionModule
from lumiere.training.export_meta import check_objective_matches, read_export_meta, write_export_meta

T2I_META_FILE = "lumiere_t2i.json"  # beside the exported unet/ weights
EXPORT_STAGING_PREFIX = ".export-partial-"  # the temporary folder an export is written into


def write_export(out_dir: str | os.PathLike, components: Sequence[str], write: Callable[[str], None]) -> None:
    """Write the component folders of an export (`unet/`, `text_encoder/`, ...) so that no failure
    leaves half of one.

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
        missing = [name for name in components if not (staging / name).is_dir()]
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
                 train_text_encoder: bool = True, gradient_checkpointing: bool = False, **kwargs) -> None:
        super().__init__(**kwargs)
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
        return int(self.network.config.sample_size)

    def export_pretrained(self, out_dir: str) -> None:
        """Write the EMA weights as `unet/` (diffusers) and `text_encoder/` (transformers).

        Both are written beside the previous export and replace it only once complete (`write_export`)."""
        def write(staging: str) -> None:
            with self.ema_scope():
                self.network.save_pretrained(os.path.join(staging, "unet"), safe_serialization=True)
                self.text_encoder.save_pretrained(os.path.join(staging, "text_encoder"))
            write_export_meta(os.path.join(staging, "unet"), T2I_META_FILE, self.objective)

        write_export(out_dir, ("unet", "text_encoder"), write)


class TextToVideoModule(DiffusionModule):
    """The Lumiere base model: a frozen T2I U-Net inflated into a Space-Time U-Net (Fig. 4)."""

    def __init__(self, *, unet_path: str, text_encoder_path: str, stunet: Callable[..., STUNet],
                 **kwargs) -> None:
        super().__init__(**kwargs)
        self.unet_path = unet_path
        self.text_encoder_path = text_encoder_path
        # The temporal layers learn the objective the frozen T2I was trained with (Sec. 3.1).
        check_objective_matches(read_export_meta(unet_path, T2I_META_FILE), self.objective, unet_path)
        self.network = stunet(load_unet(unet_path))
        self.text_encoder = FrozenTextEncoder.from_pretrained(text_encoder_path)  # frozen by default

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
        return batch["video"], {}

    @property
    def sample_size(self) -> int:
        return int(self.network.unet.config.sample_size)
