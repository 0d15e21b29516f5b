"""Uploads: images a key brings as inputs of image requests (an init image, a mask, a persona's reference face).

An upload is decoded once, within limits (bytes, pixels, formats: PNG, JPEG, WebP), its EXIF orientation applied,
and re-encoded as a plain PNG (no EXIF, no text chunks, no ICC profile): what is stored is pixels, never the
client's file. Files are content-addressed under DATA_DIR/uploads (two uploads of one picture share a file); the
`uploads` row belongs to the key that made it, and another key's upload id answers exactly like an unknown one.
"""

from __future__ import annotations

import io
import uuid
import warnings
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from pydantic import BaseModel, Field

from genforge.core.caller import Caller
from genforge.errors import InvalidRequest, NotFound, PayloadTooLarge
from genforge.stores.artifacts import ArtifactStore
from genforge.stores.db import Database, UploadRow

FORMATS = {"PNG": "image/png", "JPEG": "image/jpeg", "WEBP": "image/webp"}
# Audio a transcript may be made of (decoded by PyAV when it runs), by the file's suffix; stored as sent.
AUDIO_SUFFIXES = {
    ".wav": "audio/wav",
    ".mp3": "audio/mpeg",
    ".mpga": "audio/mpeg",
    ".mpeg": "audio/mpeg",
    ".ogg": "audio/ogg",
    ".oga": "audio/ogg",
    ".flac": "audio/flac",
    ".m4a": "audio/mp4",
    ".mp4": "audio/mp4",
    ".webm": "audio/webm",
}
MIN_SIDE = 8  # pixels: anything smaller is no picture to start from


class Upload(BaseModel):
    """POST /api/v1/uploads answers this."""

    id: str = Field(
        description="A picture: params.init_image, params.mask or a persona's reference_images; audio: a "
        "transcript's params.upload."
    )
    sha256: str = Field(description="sha256 of the stored file (a picture re-encoded as PNG, EXIF stripped).")
    media_type: str = Field(description="image/png for every picture (re-encoded); audio as it was sent.")
    width: int | None = Field(None, description="Pictures only.")
    height: int | None = Field(None, description="Pictures only.")
    size_bytes: int
    original_media_type: str = Field(description="What was sent: image/png, image/jpeg, image/webp or audio/*.")
    created_at: datetime
    owner: str | None = None


@dataclass(frozen=True)
class UploadFile:
    """An upload the service resolved for a job: its id, the stored PNG's sha256 and path."""

    id: str
    sha256: str
    path: Path


def _upload(row: UploadRow) -> Upload:
    return Upload(
        id=row.id,
        sha256=row.sha256,
        media_type=row.media_type,
        width=row.width,
        height=row.height,
        size_bytes=row.size_bytes,
        original_media_type=row.original_media_type,
        created_at=row.created_at,
        owner=row.owner,
    )


