"""Request schemas: every invalid request is refused with the field it is about."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from genforge.api.errors import status_of
from genforge.contenttypes.request import GenerateRequest
from genforge.contenttypes.text import TextParams
from genforge.errors import (
    EngineFailed,
    GenerationTimeout,
    InvalidOutput,
    InvalidRequest,
    ModelNotFound,
    ModelUnavailable,
    NotFound,
    PayloadTooLarge,
)

VALID = {"content_type": "text", "prompt": "Say hello."}


def error_field(exc: ValidationError, prefix: str = "") -> str:
    """The dotted field of the first error, as the API names it (`params.max_tokens`)."""
    return ".".join(str(p) for p in (prefix, *exc.errors()[0]["loc"]) if p != "")


def test_a_minimal_request_gets_the_defaults():
    req = GenerateRequest.model_validate(VALID)
    assert (req.quality, req.model, req.system, req.params) == ("standard", None, None, {})


@pytest.mark.parametrize("content_type", ["text", "image", "speech"])
def test_the_three_content_types_are_part_of_the_schema(content_type):
    assert GenerateRequest.model_validate({**VALID, "content_type": content_type}).content_type == content_type


def test_voice_is_an_alias_of_speech():
    assert GenerateRequest.model_validate({**VALID, "content_type": "voice"}).content_type == "speech"


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"prompt": ""}, "prompt"),
        ({"prompt": "   \n\t"}, "prompt"),
        ({"prompt": "x" * 100_001}, "prompt"),
        ({"prompt": 42}, "prompt"),
        ({"prompt": None}, "prompt"),
        ({"content_type": "hologram"}, "content_type"),
        ({"content_type": None}, "content_type"),
        ({"quality": "ultra"}, "quality"),
        ({"model": ""}, "model"),
        ({"model": 7}, "model"),
        ({"system": ["not", "a", "string"]}, "system"),
        ({"params": "max_tokens=5"}, "params"),
        ({"colour": "blue"}, "colour"),
    ],
)
def test_invalid_request_names_its_field(change, field):
    with pytest.raises(ValidationError) as info:
        GenerateRequest.model_validate({**VALID, **change})
    assert error_field(info.value) == field


def test_missing_fields_are_named():
    with pytest.raises(ValidationError) as info:
        GenerateRequest.model_validate({"prompt": "hi"})
    assert error_field(info.value) == "content_type"
    with pytest.raises(ValidationError) as info:
        GenerateRequest.model_validate({"content_type": "text"})
    assert error_field(info.value) == "prompt"


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"max_tokens": 0}, "params.max_tokens"),
        ({"max_tokens": -5}, "params.max_tokens"),
        ({"max_tokens": "ten"}, "params.max_tokens"),
        ({"max_tokens": 1.5}, "params.max_tokens"),
        ({"temperature": -0.1}, "params.temperature"),
        ({"temperature": 2.5}, "params.temperature"),
        ({"temperature": "hot"}, "params.temperature"),
        ({"top_p": 0}, "params.top_p"),
        ({"top_p": 1.5}, "params.top_p"),
        ({"seed": -1}, "params.seed"),
        ({"seed": 2**32}, "params.seed"),
        ({"stop": [str(i) for i in range(9)]}, "params.stop"),
        ({"stop": 5}, "params.stop"),
        ({"n": 3}, "params.n"),
    ],
)
def test_invalid_text_params_name_their_field(params, field):
    with pytest.raises(ValidationError) as info:
        TextParams.model_validate(params)
    assert error_field(info.value, "params") == field


def test_valid_text_params():
    p = TextParams.model_validate({"max_tokens": 16, "temperature": 0, "top_p": 1, "seed": 2**32 - 1, "stop": "\n"})
    assert (p.max_tokens, p.temperature, p.top_p, p.seed, p.stop) == (16, 0, 1, 2**32 - 1, ["\n"])
    assert TextParams.model_validate({}).max_tokens is None


@pytest.mark.parametrize(
    ("error", "status", "code"),
    [
        (InvalidRequest, 422, "invalid_request"),
        (PayloadTooLarge, 413, "payload_too_large"),
        (NotFound, 404, "not_found"),
        (ModelNotFound, 404, "not_found"),
        (ModelUnavailable, 503, "model_unavailable"),
        (EngineFailed, 502, "engine_failed"),
        (InvalidOutput, 502, "invalid_output"),
        (GenerationTimeout, 504, "generation_timeout"),
    ],
)
def test_error_table_of_the_design(error, status, code):
    exc = error("what went wrong", content_id="abc")
    assert (status_of(exc), exc.code) == (status, code)
    assert exc.to_dict() == {"code": code, "message": "what went wrong", "hint": exc.hint, "content_id": "abc"}
    assert exc.hint
