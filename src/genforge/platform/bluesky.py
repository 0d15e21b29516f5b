"""Bluesky / AT Protocol: a `Channel` on a PDS through the `atproto` client (no hand-written XRPC).

A post is an `app.bsky.feed.post` record created under the publication's own record key (a TID made when the
publication was), so a retry finds it (`getRecord`) instead of posting twice. Reading back fetches the record and
its image blobs from the PDS (`getRecord`, `sync.getBlob`)."""

from __future__ import annotations

import logging
import threading
from typing import Any

from atproto import Client, models
from atproto_client.exceptions import AtProtocolError, BadRequestError, NetworkError, UnauthorizedError
from atproto_client.request import Request

from genforge.errors import PublishFailed
from genforge.platform.channels import ChannelSecret, Live, Outgoing

log = logging.getLogger("genforge.platform.bluesky")

POST = "app.bsky.feed.post"
MAX_GRAPHEMES = 300  # app.bsky.feed.post's text limit
MAX_IMAGE_BYTES = 1_000_000  # app.bsky.embed.images' blob limit
_SESSIONS_LOCK = threading.Lock()


def _reason(exc: Exception) -> str:
    """An error's reason without anything from the request (the client's errors carry the response only)."""
    if isinstance(exc, AtProtocolError) and getattr(exc, "response", None) is not None:
        resp = exc.response
        content = getattr(resp, "content", None)
        detail = getattr(content, "message", None) or getattr(content, "error", None) or ""
        return f"{getattr(resp, 'status_code', '?')} {detail}".strip()
    return f"{type(exc).__name__}: {exc}"


class BlueskyChannel:
    name = "bluesky"
    max_text = MAX_GRAPHEMES
    max_image_bytes = MAX_IMAGE_BYTES

    def __init__(self, secret: ChannelSecret, timeout_s: float, sessions: dict[str, Any]):
        self.secret = secret
        self.url = secret.info.url
        self.client = Client(base_url=self.url, request=Request(timeout=timeout_s))
        self._sessions = sessions  # channel id -> session string, shared by the publisher (fewer logins)
        self.did = ""

    def _call(self, what: str, fn: Any) -> Any:
        try:
            return fn()
        except (NetworkError, AtProtocolError, OSError) as exc:
            raise PublishFailed(
                f"Bluesky at {self.url}: {what} failed: {_reason(exc)}",
                details={"channel": self.secret.info.name},
            ) from None

    def login(self) -> None:
        key = self.secret.info.id
        with _SESSIONS_LOCK:
            saved = self._sessions.get(key)
        if saved:
            try:
                self.client.login(session_string=saved, fetch_bsky_profile=False)
                self.did = self._session_did()
                return
            except (AtProtocolError, ValueError):
                pass  # expired or revoked: log in again
        self._call(
            "logging in",
            lambda: self.client.login(self.secret.info.handle, self.secret.password, fetch_bsky_profile=False),
        )
        self.did = self._session_did()
        with _SESSIONS_LOCK:
            self._sessions[key] = self.client.export_session_string()

    def _session_did(self) -> str:
        session = self.client._session  # the client keeps it private; its DID is who we post as
        if session is None:
            raise PublishFailed(f"Bluesky at {self.url}: no session after logging in")
        return str(session.did)

    def find(self, key: str) -> Live | None:
        if not self.did:
            self.login()
        params = models.ComAtprotoRepoGetRecord.Params(repo=self.did, collection=POST, rkey=key)
        try:
            got = self.client.com.atproto.repo.get_record(params)
        except BadRequestError as exc:
            if "RecordNotFound" in _reason(exc) or "Could not locate record" in str(exc):
                return None
            raise PublishFailed(f"Bluesky at {self.url}: reading {key} back failed: {_reason(exc)}") from None
        except (NetworkError, AtProtocolError, OSError) as exc:
            raise PublishFailed(f"Bluesky at {self.url}: reading {key} back failed: {_reason(exc)}") from None
        value = got.value
        text = getattr(value, "text", "")
        blobs: list[bytes] = []
        embed = getattr(value, "embed", None)
        for image in getattr(embed, "images", None) or []:
            cid = image.image.ref.link if hasattr(image.image, "ref") else image.image.cid
            blob = self._call(
                "fetching an image back",
                lambda cid=cid: self.client.com.atproto.sync.get_blob(
                    models.ComAtprotoSyncGetBlob.Params(did=self.did, cid=cid)
                ),
            )
            blobs.append(bytes(blob))
        return Live(uri=got.uri, cid=got.cid or "", text=text, images=blobs)

    def publish(self, item: Outgoing) -> str:
        if not self.did:
            self.login()
        embeds = []
        for image in item.images:
            blob = self._call("uploading the image", lambda image=image: self.client.upload_blob(image.data)).blob
            ratio = models.AppBskyEmbedDefs.AspectRatio(width=image.width, height=image.height)
            embeds.append(models.AppBskyEmbedImages.Image(alt=image.alt, image=blob, aspect_ratio=ratio))
        record = models.AppBskyFeedPost.Record(
            text=item.text,
            created_at=item.created_at.isoformat().replace("+00:00", "Z"),
            embed=models.AppBskyEmbedImages.Main(images=embeds) if embeds else None,
        )
        data = models.ComAtprotoRepoCreateRecord.Data(repo=self.did, collection=POST, rkey=item.key, record=record)
        made = self._call("creating the post", lambda: self.client.com.atproto.repo.create_record(data))
        log.info("bluesky: created %s", made.uri)
        return str(made.uri)


__all__ = ["BlueskyChannel", "UnauthorizedError"]
