"""Validators: the last line of honesty. Output that fails here is never stored as a success."""

from __future__ import annotations

import re

from genforge.engines.base import EngineOutput
from genforge.errors import InvalidOutput

# Chat-template and tokenizer markers that are not content: <|im_end|>, <end_of_turn>, <s>, </s>, [INST]...
SPECIAL_TOKENS = re.compile(r"<\|[^|>]{1,40}\|>|</?s>|<(?:start|end)_of_turn>|\[/?INST\]|<pad>|<unk>")


def validate_text(out: EngineOutput, params: dict) -> None:
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
    usage = out.usage or {}
    if not usage.get("completion_tokens"):
        raise InvalidOutput("the engine reported no generated tokens")


VALIDATORS = {"text": validate_text}


def validate(content_type: str, out: EngineOutput, params: dict) -> None:
    """Raise InvalidOutput unless `out` is real, usable content of this type for these parameters."""
    VALIDATORS[content_type](out, params)
