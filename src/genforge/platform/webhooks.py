"""Webhooks: per key, a URL that gets signed JSON callbacks (Standard Webhooks: `webhook-id`, `webhook-timestamp`,
`webhook-signature` = HMAC-SHA256 of id.timestamp.body with the webhook's `whsec_` secret, made by the
`standardwebhooks` library) for the key's events.

Events are written as deliveries (one row per webhook and event) and sent by the publisher's loop
(`deliver_due`), never on the request's path: a slow or dead receiver never blocks generation. A delivery is
retried with backoff (RETRY_S) and ends `failed` after the last; every attempt is recorded and listable.
Addresses: http(s) only; link-local (169.254.0.0/16, fe80::/10) and cloud metadata names are refused at
registration and again before each delivery (a name may resolve elsewhere later); loopback and private addresses
are allowed unless GENFORGE_WEBHOOK_ADDRESSES=public."""

from __future__ import annotations

import base64
import builtins
import ipaddress
import json
import logging
import secrets
import socket
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any, Literal
from urllib.parse import urlsplit

import httpx
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import or_, update
from standardwebhooks.webhooks import Webhook

from genforge.contenttypes.records import Timestamp
from genforge.core.caller import Caller
from genforge.errors import InvalidRequest, NotFound
from genforge.stores.db import Database, DeliveryRow, WebhookRow
from genforge.stores.secrets import SecretBox

log = logging.getLogger("genforge.platform.webhooks")

Event = Literal[
    "record.succeeded",
    "record.failed",
    "record.cancelled",
    "post.succeeded",
    "post.failed",
    "post.reviewed",
    "publication.published",
    "publication.failed",
    "publication.removed",
    "publication.altered",
]
RETRY_S = (5, 30, 120, 600, 1800)  # waits after each failed attempt; then the delivery is `failed`
LEASE_S = 60


class WebhookRequest(BaseModel):
    """POST /api/v1/webhooks."""

    model_config = ConfigDict(extra="forbid")

    url: str = Field(max_length=2000)
    events: list[Event] | None = Field(None, description="The events to send; all when absent.")


class WebhookInfo(BaseModel):
    id: str
    url: str
    events: list[Event] | None
    created_at: Timestamp


class WebhookCreated(WebhookInfo):
    secret: str = Field(description="The signing secret (whsec_...), shown this once.")


class Attempt(BaseModel):
    at: Timestamp
    status: int | None = Field(description="The receiver's HTTP status; null when it could not be reached.")
    error: str | None


class Delivery(BaseModel):
    id: str = Field(description="The webhook-id header.")
    event: str
    status: Literal["pending", "delivered", "failed"]
    attempts: list[Attempt]
    next_at: Timestamp | None
    created_at: Timestamp
    delivered_at: Timestamp | None


def _now() -> datetime:
    return datetime.now(UTC)


def check_address(url: str, allow_private: bool) -> None:
    """Refuse what a webhook may never call (InvalidRequest naming why)."""
    try:
        parts = urlsplit(url)
        host, port = (parts.hostname or "").rstrip(".").lower(), parts.port
    except ValueError as exc:  # a bad port or bracketed address
        raise InvalidRequest(f"the webhook url cannot be read: {exc}", field="url") from None
    if parts.scheme not in ("http", "https") or not host:
        raise InvalidRequest("a webhook url must be http(s) with a host", field="url")
    if host == "metadata.google.internal":
        raise InvalidRequest("a webhook may not call a cloud metadata address", field="url")
    try:
        infos = socket.getaddrinfo(host, port or (443 if parts.scheme == "https" else 80))
    except (OSError, UnicodeError) as exc:
        raise InvalidRequest(f"the webhook's host {host!r} does not resolve: {exc}", field="url") from None
    for info in infos:
        ip = ipaddress.ip_address(str(info[4][0]).split("%")[0])
        if ip.is_link_local or ip.is_multicast or ip.is_unspecified:
            raise InvalidRequest(
                f"the webhook's host {host!r} is a link-local or metadata address ({ip})",
                field="url",
                hint="Link-local addresses (169.254.0.0/16, fe80::/10) are never called.",
            )
        if not allow_private and (ip.is_private or ip.is_loopback):
            raise InvalidRequest(
                f"the webhook's host {host!r} is a private address ({ip}) and this server allows public ones only",
                field="url",
                hint="The operator set GENFORGE_WEBHOOK_ADDRESSES=public.",
            )


