"""`genforge personas ...` and `genforge post`: registered on the main app (genforge.cli.common.app)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated

import typer
from pydantic import ValidationError
from rich.markup import escape
from rich.table import Table

from genforge.cli.common import app, err, fail, out, runtime
from genforge.contenttypes.base import pydantic_error
from genforge.core.caller import LOCAL
from genforge.errors import error_class
from genforge.platform.personas import PersonaBody, PersonaPatch
from genforge.platform.posts import PARTS, PostRequest, ReviewRequest
from genforge.platform.publishing import PublishRequest

personas_app = typer.Typer(help="Personas: versioned defaults for text, image and speech.", no_args_is_help=True)
app.add_typer(personas_app, name="personas")

Opt = typer.Option


def _sections(
    system, register, signature, forbid, text_model, quality, image_model, seed, style, negative, width, height,
    speech_model, voice, speed,
) -> dict:  # fmt: skip
    """The options given, as the persona's sections (only what was set)."""
    sections = {
        "text": {
            "system": system,
            "register": register,
            "signature_phrases": signature or None,
            "forbidden_phrases": forbid or None,
            "model": text_model,
            "quality": quality,
        },
        "image": {
            "model": image_model,
            "seed": seed,
            "style": style,
            "negative": negative,
            "width": width,
            "height": height,
        },
        "speech": {"model": speech_model, "voice": voice, "speed": speed},
    }
    return {name: {k: v for k, v in fields.items() if v is not None} for name, fields in sections.items()}


def _validated(model, data: dict):
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise fail(pydantic_error(exc)) from None


SystemOpt = Annotated[str | None, Opt(help="Text: the personality (system prompt).")]
RegisterOpt = Annotated[str | None, Opt(help="Text: the writing register.")]
SignatureOpt = Annotated[list[str] | None, Opt("--signature", help="Text: a signature phrase (repeatable).")]
ForbidOpt = Annotated[list[str] | None, Opt("--forbid", help="Text: a forbidden phrase (repeatable).")]
TextModelOpt = Annotated[str | None, Opt(help="Text: the model.")]
QualityOpt = Annotated[str | None, Opt(help="Text: draft, standard or high.")]
ImageModelOpt = Annotated[str | None, Opt(help="Image: the model (portrait: the seed is the face).")]
SeedOpt = Annotated[int | None, Opt(help="Image: the appearance lock (a fixed seed).")]
StyleOpt = Annotated[str | None, Opt(help="Image: style put before the prompt.")]
NegativeOpt = Annotated[str | None, Opt(help="Image: negative prompt (diffusers).")]
WidthOpt = Annotated[int | None, Opt(help="Image: width.")]
HeightOpt = Annotated[int | None, Opt(help="Image: height.")]
SpeechModelOpt = Annotated[str | None, Opt(help="Speech: the voice model.")]
VoiceOpt = Annotated[str | None, Opt(help="Speech: a speaker of the voice.")]
SpeedOpt = Annotated[float | None, Opt(help="Speech: speed.")]


@personas_app.command("create")
def personas_create(
    name: str,
    display_name: Annotated[str | None, Opt()] = None,
    description: Annotated[str | None, Opt()] = None,
    system: SystemOpt = None,
    register: RegisterOpt = None,
    signature: SignatureOpt = None,
    forbid: ForbidOpt = None,
    text_model: TextModelOpt = None,
    quality: QualityOpt = None,
    image_model: ImageModelOpt = None,
    seed: SeedOpt = None,
    style: StyleOpt = None,
    negative: NegativeOpt = None,
    width: WidthOpt = None,
    height: HeightOpt = None,
    speech_model: SpeechModelOpt = None,
    voice: VoiceOpt = None,
    speed: SpeedOpt = None,
) -> None:
    """Create a persona (version 1)."""
    sections = _sections(
        system, register, signature, forbid, text_model, quality, image_model, seed, style, negative, width, height,
        speech_model, voice, speed,
    )  # fmt: skip
    body = _validated(PersonaBody, {"name": name, "display_name": display_name, "description": description, **sections})
    with runtime() as rt:
        persona = rt.personas.create(body, LOCAL)
    out.print(f"persona {persona.name} version {persona.version}")


@personas_app.command("list")
def personas_list() -> None:
    """The personas (latest versions)."""
    with runtime() as rt:
        personas = rt.personas.list(LOCAL)
    table = Table(title=f"{len(personas)} personas")
    for col in ("name", "version", "display name", "image model", "seed", "voice"):
        table.add_column(col)
    for p in personas:
        seed = "" if p.image.seed is None else str(p.image.seed)
        table.add_row(p.name, str(p.version), p.display_name or "", p.image.model or "", seed, p.speech.model or "")
    out.print(table)


@personas_app.command("show")
def personas_show(name: str, version: Annotated[int | None, Opt(help="A version (default: the latest).")] = None):
    """Print a persona as JSON."""
    with runtime() as rt:
        out.print_json(rt.personas.get(name, LOCAL, version).model_dump_json())


