"""Channels: where a key publishes its posts. A channel kind is one `Channel` implementation (bluesky.py); adding
Mastodon, Instagram Graph or a Postiz bridge is one module that implements it and one entry in `KINDS`.

A channel's secret (an app password) is stored encrypted with the data dir's key (stores/secrets.py), is never
returned by the API and never logged: `ChannelInfo` has no field for it."""

from __future__ import annotations

import builtins
import ipaddress
import logging
import threading
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Literal, Protocol
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr
from sqlalchemy.exc import IntegrityError

from genforge.contenttypes.records import Timestamp
from genforge.core.caller import Caller
from genforge.errors import Conflict, InvalidRequest, NotFound
from genforge.stores.db import ChannelRow, Database
from genforge.stores.secrets import SecretBox

log = logging.getLogger("genforge.platform.channels")

Kind = Literal["bluesky"]


@dataclass(frozen=True)
class Outgoing:
    """What a channel is asked to publish: the text (never cut), images already fitted to the network's limits,
    and the record key the publication owns (the same on every retry)."""

    text: str
    images: list[OutgoingImage]
    key: str
    created_at: datetime


@dataclass(frozen=True)
class OutgoingImage:
    data: bytes
    media_type: str
    alt: str
    width: int
    height: int


@dataclass(frozen=True)
class Live:
    """A post as the network shows it when read back: its id there, its text and its images' bytes."""

    uri: str
    cid: str
    text: str
    images: list[bytes] = field(default_factory=list)


class Channel(Protocol):
    """One network account. Every method raises PublishFailed (with the reason) for a network error or a refusal."""

    name: str
    max_text: int  # the longest text the network takes (a longer one is refused with 422, never cut)
    max_image_bytes: int  # the largest image blob it takes (a larger image is re-encoded to fit)

    def find(self, key: str) -> Live | None:
        """The post published under `key`, read back from the network; None when there is none."""
        ...

    def publish(self, item: Outgoing) -> str:
        """Create the post under `item.key`; returns its URI. Callers look it up with `find` first."""
        ...


class ChannelRequest(BaseModel):
    """POST /api/v1/channels."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
    kind: Kind
    url: str = Field(max_length=2000, description="The PDS's base URL (https://bsky.social for Bluesky).")
    handle: str = Field(min_length=1, max_length=253)
    password: SecretStr = Field(description="An app password; stored encrypted, never returned.")


class ChannelInfo(BaseModel):
    id: str
    name: str
    kind: Kind
    url: str
    handle: str
    created_at: Timestamp


@dataclass(frozen=True)
class ChannelSecret:
    """A channel as a publisher needs it (with its password): never serialized."""

    info: ChannelInfo
    password: str = field(repr=False)
    owner: str | None = None


def _now() -> datetime:
    return datetime.now(UTC)


def check_url(url: str, what: str) -> str:
    try:
        parts = urlsplit(url)
        _ = parts.hostname, parts.port
    except ValueError as exc:  # a bad port or bracketed address
        raise InvalidRequest(f"the {what} cannot be read: {exc}", field="url") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InvalidRequest(f"the {what} must be an http(s) URL with a host", field="url")
    return url.rstrip("/")


def is_link_local(host: str) -> bool:
    try:
        ip = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return host.lower().rstrip(".") == "metadata.google.internal"
    return ip.is_link_local


class ChannelStore:
    """Channels, each owned by the key that registered it (another key's answers like an unknown one)."""

    def __init__(self, db: Database, box: SecretBox):
        self.db = db
        self.box = box
        self._lock = threading.Lock()

    @staticmethod
    def _info(row: ChannelRow) -> ChannelInfo:
        return ChannelInfo(
            id=row.id,
            name=row.name,
            kind=row.kind,  # the column holds one of Kind (create)
            url=row.url,
            handle=row.handle,
            created_at=row.created_at,
        )

    def create(self, req: ChannelRequest, caller: Caller) -> ChannelInfo:
        url = check_url(req.url, "channel's url")
        host = urlsplit(url).hostname or ""
        if is_link_local(host):
            raise InvalidRequest("a channel's url may not be a link-local or cloud metadata address", field="url")
        row = ChannelRow(
            id=str(uuid.uuid4()),
            name=req.name,
            kind=req.kind,
            url=url,
            handle=req.handle.lstrip("@"),
            secret=self.box.seal(req.password.get_secret_value()),
            owner=caller.id,
            created_at=_now(),
        )
        try:
            with self.db.session() as s:
                s.add(row)
        except IntegrityError:
            raise Conflict(f"a channel named {req.name!r} exists", field="name", hint="Pick another name.") from None
        log.info("channel=%s registered kind=%s", row.id, row.kind)
        return self._info(row)

    def _find(self, ref: str, caller: Caller) -> ChannelRow:
        with self.db.session() as s:
            row = s.get(ChannelRow, ref)
            if row is None or not caller.owns(row.owner):
                q = s.query(ChannelRow).filter(ChannelRow.name == ref)
                rows = [r for r in q if caller.owns(r.owner)]
                mine = [r for r in rows if r.owner == caller.id]
                found = mine or rows
                if not found:
                    raise NotFound(f"no channel {ref!r}", field="channel")
                row = found[0]
            return row

    def get(self, ref: str, caller: Caller) -> ChannelInfo:
        return self._info(self._find(ref, caller))

    def list(self, caller: Caller) -> builtins.list[ChannelInfo]:
        with self.db.session() as s:
            return [self._info(r) for r in s.query(ChannelRow).order_by(ChannelRow.created_at) if caller.owns(r.owner)]

    def delete(self, ref: str, caller: Caller) -> None:
        row = self._find(ref, caller)
        with self.db.session() as s:
            s.query(ChannelRow).filter(ChannelRow.id == row.id).delete()

    def resolve(self, ref: str, caller: Caller) -> ChannelSecret:
        """The channel with its password, for publishing (in a body: unknown and another key's read alike)."""
        try:
            row = self._find(ref, caller)
        except NotFound:
            raise InvalidRequest(f"no channel {ref!r}", field="channel") from None
        return ChannelSecret(self._info(row), self.box.open(row.secret), row.owner)

    def secret_of(self, channel_id: str) -> ChannelSecret:
        """A channel by id for the publisher, which acts for the publication's owner."""
        with self.db.session() as s:
            row = s.get(ChannelRow, channel_id)
            if row is None:
                raise NotFound(f"channel {channel_id} was deleted", field="channel")
            return ChannelSecret(self._info(row), self.box.open(row.secret), row.owner)
