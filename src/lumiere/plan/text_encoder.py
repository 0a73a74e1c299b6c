"""How many parameters the frozen text encoder puts on each GPU, for ``python -m lumiere.plan --text-encoder``.

A run with cached text embeddings (``model.text_cache``) never loads the encoder: ``none``. Otherwise
the encoder is counted from its config on the meta device (no weights read): a ``config.json``, a
folder holding one (``text_encoder/config.json`` of an IF pipeline folder), ``t5-v1_1-xxl`` (IF's
encoder, whose config is written out below), or a plain parameter count such as ``4.76e9``.
"""

from __future__ import annotations

from pathlib import Path

import torch

from lumiere.errors import ConfigError
from lumiere.plan.fake_step import read_part_config

# google/t5-v1_1-xxl's encoder (the one DeepFloyd IF ships in text_encoder/): its config.json values.
T5_V1_1_XXL = dict(d_model=4096, d_ff=10240, d_kv=64, num_heads=64, num_layers=24, vocab_size=32128,
                   feed_forward_proj="gated-gelu", relative_attention_num_buckets=32, tie_word_embeddings=False)
NAMED_ENCODERS = {"t5-v1_1-xxl": T5_V1_1_XXL}


def count_on_meta(config: dict) -> int:
    """Parameters of the encoder a transformers config describes, built on the meta device."""
    from transformers import AutoConfig, AutoModel, T5Config, T5EncoderModel

    config = dict(config)
    model_type = config.pop("model_type", "t5")
    with torch.device("meta"):
        if model_type in ("t5", "umt5", "mt5"):
            model = T5EncoderModel(T5Config(**config))  # the encoder alone, as the training module loads it
        else:
            model = AutoModel.from_config(AutoConfig.for_model(model_type, **config))
    return sum(p.numel() for p in model.parameters())


def text_encoder_parameters(source: str) -> int:
    """The parameter count of ``source`` (see the module doc); 0 for ``none``."""
    if source in ("", "none", "cached"):
        return 0
    if source in NAMED_ENCODERS:
        return count_on_meta(NAMED_ENCODERS[source])
    try:
        count = float(source)
    except ValueError:
        path = Path(source)
        if not path.exists():
            raise ConfigError(f"--text-encoder {source!r} is neither none, a count, {sorted(NAMED_ENCODERS)}, "
                              "nor a config.json or folder") from None
        config = read_part_config(path, "text_encoder", "text encoder")
        return count_on_meta({k: v for k, v in config.items() if not k.startswith("_") and k != "architectures"})
    if count < 0 or count != int(count):
        raise ConfigError(f"--text-encoder count must be a whole non-negative number, got {source!r}")
    return int(count)
