"""Speech from the real `genforge` command, as a new user runs it: the WAV it writes plays the sentence."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from conftest import GENFORGE, cli_env, run_cli
from speech_fixtures import PIPER_VOICE, assert_heard, needs_espeak, needs_piper, read_wav, sha256

# The first sentence, made long enough that one misheard word (whisper may write "genforge" as
# "Genforge" or "JANFORGE") cannot decide the test.
GREETING = "Hello from genforge. Please check the weather report before you leave the house tomorrow morning."


def generate_speech(data_dir: Path, *args: str) -> tuple[dict, bytes, str]:
    """Run `genforge generate speech`, then read the file it names and the record it stored."""
    proc = run_cli(data_dir, "generate", "speech", *args)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    content_id = re.search(r"content id: (\S+)", proc.stdout).group(1)
    path = Path(re.search(r"file: (.+\.wav)", proc.stdout).group(1).strip())
    wav = path.read_bytes()
    shown = run_cli(data_dir, "content", "show", content_id)
    assert shown.returncode == 0, shown.stderr
    rec = json.loads(shown.stdout)
    assert rec["status"] == "succeeded" and rec["artifact"]["sha256"] == sha256(wav)
    rate, channels, width, duration = read_wav(wav)
    assert (rate, channels, width) == (rec["sample_rate"], 1, 2)
    assert duration == pytest.approx(rec["duration_s"], abs=0.001)
    return rec, wav, proc.stderr


@needs_piper
def test_cli_speaks_with_piper_and_the_wav_plays_the_sentence(tmp_path):
    rec, wav, stderr = generate_speech(tmp_path, GREETING)
    assert rec["model"]["name"] == PIPER_VOICE and rec["model"]["engine"] == "piper"
    assert "real-time factor" in stderr
    assert_heard(wav, GREETING)
    verified = run_cli(tmp_path, "verify", str(next(tmp_path.rglob("*.wav"))))
    assert verified.returncode == 0 and rec["id"] in verified.stdout


@needs_espeak
def test_cli_speaks_with_espeak_when_named(tmp_path):
    rec, wav, stderr = generate_speech(
        tmp_path, GREETING, "--model", "espeak-ng", "--voice", "en-us", "--speed", "0.9", "--seed", "7"
    )
    assert rec["model"]["engine"] == "espeak-ng" and rec["params"]["speed"] == 0.9 and rec["voice"] == "en-us"
    assert "seed 7 changes nothing" in stderr  # espeak-ng has no randomness, and says so
    assert_heard(wav, GREETING)


def test_cli_without_espeak_says_how_to_install_it(tmp_path):
    env = {**cli_env(tmp_path), "PATH": str(tmp_path / "no-programs-here")}
    import subprocess

    proc = subprocess.run(
        [str(GENFORGE), "generate", "speech", "Hello there.", "--model", "espeak-ng"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "model_unavailable" in proc.stderr and "apt-get install espeak-ng" in proc.stderr
    assert "recorded as failed" in proc.stderr


def test_cli_refuses_empty_text(tmp_path):
    proc = run_cli(tmp_path, "generate", "speech", "   ")
    assert proc.returncode == 2 and "invalid_request" in proc.stderr


@needs_piper
def test_models_list_shows_the_voice_and_its_dataset_licence(tmp_path):
    proc = run_cli(tmp_path, "models", "list")
    assert proc.returncode == 0, proc.stderr
    line = next(x for x in proc.stdout.splitlines() if PIPER_VOICE in x)
    assert "speech" in line and "piper" in line and "CC0" in proc.stdout and "espeak-ng" in proc.stdout


@needs_piper
def test_doctor_runs_a_real_speech_smoke_test(tmp_path):
    proc = run_cli(tmp_path, "doctor")
    assert f"ok   smoke generation (speech, {PIPER_VOICE})" in proc.stdout, proc.stdout
    assert "real-time factor" in proc.stdout
    assert not list((tmp_path / "artifacts").rglob("*.wav")), "the smoke test leaves no content behind"
