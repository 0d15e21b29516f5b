"""Remote models: real OpenAI-compatible servers started here (llama-cpp-python's own server on the packaged
SmolLM2, and another genforge), registered with `genforge models add-remote`, used through the same API."""

from __future__ import annotations

import socket
import threading
import time

import pytest
from openai import OpenAI

from conftest import (
    CONTENT,
    DEFAULT_MODEL,
    GENERATE,
    Server,
    assert_error,
    failed_record,
    free_port,
    run_cli,
    sha256,
    text_body,
    wait_for,
)
from scale_fixtures import llama_server  # noqa: F401 (a fixture)


def add_remote(data_dir, name: str, base_url: str, model: str) -> None:
    result = run_cli(data_dir, "models", "add-remote", name, "--base-url", base_url, "--model", model, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr


def assert_remote_record(rec: dict, base_url: str, served: str) -> None:
    assert rec["status"] == "succeeded", rec
    model = rec["model"]
    assert model["remote"] is True and model["engine"] == "remote"
    assert model["file_sha256"] is None  # nothing pretends to a hash it did not compute
    assert model["base_url"] == base_url and model["served_model"] == served
    assert rec["usage"]["completion_tokens"] > 0
    assert rec["text"].strip()
    assert rec["artifact"]["sha256"] == sha256(rec["text"].encode("utf-8"))


@pytest.fixture
def app_dir(tmp_path):
    return tmp_path / "app"


def test_llama_cpp_server_as_remote(app_with, app_dir, llama_server):  # noqa: F811
    add_remote(app_dir, "far", llama_server.base_url, llama_server.served_model)
    client = app_with(data_dir=app_dir, preload=False)
    listed = {m["name"]: m for m in client.get("/api/v1/models").json()["items"]}
    assert listed["far"]["engine"] == "remote" and listed["far"]["sha256"] is None
    resp = client.post(GENERATE, json={**text_body("Name a river.", max_tokens=12), "model": "far"})
    assert resp.status_code == 201, resp.text
    rec = resp.json()
    assert_remote_record(rec, llama_server.base_url, llama_server.served_model)
    assert client.get(rec["artifact"]["url"]).content == rec["text"].encode("utf-8")
    # streaming passes through token by token, with the same final record
    with client.stream(
        "POST", GENERATE, json={**text_body("Name a lake.", max_tokens=12), "model": "far", "stream": True}
    ) as stream:
        body = stream.read().decode()
    assert body.count("event: token") >= 2 and "event: done" in body, body[-500:]

    # the OpenAI SDK through genforge's /v1, on the remote model; llama_cpp.server streams no prompt count, so
    # the usage is null rather than a number genforge does not know
    sdk = OpenAI(base_url="http://localhost/v1", api_key="unused", http_client=client)
    answer = sdk.chat.completions.create(model="far", messages=[{"role": "user", "content": "Say hi."}], max_tokens=8)
    assert answer.choices[0].message.content.strip()
    usage = answer.usage
    assert usage is None or usage.total_tokens == usage.prompt_tokens + usage.completion_tokens, usage
    chunks = sdk.chat.completions.create(
        model="far", messages=[{"role": "user", "content": "Count."}], max_tokens=8, stream=True
    )
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices).strip()

    # an empty answer is 502 invalid_output: greedy decoding, stopped at the first character it would write
    greedy = {**text_body("Name a river.", max_tokens=12, temperature=0), "model": "far"}
    first = client.post(GENERATE, json=greedy).json()["text"].strip()[0]
    greedy["params"]["stop"] = [first]
    empty = client.post(GENERATE, json=greedy)
    assert_error(empty, 502, "invalid_output")
    failed_record(client, empty, "invalid_output")


def test_genforge_as_remote_and_killed_mid_stream(app_with, app_dir, tmp_path):
    remote = Server(tmp_path / "remote").start()
    try:
        remote.wait_ready()
        base = f"http://127.0.0.1:{remote.port}/v1"
        add_remote(app_dir, "far-smol", base, DEFAULT_MODEL)
        client = app_with(data_dir=app_dir, preload=False)
        resp = client.post(GENERATE, json={**text_body("Name a mountain.", max_tokens=12), "model": "far-smol"})
        assert resp.status_code == 201, resp.text
        assert_remote_record(resp.json(), base, DEFAULT_MODEL)

        # the remote fails the request (its model is not installed there): 502 engine_failed
        add_remote(app_dir, "far-gemma", base, "gemma3-270m")
        resp = client.post(GENERATE, json={**text_body("Name a hill.", max_tokens=8), "model": "far-gemma"})
        err = assert_error(resp, 502, "engine_failed")
        assert "gemma3-270m" in err["message"], err

        # cancel closes the upstream request: the remote's own record of it ends cancelled
        long = text_body("Write a very long story about the sea.", max_tokens=1500, temperature=2.0, top_p=1.0)
        job = client.post(GENERATE, json={**long, "model": "far-smol", "mode": "async"})
        assert job.status_code == 202, job.text
        url = f"{CONTENT}/{job.json()['id']}"
        wait_for(lambda: client.get(url).json()["status"] == "running", 60, 0.05, "the job to run")
        time.sleep(0.5)
        assert client.post(f"{url}/cancel").json()["status"] == "cancelled"
        wait_for(
            lambda: remote.http.get(CONTENT, params={"status": "cancelled"}).json()["total"] == 1,
            30,
            what="the remote to see its request closed and cancel it",
        )

        # the remote dies in the middle of a long stream: 502 engine_failed and a failed record
        answer = {}
        thread = threading.Thread(
            target=lambda: answer.update(resp=client.post(GENERATE, json={**long, "model": "far-smol"}))
        )
        thread.start()
        running = wait_for(
            lambda: client.get(CONTENT, params={"status": "running"}).json()["items"], 60, what="a running record"
        )
        time.sleep(1.0)  # tokens are flowing
        remote.proc.kill()
        thread.join(120)
        assert_error(answer["resp"], 502, "engine_failed")
        rec = failed_record(client, answer["resp"], "engine_failed")
        assert rec["id"] == running[0]["id"] and rec["model"]["remote"] is True

        # the remote is down: 503 model_unavailable with a hint, and a failed record
        down = client.post(GENERATE, json={**text_body("Name a lake.", max_tokens=8), "model": "far-smol"})
        err = assert_error(down, 503, "model_unavailable")
        assert "far-smol" in err["message"] and base in err["hint"]
        failed_record(client, down, "model_unavailable")
    finally:
        remote.stop()


def test_unreachable_and_silent_remotes(app_with, app_dir):
    add_remote(app_dir, "nowhere", f"http://127.0.0.1:{free_port()}/v1", "x")
    add_remote(app_dir, "no-dns", "http://genforge-no-such-host.invalid/v1", "x")
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)  # accepts connections, never answers
    add_remote(app_dir, "silent", f"http://127.0.0.1:{silent.getsockname()[1]}/v1", "x")
    try:
        client = app_with(data_dir=app_dir, preload=False, remote_timeout_s=1.0)
        for name in ("nowhere", "no-dns"):
            resp = client.post(GENERATE, json={**text_body(max_tokens=8), "model": name})
            assert_error(resp, 503, "model_unavailable")
        resp = client.post(GENERATE, json={**text_body(max_tokens=8), "model": "silent"})
        assert_error(resp, 504, "generation_timeout")
        failed_record(client, resp, "generation_timeout")
    finally:
        silent.close()
