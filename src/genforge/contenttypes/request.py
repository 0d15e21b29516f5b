"""Request shapes shared by the HTTP API and the CLI (plain pydantic, no FastAPI)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, WithJsonSchema, field_validator

from genforge.contenttypes import REGISTRY
from genforge.contenttypes.records import ChatMessage

ContentType = Literal["text", "image", "speech", "video", "transcript"]
Quality = Literal["draft", "standard", "high"]

# `params` is validated by the content type's own model (see genforge/contenttypes/), so that an error names
# the field under params; the schema shows the three shapes.
_PARAMS_SCHEMA = {
    "anyOf": [spec.params.model_json_schema() for spec in REGISTRY.values()],
    "description": "The content type's parameters: text (max_tokens, temperature, top_p, seed, stop), image "
    "(width, height, steps, guidance_scale, negative_prompt, scheduler, seed) or speech (voice, speed, seed, "
    "sentence_silence, fallback). Unset ones get the model's or the quality preset's defaults; all are recorded.",
}


class GenerateRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    content_type: ContentType = Field(description="What to make; `voice` is accepted for speech.")
    prompt: str = Field(min_length=1, max_length=100_000, description="The prompt, or the text to speak.")
    quality: Quality = "standard"
    model: str | None = Field(default=None, min_length=1, max_length=200)
    system: str | None = Field(default=None, max_length=100_000, description="Text: a system prompt.")
    params: Annotated[dict, WithJsonSchema(_PARAMS_SCHEMA)] = Field(default_factory=dict)
    mode: Literal["sync", "async"] = Field(
        "sync", description="sync: answer with the final record; async: 202 with the pending record at once."
    )
    stream: bool = Field(False, description="Answer text/event-stream: token/progress events, then done or failed.")
    messages: list[ChatMessage] | None = Field(
        default=None,
        min_length=1,
        max_length=256,
        description="Text: a whole chat instead of prompt and system (the prompt is then its last user message).",
    )
    raw: bool = Field(False, description="Text: continue the prompt as raw text, without the chat template.")
    persona: str | None = Field(
        None,
        max_length=80,
        description="A persona's name (its latest version) or NAME@VERSION: its defaults apply "
        "where the request leaves fields unset.",
    )
    variants: int | None = Field(
        None,
        ge=1,
        le=8,
        description="Text and images: make this many, with seeds seed, seed+1, ... (drawn when "
        "no seed is given), under one batch id.",
    )

    @field_validator("content_type", mode="before")
    @classmethod
    def _alias_voice(cls, v):
        return "speech" if v == "voice" else v

    @field_validator("prompt", mode="before")
    @classmethod
    def _not_blank(cls, v):
        if isinstance(v, str) and not v.strip():
            raise ValueError("prompt must not be empty or whitespace")
        return v