class WebhookService:
    """Registration, events as deliveries, and their delivery (`deliver_due`, called by the publisher's loop)."""

    def __init__(self, db: Database, box: SecretBox, *, allow_private: bool = True, timeout_s: float = 10.0):
        self.db = db
        self.box = box
        self.allow_private = allow_private
        self.timeout_s = timeout_s

    @staticmethod
    def _info(row: WebhookRow) -> WebhookInfo:
        return WebhookInfo(id=row.id, url=row.url, events=row.events, created_at=row.created_at)

    def create(self, req: WebhookRequest, caller: Caller) -> WebhookCreated:
        check_address(req.url, self.allow_private)
        secret = "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()
        row = WebhookRow(
            id=str(uuid.uuid4()),
            url=req.url,
            secret=self.box.seal(secret),
            events=req.events,
            owner=caller.id,
            created_at=_now(),
        )
        with self.db.session() as s:
            s.add(row)
        log.info("webhook=%s registered", row.id)
        return WebhookCreated(**self._info(row).model_dump(), secret=secret)

    def _row(self, webhook_id: str, caller: Caller) -> WebhookRow:
        with self.db.session() as s:
            row = s.get(WebhookRow, webhook_id)
            if row is None or not caller.owns(row.owner):
                raise NotFound(f"no webhook with id {webhook_id!r}", field="id")
            return row

    def list(self, caller: Caller) -> builtins.list[WebhookInfo]:
        with self.db.session() as s:
            rows = s.query(WebhookRow).order_by(WebhookRow.created_at)
            return [self._info(r) for r in rows if caller.owns(r.owner)]

    def delete(self, webhook_id: str, caller: Caller) -> None:
        row = self._row(webhook_id, caller)
        with self.db.session() as s:
            s.query(WebhookRow).filter(WebhookRow.id == row.id).delete()

    def deliveries(self, webhook_id: str, caller: Caller) -> builtins.list[Delivery]:
        self._row(webhook_id, caller)
        with self.db.session() as s:
            rows = s.query(DeliveryRow).filter(DeliveryRow.webhook_id == webhook_id).order_by(DeliveryRow.created_at)
            return [
                Delivery(
                    id=r.id,
                    event=r.event,
                    status=r.status,  # one of the three (emit, _attempt)
                    attempts=[Attempt(**a) for a in r.log],
                    next_at=r.next_at,
                    created_at=r.created_at,
                    delivered_at=r.delivered_at,
                )
                for r in rows
            ]

    # --- events ----------------------------------------------------------------------------------------
    def emit(self, event: str, owner: str | None, data: dict[str, Any]) -> None:
        """Queue `event` for each of the owner's webhooks that wants it (never raises: an event that cannot be
        queued is logged, and what made it goes on)."""
        try:
            with self.db.session() as s:
                hooks = s.query(WebhookRow).filter(
                    WebhookRow.owner.is_(None) if owner is None else WebhookRow.owner == owner
                )
                now = _now()
                for hook in hooks:
                    if hook.events is not None and event not in hook.events:
                        continue
                    msg_id = f"msg_{uuid.uuid4().hex}"
                    body = json.dumps({"type": event, "timestamp": now.isoformat(), "data": data})
                    s.add(
                        DeliveryRow(
                            id=msg_id,
                            webhook_id=hook.id,
                            event=event,
                            body=body,
                            status="pending",
                            attempts=0,
                            next_at=now,
                            log=[],
                            created_at=now,
                        )
                    )
        except Exception:  # the event is lost, what made it is not: logged with its traceback
            log.exception("webhook event %s could not be queued", event)

    def deliver_due(self, limit: int = 20) -> int:
        """Send the deliveries that are due (each claimed by compare-and-set, so one process sends it)."""
        now = _now()
        with self.db.session() as s:
            due = (
                s.query(DeliveryRow.id)
                .filter(DeliveryRow.status == "pending", DeliveryRow.next_at <= now)
                .filter(or_(DeliveryRow.claimed_until.is_(None), DeliveryRow.claimed_until < now))
                .limit(limit)
                .all()
            )
        sent = 0
        for (msg_id,) in due:
            if self._claim(msg_id):
                self._attempt(msg_id)
                sent += 1
        return sent

    def _claim(self, msg_id: str) -> bool:
        now = _now()
        with self.db.session() as s:
            res = s.execute(
                update(DeliveryRow)
                .where(DeliveryRow.id == msg_id, DeliveryRow.status == "pending")
                .where(or_(DeliveryRow.claimed_until.is_(None), DeliveryRow.claimed_until < now))
                .values(claimed_until=now + timedelta(seconds=LEASE_S))
            )
            return bool(getattr(res, "rowcount", 0) == 1)

    def _attempt(self, msg_id: str) -> None:
        with self.db.session() as s:
            row = s.get(DeliveryRow, msg_id)
            hook = s.get(WebhookRow, row.webhook_id) if row else None
            if row is None:
                return
            if hook is None:
                row.status, row.claimed_until = "failed", None
                row.log = [*row.log, {"at": _now().isoformat(), "status": None, "error": "the webhook was deleted"}]
                return
            url, secret, body = hook.url, self.box.open(hook.secret), row.body
        at = _now()
        status: int | None = None
        error: str | None = None
        try:
            check_address(url, self.allow_private)
            signature = Webhook(secret).sign(msg_id, at, body)
            headers = {
                "content-type": "application/json",
                "webhook-id": msg_id,
                "webhook-timestamp": str(int(at.timestamp())),
                "webhook-signature": signature,
            }
            resp = httpx.post(url, content=body.encode(), headers=headers, timeout=self.timeout_s)
            status = resp.status_code
            if not 200 <= status < 300:
                error = f"the receiver answered {status}"
        except InvalidRequest as exc:
            error = exc.message
        except httpx.HTTPError as exc:
            error = f"{type(exc).__name__}: {exc}"
        with self.db.session() as s:
            row = s.get(DeliveryRow, msg_id)
            if row is None:
                return
            row.attempts += 1
            row.log = [*row.log, {"at": at.isoformat(), "status": status, "error": error}]
            row.claimed_until = None
            if error is None:
                row.status, row.delivered_at, row.next_at = "delivered", _now(), None
            elif row.attempts > len(RETRY_S):
                row.status, row.next_at = "failed", None
            else:
                row.next_at = _now() + timedelta(seconds=RETRY_S[row.attempts - 1])
        log.info("webhook delivery=%s attempt=%s %s", msg_id, status, "ok" if error is None else "failed")
