"""Why video bytes could not become a clip: the decode errors and the container sniffing behind
their ``reason`` (so the loader's skip report says *why* a sample was dropped)."""

from __future__ import annotations

import struct

from lumiere.errors import InputFileError

# ----------------------------------------------------------------------------------------------
# Errors
# ----------------------------------------------------------------------------------------------


class VideoDecodeError(InputFileError):
    """Video bytes that cannot be decoded. ``reason`` is one of
    ``empty | not_video | truncated | corrupt | too_short``."""

    def __init__(self, message: str, reason: str = "corrupt"):
        super().__init__(message)
        self.reason = reason


class TooFewFramesError(VideoDecodeError):
    """The video decodes but holds fewer frames than the clip needs."""

    def __init__(self, available: int, required: int):
        super().__init__(
            f"video has {available} frames, the clip needs {required}", reason="too_short"
        )
        self.available = available
        self.required = required


# ----------------------------------------------------------------------------------------------
# Classifying undecodable bytes (so skip reports say *why*)
# ----------------------------------------------------------------------------------------------

_ISO_BMFF_TOP_LEVEL = {b"ftyp", b"moov", b"mdat", b"free", b"skip", b"wide", b"pnot", b"styp", b"moof", b"uuid"}


def sniff_container(data: bytes) -> str | None:
    """Name the container family from the first bytes, or None when nothing video-like matches."""
    if len(data) >= 8 and data[4:8] in _ISO_BMFF_TOP_LEVEL:
        return "iso-bmff"  # mp4 / mov / 3gp
    if data[:4] == b"\x1a\x45\xdf\xa3":
        return "matroska"  # mkv / webm
    if data[:4] == b"RIFF" and data[8:12] == b"AVI ":
        return "avi"
    if data[:3] == b"FLV":
        return "flv"
    if data[:4] == b"OggS":
        return "ogg"
    if data[:4] == bytes.fromhex("3026b275"):
        return "asf"
    if data[:4] == b"\x00\x00\x01\xba":
        return "mpeg-ps"
    if data[:1] == b"\x47" and (len(data) < 189 or data[188:189] == b"\x47"):
        return "mpeg-ts"
    if data[:4] == b"\x00\x00\x00\x01" or data[:3] == b"\x00\x00\x01":
        return "annexb"  # raw H.264/H.265 elementary stream
    if data[:4] == b"GIF8":
        return "gif"
    return None


def _iso_bmff_is_truncated(data: bytes) -> bool:
    """Walk the top-level boxes: a box running past the end, or no ``moov`` box, means the file
    was cut short (an encoder writes ``moov`` last unless asked for faststart)."""
    position, end, seen_moov = 0, len(data), False
    while position + 8 <= end:
        size, box_type = struct.unpack(">I4s", data[position : position + 8])
        if size == 1:  # 64-bit "largesize" follows the type
            if position + 16 > end:
                return True
            size = struct.unpack(">Q", data[position + 8 : position + 16])[0]
        elif size == 0:  # box extends to the end of the file
            size = end - position
        if size < 8:
            return False  # malformed rather than cut short
        seen_moov |= box_type == b"moov"
        if position + size > end:
            return True
        position += size
    return position != end or not seen_moov


def classify_undecodable(data: bytes) -> str:
    """Why bytes failed to decode: ``empty``, ``not_video``, ``truncated`` or ``corrupt``."""
    if len(data) == 0:
        return "empty"
    container = sniff_container(data)
    if container is None:
        return "not_video"
    if container == "iso-bmff" and _iso_bmff_is_truncated(data):
        return "truncated"
    return "corrupt"


def _decode_error(data: bytes, backend: str, cause: BaseException | str) -> VideoDecodeError:
    reason = classify_undecodable(data)
    detail = str(cause).strip().splitlines()[0][:160] if str(cause).strip() else type(cause).__name__
    return VideoDecodeError(f"{backend} could not decode the video ({reason}): {detail}", reason=reason)
