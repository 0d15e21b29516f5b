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
    """Text generation parameters; unset ones come from the quality preset."""

    model_config = ConfigDict(extra="forbid")

    max_tokens: int | None = Field(default=None, gt=0)
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, gt=0, le=1)
    seed: int | None = Field(default=None, ge=0, lt=2**32)
    stop: list[str] | None = Field(default=None, max_length=8)

    @field_validator("stop", mode="before")
    @classmethod
    def _one_stop(cls, v):
        return [v] if isinstance(v, str) else v
