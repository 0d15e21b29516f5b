"""Personas: named, versioned defaults per content type that make content recognisably someone's.

Every edit writes a new version (a new row); old versions stay readable, and a record keeps the name and version
it was made with and which fields came from the persona. `apply()` merges a persona into a generate request: what
the request sets itself wins. Forbidden phrases are not written into the prompt (a small model would be primed to
say them): they become the text's policy, which the text validator enforces (genforge.engines.base.TextPolicy).
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, ValidationInfo
from sqlalchemy import func
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from genforge.contenttypes.base import pydantic_error
from genforge.contenttypes.records import ChatMessage, PersonaUse
from genforge.contenttypes.request import GenerateRequest
from genforge.core.caller import Caller
from genforge.core.service import Applied
from genforge.engines.base import IdentityPolicy, TextPolicy
from genforge.engines.params import SEED_LIMIT
from genforge.errors import Conflict, Forbidden, InvalidRequest, NotFound
from genforge.stores.db import ContentRow, Database, PersonaRow, PostRow, UploadRow

NAME_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,63}$"
_REF = re.compile(r"^([a-z0-9][a-z0-9_-]{0,63})(?:@([1-9][0-9]{0,8}))?$")
STORED = {"stored": True}  # validation context of a persona read back from the database


def _phrase(value: str, info: ValidationInfo) -> str:
    """An empty or blank phrase is in every text: as a forbidden phrase it fails every text of the persona. Refused
    on input; a row stored before this check still reads back (apply() leaves such phrases out)."""
    if not value.strip() and not (info.context or {}).get("stored"):
        raise ValueError("a phrase needs a character other than whitespace (an empty phrase is in every text)")
    return value


Phrase = Annotated[str, AfterValidator(_phrase)]


# `register` is the contract's field name; it shadows ABCMeta.register on the class only (instances read the field).
warnings.filterwarnings("ignore", message='Field name "register"', category=UserWarning)


class TextDefaults(BaseModel):
    model_config = ConfigDict(extra="forbid")

    system: str | None = Field(None, max_length=10_000, description="The personality: the system prompt.")
    register: str | None = Field(None, max_length=200, description="Writing register, e.g. casual, formal.")
    signature_phrases: list[Phrase] = Field(default_factory=list, max_length=20)
    forbidden_phrases: list[Phrase] = Field(
        default_factory=list, max_length=50, description="A text containing one (any case) is not a success."
    )
    emoji: Literal["none", "few", "many"] | None = Field(None, description="Emoji policy, told to the model.")
    hashtags: int | None = Field(None, ge=0, le=30, description="How many hashtags to end with.")
    model: str | None = Field(None, min_length=1, max_length=200)
    quality: Literal["draft", "standard", "high"] | None = None


DEFAULT_MIN_SIMILARITY = 0.65  # calibrated on the portrait model's faces: docs/benchmarks.md, "Face identity"


class IdentitySettings(BaseModel):
    """A persona's face policy: every image made for it must show the face of its reference images."""

    model_config = ConfigDict(extra="forbid")

    min_similarity: float | None = Field(
        None,
        ge=-1.0,
        le=1.0,
        description=f"1 - the dlib embedding distance to the nearest reference face; default {DEFAULT_MIN_SIMILARITY}.",
    )
    attempts: int | None = Field(None, ge=1, le=20, description="Seeds tried; default GENFORGE_POLICY_ATTEMPTS.")