@personas_app.command("edit")
def personas_edit(
    name: str,
    display_name: Annotated[str | None, Opt()] = None,
    description: Annotated[str | None, Opt()] = None,
    system: SystemOpt = None,
    register: RegisterOpt = None,
    signature: SignatureOpt = None,
    forbid: ForbidOpt = None,
    text_model: TextModelOpt = None,
    quality: QualityOpt = None,
    image_model: ImageModelOpt = None,
    seed: SeedOpt = None,
    style: StyleOpt = None,
    negative: NegativeOpt = None,
    width: WidthOpt = None,
    height: HeightOpt = None,
    speech_model: SpeechModelOpt = None,
    voice: VoiceOpt = None,
    speed: SpeedOpt = None,
) -> None:
    """Change what is given: a new version (the old one stays readable)."""
    sections = _sections(
        system, register, signature, forbid, text_model, quality, image_model, seed, style, negative, width, height,
        speech_model, voice, speed,
    )  # fmt: skip
    top = {k: v for k, v in (("display_name", display_name), ("description", description)) if v is not None}
    patch = _validated(PersonaPatch, {**top, **{k: v for k, v in sections.items() if v}})
    with runtime() as rt:
        persona = rt.personas.edit(name, patch, LOCAL)
    out.print(f"persona {persona.name} version {persona.version}")


@personas_app.command("rm")
def personas_rm(name: str, force: Annotated[bool, Opt(help="Delete even while records refer to it.")] = False):
    """Delete a persona (every version)."""
    with runtime() as rt:
        rt.personas.delete(name, LOCAL, force=force)
    out.print(f"deleted persona {name}")


@app.command("post")
def post(
    persona: str,
    brief: str,
    platform: Annotated[
        str, Opt(help="x, instagram, tiktok, threads, linkedin, youtube, facebook, bluesky.")
    ] = "instagram",
    parts: Annotated[str, Opt(help="Comma-separated parts.")] = ",".join(PARTS),
    export: Annotated[Path | None, Opt(help="Write the post's zip (artifacts + manifest.json) here.")] = None,
    as_json: Annotated[bool, Opt("--json", help="Print the post as JSON.")] = False,
) -> None:
    """Make a post by a persona: caption, image, narration and video, each its own record."""
    req = _validated(PostRequest, {"persona": persona, "brief": brief, "platform": platform, "parts": parts.split(",")})

    def show(event: dict) -> None:
        if event.get("type") == "part":
            err.print(f"{event['part']}: {event['status']}")

    with runtime() as rt:
        post_id, events = rt.posts.start(req, LOCAL)
        events.listen(show)
        result = rt.posts.run(post_id, req, events, LOCAL)
        if export is not None and result.status == "succeeded":
            export.write_bytes(rt.posts.export(post_id, LOCAL))
        if result.status != "succeeded":
            raise fail(rt.posts.error_of(result))
    if as_json:
        out.print_json(result.model_dump_json())
    out.print(f"post id: {result.id} ({result.status})")
    for part, record in result.parts.items():
        text = getattr(record, "text", None)
        out.print(f"{part}: {record.id}" + (f"  {escape(json.dumps(text))}" if text else ""))
    if export is not None:
        out.print(f"export: {export}", soft_wrap=True)


@app.command("review")
def review(
    post_id: str,
    decision: Annotated[str, typer.Argument(help="approved or rejected.")],
    comment: Annotated[str | None, Opt(help="Why (kept with the transition).")] = None,
) -> None:
    """Approve or reject a post that waits for review (as the operator)."""
    req = _validated(ReviewRequest, {"decision": decision, "comment": comment})
    with runtime() as rt:
        result = rt.posts.review(post_id, req, LOCAL)
    out.print(f"post {result.id}: {result.review}")


@app.command("publish")
def publish(
    post_id: str,
    channel: Annotated[str, Opt(help="The channel's name or id (POST /api/v1/channels registers one).")],
    at: Annotated[str | None, Opt(help="When, ISO 8601 with its zone; the running server publishes it then.")] = None,
    as_json: Annotated[bool, Opt("--json", help="Print the publication as JSON.")] = False,
) -> None:
    """Publish an approved post to a channel and read it back; with --at, leave it to the server's schedule."""
    req = _validated(PublishRequest, {"channel": channel, "publish_at": at})
    with runtime() as rt:
        pub, _ = rt.publications.publish(post_id, req, LOCAL)
        if pub.status == "pending" and req.publish_at is None:
            if rt.publications.claim(pub.id):
                rt.publications.run(pub.id)  # here and now
            deadline = time.monotonic() + 4 * rt.settings.publish_timeout_s
            while (pub := rt.publications.get(pub.id, LOCAL)).status == "pending" and time.monotonic() < deadline:
                time.sleep(0.5)  # a running server claimed it first: its result
        pub = rt.publications.get(pub.id, LOCAL)
    if as_json:
        out.print_json(pub.model_dump_json())
    out.print(f"publication {pub.id}: {pub.status}" + (f" {pub.uri}" if pub.uri else ""))
    if pub.status == "failed" and pub.error is not None:
        raise fail(error_class(pub.error.code)(pub.error.message, hint=pub.error.hint))
