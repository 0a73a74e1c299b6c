"""Data for Lumiere (Sec. 5): synthetic motion benchmark, shard conversion, clip decoding and
the ``VideoDataModule``.

Attributes are imported on first use (PEP 562), so ``import lumiere.data`` does not pull in
Lightning, decord or PyAV.
"""

from __future__ import annotations

from lumiere._lazy import lazy_exports

_EXPORTS = {
    # synthetic benchmark: vocabulary and captions, rendering, the shard writer
    "ATTRIBUTE_VOCAB": "lumiere.data.vocabulary",
    "RGB": "lumiere.data.vocabulary",
    "caption_from_labels": "lumiere.data.vocabulary",
    "sample_labels": "lumiere.data.vocabulary",
    "labels_from_caption": "lumiere.data.vocabulary",
    "label_ids": "lumiere.data.vocabulary",
    "render_clip": "lumiere.data.rendering",
    "synthetic_clips": "lumiere.data.rendering",
    "generate_synthetic_benchmark": "lumiere.data.synthetic",
    # the demo's synthetic styles (stylized generation, Sec. 4.1)
    "STYLE_KINDS": "lumiere.data.style",
    "StyleTransform": "lumiere.data.style",
    # codecs and decoding
    "encode_h264": "lumiere.data.codec",
    "decode_clip": "lumiere.data.decoders",
    "decode_clips": "lumiere.data.decoders",
    "decode_windows": "lumiere.data.decoders",
    "clip_windows": "lumiere.data.clip_windows",
    "decode_frames": "lumiere.data.decoders",
    "probe_video": "lumiere.data.decoders",
    "stride_for_fps": "lumiere.data.clip_windows",
    "VideoDecodeError": "lumiere.data.video_errors",
    "TooFewFramesError": "lumiere.data.video_errors",
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
    "describe_skips": "lumiere.data.loader",
    "BadSampleReporter": "lumiere.data.callbacks",
}

__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, globals(), _EXPORTS)