class ImageDefaults(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: str | None = Field(None, min_length=1, max_length=200)
    seed: int | None = Field(
        None, ge=0, lt=SEED_LIMIT, description="The appearance lock: with the portrait model, the persona's face."
    )
    style: str | None = Field(None, max_length=2_000, description="Put before the prompt.")
    style_suffix: str | None = Field(None, max_length=2_000, description="Put after the prompt.")
    negative: str | None = Field(None, max_length=2_000, description="Negative prompt (diffusers models).")
    width: int | None = Field(None, gt=0, le=4096, multiple_of=8)
    height: int | None = Field(None, gt=0, le=4096, multiple_of=8)
    reference_images: list[str] = Field(
        default_factory=list,
        max_length=8,
        description="The persona's face: image content ids or upload ids of the persona's owner.",
    )
    identity: IdentitySettings | None = Field(
        None, description="Measure every image made for the persona against reference_images (needs them)."
    )


class SpeechDefaults(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: str | None = Field(None, min_length=1, max_length=200)
    voice: str | None = Field(None, min_length=1, max_length=64)
    speed: float | None = Field(None, ge=0.25, le=4.0)
    # Listen-back for this persona's narrations (params.listen_back); None: the request's, or a post's default.
    listen_back: bool | None = None


class PersonaBody(BaseModel):
    """POST /api/v1/personas."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=NAME_PATTERN, description="A slug: lower-case letters, digits, - and _.")
    display_name: str | None = Field(None, max_length=200)
    description: str | None = Field(None, max_length=10_000)
    text: TextDefaults = Field(default_factory=TextDefaults)
    image: ImageDefaults = Field(default_factory=ImageDefaults)
    speech: SpeechDefaults = Field(default_factory=SpeechDefaults)
    shared: bool = Field(False, description="Other keys may use it (read-only); only its owner or an admin edits it.")

    def models(self) -> list[str]:
        """The models this persona would run (each section's, where set)."""
        return [m for m in (self.text.model, self.image.model, self.speech.model) if m]


class PersonaPatch(BaseModel):
    """PATCH /api/v1/personas/{name}: the fields to change; a section's fields not sent keep their values."""

    model_config = ConfigDict(extra="forbid")

    display_name: str | None = Field(None, max_length=200)
    description: str | None = Field(None, max_length=10_000)
    text: dict | None = None
    image: dict | None = None
    speech: dict | None = None
    shared: bool | None = None


class Persona(PersonaBody):
    version: int = Field(description="1 when created, one more with each edit.")
    created_at: datetime = Field(description="When this version was written.")
    owner: str | None = Field(None, description="The id of the key that made it (null: the operator).")


def _persona(row: PersonaRow) -> Persona:
    fields = {
        "name": row.name,
        "version": row.version,
        "display_name": row.display_name,
        "description": row.description,
        "text": row.text or {},
        "image": row.image or {},
        "speech": row.speech or {},
        "created_at": row.created_at,
        "shared": bool(row.shared),
        "owner": row.owner,
    }
    return Persona.model_validate(fields, context=STORED)


def parse_ref(ref: str) -> tuple[str, int | None]:
    """ "mira" -> ("mira", None: the latest); "mira@3" -> ("mira", 3)."""
    m = _REF.match(ref)
    if not m:
        raise InvalidRequest(f"persona: {ref!r} is not a persona name (or NAME@VERSION)", field="persona")
    return m.group(1), int(m.group(2)) if m.group(2) else None


def _insert(s: Session, conflict: str, hint: str) -> None:
    """Write the session's new row. Two requests may both pass the existence check and insert the same (name,
    version): the unique key refuses the second, which is a 409 Conflict, not a 500."""
    try:
        s.flush()
    except IntegrityError:
        raise Conflict(conflict, field="name", hint=hint) from None


class PersonaStore:
    """Versioned personas, each owned by the key that made it. Its owner (and admin keys) read, use and edit it;
    other keys may read and use it when it is `shared`, and otherwise get what an unknown name gets (404).
    Implements the core's PersonaSource (`apply`)."""

    def __init__(self, db: Database):
        self.db = db

    def _check_models(self, body: PersonaBody, caller: Caller) -> None:
        """A key limited to some models may not make a persona that would run another (403 naming it)."""
        for model in body.models():
            caller.check_model(model)

    def _check_references(self, body: PersonaBody, caller: Caller) -> None:
        """A persona's reference images must be succeeded image records or uploads its writer may use (another
        key's answers like an unknown id); an identity policy needs at least one."""
        refs = body.image.reference_images
        if body.image.identity is not None and not refs:
            raise InvalidRequest(
                "image.identity: an identity policy needs image.reference_images (the persona's face)",
                field="image.identity",
            )
        with self.db.session() as s:
            for i, ref in enumerate(refs):
                row = s.get(ContentRow, ref)
                ok = row is not None and caller.owns(row.owner)
                if ok and row is not None and (row.content_type != "image" or row.status != "succeeded"):
                    raise InvalidRequest(
                        f"image.reference_images.{i}: {ref!r} is a {row.status} {row.content_type} record, not a "
                        "succeeded image",
                        field=f"image.reference_images.{i}",
                    )
                if not ok:
                    upload = s.get(UploadRow, ref)
                    ok = upload is not None and caller.owns(upload.owner)
                if not ok:
                    raise InvalidRequest(
                        f"image.reference_images.{i}: {ref!r} is no image record or upload",
                        field=f"image.reference_images.{i}",
                    )

    def create(self, body: PersonaBody, caller: Caller) -> Persona:
        self._check_models(body, caller)
        self._check_references(body, caller)
        with self.db.session() as s:
            if s.query(PersonaRow).filter(PersonaRow.name == body.name).count():
                raise Conflict(
                    f"persona {body.name!r} exists", field="name", hint="Edit it with PATCH, or choose another name."
                )
            row = PersonaRow(version=1, created_at=datetime.now(UTC), owner=caller.id, **body.model_dump(mode="json"))
            s.add(row)
            _insert(s, f"persona {body.name!r} exists", "Edit it with PATCH, or choose another name.")
            return _persona(row)

    def _row(self, name: str, version: int | None, caller: Caller) -> PersonaRow | None:
        with self.db.session() as s:
            q = s.query(PersonaRow).filter(PersonaRow.name == name)
            row = (
                q.filter(PersonaRow.version == version).one_or_none()
                if version
                else q.order_by(PersonaRow.version.desc()).first()
            )
            if row is None:
                return None
            latest = row if not version else q.order_by(PersonaRow.version.desc()).first()
            # who may see it is decided by its latest version (an owner's later `shared: false` hides all)
            if latest is None or not (caller.owns(latest.owner) or latest.shared):
                return None
            s.expunge(row)
            return row

    def get(self, name: str, caller: Caller, version: int | None = None) -> Persona:
        row = self._row(name, version, caller)
        if row is None:
            what = f"persona {name!r}" + (f" version {version}" if version else "")
            raise NotFound(f"no {what}", field="persona", hint="List them with GET /api/v1/personas.")
        return _persona(row)

    def resolve(self, ref: str, caller: Caller) -> Persona:
        name, version = parse_ref(ref)
        return self.get(name, caller, version)

    def list(self, caller: Caller) -> list[Persona]:
        """The latest version of each persona the caller may see (its own and the shared ones; admin: all)."""
        with self.db.session() as s:
            latest = (
                s.query(PersonaRow.name, func.max(PersonaRow.version).label("v")).group_by(PersonaRow.name).subquery()
            )
            rows = (
                s.query(PersonaRow)
                .join(latest, (PersonaRow.name == latest.c.name) & (PersonaRow.version == latest.c.v))
                .order_by(PersonaRow.name)
                .all()
            )
            return [_persona(r) for r in rows if caller.owns(r.owner) or r.shared]

    def _own(self, name: str, caller: Caller) -> Persona:
        """The latest version, if the caller may change it: another key's shared persona is read-only (403)."""
        current = self.get(name, caller)
        if not caller.owns(current.owner):
            raise Forbidden(
                f"persona {name!r} is shared with this key to use, not to change",
                field="persona",
                hint="Only its owner or an admin key edits or deletes it.",
            )
        return current

    def edit(self, name: str, patch: PersonaPatch, caller: Caller) -> Persona:
        """A new version: the latest with the patch applied (sections merge field by field)."""
        current = self._own(name, caller)
        data = current.model_dump(exclude={"version", "created_at", "owner"})
        for key, value in patch.model_dump(exclude_unset=True).items():
            data[key] = {**data[key], **(value or {})} if key in ("text", "image", "speech") else value
        try:
            body = PersonaBody.model_validate(data)
        except ValidationError as exc:  # a section's field of the wrong type or unknown: 422 naming it
            raise pydantic_error(exc) from None
        self._check_models(body, caller)
        if body.image != current.image:  # references kept from an earlier version were checked then
            self._check_references(body, caller)
        with self.db.session() as s:
            row = PersonaRow(
                version=current.version + 1,
                created_at=datetime.now(UTC),
                owner=current.owner,
                **body.model_dump(mode="json"),
            )
            s.add(row)
            _insert(
                s,
                f"persona {name!r} was edited by another request at the same time (version {row.version} exists)",
                "Read the persona again and send the edit again.",
            )
            return _persona(row)

    def delete(self, name: str, caller: Caller, force: bool = False) -> None:
        """Remove every version; refused (409) while records or posts refer to it, unless forced (the records
        keep their copy of what was used)."""
        self._own(name, caller)
        with self.db.session() as s:
            uses = s.query(ContentRow).filter(ContentRow.persona_name == name).count()
            uses += s.query(PostRow).filter(PostRow.persona_name == name).count()
            if uses and not force:
                raise Conflict(
                    f"persona {name!r} is referred to by {uses} record(s)",
                    hint="Delete with ?force=true (`genforge personas rm NAME --force`); the records keep their copy.",
                )
            s.query(PersonaRow).filter(PersonaRow.name == name).delete()

    def apply(
        self, ref: str, req: GenerateRequest, caller: Caller, engine_of: Callable[[str | None], str | None]
    ) -> Applied:
        """The core's PersonaSource: the persona `ref` names (one the caller may use) applied to `req`."""
        persona = self.resolve(ref, caller)
        merged, use, policy = apply(persona, req, engine_of)
        identity = None
        i = persona.image
        if req.content_type == "image" and i.identity is not None and i.reference_images:
            threshold = DEFAULT_MIN_SIMILARITY if i.identity.min_similarity is None else i.identity.min_similarity
            identity = IdentityPolicy(tuple(i.reference_images), threshold, i.identity.attempts)
            use.applied["identity"] = {"min_similarity": threshold, "reference_images": list(i.reference_images)}
        return Applied(merged, use, policy, identity)


def _text_system(t: TextDefaults) -> str | None:
    """The system prompt a persona's text settings make: the personality, then how to write."""
    lines = [t.system] if t.system else []
    if t.register:
        lines.append(f"Write in a {t.register} register.")
    if t.signature_phrases:
        lines.append("Where it fits, use your signature phrases: " + "; ".join(t.signature_phrases) + ".")
    if t.emoji:
        lines.append({"none": "Use no emoji.", "few": "Use an emoji or two.", "many": "Use plenty of emoji."}[t.emoji])
    if t.hashtags is not None:
        lines.append(f"End with {t.hashtags} hashtags." if t.hashtags else "Use no hashtags.")
    return " ".join(lines) or None


def apply(
    persona: Persona, req: GenerateRequest, engine_of: Callable[[str | None], str | None]
) -> tuple[GenerateRequest, PersonaUse, TextPolicy | None]:
    """The request with the persona's defaults for its content type filled in where the request left them unset;
    what came from the persona (field -> value), and the text policy. `engine_of(model)` names a model's engine."""
    given = req.model_fields_set
    fields: dict[str, Any] = {}
    params: dict[str, Any] = {}
    policy = None
    if req.content_type == "text":
        t = persona.text
        system = _text_system(t)
        if system and req.system is None:  # a chat (/v1) gets it as its first message
            fields["system"] = system
            if req.messages:
                fields["messages"] = [ChatMessage(role="system", content=system), *req.messages]
        if t.model and "model" not in given:
            fields["model"] = t.model
        if t.quality and "quality" not in given:
            fields["quality"] = t.quality
        forbidden = tuple(p for p in t.forbidden_phrases if p.strip())  # a blank one (stored before 422) is no rule
        if forbidden:
            policy = TextPolicy(forbidden_phrases=forbidden)
    elif req.content_type == "image":
        i = persona.image
        if i.model and "model" not in given:
            fields["model"] = i.model
        for key, value in (("seed", i.seed), ("width", i.width), ("height", i.height)):
            if value is not None and key not in req.params:
                params[key] = value
        model = fields.get("model") or req.model
        if i.negative and "negative_prompt" not in req.params and engine_of(model) == "diffusers":
            params["negative_prompt"] = i.negative
        if i.style or i.style_suffix:
            fields["prompt"] = ", ".join(p for p in (i.style, req.prompt, i.style_suffix) if p)
    elif req.content_type == "speech":
        sp = persona.speech
        if sp.model and "model" not in given:
            fields["model"] = sp.model
        if sp.voice is not None and "voice" not in req.params:
            params["voice"] = sp.voice
        if sp.speed is not None and "speed" not in req.params:
            params["speed"] = sp.speed
        if sp.listen_back is not None and "listen_back" not in req.params:
            params["listen_back"] = sp.listen_back
    applied = {**{k: v for k, v in fields.items() if k != "messages"}, **{f"params.{k}": v for k, v in params.items()}}
    if policy:
        applied["policy.forbidden_phrases"] = list(policy.forbidden_phrases)
    update = {**fields, "params": {**req.params, **params}}
    merged = req.model_copy(update=update)
    return merged, PersonaUse(name=persona.name, version=persona.version, applied=applied), policy
