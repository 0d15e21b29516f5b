"""Issue 27, remote models: a remote cannot fill genforge's memory (answer size and line length are capped), its
API key never crosses the network in clear unless the operator said so (`--allow-insecure`), and its base URL is
shown without its password.

The remote is a small HTTP server started here that misbehaves on purpose; genforge reaches it through the real
path (`models add-remote`, the app, the engine worker process, httpx).
"""

from __future__ import annotations

import ipaddress
import json
import socket
import threading
from collections.abc import Iterator
from contextlib import suppress
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from conftest import GENERATE, assert_error, free_port, run_cli, text_body, wait_for
from genforge.stores.db import Database, ModelRow

pytestmark = pytest.mark.only_in("embedded", reason="the remote engine runs in this process's engine worker")
KEY_ENV = "GF_TEST_REMOTE_KEY"


def chunk(text: str) -> bytes:
    return b"data: " + json.dumps({"choices": [{"index": 0, "delta": {"content": text}}]}).encode() + b"\n\n"


FINISH = (
    b"data: "
    + json.dumps({"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}).encode()
    + b"\n\ndata: [DONE]\n\n"
)


@dataclass
class Remote:
    """What the remote answers (`mode`), and what it saw."""

    port: int
    mode: str = "ok"
    requests: list[dict] = field(default_factory=list)  # the headers of each request
    wrote_all: list[bool] = field(default_factory=list)  # per answer: did genforge read it to the end?

    def base_url(self, host: str = "127.0.0.1", userinfo: str = "") -> str:
        return f"http://{userinfo}{host}:{self.port}/v1"


def serve_remote(remote: Remote) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args) -> None:  # quiet
            pass

        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("content-length", 0)))
            remote.requests.append(dict(self.headers))
            status, parts = {
                "ok": (200, [chunk("Hello"), chunk(" there"), FINISH]),
                # a "successful" answer of 8 MB: 80,000 chunks of 100 bytes of text
                "huge": (200, [chunk("x" * 100) for _ in range(80_000)] + [FINISH]),
                # one line of 8 MB that never ends
                "long-line": (200, [b"data: " + b"x" * 8_000_000]),
                # an error answer of 64 MB
                "huge-error": (500, [b"e" * 1_000_000 for _ in range(64)]),
            }[remote.mode]
            self.send_response(status)
            self.send_header("content-type", "text/event-stream" if status == 200 else "text/plain")
            self.end_headers()
            done = False
            with suppress(BrokenPipeError, ConnectionResetError):
                for part in parts:
                    self.wfile.write(part)
                self.wfile.flush()
                done = True
            remote.wrote_all.append(done)

    server = ThreadingHTTPServer(("0.0.0.0", remote.port), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="fake-remote", daemon=True).start()
    return server


@pytest.fixture
def remote() -> Iterator[Remote]:
    remote = Remote(free_port())
    server = serve_remote(remote)
    yield remote
    server.shutdown()
    server.server_close()


def this_machine_address() -> str | None:
    """An address of this machine that is not loopback (a connected UDP socket sends nothing), or None."""
    for probe in ("192.0.2.1", "10.255.255.255", "198.51.100.1"):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            try:
                sock.connect((probe, 9))
            except OSError:
                continue
            address = sock.getsockname()[0]
            if not ipaddress.ip_address(address).is_loopback:
                return address
    return None


def add_remote(data_dir, name: str, base_url: str, *extra: str):
    return run_cli(data_dir, "models", "add-remote", name, "--base-url", base_url, "--model", "m", *extra, timeout=120)


