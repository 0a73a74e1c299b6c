"""In-memory H.264 encoding of uint8 frame arrays (the shard format of Sec. 5's training clips).

Every clip the project writes (synthetic benchmark, converted real videos, generated samples)
goes through :func:`encode_h264` so that all shards hold the same codec: H.264 in an MP4
container, ``yuv420p``. H.264 is the codec decord decodes reliably (VP8 and messy timestamps
give wrong frames, see notes/facts.md Sec. 2).
"""

from __future__ import annotations

import functools
import io
from fractions import Fraction

import numpy as np

from lumiere.errors import ConfigError


@functools.lru_cache(maxsize=1)
def _cpu_has_avx512() -> bool:
    """Whether this x86 CPU has AVX-512 (Linux; elsewhere assume not)."""
    try:
        with open("/proc/cpuinfo") as handle:
            return any(line.startswith("flags") and " avx512f" in line for line in handle)
    except OSError:
        return False


def _as_rate(fps: float) -> Fraction:
    """A frame rate as an exact fraction (29.97 -> 30000/1001) for the container time base."""
    if fps <= 0:
        raise ConfigError(f"fps must be positive, got {fps}")
    return Fraction(fps).limit_denominator(1001)


def encode_h264(
    frames: np.ndarray,
    fps: float,
    crf: int = 18,
    preset: str = "medium",
) -> bytes:
    """Encode ``frames`` (uint8, (T, H, W, 3), RGB) as an H.264/yuv420p MP4 and return its bytes.

    ``crf`` 18 is visually lossless for these small clips. H and W must be even (yuv420p stores
    chroma at half resolution). x264 runs single-threaded (and without its AVX-512 code) so the
    same frames always give the same bytes, which keeps shard generation reproducible.
    """
    frames = np.asarray(frames)
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
        raise ConfigError(
            f"encode_h264 expects uint8 frames of shape (T, H, W, 3), got {frames.dtype} {frames.shape}"
        )
    num_frames, height, width, _ = frames.shape
    if num_frames == 0:
        raise ConfigError("encode_h264 got zero frames")
    if height % 2 or width % 2:
        raise ConfigError(f"H.264 yuv420p needs even frame sizes, got {height}x{width}")

    import av  # PyAV bundles libx264; imported here so `import lumiere.data` stays cheap

    rate = _as_rate(fps)
    buffer = io.BytesIO()
    with av.open(buffer, mode="w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=rate)
        stream.width = width
        stream.height = height
        stream.pix_fmt = "yuv420p"
        stream.time_base = 1 / rate
        options = {"crf": str(int(crf)), "preset": preset}
        if _cpu_has_avx512():
            # x264's AVX-512 code reads uninitialised memory: the same frames then encode to
            # different bytes from run to run. Up to AVX2 it is deterministic and as fast.
            options["x264-params"] = "asm=AVX2"
        stream.options = options
        # One encoder thread, set on the codec context (PyAV's own thread count overrides a
        # "threads" option): x264's output depends on its thread count.
        stream.codec_context.thread_count = 1
        for index, frame_array in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame_array), format="rgb24")
            frame.pts = index
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():  # flush the encoder's delayed frames
            container.mux(packet)
    return buffer.getvalue()
