"""Access control as a user meets it: keys made with the real CLI, a real `genforge serve`, the OpenAI SDK,
and the connection limits of the server process."""

from __future__ import annotations

import socket
import time

import openai
import pytest

from conftest import CONTENT, DEFAULT_MODEL, GENERATE, Server, free_port, run_cli, text_body


def create_key(data_dir, name, *opts) -> str:
    result = run_cli(data_dir, "keys", "create", "--name", name, *opts)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert lines, result
    return lines[-1]


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    data = tmp_path_factory.mktemp("access-server") / "data"
    keys = {
        "admin": create_key(data, "ops", "--scope", "admin"),
        "reader": create_key(data, "viewer", "--scope", "read"),
    }
    env = {"GENFORGE_KEEP_ALIVE_TIMEOUT_S": "1", "GENFORGE_REQUEST_READ_TIMEOUT_S": "2"}
    srv = Server(data, env=env, key=keys["reader"]).start()
    srv.wait_ready()
    yield srv, keys
    srv.stop()


def test_keys_cli_create_list_revoke(tmp_path):
    data = tmp_path / "data"
    token = create_key(data, "app", "--scope", "generate", "--models", DEFAULT_MODEL, "--rate", "60/min")
    assert token.startswith("gf_") and len(token) > 40 and " " not in token
    listed = run_cli(data, "keys", "list")
    assert listed.returncode == 0
    assert "app" in listed.stdout and "generate" in listed.stdout and "60/min" in listed.stdout
    assert token not in listed.stdout and token[16:] not in listed.stdout
    assert run_cli(data, "keys", "create", "--name", "app", "--scope", "read").returncode != 0  # name in use
    assert run_cli(data, "keys", "create", "--name", "x", "--scope", "root").returncode != 0
    assert run_cli(data, "keys", "create", "--name", "y", "--scope", "read", "--rate", "fast").returncode != 0
    revoked = run_cli(data, "keys", "revoke", "app")
    assert revoked.returncode == 0, revoked.stderr
    assert "revoked" in run_cli(data, "keys", "list").stdout
    assert run_cli(data, "keys", "revoke", "app").returncode != 0


def test_openai_sdk_with_a_key_works_and_without_is_401(served):
    srv, keys = served
    base = f"http://127.0.0.1:{srv.port}/v1"
    client = openai.OpenAI(base_url=base, api_key=keys["admin"], max_retries=0)
    reply = client.chat.completions.create(
        model=DEFAULT_MODEL, messages=[{"role": "user", "content": "Name a fruit."}], max_tokens=8, seed=1
    )
    assert reply.choices[0].message.content.strip()
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=base, api_key="unused", max_retries=0).models.list()
    with pytest.raises(openai.PermissionDeniedError):
        openai.OpenAI(base_url=base, api_key=keys["reader"], max_retries=0).chat.completions.create(
            model=DEFAULT_MODEL, messages=[{"role": "user", "content": "Hi"}], max_tokens=4
        )


def test_revoke_with_the_cli_takes_effect_on_the_next_request(served):
    srv, _ = served
    token = create_key(srv.data_dir, "temp", "--scope", "read")
    auth = {"Authorization": f"Bearer {token}"}
    assert srv.http.get(CONTENT, headers=auth).status_code == 200
    assert run_cli(srv.data_dir, "keys", "revoke", "temp").returncode == 0
    assert srv.http.get(CONTENT, headers=auth).status_code == 401


def test_probes_answer_without_a_key_and_metrics_needs_one(served):
    srv, keys = served
    assert srv.http.get("/healthz").status_code == 200
    assert srv.http.get("/readyz").status_code == 200
    assert srv.http.get("/metrics").status_code == 401
    assert srv.http.get("/metrics", headers={"Authorization": f"Bearer {keys['reader']}"}).status_code == 200
    assert srv.http.post(GENERATE, json=text_body()).status_code == 401


def raw_exchange(port: int, data: bytes, wait: float = 10) -> bytes:
    """Send `data` and read until the server closes the connection (b'' when it closes without a word)."""
    with socket.create_connection(("127.0.0.1", port), timeout=wait) as sock:
        if data:
            sock.sendall(data)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
        return b"".join(chunks)


def test_a_huge_request_head_is_431(served):
    srv, _ = served
    head = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: " + b"a" * 200_000 + b"\r\n\r\n"
    with socket.create_connection(("127.0.0.1", srv.port), timeout=10) as sock:
        try:
            sock.sendall(head)
        except (BrokenPipeError, ConnectionResetError):
            pass  # closed while we were still sending: read what it answered
        answer = sock.recv(65536)
    assert answer.startswith(b"HTTP/1.1 431"), answer[:100]


def test_idle_and_trickling_connections_are_closed(served):
    srv, _ = served
    started = time.monotonic()
    assert raw_exchange(srv.port, b"") == b""  # a connection that sends nothing: closed after the keep-alive
    assert time.monotonic() - started < 5
    started = time.monotonic()
    answer = raw_exchange(srv.port, b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")  # never finished
    assert answer.startswith(b"HTTP/1.1 408"), answer[:100]
    assert time.monotonic() - started < 6
    body = b'{"content_type": "text", "prompt": "hi"'  # a body that stops half-way
    head = f"POST {GENERATE} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
    head += f"Content-Length: {len(body) + 50}\r\n\r\n"
    assert raw_exchange(srv.port, head.encode() + body).startswith(b"HTTP/1.1 408")
    assert srv.http.get("/healthz").status_code == 200


def test_serve_on_an_open_address_without_a_key_is_refused(tmp_path):
    result = run_cli(tmp_path / "bare", "serve", "--host", "0.0.0.0", "--port", str(free_port()), timeout=60)
    assert result.returncode != 0
    assert "no API key" in result.stderr and "--insecure" in result.stderr
