"""Speech through HTTP on the real engines: Piper (packaged voice) and espeak-ng, listened back with whisper.

The only test double is the scripted runner that forces silent output (the validator's refusal is
what is under test there); everything else runs the real engine worker.
"""

from __future__ import annotations

import json
import shutil

import pytest

from conftest import (
    CONTENT,
    GENERATE,
    ScriptedRunner,
    assert_error,
    count,
    failed_record,
    files_under,
    make_settings,
    running_app,
    runtime_of,
)
from genforge.config import Settings
from genforge.core.catalog import PACKAGED, ModelCatalog
from genforge.engines.base import EngineOutput, SpeechFacts
from genforge.media.audio import encode_wav, silence
from speech_fixtures import (
    PIPER_VOICE,
    SENTENCE,
    TWO_SENTENCES,
    assert_heard,
    needs_espeak,
    needs_piper,
    read_wav,
    sha256,
)


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    with running_app(make_settings(tmp_path_factory.mktemp("speech"), preload=False)) as c:
        yield c


def speak(client, text: str = TWO_SENTENCES, **body):
    return client.post(GENERATE, json={"content_type": "speech", "prompt": text, **body})


def fetch_wav(client, rec: dict) -> bytes:
    """The stored file, checked against its record: audio/wav, sha256, size, sample rate and duration."""
    resp = client.get(rec["artifact"]["url"])
    assert resp.status_code == 200 and resp.headers["content-type"] == "audio/wav", resp.headers
    wav = resp.content
    assert sha256(wav) == rec["artifact"]["sha256"] and len(wav) == rec["artifact"]["size_bytes"]
    rate, channels, width, duration = read_wav(wav)
    assert (rate, channels, width) == (rec["sample_rate"], 1, 2)
    assert duration == pytest.approx(rec["duration_s"], abs=0.001)
    return wav


def assert_succeeded_speech(rec: dict, engine: str, text: str) -> None:
    assert rec["status"] == "succeeded" and rec["error"] is None, rec
    assert rec["content_type"] == "speech" and rec["prompt"] == text
    assert rec["model"]["engine"] == engine and rec["model"]["engine_version"]
    assert len(rec["model"]["file_sha256"]) == 64
    assert rec["artifact"]["media_type"] == "audio/wav"
    assert rec["voice"] and rec["sample_rate"] == 22050 and rec["duration_s"] > 1
    assert rec["timings"]["generate_ms"] > 0


# --- real synthesis ------------------------------------------------------------------------------------
@needs_piper
def test_piper_speaks_the_text_through_http(client):
    resp = speak(client, SENTENCE)
    assert resp.status_code == 201, resp.text
    rec = resp.json()
    assert_succeeded_speech(rec, "piper", SENTENCE)
    assert rec["model"]["name"] == PIPER_VOICE and rec["model"]["file_sha256"] == PACKAGED[PIPER_VOICE].sha256
    assert rec["voice"] == "en_US-joe-medium" and rec["deterministic"] is False and rec["params"]["seed"] is None
    assert_heard(fetch_wav(client, rec), SENTENCE)


@needs_espeak
def test_espeak_speaks_the_text_when_named(client):
    resp = speak(client, SENTENCE, model="espeak-ng")
    assert resp.status_code == 201, resp.text
    rec = resp.json()
    assert_succeeded_speech(rec, "espeak-ng", SENTENCE)
    assert rec["voice"] == "en-us" and rec["model"]["engine_version"].startswith("espeak-ng ")
    wav = fetch_wav(client, rec)
    assert_heard(wav, SENTENCE)
    again = speak(client, SENTENCE, model="espeak-ng").json()
    # espeak-ng is deterministic: the same samples (each file's own Content Credentials make the bytes differ)
    assert again["content_hash"] == rec["content_hash"]


@needs_piper
def test_piper_streams_one_progress_event_per_sentence(client):
    with client.stream(
        "POST", GENERATE, json={"content_type": "voice", "prompt": TWO_SENTENCES, "stream": True}
    ) as resp:
        assert resp.status_code == 201
        events = [
            (b.split("\n")[0].removeprefix("event: "), json.loads(b.split("\n")[1].removeprefix("data: ")))
            for b in resp.read().decode().strip().split("\n\n")
        ]
    assert [e for e in events if e[0] == "progress"] == [
        ("progress", {"step": 1, "total": 2}),
        ("progress", {"step": 2, "total": 2}),
    ]
    kind, rec = events[-1]
    assert kind == "done" and rec["content_type"] == "speech" and rec["sentences"] == 2
    assert_heard(fetch_wav(client, rec), TWO_SENTENCES)


@needs_piper
def test_piper_seed_means_deterministic_and_settings_take_effect(client):
    """With a seed Piper runs with its noise off: the same bytes again, whatever the seed (the record says so)."""
    first = speak(client, params={"seed": 1, "sentence_silence": 0}).json()
    second = speak(client, params={"seed": 2, "sentence_silence": 0}).json()
    assert first["deterministic"] is True and first["params"]["seed"] == 1
    assert first["content_hash"] == second["content_hash"]  # the same samples; each file has its own manifest
    assert any("same audio for every seed" in w for w in first["warnings"])
    gap = speak(client, params={"seed": 1, "sentence_silence": 1.0}).json()  # one gap between two sentences
    assert gap["duration_s"] == pytest.approx(first["duration_s"] + 1.0, abs=0.01)
    fast = speak(client, params={"seed": 1, "sentence_silence": 0, "speed": 2.0}).json()
    assert 0.5 < fast["duration_s"] / first["duration_s"] < 0.75


