"""ORM tables. Changes here need a new Alembic migration in migrations/versions/ (and HEAD_REVISION in database.py)."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
    false,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator


class UtcDateTime(TypeDecorator):
    """A moment stored in UTC that reads back with its time zone: PostgreSQL keeps it (timestamptz), SQLite hands
    back a naive datetime for what was written as UTC."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_result_value(self, value: datetime | None, dialect) -> datetime | None:
        return value if value is None or value.tzinfo else value.replace(tzinfo=UTC)


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
    engine_version: Mapped[str | None] = mapped_column(String(200))  # 200 since migration 0008
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

    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    started_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UtcDateTime)

    error_code: Mapped[str | None] = mapped_column(String(50))
    error_message: Mapped[str | None] = mapped_column(Text)
    error_hint: Mapped[str | None] = mapped_column(Text)
    # The id of the API key that created the record (None: made without a key, e.g. by the CLI).
    owner: Mapped[str | None] = mapped_column(String(32), index=True)
    # The persona the record was made with (its fields used are in `extra`): deleting it is refused while used.
    persona_name: Mapped[str | None] = mapped_column(String(64), index=True)
    persona_version: Mapped[int | None] = mapped_column(Integer)
    # How many times the record was taken to run (pending -> running, core/records.py): a run's final commit
    # counts only while the record is still that run's, so a stale worker's late success is refused.
    runs: Mapped[int] = mapped_column(Integer, default=0, server_default="0")

    __table_args__ = (
        Index("ix_content_created", "created_at"),
        Index("ix_content_status", "status"),
        Index("ix_content_status_created", "status", "created_at"),  # migration 0002: filtered history pages
        Index("ix_content_type_created", "content_type", "created_at"),
        Index("ix_content_type_status_created", "content_type", "status", "created_at"),
    )
    # Migration 0002 also keeps an FTS5 index of prompt and text (`content_fts`, by rowid): see genforge/search.py.


class ModelRow(Base):
    """A model file genforge knows: user-added files, and the hashes of packaged ones."""

    __tablename__ = "models"

    name: Mapped[str] = mapped_column(String(200), primary_key=True)
    content_type: Mapped[str] = mapped_column(String(16))
    engine: Mapped[str] = mapped_column(String(50))
    source: Mapped[str] = mapped_column(String(16))  # "user", "package" or "hub"
    path: Mapped[str] = mapped_column(Text)
    sha256: Mapped[str] = mapped_column(String(64))
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    # mtime when hashed: lets start-up trust the recorded hash until the file changes.
    mtime_ns: Mapped[int] = mapped_column(BigInteger)
    # Remote models (engine "remote", `path` their base URL, no sha256): the served model id and the
    # environment variable that holds the API key.
    served_model: Mapped[str | None] = mapped_column(String(200))
    api_key_env: Mapped[str | None] = mapped_column(String(100))
    # Registered with --allow-insecure: its key may go over plain http to another machine (engines/remote.py).
    allow_insecure: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    added_at: Mapped[datetime] = mapped_column(UtcDateTime)
    # Pulled from a model hub: where from (the commit the revision resolved to) and the declared licence.
    hub_repo: Mapped[str | None] = mapped_column(String(200))
    hub_revision: Mapped[str | None] = mapped_column(String(64))
    hub_file: Mapped[str | None] = mapped_column(Text)
    license: Mapped[str | None] = mapped_column(Text)


class ApiKeyRow(Base):
    """An API key: only the sha256 of its token is stored. Revoked keys stay (records name them as owner)."""

    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    name: Mapped[str] = mapped_column(String(100), index=True)
    token_sha256: Mapped[str] = mapped_column(String(64))
    scope: Mapped[str] = mapped_column(String(16))  # read | generate | admin
    models: Mapped[list | None] = mapped_column(JSON)  # None: every model
    rate_count: Mapped[int | None] = mapped_column(Integer)  # requests per rate_period_s; None: no limit
    rate_period_s: Mapped[float | None] = mapped_column(Float)
    max_jobs: Mapped[int | None] = mapped_column(Integer)  # jobs pending or running at once; None: no limit
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    revoked_at: Mapped[datetime | None] = mapped_column(UtcDateTime)


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
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    owner: Mapped[str | None] = mapped_column(String(32))  # the key that created it (None: the operator)
    shared: Mapped[bool] = mapped_column(Boolean, default=False, server_default="0")  # other keys may use it


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
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    owner: Mapped[str | None] = mapped_column(String(32), index=True)  # the key that made it (None: the operator)
    # Its review (migration 0013): draft -> in_review (when it succeeds) -> approved | rejected; reviews table.
    review: Mapped[str] = mapped_column(String(16), default="draft", server_default="draft")


