"""Structured output and tool calls on the real SmolLM2: JSON that matches its schema (constrained by llguidance,
validated by jsonschema) or an honest failure; tool calls in OpenAI's shape; schema keywords that cannot be
enforced refused; retries recorded; constrained and free sequences in one batch."""

from __future__ import annotations

import json
from typing import Literal

import jsonschema
import openai
import pytest
from pydantic import BaseModel, Field

from conftest import DEFAULT_MODEL, GENERATE, make_settings, open_catalog
from genforge.engines.base import Done, Failed, GenerationJob
from genforge.engines.llama import LlamaEngine
from genforge.engines.params import ResponseFormat, TextSettings, ToolFunction
from genforge.engines.structured import schema_sha256

pytestmark = pytest.mark.both_modes

REVIEW = {
    "type": "object",
    "additionalProperties": False,
    "required": ["title", "mood", "stars"],
    "properties": {
        "title": {"type": "string", "maxLength": 40},
        "mood": {"type": "string", "enum": ["calm", "stormy"]},
        "stars": {"type": "integer", "minimum": 1, "maximum": 5},
    },
}
WEATHER = {
    "type": "object",
    "required": ["city", "unit"],
    "additionalProperties": False,
    "properties": {"city": {"type": "string", "maxLength": 30}, "unit": {"type": "string", "enum": ["C", "F"]}},
}
TOOLS = [
    {"type": "function", "function": {"name": "get_weather", "description": "Weather in a city", "parameters": WEATHER}}
]
JSON_SCHEMA = {"type": "json_schema", "json_schema": {"name": "review", "schema": REVIEW, "strict": True}}


def native(prompt: str, **params) -> dict:
    return {"content_type": "text", "prompt": prompt, "params": {"max_tokens": 120, "seed": 1, **params}}


def test_native_json_schema_answer_validates_and_the_record_keeps_parsed_and_schema_sha(live):
    fmt = {"type": "json_schema", "json_schema": REVIEW}
    resp = live.client.post(GENERATE, json=native("Review a day at the sea.", response_format=fmt))
    assert resp.status_code == 201, resp.text
    rec = resp.json()
    assert rec["status"] == "succeeded"
    jsonschema.validate(json.loads(rec["text"]), REVIEW)
    assert rec["parsed"] == json.loads(rec["text"])
    assert rec["schema_sha256"] == schema_sha256(REVIEW)
    assert rec["params"]["response_format"]["json_schema"] == REVIEW
    assert rec["forced_tokens"] > 0  # keys, `":"` and closers came from the grammar, not from sampling
    again = live.client.get(f"/api/v1/content/{rec['id']}").json()
    assert again["parsed"] == rec["parsed"]


def test_an_answer_that_cannot_fit_fails_invalid_output_with_every_attempt_recorded(live):
    fmt = {"type": "json_schema", "json_schema": REVIEW}
    resp = live.client.post(GENERATE, json=native("Review a day at the sea.", response_format=fmt, max_tokens=3))
    assert resp.status_code == 502, resp.text
    err = resp.json()["error"]
    assert err["code"] == "invalid_output" and "max_tokens 3" in err["message"]
    rec = live.client.get(f"/api/v1/content/{err['content_id']}").json()
    assert rec["status"] == "failed" and rec["error"]["code"] == "invalid_output"
    attempts = rec["attempts"]
    assert len(attempts) == live.settings.policy_attempts
    assert [a["seed"] for a in attempts] == [1 + i for i in range(len(attempts))]  # the next seed each time
    assert all(a["code"] == "invalid_output" for a in attempts)
    assert rec["parsed"] is None and rec["schema_sha256"] == schema_sha256(REVIEW)


@pytest.mark.parametrize(
    ("schema", "keyword"),
    [
        ({"type": "array", "items": {"type": "string"}, "uniqueItems": True}, "uniqueItems"),
        ({"type": "object", "not": {"required": ["a"]}}, "not"),
        ({"type": "string", "format": "no-such-format"}, "no-such-format"),
    ],
)
def test_schema_keywords_the_grammar_cannot_enforce_are_refused_naming_them(live, schema, keyword):
    fmt = {"type": "json_schema", "json_schema": schema}
    resp = live.client.post(GENERATE, json=native("Anything.", response_format=fmt))
    assert resp.status_code == 422, resp.text
    assert keyword in resp.json()["error"]["message"]
    body = {"model": DEFAULT_MODEL, "messages": [{"role": "user", "content": "Anything."}]}
    body["response_format"] = {"type": "json_schema", "json_schema": {"name": "x", "schema": schema}}
    resp = live.client.post("/v1/chat/completions", json=body)
    assert resp.status_code == 400, resp.text
    assert keyword in resp.json()["error"]["message"]


