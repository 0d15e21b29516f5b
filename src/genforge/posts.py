"""Posts: a persona's caption, image, narration and video, each its own content record made through the one
ContentService path; the post is `succeeded` only when every requested part is.

Order: the caption and the image are independent and are submitted together (they run in different engine
workers); the narration speaks the caption; the video combines the image and the narration. When a part fails,
the parts that need it are `skipped`, the others that succeeded stay recorded, and the post ends `failed` naming
the part and its error. Events of every part (tokens, progress, each part's start and end) go to the post's own
event stream (a jobs.Job used as a broadcaster), ending with the post.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import threading
import uuid
import zipfile
from datetime import UTC, datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from genforge.contenttypes import REGISTRY, ContentRecord
from genforge.contenttypes.video import PLATFORM_SIZES
from genforge.db import PostRow
from genforge.engines.base import TextPolicy
from genforge.errors import GenforgeError, Interrupted, InvalidRequest, NotFound
from genforge.jobs import Job
from genforge.records import RecordError, Status, Timestamp
from genforge.schemas import GenerateRequest
from genforge.service import ContentService

log = logging.getLogger("genforge.posts")

Part = Literal["caption", "image", "narration", "video"]
PARTS: tuple[str, ...] = ("caption", "image", "narration", "video")
NEEDS: dict[str, tuple[str, ...]] = {"narration": ("caption",), "video": ("image", "narration")}
CONTENT_TYPE = {"caption": "text", "image": "image", "narration": "speech", "video": "video"}
# Caption limits in characters (the platforms' own); a longer caption is regenerated with the next seed, then
# failed (policy_violation), never cut.
PLATFORM_LIMITS: dict[str, int] = {
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
CAPTION_TOKENS = {"x": 56}
CAPTION_TOKENS_DEFAULT = 96
CAPTION_MIN_WORDS = 3  # a caption is spoken by the narration: emoji or a lone hashtag are not one
# deleted: the part's record was deleted after it was made (DELETE /api/v1/content/{id}); the post stays readable
PartState = Literal["pending", "running", "succeeded", "failed", "cancelled", "skipped", "deleted"]


class PostRequest(BaseModel):
    """POST /api/v1/posts."""

    model_config = ConfigDict(extra="forbid")

    persona: str = Field(max_length=80, description="The persona's name (its latest version) or NAME@VERSION.")
    brief: str = Field(min_length=1, max_length=10_000, description="What the post is about.")
    parts: list[Part] = Field(default_factory=lambda: list(PARTS), min_length=1, max_length=4)
    platform: Literal[tuple(PLATFORM_LIMITS)] = "instagram"
    params: dict[Part, dict] = Field(
        default_factory=dict, description="Per part, params that override the persona's and the post's defaults."
    )
    mode: Literal["sync", "async"] = Field("sync", description="async: 202 at once; follow the Location.")

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


class Post(BaseModel):
    id: str
    status: Status
    persona: PersonaRef
    platform: str
    brief: str
    requested: list[str] = Field(description="The requested parts, in the order they are made.")
    parts: dict[str, ContentRecord] = Field(description="The record of each part that was submitted.")
    states: dict[str, PartState] = Field(description="Each requested part's state (skipped: a part it needs failed).")
    error: PostError | None = Field(description="Which part failed and why; null unless the post failed.")
    created_at: Timestamp
    finished_at: Timestamp | None


def _now() -> datetime:
    return datetime.now(UTC)


def _caption_prompt(brief: str, platform: str, limit: int) -> str:
    size = "one sentence" if limit <= 280 else "two or three sentences"
    return f"Write a short {platform} caption ({size}) about: {brief}\nAnswer with the caption only."


class PostService:
    def __init__(self, service: ContentService):
        self.service = service
        self.db = service.db
        self._events: dict[str, Job] = {}  # live posts' event streams
        self._lock = threading.Lock()

    # --- making a post ------------------------------------------------------------------------------
    def start(self, req: PostRequest) -> tuple[str, Job]:
        """Write the post (running), pinned to the persona's version now; its parts are made by `run`."""
        persona = self.service.personas.resolve(req.persona)
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
                )
            )
        events = Job(post_id, run=lambda job: None)
        with self._lock:
            self._events[post_id] = events
        log.info("post=%s started persona=%s@%d parts=%s", post_id, persona.name, persona.version, req.parts)
        return post_id, events

    def run(self, post_id: str, req: PostRequest, events: Job) -> Post:
        """Make the parts; returns the post (succeeded or failed). Never raises for a part's failure."""
        with self.db.session() as s:
            row = s.get(PostRow, post_id)
            ref = f"{row.persona_name}@{row.persona_version}"
        records: dict[str, ContentRecord] = {}
        failed: tuple[str, GenforgeError] | None = None
        try:
            for group in (("caption", "image"), ("narration",), ("video",)):
                jobs = {}
                for part in group:
                    if part not in req.parts or any(n not in records for n in NEEDS.get(part, ())):
                        continue  # not asked for, or skipped: a part it needs failed
                    try:
                        jobs[part] = self._submit(post_id, part, self._request(part, req, ref, records), req)
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
        post = self.get(post_id)
        events.finish(post, None if failed is None else self.error_of(post))
        with self._lock:
            self._events.pop(post_id, None)
        log.info("post=%s %s", post_id, post.status)
        return post

    def _request(self, part: str, req: PostRequest, ref: str, records: dict[str, ContentRecord]) -> GenerateRequest:
        params = dict(req.params.get(part, {}))
        if part == "caption":
            params.setdefault("max_tokens", CAPTION_TOKENS.get(req.platform, CAPTION_TOKENS_DEFAULT))
            prompt = _caption_prompt(req.brief, req.platform, PLATFORM_LIMITS[req.platform])
        elif part == "image":
            prompt = req.brief
        elif part == "narration":
            prompt = records["caption"].text.strip()
        else:
            params = {"image": records["image"].id, "narration": records["narration"].id, **params}
            params.setdefault("platform", req.platform if req.platform in PLATFORM_SIZES else None)
            params = {k: v for k, v in params.items() if v is not None}
            prompt = req.brief
        try:
            return GenerateRequest(content_type=CONTENT_TYPE[part], prompt=prompt, params=params, persona=ref)
        except ValueError as exc:
            raise InvalidRequest(f"the {part} request is invalid: {exc}", field=f"params.{part}") from None

    def _submit(self, post_id: str, part: str, gen: GenerateRequest, req: PostRequest) -> Job:
        policy = (
            TextPolicy(max_chars=PLATFORM_LIMITS[req.platform], min_words=CAPTION_MIN_WORDS)
            if part == "caption"
            else None
        )
        job = self.service.submit(gen, policy=policy)
        with self.db.session() as s:
            row = s.get(PostRow, post_id)
            row.part_ids = {**row.part_ids, part: job.content_id}
        return job

    def _finish(self, post_id: str, failed: tuple[str, GenforgeError] | None) -> None:
        with self.db.session() as s:
            row = s.get(PostRow, post_id)
            row.status, row.finished_at = ("failed" if failed else "succeeded"), _now()
            if failed:
                part, exc = failed
                row.error_part, row.error_code = part, exc.code
                row.error_message, row.error_hint = exc.message, exc.hint

    def create(self, req: PostRequest) -> Post:
        post_id, events = self.start(req)
        return self.run(post_id, req, events)

    def create_async(self, req: PostRequest) -> str:
        post_id, events = self.start(req)
        threading.Thread(target=self.run, args=(post_id, req, events), name=f"post-{post_id[:8]}", daemon=True).start()
        return post_id

    # --- reading ---------------------------------------------------------------------------------------
    def get(self, post_id: str) -> Post:
        with self.db.session() as s:
            row = s.get(PostRow, post_id)
            if row is None:
                raise NotFound(f"no post with id {post_id!r}", field="id")
            snapshot = {c.name: getattr(row, c.name) for c in PostRow.__table__.columns}
        parts, deleted = self._part_records(snapshot["part_ids"])
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

    def _part_records(self, part_ids: dict[str, str]) -> tuple[dict[str, ContentRecord], set[str]]:
        """The records of the parts, and the parts whose record was deleted since. A part record may be deleted
        like any other (its owner's right to remove content wins over the post); the post then shows that part
        as `deleted`, without a record, rather than becoming unreadable."""
        parts: dict[str, ContentRecord] = {}
        deleted: set[str] = set()
        for part, content_id in part_ids.items():
            try:
                parts[part] = self.service.get(content_id)
            except NotFound:
                deleted.add(part)
        return parts, deleted

    def events(self, post_id: str) -> Job | None:
        return self._events.get(post_id)

    def error_of(self, post: Post) -> GenforgeError:
        """The failed post's error: the failed part's code and hint, the post's id (and the part's record) in it."""
        from genforge import errors

        e = post.error
        classes = [c for c in vars(errors).values() if isinstance(c, type) and issubclass(c, GenforgeError)]
        cls = next((c for c in classes if c.code == e.code), GenforgeError)
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
    def export(self, post_id: str) -> bytes:
        """A zip: each part's artifact (caption.txt, image.png, narration.wav, video.mp4), the caption as text,
        and manifest.json with the post, every part's record and the sha256 of each file as it was read."""
        post = self.get(post_id)
        buf = io.BytesIO()
        manifest = {"post": post.model_dump(mode="json", exclude={"parts"}), "files": {}}
        with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
            for part, record in post.parts.items():
                if record.status != "succeeded":
                    continue
                path, _ = self.service.artifact(record.id)
                data = path.read_bytes()
                digest = hashlib.sha256(data).hexdigest()
                if digest != record.artifact.sha256:
                    from genforge.errors import ArtifactChanged

                    raise ArtifactChanged(f"the {part} file no longer matches its record", content_id=record.id)
                name = f"{part}{REGISTRY[record.content_type].suffix}"
                z.writestr(name, data)
                manifest["files"][name] = {"part": part, "sha256": digest, "record": record.model_dump(mode="json")}
            z.writestr("manifest.json", json.dumps(manifest, indent=2))
        return buf.getvalue()
