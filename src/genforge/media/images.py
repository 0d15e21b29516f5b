"""PNG artifacts: encoding with provenance text chunks, and reading the provenance back.

Used by the image engines (inside the engine worker) and by `genforge verify`. Pillow is imported
lazily, so a text-only installation can import this module.
"""

from __future__ import annotations

import io
import json
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
# The portrait model's square sizes: it makes 1024, smaller ones are downscaled (recorded as such).
PORTRAIT_NATIVE_SIZE = 1024
PORTRAIT_SIZES = (256, 512, 1024)
PREFIX = "genforge:"
# Provenance keys, in the order they are written (each a PNG tEXt chunk, iTXt when not Latin-1).
KEYS = ("content_id", "model", "model_sha256", "engine", "engine_version", "seed", "params", "prompt")
# What a record must agree with for each key (a genforge.contenttypes.ContentRecord).
RECORD_FIELDS = {
    "content_id": lambda r: r.id,
    "model": lambda r: r.model.name,
    "model_sha256": lambda r: r.model.file_sha256,
    "engine": lambda r: r.model.engine,
    "engine_version": lambda r: r.model.engine_version,
    "seed": lambda r: str(r.params.seed),
    "params": lambda r: params_json(r.params.model_dump(mode="json")),
    "prompt": lambda r: r.prompt,
}
# zlib level 1 with Huffman coding only: for photographic pixels (after PNG's Paeth filter) LZ77 matches
# are rare, so this is faster to encode and to decode than level 1's default strategy and ~11 % smaller.
# Pillow's default (level 6) takes ~5x longer for 1024x1024. Measured in docs/benchmarks.md.
PNG_COMPRESS_LEVEL = 1
PNG_COMPRESS_TYPE = zlib.Z_HUFFMAN_ONLY


