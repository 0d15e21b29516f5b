"""Server-wide caps on one request (GENFORGE_MAX_PROMPT_CHARS, GENFORGE_MAX_TOKENS, GENFORGE_IMAGE_MAX_PIXELS,
GENFORGE_SPEECH_MAX_DURATION_S, GENFORGE_VIDEO_MAX_DURATION_S).

Checked after planning, before any record exists: an over-limit input is a 422 naming the field, the
limit and the setting that raises it. The other caps live where their input is read: image side and
steps and speech characters (the content types' planners), body size (api/errors.BodySizeLimit), generation time
(the engine worker). What cannot be known before the work (the real length and size of audio and video) is
bounded by `output_limits`: the engines stop and the validators fail output over them (`invalid_output`).
"""

from __future__ import annotations

import wave

from pydantic import BaseModel

from genforge.config import Settings
from genforge.contenttypes.image import DiffusersSettings, PortraitSettings
from genforge.contenttypes.request import GenerateRequest
from genforge.contenttypes.speech import SpeechSettings, speech_duration_range
from genforge.contenttypes.text import TextSettings
from genforge.engines.base import OutputLimits, VideoInputs
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
    if isinstance(params, SpeechSettings):
        # The validator's own upper bound of a plausible duration: audio that passes it is never longer.
        _, longest = speech_duration_range(req.prompt, params.speed, params.sentence_silence)
        if longest > settings.speech_max_duration_s:
            raise InvalidRequest(
                f"prompt: speaking these {len(req.prompt)} characters at speed {params.speed:g} with "
                f"{params.sentence_silence:g} s between sentences may last up to {longest:.0f} s, over the limit "
                f"of {settings.speech_max_duration_s:g} s",
                field="prompt",
                hint="Send a shorter text (or several requests), a higher params.speed or a shorter "
                "params.sentence_silence, or raise GENFORGE_SPEECH_MAX_DURATION_S on the server.",
                details={"limit": settings.speech_max_duration_s, "estimate_s": round(longest, 1)},
            )


def check_inputs(inputs: VideoInputs | None, settings: Settings) -> None:
    """A video lasts as long as its narration: a narration over GENFORGE_VIDEO_MAX_DURATION_S is a 422 (its
    length read from the WAV header, not the samples)."""
    if inputs is None:
        return
    try:
        with wave.open(inputs.narration_path) as w:
            seconds = w.getnframes() / w.getframerate()
    except (OSError, EOFError, wave.Error, ZeroDivisionError) as exc:
        raise InvalidRequest(
            f"params.narration: the narration's file is not a readable WAV ({exc})", field="params.narration"
        ) from None
    if seconds > settings.video_max_duration_s:
        raise InvalidRequest(
            f"params.narration: the narration lasts {seconds:.0f} s, over the video limit of "
            f"{settings.video_max_duration_s:g} s",
            field="params.narration",
            hint="Use a shorter narration, or raise GENFORGE_VIDEO_MAX_DURATION_S on the server.",
            details={"limit": settings.video_max_duration_s},
        )


def output_limits(content_type: str, settings: Settings) -> OutputLimits | None:
    """The limits on one artifact of this content type, for the engine and the validator."""
    if content_type == "speech":
        return OutputLimits(settings.speech_max_duration_s, settings.speech_max_bytes)
    if content_type == "video":
        return OutputLimits(settings.video_max_duration_s, settings.video_max_bytes)
    return None
