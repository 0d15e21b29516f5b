"""The `genforge` command line, run as a user runs it: a subprocess with its own GENFORGE_DATA_DIR."""

from __future__ import annotations

import json
import re

import pytest

from conftest import DEFAULT_MODEL, fake_gguf, files_under, run_cli, sha256
from genforge.core.catalog import PACKAGED

pytestmark = pytest.mark.slow

ID = re.compile(r"content id: ([0-9a-f-]{36})")


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("cli") / "data"


@pytest.fixture(scope="module")
def generated(data_dir) -> dict:
    """`genforge generate text`, once: its output and the record it names."""
    run = run_cli(
        data_dir,
        "generate",
        "text",
        "What is the capital of France? Answer in one word.",
        "--max-tokens",
        "12",
        "--seed",
        "7",
        "--temperature",
        "0",
    )
    assert run.returncode == 0, run.stderr
    match = ID.search(run.stdout)
    assert match, run.stdout
    show = run_cli(data_dir, "content", "show", match.group(1))
    assert show.returncode == 0, show.stderr
    return {"stdout": run.stdout, "stderr": run.stderr, "record": json.loads(show.stdout)}


def test_generate_text_prints_the_text_and_the_id_and_stores_one_artifact(data_dir, generated):
    rec = generated["record"]
    assert rec["status"] == "succeeded"
    assert rec["text"].strip() and rec["text"].strip() in generated["stdout"]
    assert "paris" in rec["text"].lower()
    assert rec["model"]["file_sha256"] == PACKAGED[DEFAULT_MODEL].sha256
    assert rec["usage"]["completion_tokens"] <= 12
    assert "tok/s" in generated["stderr"]

    files = files_under(data_dir / "artifacts")
    assert len(files) == 1
    assert files[0].read_bytes() == rec["text"].encode()
    assert sha256(files[0].read_bytes()) == rec["artifact"]["sha256"]


def test_verify_accepts_our_artifact(data_dir, generated):
    artifact = files_under(data_dir / "artifacts")[0]
    run = run_cli(data_dir, "verify", str(artifact))
    assert run.returncode == 0, run.stdout + run.stderr
    assert "genforge artifact" in run.stdout
    assert generated["record"]["id"] in run.stdout


def test_verify_rejects_a_stranger_file(data_dir, generated, tmp_path):
    stranger = tmp_path / "stranger.txt"
    stranger.write_text(generated["record"]["text"] + " (edited)")
    run = run_cli(data_dir, "verify", str(stranger))
    assert run.returncode != 0
    assert "not a genforge artifact" in run.stdout

    assert run_cli(data_dir, "verify", str(tmp_path / "absent.txt")).returncode != 0


def test_models_list(data_dir):
    run = run_cli(data_dir, "models", "list")
    assert run.returncode == 0, run.stderr
    smol = next(line for line in run.stdout.splitlines() if DEFAULT_MODEL in line)
    assert "yes" in smol and PACKAGED[DEFAULT_MODEL].sha256[:12] in smol and "llama.cpp" in smol
    gemma = next(line for line in run.stdout.splitlines() if "gemma3-270m" in line)
    assert " no " in gemma


def test_models_add_rejects_a_file_that_is_not_gguf(data_dir, tmp_path):
    path = tmp_path / "weights.safetensors"
    path.write_bytes(b'{"not": "gguf"}' + bytes(64))
    run = run_cli(data_dir, "models", "add", str(path), "--name", "notgguf")
    assert run.returncode != 0
    assert "not a GGUF file" in run.stderr
    assert "notgguf" not in run_cli(data_dir, "models", "list").stdout


def test_models_add_registers_a_gguf(data_dir, tmp_path):
    path = fake_gguf(tmp_path / "mine.gguf")
    run = run_cli(data_dir, "models", "add", str(path), "--name", "mine")
    assert run.returncode == 0, run.stderr
    assert sha256(path.read_bytes())[:12] in run.stdout
    assert "mine" in run_cli(data_dir, "models", "list").stdout


def test_errors_print_their_code_and_the_message_verbatim(data_dir, tmp_path):
    odd = tmp_path / "[draft" / "]weights.bin"  # a path that contains "[/]"
    odd.parent.mkdir()
    odd.write_bytes(b"not a model")
    run = run_cli(data_dir, "models", "add", str(odd), "--name", "odd")
    assert run.returncode == 2
    assert "not a GGUF file" in run.stderr
    assert "[invalid_request]" in run.stderr and str(odd) in run.stderr, run.stderr


def test_generate_text_refuses_an_empty_prompt(data_dir):
    run = run_cli(data_dir, "generate", "text", "   ")
    assert run.returncode == 2
    assert "prompt" in run.stderr


def test_content_list_show_and_rm(data_dir, generated):
    content_id = generated["record"]["id"]
    listed = run_cli(data_dir, "content", "list")
    assert listed.returncode == 0, listed.stderr
    assert content_id in listed.stdout and "succeeded" in listed.stdout

    removed = run_cli(data_dir, "content", "rm", content_id)
    assert removed.returncode == 0, removed.stderr
    assert files_under(data_dir / "artifacts") == []

    gone = run_cli(data_dir, "content", "show", content_id)
    assert gone.returncode == 2
    assert f"no content with id '{content_id}'" in gone.stderr
    assert run_cli(data_dir, "content", "rm", content_id).returncode == 2
    assert content_id not in run_cli(data_dir, "content", "list").stdout


def test_doctor_passes_and_reports_tokens_per_second(tmp_path):
    run = run_cli(tmp_path / "doctor-data", "doctor")
    assert run.returncode == 0, run.stdout + run.stderr
    assert "tok/s" in run.stdout
    assert "FAIL" not in run.stdout
    assert f"model {DEFAULT_MODEL}: sha256 matches" in run.stdout


def test_doctor_fails_with_a_hint_when_the_default_model_is_missing(tmp_path):
    run = run_cli(tmp_path / "doctor-data", "doctor", env={"GENFORGE_DEFAULT_TEXT_MODEL": "not-installed"})
    assert run.returncode != 0, run.stdout
    assert "FAIL" in run.stdout and "not-installed" in run.stdout
    assert "hint:" in run.stdout
