"""Publishing an approved post to a channel, with read-back.

A publication is a record of its own: `pending` (at once, or at its `publish_at`) -> `published` | `failed`. It is
`published` only after the network's live post was fetched back and matched: the text equal to the caption, each
image blob's bytes equal to what was uploaded, and those bytes' decoded pixels within IMAGE_TOLERANCE of the
record's image (whose file is checked against the record's sha256 first). A network error, a timeout, a refusal
or a mismatch is `failed` with its reason. Publishing the same post to the same channel again returns the same
publication (a failed one is retried, under the same record key): the channel looks the key up before it posts,
so a retry after a crash between posting and recording never posts twice.

Due publications are claimed by compare-and-set on their row (a lease in `claimed_until`), so with several API
processes on one database exactly one publishes each; `PublisherLoop` runs in every server process."""

from __future__ import annotations

import builtins
import hashlib
import io
import logging
import os
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import or_, update
from sqlalchemy.exc import IntegrityError

from genforge.contenttypes.records import RecordError, Timestamp
from genforge.contenttypes.text import TextRecord
from genforge.core.caller import LOCAL, Caller
from genforge.errors import (
    ArtifactChanged,
    Conflict,
    GenforgeError,
    InvalidRequest,
    NotFound,
    PublishFailed,
    PublishMismatch,
)
from genforge.platform.bluesky import BlueskyChannel
from genforge.platform.channels import (
    Channel,
    ChannelSecret,
    ChannelStore,
    Live,
    Outgoing,
    OutgoingImage,
)
from genforge.platform.posts import PostService
from genforge.platform.webhooks import WebhookService
from genforge.stores.db import PublicationRow

log = logging.getLogger("genforge.platform.publishing")

LEASE_S = 120  # a publisher's claim on a publication; a crashed one's claim lapses and another takes it
IMAGE_TOLERANCE = 3.0  # mean absolute difference per channel (0-255) between made and published pixels
JPEG_QUALITIES = (95, 92, 90, 85, 80)
# One implementation per channel kind (platform/channels.py Channel).
KINDS: dict[str, Callable[[ChannelSecret, float, dict[str, Any]], Channel]] = {"bluesky": BlueskyChannel}


class PublishRequest(BaseModel):
    """POST /api/v1/posts/{id}/publish."""

    model_config = ConfigDict(extra="forbid")

    channel: str = Field(min_length=1, max_length=100, description="The channel's name or id.")
    publish_at: datetime | None = Field(None, description="When to publish (ISO 8601 with its zone); now if absent.")


class Publication(BaseModel):
    id: str
    post_id: str
    channel: str = Field(description="The channel's id.")
    status: Literal["pending", "published", "failed", "removed", "altered"] = Field(
        description="removed / altered: a re-check found the post gone from the network, or different."
    )
    publish_at: Timestamp | None
    uri: str | None = Field(description="The post's URI on the network (at://...), once published.")
    cid: str | None
    checks: dict[str, Any] = Field(description="What the read-back compared (text, image bytes and pixels).")
    error: RecordError | None
    attempts: int
    created_at: Timestamp
    published_at: Timestamp | None
    checked_at: Timestamp | None = Field(description="When the live post was last read back and matched.")


def _now() -> datetime:
    return datetime.now(UTC)


_TID_CHARS = "234567abcdefghijklmnopqrstuvwxyz"


def make_tid(micros: int, clock_id: int) -> str:
    """An AT Protocol TID (a record key): 53 bits of microseconds and 10 of clock id, base32-sortable."""
    value = ((micros & ((1 << 53) - 1)) << 10) | (clock_id & 0x3FF)
    return "".join(_TID_CHARS[(value >> (5 * i)) & 31] for i in range(12, -1, -1))