class ReviewRow(Base):
    """One review transition of a post: who, when, the comment, and what the reviewer saw."""

    __tablename__ = "reviews"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    post_id: Mapped[str] = mapped_column(String(36), index=True)
    from_state: Mapped[str] = mapped_column(String(16))
    to_state: Mapped[str] = mapped_column(String(16))
    by_key: Mapped[str | None] = mapped_column(String(32))  # the key's id (None: the operator)
    by_name: Mapped[str] = mapped_column(String(100))
    at: Mapped[datetime] = mapped_column(UtcDateTime)
    comment: Mapped[str | None] = mapped_column(Text)
    seen: Mapped[dict] = mapped_column(JSON, default=dict)  # persona version, parts' sha256, policy results


class ChannelRow(Base):
    """A destination a key publishes to (Bluesky); its secret is encrypted with the data dir's key."""

    __tablename__ = "channels"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    name: Mapped[str] = mapped_column(String(100))
    kind: Mapped[str] = mapped_column(String(32))
    url: Mapped[str] = mapped_column(Text)
    handle: Mapped[str] = mapped_column(String(253))
    secret: Mapped[bytes] = mapped_column(LargeBinary)  # Fernet token of the password (stores/secrets.py)
    owner: Mapped[str | None] = mapped_column(String(32), index=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)

    __table_args__ = (UniqueConstraint("owner", "name", name="uq_channels_owner_name"),)


class PublicationRow(Base):
    """A post published to a channel: pending -> published (only after the live post was read back and matched)
    | failed. One per (post, channel): publishing again returns it, or retries it (same key) after a failure."""

    __tablename__ = "publications"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    post_id: Mapped[str] = mapped_column(String(36), index=True)
    channel_id: Mapped[str] = mapped_column(String(36), index=True)
    status: Mapped[str] = mapped_column(String(16))
    rkey: Mapped[str] = mapped_column(String(64))  # the network record key (idempotent retries)
    publish_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    claimed_until: Mapped[datetime | None] = mapped_column(UtcDateTime)  # a publisher's lease (compare-and-set)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    uri: Mapped[str | None] = mapped_column(Text)
    cid: Mapped[str | None] = mapped_column(String(128))
    checks: Mapped[dict] = mapped_column(JSON, default=dict)  # what the read-back compared
    error_code: Mapped[str | None] = mapped_column(String(50))
    error_message: Mapped[str | None] = mapped_column(Text)
    error_hint: Mapped[str | None] = mapped_column(Text)
    owner: Mapped[str | None] = mapped_column(String(32), index=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    published_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    checked_at: Mapped[datetime | None] = mapped_column(UtcDateTime)  # the last read-back (re-checks)

    __table_args__ = (
        UniqueConstraint("post_id", "channel_id", name="uq_publications_post_channel"),
        Index("ix_publications_due", "status", "publish_at"),
    )


class WebhookRow(Base):
    """A key's webhook: signed JSON callbacks (Standard Webhooks) for the events it names."""

    __tablename__ = "webhooks"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    url: Mapped[str] = mapped_column(Text)
    secret: Mapped[bytes] = mapped_column(LargeBinary)  # Fernet token of the whsec_ secret
    events: Mapped[list | None] = mapped_column(JSON)  # None: every event
    owner: Mapped[str | None] = mapped_column(String(32), index=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)


class DeliveryRow(Base):
    """One event for one webhook, with its attempts: pending -> delivered | failed (after the last retry)."""

    __tablename__ = "deliveries"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)  # the webhook-id header (msg_...)
    webhook_id: Mapped[str] = mapped_column(String(36), index=True)
    event: Mapped[str] = mapped_column(String(64))
    body: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(16))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    claimed_until: Mapped[datetime | None] = mapped_column(UtcDateTime)
    log: Mapped[list] = mapped_column(JSON, default=list)  # each attempt: at, status code or error
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    delivered_at: Mapped[datetime | None] = mapped_column(UtcDateTime)

    __table_args__ = (Index("ix_deliveries_due", "status", "next_at"),)


class BatchRow(Base):
    """Variants of one request: its records, in seed order."""

    __tablename__ = "batches"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    content_type: Mapped[str] = mapped_column(String(16))
    item_ids: Mapped[list] = mapped_column(JSON, default=list)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    owner: Mapped[str | None] = mapped_column(String(32))  # the key that made it (None: the operator)


class UploadRow(Base):
    """An image a key uploaded (decoded and re-encoded once as PNG, EXIF gone): an input of image requests. The
    file is content-addressed under DATA_DIR/uploads; two uploads of the same picture share it."""

    __tablename__ = "uploads"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    owner: Mapped[str | None] = mapped_column(String(32), index=True)
    sha256: Mapped[str] = mapped_column(String(64), index=True)  # of the stored (re-encoded) PNG
    media_type: Mapped[str] = mapped_column(String(32))
    width: Mapped[int | None] = mapped_column(Integer)  # pictures only
    height: Mapped[int | None] = mapped_column(Integer)
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    relpath: Mapped[str] = mapped_column(Text)
    original_media_type: Mapped[str] = mapped_column(String(32))  # what the client sent (PNG, JPEG or WebP)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
