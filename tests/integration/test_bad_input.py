"""Every bad input: a 4xx naming the field, nothing succeeded, nothing written."""

from __future__ import annotations

import json

import pytest

from conftest import (
    CONTENT,
    DEFAULT_MODEL,
    GENERATE,
    ScriptedRunner,
    assert_bad_input,
    assert_error,
    count,
    failed_record,
    files_under,
    text_body,
)

pytestmark = pytest.mark.both_modes

JSON = {"content-type": "application/json"}


@pytest.fixture
def nothing_written(live):
    """Checks that the request under test neither adds a succeeded record nor writes a file."""
    succeeded, files = count(live.client, status="succeeded"), files_under(live.settings.artifacts_dir)
    yield
    assert count(live.client, status="succeeded") == succeeded, "a bad request produced a succeeded record"
    assert files_under(live.settings.artifacts_dir) == files, "a bad request wrote a file"


@pytest.fixture
def no_record(live, nothing_written):
    """For requests refused before any work: not even a failed record."""
    total = count(live.client)
    yield
    assert count(live.client) == total, "a request refused up front left a record"


def post(live, body) -> object:
    return live.client.post(GENERATE, json=body)


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"content_type": "text", "prompt": ""}, "prompt"),
        ({"content_type": "text", "prompt": " \n\t "}, "prompt"),
        ({"content_type": "hologram", "prompt": "a film"}, "content_type"),
        ({"prompt": "no type"}, "content_type"),
        ({"content_type": "text"}, "prompt"),
        (text_body(max_tokens=0), "params.max_tokens"),
        (text_body(max_tokens=-3), "params.max_tokens"),
        (text_body(max_tokens=2048), "params.max_tokens"),
        (text_body(max_tokens=100_000), "params.max_tokens"),
    ],
)
def test_invalid_values_are_422_naming_the_field(live, no_record, body, field):
    err = assert_bad_input(post(live, body), field)
    assert err["content_id"] is None


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"content_type": "text", "prompt": 123}, "prompt"),
        ({"content_type": "text", "prompt": ["a", "list"]}, "prompt"),
        ({"content_type": 1, "prompt": "x"}, "content_type"),
        ({"content_type": "text", "prompt": "x", "model": 7}, "model"),
        ({"content_type": "text", "prompt": "x", "quality": 3}, "quality"),
        ({"content_type": "text", "prompt": "x", "system": {"role": "system"}}, "system"),
        ({"content_type": "text", "prompt": "x", "params": "max_tokens=5"}, "params"),
        ({"content_type": "text", "prompt": "x", "params": {"max_tokens": "ten"}}, "params.max_tokens"),
        ({"content_type": "text", "prompt": "x", "params": {"temperature": "hot"}}, "params.temperature"),
        ({"content_type": "text", "prompt": "x", "params": {"seed": "lucky"}}, "params.seed"),
        ({"content_type": "text", "prompt": "x", "params": {"stop": {"a": 1}}}, "params.stop"),
        ({"content_type": "text", "prompt": "x", "params": {"frequency": 1}}, "params.frequency"),
        ({"content_type": "text", "prompt": "x", "unknown": True}, "unknown"),
    ],
)
def test_wrong_json_types_are_422_naming_the_field(live, no_record, body, field):
    assert_bad_input(post(live, body), field)


@pytest.mark.parametrize(
    "raw",
    [
        b'{"content_type": "text", "prompt": ',
        b'{"content_type": "text",}',
        b"not json at all",
        b'{"content_type": "text", "prompt": "x"}}',
    ],
)
def test_malformed_json_is_422(live, no_record, raw):
    err = assert_bad_input(live.client.post(GENERATE, content=raw, headers=JSON), "JSON")
    assert err["field"] == "body"


@pytest.mark.parametrize(
    "raw", [b'{"content_type": "text", "prompt": "caf\xe9"}', b'{"content_type": "text", "prompt": "\xff\xfe\xfd"}']
)
def test_bytes_that_are_not_utf8_are_4xx_naming_the_body(live, no_record, raw):
    resp = live.client.post(GENERATE, content=raw, headers=JSON)
    assert 400 <= resp.status_code < 500, resp.text
    err = assert_bad_input(resp, "body", status=resp.status_code)
    assert err["field"] == "body"


@pytest.mark.parametrize("body", [[1, 2], "a string", 42, None])
def test_a_body_that_is_not_an_object_is_422(live, no_record, body):
    assert_bad_input(live.client.post(GENERATE, content=json.dumps(body), headers=JSON), "body")


def test_unknown_model_is_404_listing_the_installed_ones(live, no_record):
    err = assert_error(post(live, {**text_body(), "model": "llama-70b"}), 404, "not_found")
    assert "llama-70b" in err["message"]
    assert err["field"] == "model"
    assert DEFAULT_MODEL in err["installed"]
    assert "genforge models list" in err["hint"]


def test_a_prompt_longer_than_the_context_is_refused(live, nothing_written):
    prompt = "word " * 3000  # over 2048 tokens
    resp = post(live, text_body(prompt, max_tokens=16))
    err = assert_bad_input(resp, "prompt")
    assert "context" in err["message"]
    if err["content_id"]:  # refused by the engine once it counted the tokens: the record says so
        rec = failed_record(live.client, resp, "invalid_request")
        assert rec["prompt"] == prompt


def test_params_of_the_wrong_json_type_are_refused_not_coerced(scripted_app):
    client = scripted_app(ScriptedRunner())
    accepted = []
    for params in ({"max_tokens": True}, {"max_tokens": "16"}, {"temperature": "0.5"}, {"seed": False}):
        resp = client.post(GENERATE, json={"content_type": "text", "prompt": "x", "params": params})
        assert resp.status_code in (201, 422), resp.text
        if resp.status_code != 422:
            accepted.append(params)
    assert not accepted, f"accepted as valid: {accepted}"


def test_the_server_still_generates_after_bad_input(live):
    assert live.generate(prompt="Say hello.", max_tokens=8)["status"] == "succeeded"


def test_a_body_over_the_limit_is_413(app_with):
    client = app_with(max_body_bytes=2_000, preload=False)
    body = text_body("x" * 5_000)
    err = assert_error(client.post(GENERATE, json=body), 413, "payload_too_large")
    assert "2000" in err["message"]
    assert client.get(CONTENT).json()["total"] == 0
    assert client.post(GENERATE, json={"content_type": "image", "prompt": "small"}).status_code == 503, (
        "a body under the limit is read as usual"
    )


def test_a_streamed_body_over_the_limit_is_413(app_with):
    client = app_with(max_body_bytes=2_000, preload=False)

    def chunks():
        yield b'{"content_type": "text", "prompt": "'
        for _ in range(10):
            yield b"x" * 500
        yield b'"}'

    resp = client.post(GENERATE, content=chunks(), headers=JSON)
    assert 400 <= resp.status_code < 500, resp.text
    assert client.get(CONTENT).json()["total"] == 0
    assert resp.status_code == 413, f"a streamed body over the limit got {resp.status_code}: {resp.text}"
    assert_error(resp, 413, "payload_too_large")
