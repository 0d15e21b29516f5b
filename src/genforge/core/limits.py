"""Server-wide caps on one request (GENFORGE_MAX_PROMPT_CHARS, GENFORGE_MAX_TOKENS, GENFORGE_IMAGE_MAX_PIXELS).

Checked after planning, before any record exists: an over-limit input is a 422 naming the field, the
limit and the setting that raises it. The other caps live where their input is read: image side and
steps and speech characters (the content types' planners), body size (api/errors.BodySizeLimit), generation time
(the engine worker).
"""

from __future__ import annotations

from pydantic import BaseModel

from genforge.config import Settings
from genforge.contenttypes.image import DiffusersSettings, PortraitSettings
from genforge.contenttypes.request import GenerateRequest
from genforge.contenttypes.text import TextSettings
from genforge.errors import InvalidRequest


def _over(field: str, value: int, limit: int, unit: str, setting: str, label: str | None = None) -> InvalidRequest:
    return InvalidRequest(
        f"{label or field}: {value} {unit} is over the limit of {limit}",
        field=field,
        hint=f"Send less, or raise {setting} on the server.",
        details={"limit": limit},
    )


def check_limits(req: GenerateRequest, params: BaseModel, settings: Settings) -> None:
    """`params`: the planner's complete, typed parameters."""
    chars = len(req.prompt) + len(req.system or "")
    chars += sum(len(m.content) for m in req.messages or [])
    if chars > settings.max_prompt_chars:
        field = "messages" if req.messages else "prompt"
        raise _over(field, chars, settings.max_prompt_chars, "characters", "GENFORGE_MAX_PROMPT_CHARS")
    if isinstance(params, TextSettings) and params.max_tokens > settings.max_tokens:
        raise _over("params.max_tokens", params.max_tokens, settings.max_tokens, "tokens", "GENFORGE_MAX_TOKENS")
    if isinstance(params, PortraitSettings | DiffusersSettings):
        pixels = params.width * params.height
        if pixels > settings.image_max_pixels:
            raise _over(
                "params.width",
                pixels,
                settings.image_max_pixels,
                "pixels",
                "GENFORGE_IMAGE_MAX_PIXELS",
                label="params.width x params.height",
            )