def fit_image(png: bytes, max_bytes: int) -> tuple[bytes, str, float, int, int]:
    """The image as the network will take it: the PNG itself when it fits, else a JPEG re-encode at the highest
    quality that fits. Returns (bytes, media type, mean pixel difference from the PNG, width, height)."""
    import numpy as np
    from PIL import Image

    with Image.open(io.BytesIO(png)) as im:
        rgb = im.convert("RGB")
    if len(png) <= max_bytes:
        return png, "image/png", 0.0, rgb.width, rgb.height
    made = np.asarray(rgb, dtype=np.float32)
    for quality in JPEG_QUALITIES:
        buf = io.BytesIO()
        rgb.save(buf, "JPEG", quality=quality, optimize=True)
        data = buf.getvalue()
        if len(data) <= max_bytes:
            with Image.open(io.BytesIO(data)) as back:
                diff = float(np.abs(np.asarray(back.convert("RGB"), dtype=np.float32) - made).mean())
            return data, "image/jpeg", diff, rgb.width, rgb.height
    raise PublishFailed(
        f"the image does not fit the network's {max_bytes} byte limit even as a JPEG at quality {JPEG_QUALITIES[-1]}",
        hint="Make the post's image smaller (params.image.width and height) and publish a new post.",
    )


def pixel_difference(a: bytes, b: bytes) -> float:
    import numpy as np
    from PIL import Image

    with Image.open(io.BytesIO(a)) as x, Image.open(io.BytesIO(b)) as y:
        xa = np.asarray(x.convert("RGB"), dtype=np.float32)
        yb = y.convert("RGB")
        if yb.size != x.size:
            return float("inf")
        return float(np.abs(np.asarray(yb, dtype=np.float32) - xa).mean())


@dataclass
class Prepared:
    text: str
    image: OutgoingImage | None = None
    image_sha256: str | None = None
    made: bytes | None = None  # the record's PNG
    difference: float = 0.0  # the re-encode's mean pixel difference from it