def test_a_schema_that_is_not_a_schema_is_refused(live):
    fmt = {"type": "json_schema", "json_schema": {"type": "no-such-type"}}
    resp = live.client.post(GENERATE, json=native("Anything.", response_format=fmt))
    assert resp.status_code == 422, resp.text
    assert "not a valid JSON schema" in resp.json()["error"]["message"]


def test_sdk_parse_returns_the_pydantic_object(live):
    class City(BaseModel):
        name: str = Field(max_length=30)
        population: int
        size: Literal["small", "medium", "large"]

    client = openai.OpenAI(base_url="http://localhost/v1", api_key="unused", http_client=live.client, max_retries=0)
    r = client.chat.completions.parse(
        model=DEFAULT_MODEL,
        messages=[{"role": "user", "content": "Describe Oslo as JSON."}],
        response_format=City,
        max_tokens=120,
        seed=4,
    )
    assert isinstance(r.choices[0].message.parsed, City)


def test_v1_json_object_and_completions_json_schema(live):
    body = {
        "model": DEFAULT_MODEL,
        "messages": [{"role": "user", "content": "Give a colour and its hex code as JSON."}],
        "response_format": {"type": "json_object"},
        "max_tokens": 80,
        "seed": 2,
    }
    resp = live.client.post("/v1/chat/completions", json=body)
    assert resp.status_code == 200, resp.text
    assert isinstance(json.loads(resp.json()["choices"][0]["message"]["content"]), dict)
    body = {"model": DEFAULT_MODEL, "prompt": "A review:", "response_format": JSON_SCHEMA, "max_tokens": 100, "seed": 3}
    resp = live.client.post("/v1/completions", json=body)
    assert resp.status_code == 200, resp.text
    jsonschema.validate(json.loads(resp.json()["choices"][0]["text"]), REVIEW)


