"""Request shapes shared by the HTTP API and the CLI (plain pydantic, no FastAPI)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

ContentType = Literal["text", "image", "speech"]
Quality = Literal["draft", "standard", "high"]


class GenerateRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    content_type: ContentType
    prompt: str = Field(max_length=100_000)
    quality: Quality = "standard"
    model: str | None = Field(default=None, min_length=1, max_length=200)
    system: str | None = Field(default=None, max_length=100_000)
    params: dict = Field(default_factory=dict)
    # How to answer (not recorded): wait for the result, or 202 at once and run as a job; stream events.
    mode: Literal["sync", "async"] = "sync"
    stream: bool = False
    # Set by the OpenAI-compatible API: a whole chat (recorded in params), or a raw completion prompt.
    messages: list[dict] | None = Field(default=None, exclude=True)
    raw: bool = Field(default=False, exclude=True)

    @field_validator("content_type", mode="before")
    @classmethod
    def _alias_voice(cls, v):
        return "speech" if v == "voice" else v

    @field_validator("prompt")
    @classmethod
    def _not_blank(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("prompt must not be empty or whitespace")
        return v


class TextParams(BaseModel):
    """Text generation parameters; unset ones come from the quality preset. Strict: JSON types must match."""

    model_config = ConfigDict(extra="forbid", strict=True)

    max_tokens: int | None = Field(default=None, gt=0)
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, gt=0, le=1)
    seed: int | None = Field(default=None, ge=0, lt=2**32)
    stop: list[str] | None = Field(default=None, max_length=8)

    @field_validator("stop", mode="before")
    @classmethod
    def _one_stop(cls, v):
        return [v] if isinstance(v, str) else v


# Request names of the diffusers schedulers (genforge.engines.diffusers.SCHEDULERS); "default" keeps
# the checkpoint's own.
ImageScheduler = Literal["default", "euler", "euler_a", "ddim", "dpmpp_2m", "heun", "pndm", "unipc", "lcm"]


class ImageParams(BaseModel):
    """Image generation parameters; unset ones get the model's defaults (recorded in the record). Strict: JSON
    types must match (no "64" for 64)."""

    model_config = ConfigDict(extra="forbid", strict=True)

    width: int | None = Field(default=None, gt=0, multiple_of=8)
    height: int | None = Field(default=None, gt=0, multiple_of=8)
    steps: int | None = Field(default=None, ge=1)
    guidance_scale: float | None = Field(default=None, ge=0, le=50)
    negative_prompt: str | None = Field(default=None, max_length=10_000)
    seed: int | None = Field(default=None, ge=0, lt=2**32)
    scheduler: ImageScheduler | None = None


class SpeechParams(BaseModel):
    """Speech parameters. `seed`: Piper cannot seed its noise per request, so a seed asks for deterministic
    synthesis (noise off: the same audio for the same text and settings, whatever the seed's value);
    without one Piper samples its natural prosody. espeak-ng is always deterministic."""

    model_config = ConfigDict(extra="forbid")

    # Piper: a speaker of a multi-speaker voice; espeak-ng: its voice name (`espeak-ng --voices`, e.g. en-gb).
    voice: str | None = Field(default=None, min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:+-]*$")
    speed: float = Field(default=1.0, ge=0.25, le=4.0)  # Piper: length_scale = the voice's / speed
    seed: int | None = Field(default=None, ge=0, lt=2**32)
    sentence_silence: float = Field(default=0.2, ge=0, le=5.0)  # seconds between sentences
    # When no Piper voice is usable and no model is named: allow the espeak-ng fallback (recorded).
    fallback: bool = False
