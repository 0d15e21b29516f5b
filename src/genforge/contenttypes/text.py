"""Text: llama.cpp models; quality presets; the text validator."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_serializer, field_validator

from genforge.contenttypes.base import ContentTypeSpec, Plan, check_model, draw_seed, facts_of, parse_params
from genforge.contenttypes.records import ChatMessage, RecordBase, ToolCallOut, Usage
from genforge.engines import structured
from genforge.engines.base import TextFacts, TextPolicy, params_of
from genforge.engines.params import MAX_TOKENS_LIMIT, SEED_LIMIT, ResponseFormat, TextSettings, ToolFunction
from genforge.errors import InvalidOutput, InvalidRequest, PolicyViolation

if TYPE_CHECKING:
    from genforge.engines.base import EngineOutput, GenerationJob

# Chat-template and tokenizer markers that are not content: <|im_end|>, <end_of_turn>, <s>, </s>, [INST]...
SPECIAL_TOKENS = re.compile(r"<\|[^|>]{1,40}\|>|</?s>|<(?:start|end)_of_turn>|\[/?INST\]|<pad>|<unk>")
GGUF_MAGIC = b"GGUF"


class TextParams(BaseModel):
    """Text generation parameters; unset ones come from the quality preset. Strict: JSON types must match."""

    model_config = ConfigDict(extra="forbid", strict=True)

    max_tokens: int | None = Field(default=None, gt=0, le=MAX_TOKENS_LIMIT)
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, gt=0, le=1)
    seed: int | None = Field(default=None, ge=0, lt=SEED_LIMIT)
    stop: list[str] | None = Field(default=None, max_length=8)
    response_format: ResponseFormat | None = Field(
        default=None, description="JSON output: json_object, or json_schema with its schema (validated)."
    )
    tools: list[ToolFunction] | None = Field(default=None, max_length=64, description="Functions it may call.")
    tool_choice: str | None = Field(default=None, description="none, auto (the default), required, or a name.")
    parallel_tool_calls: bool | None = None

    @field_validator("stop", mode="before")
    @classmethod
    def _one_stop(cls, v):
        return [v] if isinstance(v, str) else v


@dataclass(frozen=True)
class QualityPreset:
    model: str
    max_tokens: int
    temperature: float
    top_p: float


# The one table `quality` maps through (documented in README.md). All presets use the packaged
# instruct model: the other packaged model is a base model that does not follow instructions.
QUALITY: dict[str, QualityPreset] = {
    "draft": QualityPreset("smollm2-135m-instruct", max_tokens=128, temperature=0.8, top_p=0.95),
    "standard": QualityPreset("smollm2-135m-instruct", max_tokens=256, temperature=0.6, top_p=0.9),
    "high": QualityPreset("smollm2-135m-instruct", max_tokens=512, temperature=0.3, top_p=0.9),
}


class TextRecord(TextFacts, RecordBase):
    content_type: Literal["text"]
    params: TextSettings
    text: str | None = Field(description="The generated text (null unless succeeded).")
    finish_reason: Literal["stop", "length"] | None = Field(
        description="stop: the model ended (or a stop string); length: cut by max_tokens."
    )
    usage: Usage
    messages: list[ChatMessage] | None = Field(None, description="The chat, when one was sent instead of a prompt.")

    @field_serializer("messages")
    def _messages_as_sent(self, messages: list[ChatMessage] | None) -> list[dict[str, Any]] | None:
        """Each turn with the fields it has: a plain turn stays {"role", "content"} (no null tool fields)."""
        return [m.model_dump(exclude_none=True) for m in messages] if messages is not None else None

    raw: bool = Field(False, description="Raw continuation of the prompt, without the chat template.")
    parsed: Any = Field(None, description="params.response_format: the answer's JSON, parsed (it matched).")
    schema_sha256: str | None = Field(
        None, description="params.response_format: sha256 of the schema's canonical JSON (sorted keys)."
    )
    tool_calls: list[ToolCallOut] | None = Field(
        None, description="params.tools: the calls in the answer, each checked against its function's parameters."
    )


def plan(req, settings, catalog) -> Plan:
    given = parse_params(TextParams, req.params)
    preset = QUALITY[req.quality]
    model = req.model or (settings.default_text_model if req.quality == "standard" else preset.model)
    params = TextSettings(
        max_tokens=given.max_tokens or preset.max_tokens,
        temperature=preset.temperature if given.temperature is None else given.temperature,
        top_p=given.top_p or preset.top_p,
        seed=draw_seed(given.seed),
        stop=given.stop or [],
        response_format=given.response_format,
        tools=given.tools or [],
        tool_choice=given.tool_choice,
        parallel_tool_calls=True if given.parallel_tool_calls is None else given.parallel_tool_calls,
    )
    structured.check_request(params)
    if params.max_tokens >= settings.context_size:
        raise InvalidRequest(
            f"params.max_tokens: {params.max_tokens} does not fit the context of {settings.context_size} tokens",
            field="params.max_tokens",
            hint=f"Ask for fewer than {settings.context_size} tokens.",
        )
    check_model(catalog, model, "text")
    messages = [m.model_dump(exclude_none=True) for m in req.messages] if req.messages else None
    return Plan(model, params, messages=messages, raw=req.raw)


def validate(out: EngineOutput, job: GenerationJob) -> None:
    try:
        decoded = out.data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidOutput(f"the engine's text is not valid UTF-8 ({exc.reason} at byte {exc.start})") from None
    if decoded != out.text:
        raise InvalidOutput("the artifact bytes differ from the generated text")
    if not SPECIAL_TOKENS.sub("", decoded).strip():
        raise InvalidOutput("the model produced no text (empty after removing whitespace and special tokens)")
    if out.finish_reason not in ("stop", "length"):
        raise InvalidOutput(f"unknown finish reason {out.finish_reason!r}")
    if not (out.usage or {}).get("completion_tokens"):
        raise InvalidOutput("the engine reported no generated tokens")
    structured.check_output(decoded, out.finish_reason, params_of(job, TextSettings))
    check_policy(decoded, job.policy)


def check_policy(text: str, policy: TextPolicy | None) -> None:
    """A text that breaks its policy is not a success (the service retries it with the next seed)."""
    if policy is None:
        return
    folded = text.casefold()
    for phrase in policy.forbidden_phrases:
        if phrase.casefold() in folded:
            raise PolicyViolation(f"the text contains the forbidden phrase {phrase!r}", details={"phrase": phrase})
    words = len(re.findall(r"\w+", text))
    if policy.min_words is not None and words < policy.min_words:
        raise PolicyViolation(f"the text has {words} word(s), fewer than {policy.min_words}")
    if policy.max_chars is not None and len(text) > policy.max_chars:
        raise PolicyViolation(
            f"the text is {len(text)} characters, over the limit of {policy.max_chars}",
            details={"limit": policy.max_chars},
        )


def check_model_path(path: Path) -> str:
    """A text model file must be GGUF; returns the engine that loads it."""
    if not path.is_file():
        raise InvalidRequest(f"{path} is not a file", field="path")
    with open(path, "rb") as f:
        if f.read(4) != GGUF_MAGIC:
            raise InvalidRequest(
                f"{path} is not a GGUF file (it does not start with the GGUF magic bytes)",
                field="path",
                hint="llama.cpp loads GGUF files; convert the model first.",
            )
    return "llama.cpp"


def record_section(row) -> dict:
    extra = row.extra or {}
    return {
        **_structured_section(row),
        **facts_of(row, TextFacts),
        "text": row.text,
        "finish_reason": row.finish_reason,
        "usage": {"prompt_tokens": row.prompt_tokens, "completion_tokens": row.completion_tokens},
        "messages": extra.get("messages"),
        "raw": bool(extra.get("raw", False)),
    }


def _structured_section(row) -> dict:
    """The parsed answer, its schema's sha256 and the tool calls: read from the stored text, which the validator
    checked before the record succeeded."""
    try:
        params = TextSettings.model_validate(row.params or {})
    except ValueError:  # a record written before these parameters existed, or a failed plan
        return {}
    section: dict[str, Any] = {}
    schema = structured.json_schema_of(params)
    if schema is not None:
        section["schema_sha256"] = structured.schema_sha256(schema)
        if row.status == "succeeded" and row.text is not None:
            section["parsed"] = json.loads(row.text)
    if params.tools and params.tool_choice != "none" and row.status == "succeeded" and row.text is not None:
        calls = structured.parse_tool_calls(row.text, params)
        section["tool_calls"] = [
            {
                "id": f"call_{row.id.replace('-', '')[:20]}_{i}",
                "type": "function",
                "function": {"name": c.name, "arguments": json.dumps(c.arguments)},
            }
            for i, c in enumerate(calls)
        ] or None
    return section


SPEC = ContentTypeSpec(
    name="text",
    params=TextParams,
    settings=TextSettings,
    facts=TextFacts,
    record=TextRecord,
    plan=plan,
    validate=validate,
    media_type="text/plain",
    suffix=".txt",
    no_model_hint="Install the default model with `genforge models pull smollm2-135m-instruct`.",
    check_model_path=check_model_path,
    record_section=record_section,
)