def test_required_tool_call_its_record_and_the_round_trip(live):
    messages = [{"role": "user", "content": "What is the weather in Oslo?"}]
    body = {"model": DEFAULT_MODEL, "messages": messages, "tools": TOOLS, "tool_choice": "required", "seed": 2}
    resp = live.client.post("/v1/chat/completions", json={**body, "max_tokens": 80, "parallel_tool_calls": False})
    assert resp.status_code == 200, resp.text
    choice = resp.json()["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    message = choice["message"]
    assert message["content"] is None and len(message["tool_calls"]) == 1
    call = message["tool_calls"][0]
    assert call["type"] == "function" and call["id"] and call["function"]["name"] == "get_weather"
    jsonschema.validate(json.loads(call["function"]["arguments"]), WEATHER)
    rec = live.client.get(f"/api/v1/content/{resp.headers['X-Genforge-Content-Id']}").json()
    assert rec["tool_calls"] == message["tool_calls"]
    assert rec["tool_template"] == "generic"  # SmolLM2's template has no tools: genforge describes them
    # the assistant's message as it came, and the tool's result: a normal answer
    follow = [*messages, message, {"role": "tool", "tool_call_id": call["id"], "content": '{"temp": 4}'}]
    resp = live.client.post(
        "/v1/chat/completions", json={**body, "messages": follow, "tool_choice": "none", "max_tokens": 30}
    )
    assert resp.status_code == 200, resp.text
    answer = resp.json()["choices"][0]
    assert answer["finish_reason"] in ("stop", "length") and answer["message"]["content"].strip()
    rec = live.client.get(f"/api/v1/content/{resp.headers['X-Genforge-Content-Id']}").json()
    assert rec["messages"][1]["tool_calls"] == message["tool_calls"]
    assert (rec["messages"][2]["role"], rec["messages"][2]["tool_call_id"]) == ("tool", call["id"])


def test_a_named_function_is_the_one_called_and_an_unknown_name_is_refused(live):
    zone = {"type": "object", "required": ["zone"], "properties": {"zone": {"type": "string", "maxLength": 20}}}
    second = {"type": "function", "function": {"name": "get_time", "parameters": zone}}
    choice = {"type": "function", "function": {"name": "get_time"}}
    body = {
        "model": DEFAULT_MODEL,
        "messages": [{"role": "user", "content": "What is the weather in Oslo?"}],
        "tools": [*TOOLS, second],
        "tool_choice": choice,
        "parallel_tool_calls": False,
        "max_tokens": 60,
        "seed": 5,
    }
    resp = live.client.post("/v1/chat/completions", json=body)
    assert resp.status_code == 200, resp.text
    assert [c["function"]["name"] for c in resp.json()["choices"][0]["message"]["tool_calls"]] == ["get_time"]
    resp = live.client.post("/v1/chat/completions", json={**body, "tool_choice": {**choice, "function": {"name": "x"}}})
    assert resp.status_code == 400 and "'x'" in resp.json()["error"]["message"]


def test_a_streamed_tool_call_reassembles_to_the_call(live):
    body = {
        "model": DEFAULT_MODEL,
        "messages": [{"role": "user", "content": "What is the weather in Oslo?"}],
        "tools": TOOLS,
        "tool_choice": "required",
        "parallel_tool_calls": False,
        "max_tokens": 80,
        "seed": 2,
        "stream": True,
    }
    with live.client.stream("POST", "/v1/chat/completions", json=body) as resp:
        assert resp.status_code == 200
        lines = [line.removeprefix("data: ") for line in resp.iter_lines() if line.startswith("data: ")]
    assert lines[-1] == "[DONE]"
    chunks = [json.loads(line) for line in lines[:-1]]
    name = args = ""
    for c in chunks:
        for tc in c["choices"][0]["delta"].get("tool_calls") or []:
            assert tc["index"] == 0 and tc["id"]
            name += tc["function"]["name"]
            args += tc["function"]["arguments"]
    assert name == "get_weather" and chunks[-1]["choices"][0]["finish_reason"] == "tool_calls"
    jsonschema.validate(json.loads(args), WEATHER)


def test_native_stream_of_a_constrained_answer_ends_with_the_parsed_record(live):
    fmt = {"type": "json_schema", "json_schema": REVIEW}
    with live.client.stream(
        "POST", GENERATE, json={**native("Review a day at the sea.", response_format=fmt), "stream": True}
    ) as resp:
        text = "".join(resp.iter_text())
    events = [block.split("\n") for block in text.strip().split("\n\n")]
    done = [json.loads(b[1].removeprefix("data: ")) for b in events if b[0] == "event: done"]
    assert done and done[0]["parsed"] == json.loads(done[0]["text"])
    tokens = "".join(json.loads(b[1].removeprefix("data: "))["text"] for b in events if b[0] == "event: token")
    assert tokens == done[0]["text"]


def _run(engine: LlamaEngine, jobs: list[GenerationJob]) -> dict[str, str]:
    for job in jobs:
        engine.submit(job)
    texts: dict[str, str] = {}
    while engine.busy:
        for ev in engine.step():
            assert not isinstance(ev, Failed), ev
            if isinstance(ev, Done):
                texts[ev.job_id] = ev.output.text
    return texts


@pytest.mark.only_in("embedded", reason="drives the engine directly, without an app")
def test_constrained_and_free_sequences_share_a_batch_and_the_free_ones_are_unchanged(tmp_path):
    model = open_catalog(make_settings(tmp_path)).resolve(DEFAULT_MODEL)

    def job(name: str, temperature: float, **extra) -> GenerationJob:
        params = TextSettings(max_tokens=48, temperature=temperature, top_p=0.9, seed=7, **extra)
        return GenerationJob(name, "text", model, f"Write about {name}.", None, params)

    rf = ResponseFormat(type="json_schema", json_schema=REVIEW)
    tools = [ToolFunction(name="get_weather", parameters=WEATHER)]
    free = [job("a fox", 0), job("a ship", 0.8)]
    mixed = [*free, job("a lamp", 0.7, response_format=rf), job("a storm", 0, tools=tools, tool_choice="required")]
    engine = LlamaEngine(n_threads=2, n_ctx=1024, n_parallel=4)
    together = _run(engine, mixed)
    jsonschema.validate(json.loads(together["a lamp"]), REVIEW)
    assert together["a storm"].startswith('<tool_call>{"name":"get_weather","arguments":{')
    alone = {j.content_id: _run(engine, [j])[j.content_id] for j in free}
    assert {k: together[k] for k in alone} == alone


def test_variants_of_a_constrained_request_each_validate_and_a_repeat_gives_the_same_object(live):
    fmt = {"type": "json_schema", "json_schema": REVIEW}
    body = {**native("Review a day at the sea.", response_format=fmt, seed=11), "variants": 3}
    resp = live.client.post(GENERATE, json=body)
    assert resp.status_code == 201, resp.text
    items = resp.json()["items"]
    assert len(items) == 3 and all(i["status"] == "succeeded" for i in items)
    for item in items:
        jsonschema.validate(item["parsed"], REVIEW)
    one = items[1]
    alone = live.client.post(GENERATE, json={**native("Review a day at the sea."), "params": one["params"]}).json()
    assert alone["text"] == one["text"]  # the recorded params (schema and seed included) make it again


def test_auto_answers_with_text_or_a_valid_call_and_says_which(live):
    body = {
        "model": DEFAULT_MODEL,
        "messages": [{"role": "user", "content": "What is the weather in Oslo?"}],
        "tools": TOOLS,
        "parallel_tool_calls": False,
        "max_tokens": 60,
    }
    for seed in (2, 3):
        resp = live.client.post("/v1/chat/completions", json={**body, "seed": seed})
        assert resp.status_code == 200, resp.text
        choice = resp.json()["choices"][0]
        if choice["finish_reason"] == "tool_calls":
            for call in choice["message"]["tool_calls"]:
                jsonschema.validate(json.loads(call["function"]["arguments"]), WEATHER)
        else:
            assert choice["message"]["content"].strip() and not choice["message"]["content"].startswith("<tool_call>")
