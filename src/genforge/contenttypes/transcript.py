"""Transcripts: speech to text with word timings (faster-whisper, engines/whisper.py); the transcript validator;
the word error rate that listen-back uses; SRT and WebVTT of a transcript.

The input is audio: a speech record the caller owns (`params.audio`, checked in the core's plan like a video's
inputs) or an uploaded file (`params.upload`, stored by the core for the caller). The artifact is JSON (segments
with their words and timings); the record's text is the transcript, searchable like any record's.
"""

from __future__ import annotations

import json
import re
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field

from genforge.contenttypes.base import ContentTypeSpec, Plan, check_model, facts_of, parse_params
from genforge.contenttypes.records import RecordBase
from genforge.engines.base import TranscriptFacts, params_of
from genforge.engines.params import TranscriptParams, TranscriptSettings
from genforge.errors import InvalidOutput, InvalidRequest

if TYPE_CHECKING:
    from genforge.engines.base import EngineOutput, GenerationJob

TIMING_SLACK_S = 0.3  # word and segment ends may pass the audio's end by this much (frame rounding)
LOOP_REPEATS = 4  # the same 1-4 word phrase this many times in a row is a hallucination loop, not speech
SPEECH_WITHOUT_TEXT_S = 1.0  # more speech than this (voice activity) with no text at all is a failed transcript


class TranscriptRecord(TranscriptFacts, RecordBase):
    content_type: Literal["transcript"]
    params: TranscriptSettings
    text: str | None = Field(
        description="The transcript (empty when the audio holds no speech; null unless succeeded)."
    )


def plan(req: Any, settings: Any, catalog: Any) -> Plan:
    given = parse_params(TranscriptParams, req.params)
    if req.system is not None:
        raise InvalidRequest("system: a transcript takes no system prompt", field="system")
    model = req.model or catalog.default_for("transcript")
    check_model(catalog, model, "transcript")
    params = TranscriptSettings(**given.model_dump())
    inputs = {"audio": (given.audio, "speech")} if given.audio else None
    return Plan(model, params, inputs=inputs)


# --- what the artifact holds -------------------------------------------------------------------------------
def words_of(doc: dict[str, Any]) -> list[dict[str, Any]]:
    return [w for s in doc.get("segments", []) for w in s.get("words", [])]


def _norm_words(text: str) -> list[str]:
    return re.findall(r"[\w']+", text.lower())


def repetition_loop(words: list[str]) -> str | None:
    """The phrase (1-4 words) repeated LOOP_REPEATS times in a row, if any: whisper's hallucination loop."""
    for n in range(1, 5):
        for i in range(0, len(words) - n * LOOP_REPEATS + 1):
            phrase = words[i : i + n]
            if all(words[i + k * n : i + (k + 1) * n] == phrase for k in range(1, LOOP_REPEATS)):
                return " ".join(phrase)
    return None


def validate(out: EngineOutput, job: GenerationJob) -> None:
    """JSON of the engine's shape; timings increase and lie within the audio; no repetition loop; text for audio
    with speech, and no words for audio without (an empty-speech answer that says so)."""
    if out.media_type != "application/json":
        raise InvalidOutput(f"the transcription engine returned {out.media_type!r}, not application/json")
    params_of(job, TranscriptSettings)
    try:
        doc = json.loads(out.data)
        duration = float(doc["duration"])
        segments = doc["segments"]
        text = str(doc["text"])
    except (ValueError, KeyError, TypeError) as exc:
        raise InvalidOutput(f"the transcript is not the engine's JSON: {exc}") from None
    facts = out.facts
    if not isinstance(facts, TranscriptFacts):
        raise InvalidOutput(f"the transcription engine reported {type(facts).__name__}, not TranscriptFacts")
    if text != (out.text or ""):
        raise InvalidOutput("the transcript's text differs from the record's text")
    limit = duration + TIMING_SLACK_S
    last_seg, last_word = 0.0, 0.0
    for seg in segments:
        if not (last_seg - 0.01 <= seg["start"] <= seg["end"] <= limit):
            raise InvalidOutput(
                f"segment {seg['id']} is timed {seg['start']}-{seg['end']} s: not increasing, or past the "
                f"audio's {duration:.2f} s"
            )
        last_seg = seg["start"]
        for w in seg["words"]:
            if not (last_word - 0.01 <= w["start"] <= w["end"] <= limit):
                raise InvalidOutput(
                    f"the word {w['word']!r} is timed {w['start']}-{w['end']} s: not increasing, or past the "
                    f"audio's {duration:.2f} s"
                )
            last_word = w["start"]
    loop = repetition_loop(_norm_words(text))
    if loop is not None:
        raise InvalidOutput(f"the transcript repeats {loop!r} {LOOP_REPEATS} times in a row (a hallucination loop)")
    speech_s = facts.speech_s or 0.0
    if not text and speech_s > SPEECH_WITHOUT_TEXT_S:
        raise InvalidOutput(f"the audio has {speech_s:.1f} s of speech and nothing was transcribed")
    if text and speech_s <= 0.0:
        raise InvalidOutput("words were transcribed from audio in which no speech was found (invented words)")
    if bool(facts.no_speech) != (not text):
        raise InvalidOutput("the transcript's no_speech flag contradicts its text")


