"""`genforge personas ...` and `genforge post`: registered on the main app (genforge.cli.common.app)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from pydantic import ValidationError
from rich.markup import escape
from rich.table import Table

from genforge.cli.common import app, err, fail, out, runtime
from genforge.contenttypes.base import pydantic_error
from genforge.core.caller import LOCAL
from genforge.platform.personas import PersonaBody, PersonaPatch
from genforge.platform.posts import PARTS, PostRequest

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
    platform: Annotated[str, Opt(help="x, instagram, tiktok, threads, linkedin, youtube, facebook.")] = "instagram",
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