# --- response size and line length --------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("mode", "says"),
    [
        ("huge", "sent more than 100000 bytes"),
        ("long-line", "sent a line longer than 50000 bytes"),
        ("huge-error", "failed with HTTP 500"),
    ],
)
def test_a_remote_that_sends_too_much_is_cut_off_with_engine_failed(app_with, tmp_path, remote, mode, says):
    data = tmp_path / "app"
    assert add_remote(data, "far", remote.base_url()).returncode == 0
    client = app_with(data_dir=data, preload=False, remote_max_response_bytes=100_000, remote_max_line_bytes=50_000)
    remote.mode = mode
    resp = client.post(GENERATE, json={**text_body("Hi."), "model": "far"})
    err = assert_error(resp, 502, "engine_failed")
    assert says in err["message"], err
    assert len(err["message"]) < 1000, "the error quotes only the start of what the remote sent"
    wait_for(lambda: remote.wrote_all, 60, 0.1, "the remote to finish its answer or be cut off")
    assert remote.wrote_all == [False], "genforge read the whole answer instead of hanging up at the cap"


# --- the key over plain http --------------------------------------------------------------------------------------
def test_a_key_goes_over_plain_http_to_this_machine_only_unless_allowed(app_with, tmp_path, remote, monkeypatch):
    address = this_machine_address()
    if address is None:
        pytest.skip("this machine has no address besides loopback")
    monkeypatch.setenv(KEY_ENV, "sk-test-Secr3tKey")  # the engine worker inherits it
    data = tmp_path / "app"
    refused = add_remote(data, "lan", remote.base_url(address), "--api-key-env", KEY_ENV)
    assert refused.returncode == 2, refused.stdout + refused.stderr
    assert "plain http" in refused.stderr and "--allow-insecure" in refused.stderr, refused.stderr
    assert add_remote(data, "local", remote.base_url("127.0.0.1"), "--api-key-env", KEY_ENV).returncode == 0
    allowed = add_remote(data, "lan", remote.base_url(address), "--api-key-env", KEY_ENV, "--allow-insecure")
    assert allowed.returncode == 0, allowed.stdout + allowed.stderr
    # registered before this check existed: the flag is false, and the engine refuses it at use too
    older = add_remote(data, "older", remote.base_url(address), "--api-key-env", KEY_ENV, "--allow-insecure")
    assert older.returncode == 0
    db = Database(f"sqlite:///{data / 'genforge.db'}")
    with db.session() as s:
        s.get(ModelRow, "older").allow_insecure = False
    db.dispose()

    client = app_with(data_dir=data, preload=False)
    for name in ("local", "lan"):
        resp = client.post(GENERATE, json={**text_body("Hi."), "model": name})
        assert resp.status_code == 201, resp.text
    assert [r.get("Authorization") for r in remote.requests] == ["Bearer sk-test-Secr3tKey"] * 2
    resp = client.post(GENERATE, json={**text_body("Hi."), "model": "older"})
    err = assert_error(resp, 503, "model_unavailable")
    assert "plain http" in err["message"] and "--allow-insecure" in err["hint"], err
    assert len(remote.requests) == 2, "the key was sent to the host it was refused for"


# --- the base URL without its password ----------------------------------------------------------------------------
def test_a_remote_url_password_is_never_shown(app_with, tmp_path, remote):
    data = tmp_path / "app"
    base = remote.base_url("127.0.0.1", userinfo="relay:Pa55word@")
    added = add_remote(data, "pw", base)
    assert added.returncode == 0 and "Pa55word" not in added.stdout + added.stderr, added.stdout
    listed = run_cli(data, "models", "list")
    assert "pw" in listed.stdout and "Pa55word" not in listed.stdout + listed.stderr
    client = app_with(data_dir=data, preload=False)
    models = client.get("/api/v1/models")
    assert "Pa55word" not in models.text
    shown = {m["name"]: m for m in models.json()["items"]}["pw"]
    assert shown["path"] == remote.base_url("127.0.0.1", userinfo="relay:***@"), shown
    resp = client.post(GENERATE, json={**text_body("Hi."), "model": "pw"})
    assert resp.status_code == 201, resp.text
    assert remote.requests[0]["Authorization"].startswith("Basic "), "the password still reaches the remote"
    assert "Pa55word" not in resp.text and resp.json()["model"]["base_url"] == shown["path"]
    assert "Pa55word" not in client.get(f"/api/v1/content/{resp.json()['id']}").text
