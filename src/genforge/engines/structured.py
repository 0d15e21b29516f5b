"""Structured output and tool calls: the grammar that constrains a text job's sampling, and the check of its answer.

A text job may ask for JSON matching a schema (`response_format`) or for calls of declared functions (`tools`,
`tool_choice`). llguidance compiles the schema (or a Lark grammar embedding the functions' schemas) into a
matcher that gives the llama.cpp engine a token mask per step and the tokens the grammar forces (fast-forward);
`jsonschema` then checks the finished text, because a grammar cannot see a cut answer and is not the validator.

A tool call is written the way Hermes-style chat templates write it, one JSON object per call:
`<tool_call>{"name": NAME, "arguments": {...}}</tool_call>`; `parse_tool_calls` reads them back.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from typing import Any

import jsonschema
from jsonschema.exceptions import best_match
from llguidance import LLMatcher

from genforge.engines.params import TextSettings, ToolFunction
from genforge.errors import InvalidRequest, OffSchema

CALL_OPEN, CALL_CLOSE = "<tool_call>", "</tool_call>"
CALL_BLOCK = re.compile(re.escape(CALL_OPEN) + r"\s*(.*?)\s*" + re.escape(CALL_CLOSE), re.DOTALL)
# The JSON llguidance writes: compact, no free whitespace (the forced tokens then cover `":"`, `","` and closers).
COMPACT = {"whitespace_flexible": False}


@dataclass(frozen=True)
class ToolCall:
    name: str
    arguments: dict[str, Any]


def constrained(p: TextSettings) -> bool:
    """Whether the job's sampling is constrained by a grammar."""
    return json_schema_of(p) is not None or (bool(p.tools) and p.tool_choice != "none")


def json_schema_of(p: TextSettings) -> dict[str, Any] | None:
    """The JSON schema the answer must match, or None (plain text, or tool calls)."""
    rf = p.response_format
    if rf is None or rf.type == "text":
        return None
    return rf.json_schema if rf.type == "json_schema" and rf.json_schema is not None else {"type": "object"}


