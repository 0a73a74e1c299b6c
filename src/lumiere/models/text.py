"""Text encoder for the text-to-image base and the STUNet (paper Sec. 3: a frozen T5 as in Imagen / IF).

``FrozenTextEncoder`` wraps a transformers tokenizer and a ``T5EncoderModel``. Prompts are padded to
``max_length`` tokens (and truncated), so every batch has the same text length; the returned mask
marks the real tokens. For the paper-scale setting it loads a local T5 folder and stays frozen;
for the CPU demo, ``build_tiny_text_encoder`` makes a small randomly initialised T5 encoder over
byte-level ByT5 tokens (needs no vocabulary file) that the text-to-image stage trains and later
stages freeze. Nothing here touches the network: every load is ``local_files_only``.
"""

from __future__ import annotations

import string
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn
from transformers import AutoTokenizer, ByT5Tokenizer, PreTrainedTokenizerBase, T5Config, T5EncoderModel

from lumiere.errors import ConfigError, InputFileError

DEFAULT_MAX_LENGTH = 77
# A real T5 / IF sentencepiece vocabulary covers essentially every English word (only characters it
# never saw, e.g. some emoji, become <unk>); a mismatched or broken tokenizer maps most words to <unk>.
# 5% of the caption words leaves room for a few rare characters and still catches the broken case.
MAX_UNKNOWN_WORD_FRACTION = 0.05


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
        max_length: int | None = None,  # None: the tokenizer folder's model_max_length (IF: 77), else 77
        trainable: bool = False,
        dtype: torch.dtype | None = None,
        tokenizer_path: str | Path | None = None,  # None: beside the encoder, or the pipeline's tokenizer/
        variant: str | None = None,  # weight variant, e.g. "fp16" (the *.fp16*.safetensors files)
    ) -> FrozenTextEncoder:
        """Load from a local folder (tokenizer + encoder side by side, or ``tokenizer/`` and
        ``text_encoder/`` subfolders as in a diffusers pipeline folder). A hub id is rejected, and so
        is a folder without tokenizer files (the tokenizer would turn every word into <unk>)."""
        from lumiere.models.pipeline_folder import (
            TEXT_ENCODER_WEIGHTS,
            check_weight_files,
            require_local_folder,
            require_tokenizer_files,
        )

        root = Path(path)
        if not root.is_dir():
            raise InputFileError(
                f"text encoder '{path}' is not a local folder: it must be a local path "
                "(nothing is downloaded at run time; download a hub model first and pass its folder)"
            )
        encoder_dir = root
        if not (root / "config.json").is_file() and (root / "text_encoder" / "config.json").is_file():
            encoder_dir = root / "text_encoder"
        if not (encoder_dir / "config.json").is_file():
            raise InputFileError(f"{root} holds no text encoder (no config.json there or in text_encoder/)")
        check_weight_files(encoder_dir, TEXT_ENCODER_WEIGHTS, variant, "text encoder")
        if tokenizer_path is not None:
            tokenizer_dir = require_local_folder(tokenizer_path, "model.tokenizer_path")
        elif has_own_tokenizer(encoder_dir):
            tokenizer_dir = encoder_dir
        else:
            tokenizer_dir = encoder_dir.parent / "tokenizer" if encoder_dir.name == "text_encoder" else encoder_dir
        require_tokenizer_files(tokenizer_dir, f"the text encoder {root}")
        tokenizer = load_tokenizer(tokenizer_dir)
        try:
            kwargs = {"dtype": dtype} if dtype is not None else {}
            # safetensors only: a pickled .bin in a folder handed to us is never loaded
            encoder = T5EncoderModel.from_pretrained(str(encoder_dir), local_files_only=True, use_safetensors=True,
                                                     variant=variant, **kwargs)
        except (OSError, ValueError) as err:
            raise InputFileError(f"cannot load the text encoder in {root}: {str(err).splitlines()[0]}") from err
        if len(tokenizer) > encoder.config.vocab_size:
            raise InputFileError(f"the tokenizer in {tokenizer_dir} has {len(tokenizer)} tokens but the text encoder in "
                                 f"{encoder_dir} embeds {encoder.config.vocab_size}: they do not belong together")
        if max_length is None:
            saved = getattr(tokenizer, "model_max_length", None)
            max_length = int(saved) if saved and saved < 100_000 else DEFAULT_MAX_LENGTH
        return cls(tokenizer, encoder, max_length=max_length, trainable=trainable)

    # -- vocabulary check -------------------------------------------------------------------------

    def unknown_word_fraction(self, texts: Sequence[str]) -> tuple[float, list[str]]:
        """The fraction of the words of ``texts`` (whitespace-separated, punctuation stripped) that the
        tokenizer maps to its unknown token, wholly or in part; and up to 5 of those words."""
        unknown_id = self.tokenizer.unk_token_id
        words = [word.strip(string.punctuation) for text in texts for word in text.split()]
        words = [word for word in words if word]
        if unknown_id is None or not words:
            return 0.0, []
        counts = Counter(words)
        distinct = list(counts)
        ids = self.tokenizer(distinct, add_special_tokens=False)["input_ids"]
        unknown = [word for word, word_ids in zip(distinct, ids) if unknown_id in word_ids]
        return sum(counts[word] for word in unknown) / len(words), unknown[:5]

    def check_vocabulary(self, texts: Sequence[str], source: str) -> None:
        """Refuse a tokenizer under which more than MAX_UNKNOWN_WORD_FRACTION of the words of ``texts``
        (e.g. the training captions) become <unk>: every such prompt would condition alike."""
        fraction, examples = self.unknown_word_fraction(texts)
        if fraction > MAX_UNKNOWN_WORD_FRACTION:
            raise InputFileError(
                f"the text encoder's tokenizer maps {fraction:.0%} of the words of {source} to its unknown token "
                f"(e.g. {', '.join(map(repr, examples))}; at most {MAX_UNKNOWN_WORD_FRACTION:.0%} allowed): it is not the "
                "tokenizer this encoder was trained with; point model.tokenizer_path at the right one")


def has_own_tokenizer(folder: Path) -> bool:
    from lumiere.models.pipeline_folder import has_tokenizer_files

    return has_tokenizer_files(folder)


def load_tokenizer(folder: str | Path) -> PreTrainedTokenizerBase:
    """The tokenizer saved in ``folder`` (local files only). T5's ``spiece.model`` needs the
    ``sentencepiece`` package, a dependency of this project."""
    try:
        return AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
    except (OSError, ValueError, ImportError) as err:
        raise InputFileError(f"cannot load the tokenizer in {folder}: {str(err).strip().splitlines()[0]}") from err


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