def reencode(data: bytes, max_bytes: int, max_pixels: int) -> tuple[bytes, str, int, int]:
    """The picture in `data` as a fresh PNG (RGB, or L for a grey mask): (png, the sent format's media type, width,
    height). Refuses other formats, truncated or corrupt files, and pictures over the limits (checked on the
    header, before any pixel is decoded: a decompression bomb is refused without being decompressed)."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    if len(data) > max_bytes:
        raise PayloadTooLarge(
            f"file: the upload is {len(data)} bytes, over the limit of {max_bytes}",
            hint="Send a smaller picture, or raise GENFORGE_UPLOAD_MAX_BYTES.",
        )
    if not data:
        raise InvalidRequest("file: the upload is empty", field="file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data), formats=list(FORMATS)) as im:
                fmt = im.format or ""
                width, height = im.size
                if width * height > max_pixels:
                    raise PayloadTooLarge(
                        f"file: the picture is {width}x{height} pixels, over the limit of {max_pixels} pixels",
                        hint="Send a smaller picture, or raise GENFORGE_UPLOAD_MAX_PIXELS.",
                    )
                if min(width, height) < MIN_SIDE:
                    raise InvalidRequest(f"file: the picture is {width}x{height}, too small", field="file")
                im.load()  # a truncated file fails here
                upright = ImageOps.exif_transpose(im)
                mode = "L" if upright.mode in ("1", "L", "LA", "I", "I;16", "F") else "RGB"
                if upright.mode in ("RGBA", "LA", "PA") or (upright.mode == "P" and "transparency" in upright.info):
                    base = Image.new("RGBA", upright.size, (255, 255, 255, 255))  # transparency on white
                    base.alpha_composite(upright.convert("RGBA"))
                    upright = base
                clean = upright.convert(mode)
    except (UnidentifiedImageError, Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        if isinstance(exc, UnidentifiedImageError):
            raise InvalidRequest(
                "file: not a PNG, JPEG or WebP picture", field="file", hint="Upload a PNG, JPEG or WebP file."
            ) from None
        raise PayloadTooLarge(f"file: {exc}", hint="Send a smaller picture.") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise InvalidRequest(f"file: the picture does not decode: {exc}", field="file") from None
    out = io.BytesIO()
    clean.save(out, format="PNG", optimize=False, compress_level=6)
    return out.getvalue(), FORMATS[fmt], clean.size[0], clean.size[1]


class UploadStore:
    """The `uploads` rows and their files (owned by keys; read by the service to resolve image inputs)."""

    def __init__(self, db: Database, root: Path, max_bytes: int, max_pixels: int):
        self.db = db
        self.files = ArtifactStore(root)
        self.max_bytes = max_bytes
        self.max_pixels = max_pixels

    def create(self, data: bytes, caller: Caller, filename: str | None = None) -> Upload:
        """A picture (decoded and re-encoded), or audio to transcribe (a file named .wav, .mp3, ...: stored as
        sent, decoded when a transcript runs)."""
        suffix = Path(filename or "").suffix.lower()
        if suffix in AUDIO_SUFFIXES:
            return self.create_audio(data, suffix, caller.id)
        png, original, width, height = reencode(data, self.max_bytes, self.max_pixels)
        with self.files.guard():
            stored = self.files.write(png, "image/png", ".png")
            with self.db.session() as s:
                row = UploadRow(
                    id=str(uuid.uuid4()),
                    owner=caller.id,
                    sha256=stored.sha256,
                    media_type="image/png",
                    width=width,
                    height=height,
                    size_bytes=stored.size_bytes,
                    relpath=stored.relpath,
                    original_media_type=original,
                    created_at=datetime.now(UTC),
                )
                s.add(row)
                s.flush()
                return _upload(row)

    def create_audio(self, data: bytes, suffix: str, owner: str | None) -> Upload:
        """Audio for a transcript, owned by `owner` (a key's upload, or a narration listen-back transcribes)."""
        media_type = AUDIO_SUFFIXES.get(suffix.lower())
        if media_type is None:
            raise InvalidRequest(
                f"file: {suffix or 'no suffix'} is not an audio file genforge reads",
                field="file",
                hint=f"Send one of {', '.join(sorted(AUDIO_SUFFIXES))}, or a PNG, JPEG or WebP picture.",
            )
        if len(data) > self.max_bytes:
            raise PayloadTooLarge(
                f"file: the upload is {len(data)} bytes, over the limit of {self.max_bytes}",
                hint="Send a shorter or compressed file, or raise GENFORGE_UPLOAD_MAX_BYTES.",
            )
        if not data:
            raise InvalidRequest("file: the upload is empty", field="file")
        with self.files.guard():
            stored = self.files.write(data, media_type, suffix.lower())
            with self.db.session() as s:
                row = UploadRow(
                    id=str(uuid.uuid4()),
                    owner=owner,
                    sha256=stored.sha256,
                    media_type=media_type,
                    width=None,
                    height=None,
                    size_bytes=stored.size_bytes,
                    relpath=stored.relpath,
                    original_media_type=media_type,
                    created_at=datetime.now(UTC),
                )
                s.add(row)
                s.flush()
                return _upload(row)

    def _row(self, upload_id: str) -> UploadRow | None:
        with self.db.session() as s:
            row = s.get(UploadRow, upload_id)
            if row is not None:
                s.expunge(row)
            return row

    def find(self, upload_id: str, caller: Caller) -> UploadFile | None:
        """The upload's file if it exists and the caller may use it; None otherwise (unknown and another key's
        answer alike)."""
        row = self._row(upload_id)
        if row is None or not caller.owns(row.owner):
            return None
        return UploadFile(row.id, row.sha256, self.files.resolve(row.relpath))

    def get(self, upload_id: str, caller: Caller) -> Upload:
        row = self._row(upload_id)
        if row is None or not caller.owns(row.owner):
            raise NotFound(f"no upload with id {upload_id!r}", field="id")
        return _upload(row)

    def delete(self, upload_id: str, caller: Caller) -> None:
        """Remove the row; its file goes when no other upload shares it."""
        self.get(upload_id, caller)
        with self.files.guard(), self.db.session() as s:
            row = s.get(UploadRow, upload_id)
            if row is None:
                return
            relpath = row.relpath
            s.delete(row)
            s.flush()
            if not s.query(UploadRow).filter(UploadRow.relpath == relpath).count():
                self.files.remove(relpath)


def mask_of_openai(data: bytes) -> bytes:
    """An OpenAI edit mask (transparent = repaint) as genforge's (white = repaint), as PNG; a mask without
    transparency is taken as it is (white = repaint). Undecodable data is left for `reencode` to refuse."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data), formats=list(FORMATS)) as im:
            if im.width * im.height > 100_000_000:
                return data
            if im.mode not in ("RGBA", "LA", "PA") and not (im.mode == "P" and "transparency" in im.info):
                return data
            alpha = im.convert("RGBA").getchannel("A")
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError):
        return data
    out = io.BytesIO()
    alpha.point(lambda a: 255 - a).save(out, format="PNG")
    return out.getvalue()