def schema_sha256(schema: dict[str, Any]) -> str:
    """The schema's identity: sha256 of its canonical JSON (sorted keys, no spaces)."""
    return hashlib.sha256(json.dumps(schema, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def _call_schema(fn: ToolFunction) -> dict[str, Any]:
    parameters = fn.parameters or {"type": "object", "properties": {}}
    return {
        "type": "object",
        "properties": {"name": {"const": fn.name}, "arguments": parameters},
        "required": ["name", "arguments"],
        "additionalProperties": False,
    }


def _called(p: TextSettings) -> list[ToolFunction]:
    """The functions the answer may call: all of them, or the one tool_choice names."""
    if p.tool_choice in (None, "auto", "required", "none"):
        return list(p.tools)
    return [fn for fn in p.tools if fn.name == p.tool_choice]


def grammar(p: TextSettings) -> str | None:
    """The llguidance grammar of the job, or None when its sampling is free."""
    schema = json_schema_of(p)
    if schema is not None:
        return LLMatcher.grammar_from_json_schema(schema, overrides=COMPACT)  # type: ignore[arg-type]
    if not p.tools or p.tool_choice == "none":
        return None
    calls = _called(p)
    call: dict[str, Any] = {"anyOf": [_call_schema(fn) for fn in calls]} if len(calls) > 1 else _call_schema(calls[0])
    call["x-guidance"] = COMPACT
    one = f'"{CALL_OPEN}" call "{CALL_CLOSE}"'
    calls_rule = f'{one} ("\\n" {one})*' if p.parallel_tool_calls else one
    # auto: free text (that does not start a call) or the calls
    start = "calls | TEXT" if p.tool_choice == "auto" else "calls"
    return LLMatcher.grammar_from_lark(
        f"start: {start}\ncalls: {calls_rule}\ncall: %json {json.dumps(call)}\nTEXT: /[^<](.|\\n)*/\n"
    )


def check_request(p: TextSettings) -> None:
    """Refuse (422) a schema that is not a schema, one whose keywords the grammar cannot express (naming them),
    and tool settings that name no declared function: never dropped silently."""
    schema = json_schema_of(p)
    if p.response_format is not None and p.response_format.type != "text" and p.tools and p.tool_choice != "none":
        raise InvalidRequest(
            "response_format and tools cannot both constrain the answer",
            field="params.response_format",
            hint="Use tool_choice 'none' with a response_format, or leave response_format unset.",
        )
    if schema is not None:
        _check_schema(schema, "params.response_format")
    names = [fn.name for fn in p.tools]
    if len(set(names)) != len(names):
        raise InvalidRequest("two tools have the same name", field="params.tools")
    for fn in p.tools:
        if fn.parameters is not None:
            _check_schema(fn.parameters, f"params.tools.{fn.name}.parameters")
    if p.tool_choice not in (None, "auto", "required", "none") and p.tool_choice not in names:
        raise InvalidRequest(
            f"tool_choice names {p.tool_choice!r}, which is not among the tools",
            field="params.tool_choice",
            hint=f"Name one of: {', '.join(names) or '(no tools given)'}.",
        )
    if p.tool_choice in ("required",) and not p.tools:
        raise InvalidRequest("tool_choice 'required' needs tools", field="params.tool_choice")
    g = grammar(p)
    if g is not None:
        is_error, messages = LLMatcher.validate_grammar_with_warnings(g)
        if is_error:
            raise _refusal(messages[0] if messages else "the grammar is invalid", "params")


def _check_schema(schema: dict[str, Any], field: str) -> None:
    try:
        jsonschema.validators.validator_for(schema).check_schema(schema)
    except jsonschema.SchemaError as exc:
        raise InvalidRequest(f"{field} is not a valid JSON schema: {exc.message}", field=field) from None
    try:
        is_error, messages = LLMatcher.validate_grammar_with_warnings(
            LLMatcher.grammar_from_json_schema(schema, overrides=COMPACT)  # type: ignore[arg-type]
        )
    except (ValueError, RuntimeError) as exc:  # llguidance refuses the schema outright
        is_error, messages = True, [str(exc)]
    if is_error:
        raise _refusal(messages[0] if messages else "the schema cannot be compiled", field)


def _refusal(message: str, field: str) -> InvalidRequest:
    keys = re.search(r"Unimplemented keys: \[(.*?)\]", message)
    what = f"the keyword(s) {keys.group(1)}" if keys else message.splitlines()[0]
    return InvalidRequest(
        f"{field}: structured output cannot enforce {what}",
        field=field,
        hint="Remove the keyword from the schema (supported: type, properties, required, additionalProperties, "
        "enum, const, items, minItems/maxItems, minLength/maxLength, minimum/maximum, anyOf, $ref/$defs, pattern).",
        details={"reason": message[:500]},
    )


def _first_error(instance: Any, schema: dict[str, Any]) -> str | None:
    validator = jsonschema.validators.validator_for(schema)(schema)
    err = best_match(validator.iter_errors(instance))
    if err is None:
        return None
    where = "/".join(str(part) for part in err.absolute_path) or "(the root)"
    return f"at {where}: {err.message}"


def check_output(text: str, finish_reason: str | None, p: TextSettings) -> None:
    """Raise OffSchema unless the finished text is what the job's schema or tools ask for."""
    schema = json_schema_of(p)
    if schema is not None:
        parsed = _parse_json(text, finish_reason, p, "the answer")
        error = _first_error(parsed, schema)
        if error is not None:
            raise OffSchema(f"the answer does not match its schema {error}", details={"schema_error": error})
    elif p.tools and p.tool_choice != "none":
        calls = parse_tool_calls(text, p, finish_reason)
        if not calls and p.tool_choice != "auto":
            raise OffSchema(f"tool_choice {p.tool_choice!r} asked for a call; the answer has none")
        if calls and not p.parallel_tool_calls and len(calls) > 1:
            raise OffSchema(f"parallel_tool_calls is false; the answer has {len(calls)} calls")


def _parse_json(text: str, finish_reason: str | None, p: TextSettings, what: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        if finish_reason == "length":
            raise OffSchema(
                f"{what} was cut at max_tokens {p.max_tokens} before its JSON was complete",
                hint="Raise max_tokens: the schema's object does not fit in it.",
            ) from None
        raise OffSchema(f"{what} is not JSON: {exc.msg} at character {exc.pos}") from None


def parse_tool_calls(text: str, p: TextSettings, finish_reason: str | None = None) -> list[ToolCall]:
    """The calls in a text, each checked: a known function, arguments matching its parameters (OffSchema if not).
    A text that does not start with `<tool_call>` has none (the grammar of `auto` lets an answer be text or calls,
    never text then a call)."""
    if not text.startswith(CALL_OPEN):
        return []
    if finish_reason == "length" and text.count(CALL_OPEN) != text.count(CALL_CLOSE):
        raise OffSchema(
            f"the tool call was cut at max_tokens {p.max_tokens}", hint="Raise max_tokens: the call does not fit."
        )
    allowed = {fn.name: fn for fn in _called(p)}
    calls: list[ToolCall] = []
    for block in CALL_BLOCK.findall(text):
        obj = _parse_json(block, finish_reason, p, "a tool call")
        if not isinstance(obj, dict) or not isinstance(obj.get("name"), str):
            raise OffSchema("a tool call is not an object with a name")
        fn = allowed.get(obj["name"])
        if fn is None:
            raise OffSchema(f"the answer calls {obj['name']!r}, which is not a function it may call")
        arguments = obj.get("arguments", {})
        if not isinstance(arguments, dict):
            raise OffSchema(f"the arguments of {fn.name!r} are not an object")
        error = _first_error(arguments, fn.parameters) if fn.parameters is not None else None
        if error is not None:
            raise OffSchema(f"the arguments of {fn.name!r} do not match its parameters {error}")
        calls.append(ToolCall(fn.name, arguments))
    if not calls:
        raise OffSchema("the answer starts a tool call that is not complete")
    return calls


def tools_prompt(tools: list[ToolFunction]) -> str:
    """The generic rendering of tools for chat templates without tool support (a system message)."""
    specs = [{"type": "function", "function": fn.model_dump(exclude_none=True)} for fn in tools]
    return (
        "You can call functions. To call one, answer with\n"
        f'{CALL_OPEN}{{"name": NAME, "arguments": {{...}}}}{CALL_CLOSE}\n'
        f"The functions:\n<tools>\n{json.dumps(specs)}\n</tools>"
    )


def call_text(name: str, arguments: str) -> str:
    """An assistant's earlier call, written back into the chat as the model writes it."""
    try:
        args: Any = json.loads(arguments)
    except json.JSONDecodeError:
        args = arguments
    return f"{CALL_OPEN}{json.dumps({'name': name, 'arguments': args})}{CALL_CLOSE}"