class PublicationService:
    def __init__(
        self,
        posts: PostService,
        channels: ChannelStore,
        webhooks: WebhookService,
        *,
        timeout_s: float = 30.0,
        recheck_s: float = 86_400.0,
    ):
        self.posts = posts
        self.channels = channels
        self.webhooks = webhooks
        self.db = posts.db
        self.timeout_s = timeout_s
        self.recheck_s = recheck_s
        self._sessions: dict[str, Any] = {}  # channel id -> the network session (fewer logins)

    # --- the API side ----------------------------------------------------------------------------------
    @staticmethod
    def _model(row: PublicationRow) -> Publication:
        error = None
        if row.error_code:
            error = RecordError(code=row.error_code, message=row.error_message or "", hint=row.error_hint)
        return Publication(
            id=row.id,
            post_id=row.post_id,
            channel=row.channel_id,
            status=row.status,  # one of the three (publish, _run)
            publish_at=row.publish_at,
            uri=row.uri,
            cid=row.cid,
            checks=row.checks or {},
            error=error,
            attempts=row.attempts,
            created_at=row.created_at,
            published_at=row.published_at,
            checked_at=row.checked_at,
        )

    def publish(self, post_id: str, req: PublishRequest, caller: Caller) -> tuple[Publication, bool]:
        """Ask for the post on the channel; returns (the publication, whether this call created or retried it).
        409 unless the post is approved; a caption over the channel's limit is 422 (never cut)."""
        post = self.posts.get(post_id, caller)  # 404 for another key's post
        if post.review != "approved":
            raise Conflict(
                f"post {post_id} is {post.review}, not approved: it cannot be published",
                field="review",
                hint='Approve it first: POST /api/v1/posts/{id}/review {"decision": "approved"}.',
            )
        channel = self.channels.resolve(req.channel, caller)
        kind = KINDS[channel.info.kind]
        limit = getattr(kind, "max_text", None)
        caption = post.parts.get("caption")
        if not isinstance(caption, TextRecord) or caption.status != "succeeded":
            raise InvalidRequest(f"post {post_id} has no caption to publish", field="post")
        size = len((caption.text or "").strip())
        if limit is not None and size > limit:
            raise InvalidRequest(
                f"the caption is {size} characters, over {channel.info.kind}'s limit of {limit}",
                field="caption",
                hint='Make a post for this platform ("platform": "bluesky"): captions are never cut.',
            )
        at = req.publish_at
        if at is not None and at.tzinfo is None:
            raise InvalidRequest("publish_at needs its time zone (e.g. 2027-01-01T09:00:00+01:00)", field="publish_at")
        now = _now()
        with self.db.session() as s:
            row = (
                s.query(PublicationRow)
                .filter(PublicationRow.post_id == post_id, PublicationRow.channel_id == channel.info.id)
                .one_or_none()
            )
            if row is not None:
                if row.status != "failed":
                    return self._model(row), False  # idempotent: the same publication
                row.status, row.error_code, row.error_message, row.error_hint = "pending", None, None, None
                row.publish_at, row.finished_at, row.claimed_until = at, None, None
                log.info("publication=%s retried", row.id)
                return self._model(row), True
        micros = time.time_ns() // 1000
        row = PublicationRow(
            id=str(uuid.uuid4()),
            post_id=post_id,
            channel_id=channel.info.id,
            status="pending",
            rkey=make_tid(micros, int.from_bytes(os.urandom(2), "big")),
            publish_at=at,
            attempts=0,
            checks={},
            owner=caller.id,
            created_at=now,
        )
        try:
            with self.db.session() as s:
                s.add(row)
        except IntegrityError:  # the same publish at the same moment: answer the one that won
            return self.publish(post_id, req, caller)
        log.info("publication=%s pending post=%s channel=%s at=%s", row.id, post_id, channel.info.id, at)
        return self._model(row), True

    def get(self, pub_id: str, caller: Caller) -> Publication:
        with self.db.session() as s:
            row = s.get(PublicationRow, pub_id)
            if row is None or not caller.owns(row.owner):
                raise NotFound(f"no publication with id {pub_id!r}", field="id")
            return self._model(row)

    def list(self, caller: Caller, post_id: str | None = None) -> builtins.list[Publication]:
        with self.db.session() as s:
            q = s.query(PublicationRow)
            if post_id is not None:
                q = q.filter(PublicationRow.post_id == post_id)
            return [self._model(r) for r in q.order_by(PublicationRow.created_at) if caller.owns(r.owner)]

    # --- the publisher ---------------------------------------------------------------------------------
    def due(self, limit: int = 10) -> builtins.list[str]:
        now = _now()
        with self.db.session() as s:
            rows = (
                s.query(PublicationRow.id)
                .filter(PublicationRow.status == "pending")
                .filter(or_(PublicationRow.publish_at.is_(None), PublicationRow.publish_at <= now))
                .filter(or_(PublicationRow.claimed_until.is_(None), PublicationRow.claimed_until < now))
                .limit(limit)
                .all()
            )
        return [r[0] for r in rows]

    def claim(self, pub_id: str) -> bool:
        now = _now()
        with self.db.session() as s:
            res = s.execute(
                update(PublicationRow)
                .where(PublicationRow.id == pub_id, PublicationRow.status == "pending")
                .where(or_(PublicationRow.publish_at.is_(None), PublicationRow.publish_at <= now))
                .where(or_(PublicationRow.claimed_until.is_(None), PublicationRow.claimed_until < now))
                .values(claimed_until=now + timedelta(seconds=LEASE_S), attempts=PublicationRow.attempts + 1)
            )
            return bool(getattr(res, "rowcount", 0) == 1)

    def _prepare(self, row: PublicationRow, caller: Caller, channel: Channel) -> Prepared:
        post = self.posts.get(row.post_id, caller)
        if post.review != "approved":
            raise Conflict(f"post {row.post_id} is {post.review} now, no longer approved")
        caption = post.parts.get("caption")
        if not isinstance(caption, TextRecord):
            raise InvalidRequest(f"post {row.post_id} has no caption", field="post")
        text = (caption.text or "").strip()
        image = post.parts.get("image")
        if image is None or image.status != "succeeded" or image.artifact is None:
            return Prepared(text)
        path, _ = self.posts.service.artifact(image.id, caller)
        made = path.read_bytes()
        if hashlib.sha256(made).hexdigest() != image.artifact.sha256:
            raise ArtifactChanged("the post's image no longer matches its record", content_id=image.id)
        data, media, diff, w, h = fit_image(made, channel.max_image_bytes)
        if diff > IMAGE_TOLERANCE:
            raise PublishFailed(f"re-encoding the image to fit moved its pixels by {diff:.2f} (over {IMAGE_TOLERANCE})")
        alt = post.brief[:1000]
        out = OutgoingImage(data=data, media_type=media, alt=alt, width=w, height=h)
        return Prepared(text, out, hashlib.sha256(data).hexdigest(), made, diff)

    def run(self, pub_id: str) -> None:
        """Publish one claimed publication and record how it ended (never raises)."""
        with self.db.session() as s:
            row = s.get(PublicationRow, pub_id)
            if row is None:
                return
            s.expunge(row)
        caller = LOCAL if row.owner is None else Caller(id=row.owner, name="publisher", scope="generate")
        checks: dict[str, Any] = {}
        try:
            secret = self.channels.secret_of(row.channel_id)
            channel = KINDS[secret.info.kind](secret, self.timeout_s, self._sessions)
            live = channel.find(row.rkey)  # posted before (a retry, a crash after posting): never twice
            prepared = self._prepare(row, caller, channel)
            checks["existing"] = live is not None
            if prepared.image is not None:
                up = prepared.image
                checks["upload"] = {"media_type": up.media_type, "bytes": len(up.data)}
                checks["upload"]["pixel_difference"] = round(prepared.difference, 3)
            if live is None:
                images = [prepared.image] if prepared.image is not None else []
                item = Outgoing(text=prepared.text, images=images, key=row.rkey, created_at=row.created_at)
                channel.publish(item)
                live = channel.find(row.rkey)
                if live is None:
                    raise PublishMismatch("the network accepted the post but does not show it when read back")
            checks.update(self._match(live, prepared))
            self._finish(pub_id, "published", live, checks, None)
        except GenforgeError as exc:
            self._finish(pub_id, "failed", None, checks, exc)
        except Exception as exc:  # a bug must still end the publication: failed, with the error named
            log.exception("publication=%s failed unexpectedly", pub_id)
            self._finish(pub_id, "failed", None, checks, GenforgeError(f"internal error: {type(exc).__name__}"))

    # --- re-checks -------------------------------------------------------------------------------------
    def due_rechecks(self, limit: int = 10) -> builtins.list[str]:
        if self.recheck_s <= 0:
            return []
        now = _now()
        with self.db.session() as s:
            rows = (
                s.query(PublicationRow.id)
                .filter(PublicationRow.status == "published")
                .filter(PublicationRow.checked_at < now - timedelta(seconds=self.recheck_s))
                .filter(or_(PublicationRow.claimed_until.is_(None), PublicationRow.claimed_until < now))
                .limit(limit)
                .all()
            )
        return [r[0] for r in rows if self._claim_published(r[0])]

    def _claim_published(self, pub_id: str) -> bool:
        now = _now()
        with self.db.session() as s:
            res = s.execute(
                update(PublicationRow)
                .where(PublicationRow.id == pub_id, PublicationRow.status == "published")
                .where(or_(PublicationRow.claimed_until.is_(None), PublicationRow.claimed_until < now))
                .values(claimed_until=now + timedelta(seconds=LEASE_S))
            )
            return bool(getattr(res, "rowcount", 0) == 1)

    def recheck_now(self, pub_id: str, caller: Caller) -> Publication:
        """Read a published post back now (POST /api/v1/publications/{id}/recheck)."""
        pub = self.get(pub_id, caller)
        if pub.status != "published":
            raise Conflict(f"publication {pub_id} is {pub.status}; only a published one is re-checked")
        if not self._claim_published(pub_id):
            raise Conflict(f"publication {pub_id} is being published or re-checked right now; ask again shortly")
        self.recheck(pub_id)
        return self.get(pub_id, caller)

    def recheck(self, pub_id: str) -> None:
        """Read a published post back: `removed` when the network no longer has it, `altered` when its text or
        image differs from what was published; otherwise its `checked_at` moves on. A network error changes
        nothing (the next round tries again). Never raises."""
        with self.db.session() as s:
            row = s.get(PublicationRow, pub_id)
            if row is None:
                return
            s.expunge(row)
        status, reason = "published", None
        try:
            secret = self.channels.secret_of(row.channel_id)
            channel = KINDS[secret.info.kind](secret, self.timeout_s, self._sessions)
            live = channel.find(row.rkey)
            caller = LOCAL if row.owner is None else Caller(id=row.owner, name="publisher", scope="generate")
            post = self.posts.get(row.post_id, caller)
            caption = post.parts.get("caption")
            text = (caption.text or "").strip() if isinstance(caption, TextRecord) else ""
            image = (row.checks or {}).get("image", {}).get("sha256")
            if live is None:
                status, reason = "removed", "the network no longer shows the post"
            elif live.text.strip() != text:
                status, reason = "altered", "the network's post text differs from the caption"
            elif image and [hashlib.sha256(b).hexdigest() for b in live.images] != [image]:
                status, reason = "altered", "the network's image differs from the one published"
        except GenforgeError as exc:
            log.info("publication=%s re-check could not read the post back (%s)", pub_id, exc.code)
            with self.db.session() as s:
                s.execute(update(PublicationRow).where(PublicationRow.id == pub_id).values(claimed_until=None))
            return
        with self.db.session() as s:
            found = s.get(PublicationRow, pub_id)
            if found is None:
                return
            found.claimed_until, found.checked_at, found.status = None, _now(), status
            if reason is not None:
                found.error_code, found.error_message = PublishMismatch.code, reason
                found.error_hint = "Look at the post on the network; publish it again with a new post if needed."
            owner, model = found.owner, self._model(found)
        if status != "published":
            log.info("publication=%s %s on re-check", pub_id, status)
            self.webhooks.emit(f"publication.{status}", owner, model.model_dump(mode="json"))

    @staticmethod
    def _match(live: Live, prepared: Prepared) -> dict[str, Any]:
        """Compare the live post with what genforge made; PublishMismatch naming the difference."""
        if live.text.strip() != prepared.text:
            raise PublishMismatch("the network's post text differs from the caption")
        checks: dict[str, Any] = {"text": "equal"}
        if prepared.image is None:
            return checks
        if len(live.images) != 1:
            raise PublishMismatch(f"the network's post has {len(live.images)} images, not 1")
        got = live.images[0]
        if hashlib.sha256(got).hexdigest() != prepared.image_sha256:  # a post found again: its bytes
            raise PublishMismatch("the network's image blob differs from the bytes genforge uploaded")
        diff = pixel_difference(prepared.made or b"", got)
        if diff > IMAGE_TOLERANCE:
            raise PublishMismatch(f"the network's image differs from the post's image by {diff:.2f} per pixel")
        checks["image"] = {"sha256": prepared.image_sha256, "pixel_difference": round(diff, 3)}
        return checks

    def _finish(
        self, pub_id: str, status: str, live: Live | None, checks: dict[str, Any], exc: GenforgeError | None
    ) -> None:
        with self.db.session() as s:
            row = s.get(PublicationRow, pub_id)
            if row is None:
                return
            row.status, row.claimed_until, row.finished_at, row.checks = status, None, _now(), checks
            if live is not None:
                row.uri, row.cid, row.published_at = live.uri, live.cid, _now()
                row.checked_at = row.published_at
            if exc is not None:
                row.error_code, row.error_message, row.error_hint = exc.code, exc.message, exc.hint
            owner, model = row.owner, self._model(row)
        log.info("publication=%s %s%s", pub_id, status, f" ({exc.code})" if exc else "")
        self.webhooks.emit(f"publication.{status}", owner, model.model_dump(mode="json"))


