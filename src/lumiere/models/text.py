"""Text encoder for the text-to-image base and the STUNet (paper Sec. 3: a frozen T5 as in Imagen / IF).

``FrozenTextEncoder`` wraps a transformers tokenizer and a ``T5EncoderModel``. Prompts are padded to
``max_length`` tokens (and truncated), so every batch has the same text length; the returned mask
marks the real tokens. For the paper-scale setting it loads a local T5 folder and stays frozen;
for the CPU demo, ``build_tiny_text_encoder`` makes a small randomly initialised T5 encoder over
byte-level ByT5 tokens (needs no vocabulary file) that the text-to-image stage trains and later
stages freeze. Nothing here touches the network: every load is ``local_files_only``.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn
from transformers import AutoTokenizer, ByT5Tokenizer, PreTrainedTokenizerBase, T5Config, T5EncoderModel

from lumiere.errors import ConfigError, InputFileError

DEFAULT_MAX_LENGTH = 77


class FrozenTextEncoder(nn.Module):
    """Tokenizer + T5 encoder: prompts -> (hidden (B, L, D) float, mask (B, L) bool); frozen unless ``trainable``."""

    def __init__(
        self,
        tokenizer: PreTrainedTokenizerBase,
        encoder: T5EncoderModel,
        max_length: int = DEFAULT_MAX_LENGTH,  # every prompt padded / truncated to this many tokens
        trainable: bool = False,  # True only while the text-to-image stage trains a small encoder
    ):
        super().__init__()
        if max_length < 1:
            raise ConfigError(f"text max_length must be >= 1, got {max_length}")
        if tokenizer.pad_token_id is None:
            raise ConfigError("the tokenizer has no padding token; cannot pad prompts to a fixed length")
        self.tokenizer = tokenizer
        self.tokenizer.model_max_length = max_length  # saved with the tokenizer, read back by from_pretrained
        self.encoder = encoder
        self.max_length = max_length
        self.set_trainable(trainable)

    @property
    def dim(self) -> int:
        """Width D of the hidden states (the U-Net's encoder_hid_dim / cross_attention_dim)."""
        return int(self.encoder.config.d_model)

    def set_trainable(self, trainable: bool) -> None:
        self.trainable = bool(trainable)
        self.encoder.requires_grad_(self.trainable)
        if not self.trainable:
            self.encoder.eval()

    def train(self, mode: bool = True) -> FrozenTextEncoder:
        super().train(mode)
        if not self.trainable:
            self.encoder.eval()  # a frozen encoder never runs dropout, whatever mode the caller sets
        return self

    def tokenize(self, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        if isinstance(prompts, str) or not all(isinstance(p, str) for p in prompts):
            raise TypeError("FrozenTextEncoder expects a list of prompt strings")
        tokens = self.tokenizer(
            list(prompts),
            padding="max_length",
            max_length=self.max_length,
            truncation=True,
            return_tensors="pt",
        )
        device = next(self.encoder.parameters()).device
        return tokens["input_ids"].to(device), tokens["attention_mask"].to(device).bool()

    def forward(self, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        input_ids, mask = self.tokenize(prompts)
        with torch.set_grad_enabled(self.trainable and torch.is_grad_enabled()):
            hidden = self.encoder(input_ids=input_ids, attention_mask=mask.long()).last_hidden_state
        return hidden.float(), mask

    # -- files ------------------------------------------------------------------------------------

    def save_pretrained(self, path: str | Path) -> Path:
        """Write tokenizer and encoder (safetensors) into one folder that ``from_pretrained`` reads."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        self.tokenizer.save_pretrained(str(path))
        self.encoder.save_pretrained(str(path), safe_serialization=True)
        return path

    @classmethod
    def from_pretrained(
        cls,
        path: str | Path,
        max_length: int | None = None,  # None: the length saved with the tokenizer (else 77)
        trainable: bool = False,
        dtype: torch.dtype | None = None,
    ) -> FrozenTextEncoder:
        """Load from a local folder (tokenizer + encoder side by side, or ``tokenizer/`` and
        ``text_encoder/`` subfolders as in a diffusers pipeline folder). A hub id is rejected."""
        root = Path(path)
        if not root.is_dir():
            raise InputFileError(
                f"text encoder '{path}' is not a local folder: it must be a local path "
                "(nothing is downloaded at run time; download a hub model first and pass its folder)"
            )
        encoder_dir, tokenizer_dir = root, root
        if not (root / "config.json").is_file() and (root / "text_encoder" / "config.json").is_file():
            encoder_dir, tokenizer_dir = root / "text_encoder", root / "tokenizer"
        if not (encoder_dir / "config.json").is_file():
            raise InputFileError(f"{root} holds no text encoder (no config.json there or in text_encoder/)")
        try:
            tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir), local_files_only=True)
            kwargs = {"dtype": dtype} if dtype is not None else {}
            # safetensors only: a pickled .bin in a folder handed to us is never loaded
            encoder = T5EncoderModel.from_pretrained(str(encoder_dir), local_files_only=True, use_safetensors=True, **kwargs)
        except (OSError, ValueError) as err:
            raise InputFileError(f"cannot load the text encoder in {root}: {str(err).splitlines()[0]}") from err
        if max_length is None:
            saved = getattr(tokenizer, "model_max_length", None)
            max_length = int(saved) if saved and saved < 100_000 else DEFAULT_MAX_LENGTH
        return cls(tokenizer, encoder, max_length=max_length, trainable=trainable)


def build_tiny_text_encoder(
    d_model: int = 64,  # hidden width D (TINY_TEXT_DIM in lumiere.models.t2i)
    num_layers: int = 2,
    num_heads: int = 4,
    d_ff: int = 128,
    # Bytes per prompt: the synthetic benchmark's longest caption is 108 bytes + EOS; a shorter limit
    # cuts captions after the motion's first words.
    max_length: int = 112,
    trainable: bool = True,  # a random encoder is only useful once trained with the text-to-image stage
) -> FrozenTextEncoder:
    """A small randomly initialised T5 encoder over byte-level ByT5 tokens: fully offline."""
    if d_model % num_heads:
        raise ConfigError(f"d_model {d_model} must be divisible by num_heads {num_heads}")
    tokenizer = ByT5Tokenizer()
    config = T5Config(
        # ByT5's vocab_size is 256 bytes but its ids go up to len(tokenizer) = 384 (specials + extra ids).
        vocab_size=len(tokenizer),
        d_model=d_model,
        d_kv=d_model // num_heads,
        d_ff=d_ff,
        num_layers=num_layers,
        num_heads=num_heads,
        dropout_rate=0.0,
        feed_forward_proj="gated-gelu",
        is_encoder_decoder=False,
        use_cache=False,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    return FrozenTextEncoder(tokenizer, T5EncoderModel(config), max_length=max_length, trainable=trainable)
