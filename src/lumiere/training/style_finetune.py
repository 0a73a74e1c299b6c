"""Fine-tune the stage-0 T2I model on a synthetic style, for stylized generation (paper Sec. 4.1).

The paper takes T2I models fine-tuned on a style image (StyleDrop) and interpolates the STUNet's
spatial weights towards them. Here the style is a deterministic `StyleTransform` applied to the
training frames, and the model fine-tuned is the stage-0 T2I export that the STUNet inflates, so
the style U-Net has exactly the STUNet's spatial weights' names and shapes.

The text encoder stays frozen: the STUNet keeps the original text encoder, so the style U-Net
must learn the style under the same text states it will meet when interpolated.

    python train.py experiment=demo_style_t2i    # writes ${paths.artifacts_dir}/style_t2i/{unet,text_encoder}
"""

from __future__ import annotations

from torch import Tensor

from lumiere.data.style import StyleTransform
from lumiere.errors import ConfigError
from lumiere.models import FrozenTextEncoder, load_unet
from lumiere.training.export_meta import check_objective_matches, read_export_meta
from lumiere.training.stages import T2I_META_FILE, TextToImageModule


class StyleFineTuneModule(TextToImageModule):
    """The T2I stage, initialised from an export and trained on styled frames (the text encoder frozen)."""

    def __init__(self, *, unet_path: str, text_encoder_path: str, style: StyleTransform,
                 unet: None = None, text_encoder: None = None, train_text_encoder: bool = False, **kwargs) -> None:
        # `unet` / `text_encoder` / `train_text_encoder` exist so the T2I model config group can be
        # reused with them set to null / false: the weights come from the export paths instead.
        if unet is not None or text_encoder is not None:
            raise ConfigError("the style fine-tune starts from an export: set unet_path / text_encoder_path, "
                              "and unet / text_encoder to null")
        if train_text_encoder:
            raise ConfigError("the style fine-tune keeps the text encoder frozen (the STUNet uses the original one)")
        if not isinstance(style, StyleTransform):
            raise ConfigError(f"style must be a lumiere.data.style.StyleTransform, got {type(style).__name__}")
        super().__init__(unet=load_unet(unet_path), text_encoder=FrozenTextEncoder.from_pretrained(text_encoder_path),
                         train_text_encoder=False, **kwargs)
        self.unet_path, self.text_encoder_path = unet_path, text_encoder_path
        self.style = style
        # The style weights are interpolated with the STUNet's spatial weights: same objective.
        check_objective_matches(read_export_meta(unet_path, T2I_META_FILE), self.objective, unet_path)

    def prepare_batch(self, batch: dict, generators) -> tuple[Tensor, dict[str, Tensor]]:
        x0, extra = super().prepare_batch(batch, generators)
        return self.style(x0), extra
