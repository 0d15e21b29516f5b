"""An OpenAPI fuzzer (schemathesis) against a real `genforge serve`: no crash, nothing undocumented.

Checks: every status and media type a response has is in the schema, every JSON body matches its declared
schema, and a 5xx is only a typed engine/model failure the schema documents (tests/fuzz/genforge_checks.py).
The budget is GENFORGE_FUZZ_SECONDS (60 by default, for CI); the server runs with small limits so that
random requests finish quickly (a 256-token context, a 5 s generation timeout, short speech).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import Server

FUZZ_SECONDS = int(os.environ.get("GENFORGE_FUZZ_SECONDS", "60"))
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


@pytest.mark.slow
@pytest.mark.timeout(FUZZ_SECONDS + 300)
def test_the_fuzzer_finds_no_crash_and_nothing_undocumented(tmp_path):
    if not SCHEMATHESIS.exists():
        pytest.skip("schemathesis is not installed (the test extra)")
    server = Server(tmp_path / "data", env=SMALL_LIMITS).start()
    try:
        server.wait_ready()
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
                "--checks",
                CHECKS,
                "--phases",
                "examples,coverage,fuzzing,stateful",
                "--max-time",
                str(FUZZ_SECONDS),
                "--workers",
                "1",
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
    assert server.proc.returncode is not None
