"""ORM tables. Changes here need a new Alembic migration in db/migrations/versions/."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import JSON, BigInteger, DateTime, Float, Index, Integer, String, Text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    pass


class ContentRow(Base):
    __tablename__ = "content"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    content_type: Mapped[str] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(String(16))
    prompt: Mapped[str] = mapped_column(Text)
    system: Mapped[str | None] = mapped_column(Text)
    quality: Mapped[str] = mapped_column(String(16))
    params: Mapped[dict] = mapped_column(JSON, default=dict)

    model_name: Mapped[str | None] = mapped_column(String(200))
    model_engine: Mapped[str | None] = mapped_column(String(50))
    engine_version: Mapped[str | None] = mapped_column(String(50))
    model_sha256: Mapped[str | None] = mapped_column(String(64))

    text: Mapped[str | None] = mapped_column(Text)
    finish_reason: Mapped[str | None] = mapped_column(String(16))
    prompt_tokens: Mapped[int | None] = mapped_column(Integer)
    completion_tokens: Mapped[int | None] = mapped_column(Integer)
    # Type-specific facts (image size, audio duration, warnings, ...).
    extra: Mapped[dict] = mapped_column(JSON, default=dict)

    artifact_sha256: Mapped[str | None] = mapped_column(String(64), index=True)
    artifact_size: Mapped[int | None] = mapped_column(BigInteger)
    artifact_media_type: Mapped[str | None] = mapped_column(String(50))
    artifact_path: Mapped[str | None] = mapped_column(Text)

    load_ms: Mapped[float | None] = mapped_column(Float)
    generate_ms: Mapped[float | None] = mapped_column(Float)
    total_ms: Mapped[float | None] = mapped_column(Float)

    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    error_code: Mapped[str | None] = mapped_column(String(50))
    error_message: Mapped[str | None] = mapped_column(Text)
    error_hint: Mapped[str | None] = mapped_column(Text)
    # The persona the record was made with (its fields used are in `extra`): deleting it is refused while used.
    persona_name: Mapped[str | None] = mapped_column(String(64), index=True)
    persona_version: Mapped[int | None] = mapped_column(Integer)

    __table_args__ = (Index("ix_content_created", "created_at"), Index("ix_content_status", "status"))


class ModelRow(Base):
    """A model file genforge knows: user-added files, and the hashes of packaged ones."""

    __tablename__ = "models"

    name: Mapped[str] = mapped_column(String(200), primary_key=True)
    content_type: Mapped[str] = mapped_column(String(16))
    engine: Mapped[str] = mapped_column(String(50))
    source: Mapped[str] = mapped_column(String(16))  # "user" or "package"
    path: Mapped[str] = mapped_column(Text)
    sha256: Mapped[str] = mapped_column(String(64))
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    # mtime when hashed: lets start-up trust the recorded hash until the file changes.
    mtime_ns: Mapped[int] = mapped_column(BigInteger)
    added_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class PersonaRow(Base):
    """One version of a persona: an edit adds a row with the next version."""

    __tablename__ = "personas"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    version: Mapped[int] = mapped_column(Integer, primary_key=True)
    display_name: Mapped[str | None] = mapped_column(String(200))
    description: Mapped[str | None] = mapped_column(Text)
    text: Mapped[dict] = mapped_column(JSON, default=dict)
    image: Mapped[dict] = mapped_column(JSON, default=dict)
    speech: Mapped[dict] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class PostRow(Base):
    """A post: a persona's parts (caption, image, narration, video), each its own content record."""

    __tablename__ = "posts"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    status: Mapped[str] = mapped_column(String(16))
    persona_name: Mapped[str] = mapped_column(String(64), index=True)
    persona_version: Mapped[int] = mapped_column(Integer)
    platform: Mapped[str] = mapped_column(String(32))
    brief: Mapped[str] = mapped_column(Text)
    parts: Mapped[list] = mapped_column(JSON, default=list)  # the requested parts, in order
    part_ids: Mapped[dict] = mapped_column(JSON, default=dict)  # part -> content id, as each is submitted
    error_part: Mapped[str | None] = mapped_column(String(16))
    error_code: Mapped[str | None] = mapped_column(String(50))
    error_message: Mapped[str | None] = mapped_column(Text)
    error_hint: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class BatchRow(Base):
    """Variants of one request: its records, in seed order."""

    __tablename__ = "batches"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    content_type: Mapped[str] = mapped_column(String(16))
    item_ids: Mapped[list] = mapped_column(JSON, default=list)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