class PublisherLoop:
    """The background side of publishing and webhooks in a server process: due publications (each claimed by
    compare-and-set, run on a small pool) and due webhook deliveries."""

    def __init__(self, publications: PublicationService, webhooks: WebhookService, poll_s: float = 0.5):
        self.publications = publications
        self.webhooks = webhooks
        self.poll_s = poll_s
        self.stopping = threading.Event()
        self.pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="genforge-publish")
        self.hooks = ThreadPoolExecutor(max_workers=1, thread_name_prefix="genforge-webhooks")
        self._thread: threading.Thread | None = None
        self._hooks_busy = threading.Lock()

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="genforge-publisher", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self.stopping.wait(self.poll_s):
            try:
                for pub_id in self.publications.due():
                    if self.publications.claim(pub_id):
                        self.pool.submit(self.publications.run, pub_id)
                for pub_id in self.publications.due_rechecks():  # claimed already
                    self.pool.submit(self.publications.recheck, pub_id)
                if self._hooks_busy.acquire(blocking=False):
                    self.hooks.submit(self._deliver)
            except Exception:  # a database hiccup: logged, the next round tries again
                log.exception("publisher round failed")

    def _deliver(self) -> None:
        try:
            self.webhooks.deliver_due()
        except Exception:
            log.exception("webhook deliveries failed")
        finally:
            self._hooks_busy.release()

    def stop(self) -> None:
        self.stopping.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self.pool.shutdown(wait=False, cancel_futures=True)
        self.hooks.shutdown(wait=False, cancel_futures=True)
