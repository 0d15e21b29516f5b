"""An OpenAPI fuzzer (schemathesis) against a real `genforge serve`: no crash, nothing undocumented.

Checks: every status and media type a response has is in the schema, every JSON body matches its declared
schema, and a 5xx is only a typed engine/model failure the schema documents (tests/fuzz/genforge_checks.py).
The budget is GENFORGE_FUZZ_SECONDS per run (45 by default, for CI); the server runs with small limits so
that random requests finish quickly (a 256-token context, a 5 s generation timeout, short speech). It runs
twice: without keys (auth off), and with the auth on and an admin key, where every API route must also answer
401 without the key.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from conftest import Server, run_cli

FUZZ_SECONDS = int(os.environ.get("GENFORGE_FUZZ_SECONDS", "45"))
SCHEMATHESIS = Path(sys.executable).parent / "schemathesis"
CHECKS = "status_code_conformance,content_type_conformance,response_schema_conformance,typed_server_errors"
SMALL_LIMITS = {
    "GENFORGE_CONTEXT_SIZE": "256",
    "GENFORGE_GENERATION_TIMEOUT_S": "5",
    "GENFORGE_SPEECH_MAX_CHARS": "200",
    "GENFORGE_IMAGE_MAX_SIZE": "512",
    "GENFORGE_QUEUE_SIZE": "4",
    "GENFORGE_PARALLEL": "2",
    "GENFORGE_ENGINE_LOG_LEVEL": "WARNING",
}


OPEN_PATHS = {"/healthz", "/readyz"}  # probes need no key


@pytest.mark.slow
@pytest.mark.timeout(FUZZ_SECONDS + 300)
@pytest.mark.parametrize("with_key", [False, True], ids=["auth-off", "auth-on"])
def test_the_fuzzer_finds_no_crash_and_nothing_undocumented(tmp_path, with_key):
    if not SCHEMATHESIS.exists():
        pytest.skip("schemathesis is not installed (the test extra)")
    data = tmp_path / "data"
    headers, key = [], None
    if with_key:
        made = run_cli(data, "keys", "create", "--name", "fuzz", "--scope", "admin")
        assert made.returncode == 0, made.stderr
        key = made.stdout.strip().splitlines()[-1]
        headers = ["--header", f"Authorization: Bearer {key}"]
    server = Server(data, env=SMALL_LIMITS, key=key).start()
    try:
        server.wait_ready()
        if with_key:
            assert_every_api_route_needs_the_key(server)
        env = {
            **os.environ,
            "SCHEMATHESIS_HOOKS": "genforge_checks",
            "PYTHONPATH": str(Path(__file__).parent.parent / "fuzz"),
        }
        run = subprocess.run(
            [
                str(SCHEMATHESIS),
                "run",
                f"http://127.0.0.1:{server.port}/openapi.json",
                *headers,
                "--checks",
                CHECKS,
                "--phases",
                "examples,coverage,fuzzing,stateful",
                "--max-time",
                str(FUZZ_SECONDS),
                "--workers",
                "1",  # hypothesis' AST handling is not thread-safe on Python 3.11
                "--request-timeout",
                "60",
                "--no-color",
                "--seed",
                "1",
            ],
            capture_output=True,
            text=True,
            env=env,
            cwd=tmp_path,
            timeout=FUZZ_SECONDS + 240,
        )
        summary = run.stdout[-6000:]
        assert run.returncode == 0, f"schemathesis found problems:\n{summary}\n{run.stderr[-2000:]}"
        assert "Test cases:" in summary, summary
    finally:
        server.stop()


def assert_every_api_route_needs_the_key(server: Server) -> None:
    """Without the key, every route of the schema but the probes answers 401 with WWW-Authenticate."""
    spec = server.http.get("/openapi.json").json()
    for path, ops in spec["paths"].items():
        for method in ops:
            url = path.replace("{content_id}", "00000000-0000-4000-8000-000000000000").replace("{name}", "x")
            resp = httpx.request(method.upper(), server.http.base_url.join(url), json={}, timeout=30)
            if path in OPEN_PATHS:
                assert resp.status_code != 401, (method, path)
                continue
            assert resp.status_code == 401, (method, path, resp.status_code, resp.text[:200])
            assert resp.headers["www-authenticate"].startswith("Bearer"), (method, path)