def params_json(params: dict) -> str:
    return json.dumps(params, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def provenance(
    *,
    content_id: str,
    model: str,
    model_sha256: str,
    engine: str,
    engine_version: str,
    seed: int,
    params: dict,
    prompt: str,
    details: dict | None = None,
) -> dict[str, str]:
    """The text chunks of an artifact: who made it, from what, with which seed and parameters."""
    values = {
        "content_id": content_id,
        "model": model,
        "model_sha256": model_sha256,
        "engine": engine,
        "engine_version": engine_version,
        "seed": str(seed),
        "params": params_json(params),
        "prompt": prompt,
    }
    chunks = {PREFIX + k: values[k] for k in KEYS}
    for key, value in (details or {}).items():
        chunks[PREFIX + key] = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    chunks["Software"] = "genforge"
    return chunks


def encode_png(
    image: Any, text: dict[str, str], compress_level: int = PNG_COMPRESS_LEVEL, compress_type: int = PNG_COMPRESS_TYPE
) -> bytes:
    """PNG bytes of an RGB image (a PIL image or a uint8 HxWx3 array) carrying `text` as text chunks."""
    from PIL import Image, PngImagePlugin

    if not isinstance(image, Image.Image):
        image = Image.fromarray(_rgb_array(image))
    info = PngImagePlugin.PngInfo()
    for key, value in text.items():
        if not 1 <= len(key) <= 79 or not key.isascii():  # the PNG keyword rule (ASCII subset)
            raise ValueError(f"invalid PNG text key {key!r}")
        info.add_text(key, value)  # tEXt, or iTXt when the value is not Latin-1
    buf = io.BytesIO()
    if image.mode != "RGB":
        image = image.convert("RGB")
    image.save(buf, format="PNG", pnginfo=info, compress_level=compress_level, compress_type=compress_type)
    return buf.getvalue()


@dataclass(frozen=True)
class PixelCheck:
    """What the image validator needs from the pixels, measured on the very image that was encoded, where it
    already is (in the engine's process, before the PNG exists). Decoding the PNG again to measure it cost
    27 ms of a 0.31 s portrait (docs/benchmarks.md); the validator checks the PNG's bytes instead."""

    width: int
    height: int
    stddev_max: float  # the largest channel's standard deviation, 0..255
    digest: str  # genforge.stores.credentials.pixels_digest: finds the record of a stripped copy


def encode_checked_png(image: Any, text: dict[str, str]) -> tuple[bytes, PixelCheck]:
    """encode_png() of an RGB image (PIL or uint8 HxWx3 array) and the PixelCheck of the same pixels."""
    from PIL import Image, ImageStat

    from genforge.media.digests import pixels_digest

    if not isinstance(image, Image.Image):
        image = Image.fromarray(_rgb_array(image))
    image = image if image.mode == "RGB" else image.convert("RGB")
    check = PixelCheck(image.width, image.height, max(ImageStat.Stat(image).stddev), pixels_digest(image))
    return encode_png(image, text), check


def png_chunks(data: bytes) -> list[tuple[bytes, bytes]]:
    """The (type, payload) chunks of a PNG, each checked against its CRC-32, from the signature to IEND.
    Raises ValueError for anything else: a wrong signature, a truncated or changed chunk, bytes after IEND."""
    if data[:8] != PNG_MAGIC:
        raise ValueError("not a PNG (wrong signature)")
    chunks, pos = [], 8
    while pos < len(data):
        if pos + 12 > len(data):
            raise ValueError("truncated chunk header")
        length, kind = struct.unpack(">I4s", data[pos : pos + 8])
        end = pos + 8 + length
        if end + 4 > len(data):
            raise ValueError(f"truncated {kind!r} chunk")
        payload = data[pos + 8 : end]
        if zlib.crc32(payload, zlib.crc32(kind)) != struct.unpack(">I", data[end : end + 4])[0]:
            raise ValueError(f"{kind!r} chunk fails its CRC")
        chunks.append((kind, payload))
        pos = end + 4
        if kind == b"IEND":
            break
    if not chunks or chunks[0][0] != b"IHDR" or chunks[-1][0] != b"IEND" or pos != len(data):
        raise ValueError("the chunks do not run from IHDR to IEND")
    if not any(kind == b"IDAT" for kind, _ in chunks):
        raise ValueError("no image data (IDAT)")
    return chunks


def _rgb_array(image: Any) -> Any:
    if getattr(image, "dtype", None) != "uint8" or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(
            f"expected a uint8 HxWx3 array, got {getattr(image, 'dtype', type(image))} {getattr(image, 'shape', '')}"
        )
    return image


def is_png(data_or_path: bytes | Path) -> bool:
    if isinstance(data_or_path, bytes | bytearray):
        return bytes(data_or_path[:8]) == PNG_MAGIC
    with open(data_or_path, "rb") as f:
        return f.read(8) == PNG_MAGIC


def read_png_text(data_or_path: bytes | Path) -> dict[str, str]:
    """Every text chunk of a PNG (tEXt, zTXt, iTXt), also those after the image data."""
    from PIL import Image

    src = io.BytesIO(data_or_path) if isinstance(data_or_path, bytes | bytearray) else data_or_path
    with Image.open(src) as im:
        im.load()
        return {str(k): str(v) for k, v in getattr(im, "text", {}).items()}


def read_provenance(data_or_path: bytes | Path) -> dict[str, str]:
    """The genforge provenance of a PNG, keys without their prefix ({} when it has none)."""
    return {k[len(PREFIX) :]: v for k, v in read_png_text(data_or_path).items() if k.startswith(PREFIX)}


def compare_provenance(found: dict[str, str], record) -> list[str]:
    """What in a PNG's provenance disagrees with its record (empty when everything matches)."""
    problems = []
    for key, expected_of in RECORD_FIELDS.items():
        expected = expected_of(record)
        if key not in found:
            problems.append(f"{key}: missing from the PNG")
        elif found[key] != (expected if isinstance(expected, str) else str(expected)):
            problems.append(f"{key}: PNG says {found[key][:80]!r}, record says {str(expected)[:80]!r}")
    return problems


def diffusers_native_size(path: str | Path) -> int | None:
    """The square size a diffusers checkpoint directory was trained at (UNet sample size x VAE scale),
    or None when it cannot be told from its config files (a single-file checkpoint, a missing file)."""
    path = Path(path)
    try:
        unet = json.loads((path / "unet" / "config.json").read_text())
        vae = json.loads((path / "vae" / "config.json").read_text())
        sample = unet["sample_size"]
        sample = sample[0] if isinstance(sample, list) else sample
        return int(sample) * 2 ** (len(vae["block_out_channels"]) - 1)
    except (OSError, ValueError, KeyError, TypeError, IndexError):
        return None
