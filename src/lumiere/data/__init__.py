"""Data for Lumiere (Sec. 5): synthetic motion benchmark, shard conversion, clip decoding and
the ``VideoDataModule``.

Attributes are imported on first use (PEP 562), so ``import lumiere.data`` does not pull in
Lightning, decord or PyAV.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    # synthetic benchmark
    "ATTRIBUTE_VOCAB": "lumiere.data.synthetic",
    "caption_from_labels": "lumiere.data.synthetic",
    "sample_labels": "lumiere.data.synthetic",
    "render_clip": "lumiere.data.synthetic",
    "labels_from_caption": "lumiere.data.synthetic",
    "label_ids": "lumiere.data.synthetic",
    "generate_synthetic_benchmark": "lumiere.data.synthetic",
    # codecs and decoding
    "encode_h264": "lumiere.data.codec",
    "decode_clip": "lumiere.data.decoders",
    "decode_frames": "lumiere.data.decoders",
    "probe_video": "lumiere.data.decoders",
    "stride_for_fps": "lumiere.data.decoders",
    "VideoDecodeError": "lumiere.data.decoders",
    "TooFewFramesError": "lumiere.data.decoders",
    # shards and conversion
    "expand_shards": "lumiere.data.shards",
    "convert_videos": "lumiere.data.convert",
    "convert_ucf101": "lumiere.data.convert",
    "ucf101_caption": "lumiere.data.convert",
    # loading
    "VideoDataModule": "lumiere.data.datamodule",
    "VideoShardDataset": "lumiere.data.dataset",
    "SKIP_REASONS": "lumiere.data.dataset",
    "VideoDataLoader": "lumiere.data.loader",
    "collate_examples": "lumiere.data.loader",
    "BadSampleReporter": "lumiere.data.callbacks",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'lumiere.data' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
