"""Issue 6 against a real `genforge serve`: concurrency, client disconnect, crash recovery, OpenAI SDK."""

from __future__ import annotations

import os
import signal
import threading

import httpx
import openai
import pytest

from conftest import CONTENT, GENERATE, Server, assert_succeeded_text, files_under, text_body, wait_for

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    srv = Server(tmp_path_factory.mktemp("jobs-server") / "data").start()
    srv.wait_ready()
    yield srv
    srv.stop()


def test_four_concurrent_requests_succeed_with_distinct_records(server):
    results: dict[int, httpx.Response] = {}

    def one(seed: int) -> None:
        with httpx.Client(base_url=server.http.base_url, timeout=300) as c:
            results[seed] = c.post(
                GENERATE, json=text_body(f"Write a sentence about the number {seed}.", max_tokens=40, seed=seed)
            )

    threads = [threading.Thread(target=one, args=(s,)) for s in range(1, 5)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    records = [r.json() for r in results.values()]
    assert all(r.status_code == 201 for r in results.values())
    for rec in records:
        assert_succeeded_text(rec)
    assert len({r["id"] for r in records}) == 4
    assert {r["params"]["seed"] for r in records} == {1, 2, 3, 4}
    assert max(r["batch_size_max"] for r in records) > 1  # they really shared the engine's batch
    for rec in records:  # each record's artifact is its own text
        assert server.http.get(f"{CONTENT}/{rec['id']}/file").text == rec["text"]


def test_client_disconnect_cancels_the_generation(server):
    body = {**text_body("Write a very long story about the sea.", max_tokens=1500), "stream": True}
    with httpx.Client(base_url=server.http.base_url, timeout=300) as c:
        with c.stream("POST", GENERATE, json=body) as resp:
            content_id = resp.headers["x-genforge-content-id"]
            for line in resp.iter_lines():
                if line.startswith("event: token"):
                    break  # leave after the first token
    rec = wait_for(
        lambda: (r := server.http.get(f"{CONTENT}/{content_id}").json())["status"] != "running" and r,
        timeout=60,
        what="the abandoned stream to stop",
    )
    assert rec["status"] == "cancelled" and rec["artifact"] is None
    assert server.http.post(GENERATE, json=text_body(max_tokens=8)).status_code == 201  # the engine is free


def test_crash_then_restart_marks_interrupted_and_leaves_no_orphans(tmp_path):
    srv = Server(tmp_path / "data").start()
    try:
        srv.wait_ready()
        rec = srv.http.post(
            GENERATE, json={**text_body("Write a very long story.", max_tokens=1500), "mode": "async"}
        ).json()
        wait_for(lambda: srv.http.get(f"{CONTENT}/{rec['id']}").json()["status"] == "running", what="running")
        os.kill(srv.proc.pid, signal.SIGKILL)  # the server dies with the job in flight
        srv.proc.wait(timeout=30)  # its engine worker exits when the pipe to its parent closes
    finally:
        srv.stop()
    again = Server(tmp_path / "data").start()
    try:
        again.wait_ready()
        after = again.http.get(f"{CONTENT}/{rec['id']}").json()
        assert after["status"] == "failed" and after["error"]["code"] == "interrupted", after
        assert files_under(tmp_path / "data" / "artifacts") == []
    finally:
        again.stop()


def test_openai_sdk_chat_stream_completions_models(server):
    client = openai.OpenAI(base_url=f"{server.http.base_url}/v1", api_key="unused")
    assert "smollm2-135m-instruct" in [m.id for m in client.models.list()]

    raw = client.chat.completions.with_raw_response.create(
        model="smollm2-135m-instruct",
        messages=[{"role": "system", "content": "Answer briefly."}, {"role": "user", "content": "Name a fruit."}],
        max_tokens=16,
        seed=3,
        temperature=0,
    )
    chat = raw.parse()
    content_id = raw.headers["x-genforge-content-id"]
    record = server.http.get(f"{CONTENT}/{content_id}").json()
    assert chat.choices[0].message.content == record["text"] and record["text"].strip()
    assert chat.usage.completion_tokens == record["usage"]["completion_tokens"]
    assert record["messages"][0] == {"role": "system", "content": "Answer briefly."}
    assert "messages" not in record["params"]  # a control input, recorded beside the parameters

    stream = client.chat.completions.create(
        model="smollm2-135m-instruct",
        messages=[{"role": "user", "content": "Name a fruit."}],
        max_tokens=16,
        seed=3,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
    )
    parts, usage, finish = [], None, None
    for chunk in stream:
        if chunk.usage:
            usage = chunk.usage
        if chunk.choices:
            parts.append(chunk.choices[0].delta.content or "")
            finish = chunk.choices[0].finish_reason or finish
    assert "".join(parts).strip() and finish in ("stop", "length")
    assert usage is not None and usage.completion_tokens > 0

    completion = client.completions.create(
        model="smollm2-135m-instruct", prompt="The capital of France is", max_tokens=8, temperature=0
    )
    assert completion.choices[0].text.strip()

    with pytest.raises(openai.BadRequestError) as bad:
        client.chat.completions.create(model="smollm2-135m-instruct", n=2, messages=[{"role": "user", "content": "hi"}])
    assert bad.value.body["param"] == "n"
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "hi"}])
    assert_succeeded_text(record)