# --- word error rate (listen-back) ----------------------------------------------------------------------
_ONES = (
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen "
    "seventeen eighteen nineteen".split()
)
_TENS = "twenty thirty forty fifty sixty seventy eighty ninety".split()


def _number_words(n: int) -> str:
    """An integer below a million in English words (how a voice reads digits)."""
    if n < 20:
        return _ONES[n]
    if n < 100:
        return _TENS[n // 10 - 2] + ("" if n % 10 == 0 else " " + _ONES[n % 10])
    if n < 1000:
        rest = n % 100
        return _ONES[n // 100] + " hundred" + ("" if rest == 0 else " " + _number_words(rest))
    rest = n % 1000
    return _number_words(n // 1000) + " thousand" + ("" if rest == 0 else " " + _number_words(rest))


def normalise(text: str) -> str:
    """Lower case, numbers as words (under a million), hyphens and punctuation as spaces, single spaces."""
    text = text.lower().replace("%", " percent")
    text = re.sub(r"(?<=\d),(?=\d{3}\b)", "", text)  # 1,000 -> 1000
    text = re.sub(r"\d+", lambda m: _number_words(int(m.group())) if len(m.group()) <= 6 else m.group(), text)
    text = re.sub(r"[^\w\s']|_", " ", text)
    text = re.sub(r"(?<!\w)'|'(?!\w)", " ", text)
    return " ".join(text.split())


def word_error_rate(reference: str, hypothesis: str) -> float:
    """(substitutions + deletions + insertions) / reference words after `normalise`, by jiwer."""
    import jiwer

    ref, hyp = normalise(reference), normalise(hypothesis)
    if not ref:
        return 0.0 if not hyp else 1.0
    if not hyp:
        return 1.0
    return float(jiwer.wer(ref, hyp))


# --- subtitles -------------------------------------------------------------------------------------------
def _stamp(seconds: float, sep: str) -> str:
    ms = max(0, round(seconds * 1000))
    h, rest = divmod(ms, 3_600_000)
    m, rest = divmod(rest, 60_000)
    s, ms = divmod(rest, 1000)
    return f"{h:02d}:{m:02d}:{s:02d}{sep}{ms:03d}"


def cues(doc: dict[str, Any]) -> list[tuple[float, float, str]]:
    return [(float(s["start"]), float(s["end"]), str(s["text"]).strip()) for s in doc.get("segments", []) if s["text"]]


def to_srt(doc: dict[str, Any]) -> str:
    blocks = [
        f"{i}\n{_stamp(a, ',')} --> {_stamp(b, ',')}\n{text}\n" for i, (a, b, text) in enumerate(cues(doc), start=1)
    ]
    return "\n".join(blocks)


def to_vtt(doc: dict[str, Any]) -> str:
    blocks = [f"{_stamp(a, '.')} --> {_stamp(b, '.')}\n{text}\n" for a, b, text in cues(doc)]
    return "WEBVTT\n\n" + "\n".join(blocks)


def record_section(row: Any) -> dict[str, Any]:
    return {**facts_of(row, TranscriptFacts), "text": row.text}


SPEC = ContentTypeSpec(
    name="transcript",
    params=TranscriptParams,
    settings=TranscriptSettings,
    facts=TranscriptFacts,
    record=TranscriptRecord,
    plan=plan,
    validate=validate,
    media_type="application/json",
    suffix=".json",
    no_model_hint="Install faster-whisper (`pip install 'genforge[transcribe]'`) and the model: "
    "`genforge models pull whisper-base`.",
    check_model_path=None,
    record_section=record_section,
)