# --- faults --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("text", ["", "   ", "?!...", "x" * 5001])
def test_empty_or_unspeakable_or_too_long_text_is_422_without_a_record(client, text):
    before = count(client)
    err = assert_error(speak(client, text), 422, "invalid_request")
    assert "prompt" in err["message"]
    assert count(client) == before


@needs_piper
def test_missing_voice_file_is_503_with_a_hint(client, tmp_path):
    """A user's Piper voice (.onnx + .onnx.json) works; its .json gone, then its .onnx gone: 503, never audio."""
    packaged = ModelCatalog(Settings(data_dir=tmp_path), db=None).packaged_path(PACKAGED[PIPER_VOICE])
    onnx = tmp_path / "my-voice.onnx"
    shutil.copyfile(packaged, onnx)
    shutil.copyfile(f"{packaged}.json", f"{onnx}.json")
    runtime_of(client).catalog.add(onnx, name="my-voice", content_type="speech")
    rec = speak(client, SENTENCE, model="my-voice").json()
    assert rec["status"] == "succeeded" and rec["voice"] == "my-voice", rec

    (tmp_path / "my-voice.onnx.json").unlink()
    resp = speak(client, SENTENCE, model="my-voice")
    err = assert_error(resp, 503, "model_unavailable")
    assert "config" in err["message"] and ".onnx.json" in err["hint"]
    failed_record(client, resp, "model_unavailable")

    onnx.unlink()
    resp = speak(client, SENTENCE, model="my-voice")
    err = assert_error(resp, 503, "model_unavailable")
    assert "missing" in err["message"] and "genforge models add" in err["hint"]
    assert failed_record(client, resp, "model_unavailable")["model"]["name"] == "my-voice"


def test_espeak_binary_absent_is_503_with_the_apt_hint(client, tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path / "no-programs-here"))
    resp = speak(client, SENTENCE, model="espeak-ng")
    err = assert_error(resp, 503, "model_unavailable")
    assert "apt-get install espeak-ng" in err["hint"]
    failed_record(client, resp, "model_unavailable")


@needs_espeak
def test_fallback_to_espeak_only_when_allowed_and_recorded(client, monkeypatch):
    """Piper not usable (no voice): 503 with the install hint, unless the request allows the fallback."""
    monkeypatch.setattr(runtime_of(client).catalog, "default_for", lambda content_type: None)
    err = assert_error(speak(client, SENTENCE), 503, "model_unavailable")
    assert "genforge models pull piper-en-us-joe" in err["hint"]
    resp = speak(client, SENTENCE, params={"fallback": True})
    assert resp.status_code == 201, resp.text
    rec = resp.json()
    assert rec["model"]["name"] == "espeak-ng" and rec["fallback_reason"] == "no Piper voice is installed"
    assert "fallback_reason" not in rec["params"]
    assert any("fallback" in w for w in rec["warnings"])


def silent_output() -> EngineOutput:
    """What a broken engine might return: a well-formed WAV of pure silence, three seconds long."""
    return EngineOutput(
        data=encode_wav(silence(3.0, 22050), 22050),
        media_type="audio/wav",
        engine_version="forced",
        load_ms=0,
        generate_ms=5,
        text=SENTENCE,
        facts=SpeechFacts(sample_rate=22050, duration_s=3.0, voice="silent", sentences=1, deterministic=True),
    )


@needs_espeak
def test_engine_producing_silence_is_502_invalid_output(scripted_app):
    client = scripted_app(ScriptedRunner(tokens=[], output=silent_output()))
    resp = speak(client, SENTENCE, model="espeak-ng")
    err = assert_error(resp, 502, "invalid_output")
    assert "silent" in err["message"]
    rec = failed_record(client, resp, "invalid_output")
    assert rec["content_type"] == "speech"
    assert files_under(runtime_of(client).settings.artifacts_dir) == []
    assert client.get(f"{CONTENT}/{rec['id']}/file").status_code == 404


@needs_piper
def test_a_corrupt_voice_is_503_and_the_next_request_still_speaks(client, tmp_path):
    packaged = ModelCatalog(Settings(data_dir=tmp_path), db=None).packaged_path(PACKAGED[PIPER_VOICE])
    onnx = tmp_path / "broken.onnx"
    onnx.write_bytes(b"\x08\x07this is not an ONNX graph" * 100)
    shutil.copyfile(f"{packaged}.json", f"{onnx}.json")
    runtime_of(client).catalog.add(onnx, content_type="speech")
    resp = speak(client, SENTENCE, model="broken")
    err = assert_error(resp, 503, "model_unavailable")
    assert "ONNX Runtime could not load" in err["message"] and "verify" in err["hint"]
    failed_record(client, resp, "model_unavailable")
    assert speak(client, SENTENCE).json()["status"] == "succeeded"
