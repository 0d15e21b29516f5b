"""Posts: a persona's caption, image, narration and video, each its own content record made through the one
ContentService path; the post is `succeeded` only when every requested part is.

Order: the caption and the image are independent and are submitted together (they run in different engine
workers); the narration speaks the caption; the video combines the image and the narration. When a part fails,
the parts that need it are `skipped`, the others that succeeded stay recorded, and the post ends `failed` naming
the part and its error. Events of every part (tokens, progress, each part's start and end) go to the post's own
event stream (a core.jobs.EventStream), ending with the post.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import re
import threading
import unicodedata
import uuid
import zipfile
from datetime import UTC, datetime
from typing import Any, Literal, Protocol, cast

from pydantic import BaseModel, ConfigDict, Field, field_validator
from sqlalchemy.orm import Session

from genforge.contenttypes import REGISTRY, ContentRecord
from genforge.contenttypes.records import RecordError, Status, Timestamp
from genforge.contenttypes.request import GenerateRequest
from genforge.contenttypes.text import TextRecord
from genforge.contenttypes.transcript import to_vtt
from genforge.contenttypes.video import PLATFORM_SIZES, VideoRecord
from genforge.core.caller import Caller
from genforge.core.jobs import EventStream, Job
from genforge.core.service import ContentService
from genforge.engines.base import TextPolicy
from genforge.errors import (
    ArtifactChanged,
    Conflict,
    Forbidden,
    GenforgeError,
    Interrupted,
    InvalidRequest,
    NotFound,
    error_class,
)
from genforge.platform.personas import PersonaStore
from genforge.stores.db import PostRow, ReviewRow

log = logging.getLogger("genforge.platform.posts")

Part = Literal["caption", "image", "narration", "video"]
PARTS: tuple[Part, ...] = ("caption", "image", "narration", "video")
NEEDS: dict[str, tuple[str, ...]] = {"narration": ("caption",), "video": ("image", "narration")}
CONTENT_TYPE = {"caption": "text", "image": "image", "narration": "speech", "video": "video"}
# Caption limits in characters (the platforms' own); a longer caption is regenerated with the next seed, then
# failed (policy_violation), never cut.
Platform = Literal["x", "threads", "instagram", "tiktok", "linkedin", "youtube", "facebook", "bluesky"]
PLATFORM_LIMITS: dict[Platform, int] = {
    "bluesky": 300,  # graphemes; counted here as characters, never fewer (a character is at most a grapheme)
    "x": 280,
    "threads": 500,
    "instagram": 2200,
    "tiktok": 2200,
    "linkedin": 3000,
    "youtube": 5000,
    "facebook": 63206,
}
# The caption's default length in tokens: short platforms get short captions (what the model is asked for, so
# that most first attempts fit; the limit is still enforced on the text).
CAPTION_TOKENS = {"x": 56, "bluesky": 60}
CAPTION_TOKENS_DEFAULT = 96
CAPTION_MIN_WORDS = 3  # a caption is spoken by the narration: emoji or a lone hashtag are not one
# deleted: the part's record was deleted after it was made (DELETE /api/v1/content/{id}); the post stays readable
PartState = Literal["pending", "running", "succeeded", "failed", "cancelled", "skipped", "deleted"]
# A post's review, apart from its generation status: a post that succeeds waits for review (in_review); only an
# approved post may be published. Every transition is a ReviewRow (who, when, the comment, what was seen).
ReviewState = Literal["draft", "in_review", "approved", "rejected"]
REVIEW_TRANSITIONS: dict[str, frozenset[str]] = {
    "draft": frozenset({"in_review"}),
    "in_review": frozenset({"approved", "rejected"}),
    "approved": frozenset({"rejected", "in_review"}),
    "rejected": frozenset({"approved", "in_review"}),
}


class EventSink(Protocol):
    """Where a platform service reports what happened (platform/webhooks.py WebhookService.emit)."""

    def emit(self, event: str, owner: str | None, data: dict[str, Any]) -> None: ...


class PostRequest(BaseModel):
    """POST /api/v1/posts."""

    model_config = ConfigDict(extra="forbid")

    persona: str = Field(max_length=80, description="The persona's name (its latest version) or NAME@VERSION.")
    brief: str = Field(min_length=1, max_length=10_000, description="What the post is about.")
    parts: list[Part] = Field(default_factory=lambda: list(PARTS), min_length=1, max_length=4)
    platform: Platform = "instagram"
    params: dict[Part, dict[str, Any]] = Field(
        default_factory=dict, description="Per part, params that override the persona's and the post's defaults."
    )
    mode: Literal["sync", "async"] = Field("sync", description="async: 202 at once; follow the Location.")
    captions: bool = Field(
        False, description="Burn word-level captions of the narration into the video (and export them as WebVTT)."
    )

    @field_validator("parts")
    @classmethod
    def _complete(cls, parts):
        if len(set(parts)) != len(parts):
            raise ValueError("each part at most once")
        for part in parts:
            missing = [n for n in NEEDS.get(part, ()) if n not in parts]
            if missing:
                raise ValueError(f"{part} needs {' and '.join(missing)} in the parts too")
        return [p for p in PARTS if p in parts]


class PersonaRef(BaseModel):
    name: str
    version: int


class PostError(RecordError):
    part: str = Field(description="The part that failed.")


class ReviewRequest(BaseModel):
    """POST /api/v1/posts/{id}/review."""

    model_config = ConfigDict(extra="forbid")

    decision: Literal["approved", "rejected"]
    comment: str | None = Field(None, max_length=5000)


class ReviewEntry(BaseModel):
    """One review transition."""

    from_state: ReviewState
    to_state: ReviewState
    by: str = Field(description="The key's name (or `local`, the operator; `genforge` for automatic moves).")
    by_key: str | None = Field(description="The key's id; null for the operator and automatic moves.")
    at: Timestamp
    comment: str | None
    seen: dict[str, Any] = Field(description="What the reviewer saw: the persona version, each part's sha256.")


class Post(BaseModel):
    id: str
    status: Status
    review: ReviewState = Field(description="The review state, apart from the generation status.")
    reviews: list[ReviewEntry] = Field(description="Every review transition, oldest first.")
    persona: PersonaRef
    platform: str
    brief: str
    requested: list[str] = Field(description="The requested parts, in the order they are made.")
    parts: dict[str, ContentRecord] = Field(description="The record of each part that was submitted.")
    states: dict[str, PartState] = Field(description="Each requested part's state (skipped: a part it needs failed).")
    error: PostError | None = Field(description="Which part failed and why; null unless the post failed.")
    created_at: Timestamp
    finished_at: Timestamp | None


_URL = re.compile(r"(?:https?://|www\.)\S+", re.IGNORECASE)


def speakable(text: str) -> str:
    """What the narration speaks of a caption: without URLs and emoji, hashtags and mentions as their words.
    Listen-back compares the narration with this text."""
    text = _URL.sub(" ", text)
    text = re.sub(r"[#@](\w)", r"\1", text)
    kept = "".join(
        ch for ch in text if unicodedata.category(ch) not in ("So", "Sk", "Cs", "Co", "Cn") and ch != "\ufe0f"
    )
    kept = " ".join(kept.split())
    return kept if any(ch.isalnum() for ch in kept) else text.strip()


def _now() -> datetime:
    return datetime.now(UTC)


def _caption_prompt(brief: str, platform: str, limit: int) -> str:
    size = "one sentence" if limit <= 280 else "two or three sentences"
    return f"Write a short {platform} caption ({size}) about: {brief}\nAnswer with the caption only."


class PostService:
    """Posts, each owned by the key that made it (its parts are that key's records too). Every part is planned
    and authorized for the caller before the post is written: a part whose model (the persona's) the key may
    not run refuses the whole post with 403 and records nothing."""

    def __init__(self, service: ContentService, personas: PersonaStore, events: EventSink | None = None):
        self.service = service
        self.personas = personas
        self.sink = events
        self.db = service.db
        self._events: dict[str, EventStream[Post]] = {}  # live posts' event streams
        self._lock = threading.Lock()

    @staticmethod
    def _row(s: Session, post_id: str) -> PostRow:
        """A post this service is making (its row exists from `start` on)."""
        row = s.get(PostRow, post_id)
        if row is None:
            raise NotFound(f"no post with id {post_id!r}", field="id")
        return row

    # --- making a post ------------------------------------------------------------------------------
    def _preflight(self, req: PostRequest, ref: str, caller: Caller) -> None:
        """Plan and authorize every part as the caller before anything is recorded or queued. The parts made
        from other parts (the narration speaks the caption, the video combines image and narration) are planned
        with stand-ins for what they will get: their models and the persona's are what is checked."""
        stand_in: dict[str, str] = {"caption": req.brief}
        for part in req.parts:
            if part == "video":
                continue  # its inputs do not exist yet; its model is checked below
            gen = self._request(part, req, ref, {}, stand_in)
            try:
                self.service.plan(gen, caller, self._policy(part, req))
            except Forbidden:
                raise
            except GenforgeError as exc:
                # Not an authorization answer (an unknown model, a bad parameter): the part fails with this same
                # error when it is submitted, the post records which part, and the parts before it stay made.
                log.info("post preflight: the %s part will fail when submitted (%s)", part, exc.code)
        if "video" in req.parts:
            video = req.params.get("video", {})
            caller.check_model(video["model"] if "model" in video else self.service.catalog.default_for("video"))

    def start(self, req: PostRequest, caller: Caller) -> tuple[str, EventStream[Post]]:
        """Write the post (running), pinned to the persona's version now; its parts are made by `run`."""
        persona = self.personas.resolve(req.persona, caller)
        if "narration" in req.parts:
            # listen-back: the request's choice, else the persona's, else on when a transcription model is installed
            narration = req.params.setdefault("narration", {})
            chosen = persona.speech.listen_back
            installed = self.service.catalog.default_for("transcript") is not None
            narration.setdefault("listen_back", installed if chosen is None else chosen)
        self._preflight(req, f"{persona.name}@{persona.version}", caller)
        post_id = str(uuid.uuid4())
        with self.db.session() as s:
            s.add(
                PostRow(
                    id=post_id,
                    status="running",
                    persona_name=persona.name,
                    persona_version=persona.version,
                    platform=req.platform,
                    brief=req.brief,
                    parts=list(req.parts),
                    part_ids={},
                    created_at=_now(),
                    owner=caller.id,
                )
            )
        events: EventStream[Post] = EventStream(post_id)
        with self._lock:
            self._events[post_id] = events
        log.info("post=%s started persona=%s@%d parts=%s", post_id, persona.name, persona.version, req.parts)
        return post_id, events

    def run(self, post_id: str, req: PostRequest, events: EventStream[Post], caller: Caller) -> Post:
        """Make the parts; returns the post (succeeded or failed). Never raises for a part's failure."""
        with self.db.session() as s:
            row = self._row(s, post_id)
            ref = f"{row.persona_name}@{row.persona_version}"
        records: dict[str, ContentRecord] = {}
        failed: tuple[str, GenforgeError] | None = None
        try:
            for group in self._groups(caller):
                jobs = {}
                for part in group:
                    if part not in req.parts or any(n not in records for n in NEEDS.get(part, ())):
                        continue  # not asked for, or skipped: a part it needs failed
                    try:
                        gen = self._request(part, req, ref, records)
                        jobs[part] = self._submit(post_id, part, gen, req, caller)
                    except GenforgeError as exc:
                        failed = failed or (part, exc)
                        events.publish({"type": "part", "part": part, "status": "failed"})
                for part, job in jobs.items():
                    emit = lambda ev, part=part: events.publish({**ev, "part": part})  # noqa: E731
                    try:
                        records[part] = self.service.wait(job, emit)
                        status = "succeeded"
                    except GenforgeError as exc:
                        failed = failed or (part, exc)
                        status = "failed"
                    events.publish({"type": "part", "part": part, "status": status, "content_id": job.content_id})
        except Exception as exc:  # a bug must still end the post: recorded as failed, never left running
            log.exception("post=%s failed unexpectedly", post_id)
            failed = failed or ("post", GenforgeError(f"internal error: {type(exc).__name__}: {exc}"))
        self._finish(post_id, failed)
        post = self.get(post_id, caller)
        if self.sink is not None:
            summary = {"id": post.id, "status": post.status, "review": post.review}
            self.sink.emit(f"post.{post.status}", caller.id, summary)
        events.finish(post, None if failed is None else self.error_of(post))
        with self._lock:
            self._events.pop(post_id, None)
        log.info("post=%s %s", post_id, post.status)
        return post

    @staticmethod
    def _groups(caller: Caller) -> tuple[tuple[str, ...], ...]:
        """The parts in the order they are made, each group submitted together. The caption and the image are
        independent (they run in different engine workers) unless the key may hold only one job at a time: its
        limit holds for its posts too, so they then run one after the other."""
        if caller.max_jobs is not None and caller.max_jobs < 2:
            return (("caption",), ("image",), ("narration",), ("video",))
        return (("caption", "image"), ("narration",), ("video",))

    def _request(
        self,
        part: str,
        req: PostRequest,
        ref: str,
        records: dict[str, ContentRecord],
        stand_in: dict[str, str] | None = None,
    ) -> GenerateRequest:
        params = dict(req.params.get(cast(Part, part), {}))
        if part == "caption":
            params.setdefault("max_tokens", CAPTION_TOKENS.get(req.platform, CAPTION_TOKENS_DEFAULT))
            prompt = _caption_prompt(req.brief, req.platform, PLATFORM_LIMITS[req.platform])
        elif part == "image":
            prompt = req.brief
        elif part == "narration":
            caption = records.get("caption")
            text = caption.text if isinstance(caption, TextRecord) else None
            prompt = speakable(stand_in["caption"] if stand_in is not None else (text or "").strip())
        else:
            params = {"image": records["image"].id, "narration": records["narration"].id, **params}
            params.setdefault("platform", req.platform if req.platform in PLATFORM_SIZES else None)
            if req.captions:
                params.setdefault("captions", True)
            params = {k: v for k, v in params.items() if v is not None}
            prompt = req.brief
        try:
            return GenerateRequest(content_type=CONTENT_TYPE[part], prompt=prompt, params=params, persona=ref)
        except ValueError as exc:
            raise InvalidRequest(f"the {part} request is invalid: {exc}", field=f"params.{part}") from None

    @staticmethod
    def _policy(part: str, req: PostRequest) -> TextPolicy | None:
        if part != "caption":
            return None
        return TextPolicy(max_chars=PLATFORM_LIMITS[req.platform], min_words=CAPTION_MIN_WORDS)

    def _submit(self, post_id: str, part: str, gen: GenerateRequest, req: PostRequest, caller: Caller) -> Job:
        job = self.service.submit(gen, caller, policy=self._policy(part, req))
        with self.db.session() as s:
            row = self._row(s, post_id)
            row.part_ids = {**row.part_ids, part: job.content_id}
        return job

    def _finish(self, post_id: str, failed: tuple[str, GenforgeError] | None) -> None:
        with self.db.session() as s:
            row = self._row(s, post_id)
            row.status, row.finished_at = ("failed" if failed else "succeeded"), _now()
            if not failed:  # a made post waits for review
                self._transition(s, row, "in_review", None, "genforge", None, {})
            if failed:
                part, exc = failed
                row.error_part, row.error_code = part, exc.code
                row.error_message, row.error_hint = exc.message, exc.hint

    def create(self, req: PostRequest, caller: Caller) -> Post:
        post_id, events = self.start(req, caller)
        return self.run(post_id, req, events, caller)

    def create_async(self, req: PostRequest, caller: Caller) -> str:
        post_id, events = self.start(req, caller)
        thread = threading.Thread(
            target=self.run, args=(post_id, req, events, caller), name=f"post-{post_id[:8]}", daemon=True
        )
        thread.start()
        return post_id

    # --- reading ---------------------------------------------------------------------------------------
    def get(self, post_id: str, caller: Caller) -> Post:
        """The post, if the caller may see it (its owner, or an admin key); otherwise 404 as for an unknown id."""
        with self.db.session() as s:
            row = s.get(PostRow, post_id)
            if row is None or not caller.owns(row.owner):
                raise NotFound(f"no post with id {post_id!r}", field="id")
            snapshot = {c.name: getattr(row, c.name) for c in PostRow.__table__.columns}
            reviews = [
                ReviewEntry(
                    from_state=r.from_state,
                    to_state=r.to_state,
                    by=r.by_name,
                    by_key=r.by_key,
                    at=r.at,
                    comment=r.comment,
                    seen=r.seen,
                )
                for r in s.query(ReviewRow).filter(ReviewRow.post_id == post_id).order_by(ReviewRow.id)
            ]
        parts, deleted = self._part_records(snapshot["part_ids"], caller)
        states: dict[str, str] = {}
        for part in snapshot["parts"]:
            if part in parts:
                states[part] = parts[part].status
            elif part in deleted:
                states[part] = "deleted"
            elif snapshot["status"] == "running":
                states[part] = "pending"
            else:
                states[part] = "failed" if part == snapshot["error_part"] else "skipped"
        error = None
        if snapshot["error_code"]:
            error = PostError(
                part=snapshot["error_part"],
                code=snapshot["error_code"],
                message=snapshot["error_message"],
                hint=snapshot["error_hint"],
            )

        return Post(
            id=post_id,
            status=snapshot["status"],
            review=snapshot["review"],
            reviews=reviews,
            persona=PersonaRef(name=snapshot["persona_name"], version=snapshot["persona_version"]),
            platform=snapshot["platform"],
            brief=snapshot["brief"],
            requested=snapshot["parts"],
            parts=parts,
            states=states,
            error=error,
            created_at=snapshot["created_at"],
            finished_at=snapshot["finished_at"],
        )

    # --- review ----------------------------------------------------------------------------------------
    @staticmethod
    def _transition(
        s: Session, row: PostRow, to: str, by_key: str | None, by_name: str, comment: str | None, seen: dict
    ) -> None:
        if to not in REVIEW_TRANSITIONS[row.review]:
            raise Conflict(
                f"post {row.id} is {row.review}; it cannot become {to}",
                field="decision",
                hint="A post is reviewed once it succeeded (in_review); see its `reviews`.",
            )
        s.add(
            ReviewRow(
                post_id=row.id,
                from_state=row.review,
                to_state=to,
                by_key=by_key,
                by_name=by_name,
                at=_now(),
                comment=comment,
                seen=seen,
            )
        )
        row.review = to

    def review(self, post_id: str, req: ReviewRequest, caller: Caller) -> Post:
        """Approve or reject a post that waits for review (a `review` or admin key), recording what was seen."""
        post = self.get(post_id, caller)  # 404 for another key's post
        caller.check_scope("review", "reviewing a post")
        seen: dict[str, Any] = {
            "persona": post.persona.model_dump(),
            "parts": {
                part: {"id": r.id, "sha256": r.artifact.sha256 if r.artifact else None, "status": r.status}
                for part, r in post.parts.items()
            },
        }
        caption = post.parts.get("caption")
        limit = PLATFORM_LIMITS.get(cast(Platform, post.platform))
        if isinstance(caption, TextRecord) and limit is not None:
            text = caption.text or ""
            seen["policy"] = {"max_chars": limit, "chars": len(text), "ok": len(text) <= limit}
        with self.db.session() as s:
            row = self._row(s, post_id)
            self._transition(s, row, req.decision, caller.id, caller.name, req.comment, seen)
            owner = row.owner
        log.info("post=%s review %s by %s", post_id, req.decision, caller.name)
        if self.sink is not None:
            self.sink.emit("post.reviewed", owner, {"id": post_id, "review": req.decision, "by": caller.name})
        return self.get(post_id, caller)

    def _part_records(self, part_ids: dict[str, str], caller: Caller) -> tuple[dict[str, ContentRecord], set[str]]:
        """The records of the parts, and the parts whose record was deleted since. A part record may be deleted
        like any other (its owner's right to remove content wins over the post); the post then shows that part
        as `deleted`, without a record, rather than becoming unreadable."""
        parts: dict[str, ContentRecord] = {}
        deleted: set[str] = set()
        for part, content_id in part_ids.items():
            try:
                parts[part] = self.service.get(content_id, caller)
            except NotFound:
                deleted.add(part)
        return parts, deleted

    def events(self, post_id: str) -> EventStream[Post] | None:
        return self._events.get(post_id)

    def error_of(self, post: Post) -> GenforgeError:
        """The failed post's error: the failed part's code and hint, the post's id (and the part's record) in it."""
        e = post.error
        if e is None:
            raise ValueError(f"post {post.id} did not fail")
        cls = error_class(e.code)
        record = post.parts.get(e.part)
        return cls(
            f"post {post.id}: the {e.part} failed: {e.message}",
            hint=e.hint,
            content_id=record.id if record else None,
            details={"post_id": post.id, "part": e.part},
        )

    def recover(self) -> int:
        """After a crash: posts left running end failed (interrupted); their finished parts stay."""
        with self.db.session() as s:
            stale = s.query(PostRow).filter(PostRow.status == "running").all()
            for row in stale:
                err = Interrupted("the server stopped while this post was being made")
                row.status, row.finished_at = "failed", _now()
                row.error_part, row.error_code = "post", err.code
                row.error_message, row.error_hint = err.message, err.hint
            return len(stale)

    # --- export ----------------------------------------------------------------------------------------
    def _captions_vtt(self, transcript_id: str, caller: Caller) -> str:
        """The sidecar WebVTT of a captioned video: its narration's transcript as cues."""
        path, _ = self.service.artifact(transcript_id, caller)
        doc: dict[str, Any] = json.loads(path.read_bytes())
        return to_vtt(doc)

    def export(self, post_id: str, caller: Caller) -> bytes:
        """A zip: each part's artifact (caption.txt, image.png, narration.wav, video.mp4, and video.vtt when it has
        captions), the caption as text,
        and manifest.json with the post, every part's record and the sha256 of each file as it was read."""
        post = self.get(post_id, caller)
        buf = io.BytesIO()
        manifest = {"post": post.model_dump(mode="json", exclude={"parts"}), "files": {}}
        with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
            for part, record in post.parts.items():
                if record.status != "succeeded":
                    continue
                path, _ = self.service.artifact(record.id, caller)
                data = path.read_bytes()
                digest = hashlib.sha256(data).hexdigest()
                if record.artifact is None or digest != record.artifact.sha256:
                    raise ArtifactChanged(f"the {part} file no longer matches its record", content_id=record.id)
                name = f"{part}{REGISTRY[record.content_type].suffix}"
                z.writestr(name, data)
                manifest["files"][name] = {"part": part, "sha256": digest, "record": record.model_dump(mode="json")}
                if isinstance(record, VideoRecord) and record.captions is not None:
                    vtt = self._captions_vtt(record.captions.transcript_id, caller).encode("utf-8")
                    z.writestr(f"{part}.vtt", vtt)
                    manifest["files"][f"{part}.vtt"] = {
                        "part": part,
                        "sha256": hashlib.sha256(vtt).hexdigest(),
                        "transcript": record.captions.transcript_id,
                    }
            z.writestr("manifest.json", json.dumps(manifest, indent=2))
        return buf.getvalue()
