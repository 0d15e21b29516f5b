"""Content hashes: what a picture shows or a recording sounds like, whatever its file's metadata says. The
validators record them at generation time; `genforge verify` finds a stripped or re-encoded copy's record by them."""

from __future__ import annotations

import hashlib
import io
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    pass


def pixels_digest(image) -> str:
    """sha256 of an image's decoded RGB pixels (and size): what a picture shows, whatever its file says."""
    rgb = image if image.mode == "RGB" else image.convert("RGB")
    h = hashlib.sha256(f"rgb8 {rgb.width}x{rgb.height}\0".encode())
    h.update(rgb.tobytes())
    return h.hexdigest()


def samples_digest(wav) -> str:
    """sha256 of a WAV's PCM samples (and format): what a recording sounds like, whatever its file says."""
    h = hashlib.sha256(f"pcm{8 * wav.sample_width} {wav.channels}ch {wav.sample_rate}Hz\0".encode())
    h.update(wav.frames)
    return h.hexdigest()


def content_hash(media_type: str, data: bytes) -> str | None:
    """The content hash of a PNG or WAV file (None for other types). The validators record it at generation
    time from what they decode anyway; it finds a file's record again after its metadata (and so its
    credentials) was stripped or the file re-encoded."""
    if media_type == "image/png":
        from PIL import Image

        with Image.open(io.BytesIO(data)) as im:
            im.load()
            return pixels_digest(im)
    if media_type == "audio/wav":
        from genforge.media.audio import decode_wav

        return samples_digest(decode_wav(data))
    return None


def content_hash_file(path: Path) -> str | None:
    """content_hash() of a file whose type is told by its first bytes (None when it is neither PNG nor WAV)."""
    data = Path(path).read_bytes()
    media_type = "image/png" if data[:8] == b"\x89PNG\r\n\x1a\n" else "audio/wav" if data[8:12] == b"WAVE" else None
    if media_type is None:
        return None
    try:
        return content_hash(media_type, data)
    except (OSError, ValueError, SyntaxError):  # Pillow/wave cannot decode it: no content to match
        return None
