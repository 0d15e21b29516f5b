"""Transcripts: faster-whisper (CTranslate2, int8 on the CPU) with word timings. Runs inside the engine worker.

The model is a directory (model.bin, config.json, tokenizer.json, vocabulary.json); the catalog resolves the
packaged `whisper-base` to its assembled model.bin, whose directory this engine loads. Audio is decoded by PyAV
(faster-whisper's decoder: WAV, MP3, OGG, FLAC, M4A, ...) and resampled to 16 kHz mono. Silero voice activity
detection (shipped inside faster-whisper) runs first: audio without speech gives no segments, so silence is never
"transcribed" into invented words; the output then says `no_speech`.

The artifact is JSON: text, language, duration, and segments each with their words and timings.
"""

from __future__ import annotations

import importlib.metadata as metadata
import json
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from genforge.engines.base import (
    Emit,
    EngineOutput,
    GenerationJob,
    OneAtATimeEngine,
    ResolvedModel,
    TranscriptFacts,
    params_of,
)
from genforge.engines.params import TranscriptSettings
from genforge.errors import Cancelled, EngineFailed, InvalidRequest, ModelUnavailable

INSTALL_HINT = (
    "Install the transcription extra: `pip install 'genforge[transcribe]'`, then `genforge models pull whisper-base`."
)
NO_SPEECH_WARNING = "no speech was found in the audio (voice activity detection found none): the transcript is empty"


def _faster_whisper() -> Any:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the model is a local directory: never ask a hub
    try:
        import faster_whisper
    except ImportError:
        raise ModelUnavailable("faster-whisper is not installed", hint=INSTALL_HINT) from None
    return faster_whisper


class WhisperEngine(OneAtATimeEngine):
    kind = "faster-whisper"
    content_types = ("transcript",)

    def __init__(self, threads: int):
        self.threads = threads
        self.model: Any = None
        self.loaded: str | None = None  # the model file's sha256
        self.version = ""
        self.lock = threading.Lock()

    def load(self, model: ResolvedModel) -> float:
        with self.lock:
            if self.loaded == model.sha256 and self.model is not None:
                return 0.0
            fw = _faster_whisper()
            start = time.perf_counter()
            directory = Path(model.path).parent
            try:
                self.model = fw.WhisperModel(
                    str(directory),
                    device="cpu",
                    compute_type="int8",
                    cpu_threads=self.threads,
                    local_files_only=True,
                )
            except (RuntimeError, ValueError, OSError) as exc:
                raise ModelUnavailable(
                    f"faster-whisper could not load {directory}: {exc}",
                    hint=f"Reinstall it with `genforge models pull {model.name}`.",
                ) from None
            self.loaded = model.sha256
            self.version = f"faster-whisper-{metadata.version('faster-whisper')}"
            return (time.perf_counter() - start) * 1000

    def generate(self, job: GenerationJob, emit: Emit, cancelled: Callable[[], bool]) -> EngineOutput:
        load_ms = self.load(job.model)
        p = params_of(job, TranscriptSettings)
        if job.audio is None:
            raise InvalidRequest("a transcript needs its audio", field="params")
        fw = _faster_whisper()
        start = time.perf_counter()
        try:
            audio = fw.decode_audio(job.audio.path, sampling_rate=16000)
        except Exception as exc:  # PyAV's decode errors (InvalidDataError, ...) have no common public base here
            raise InvalidRequest(
                f"the audio does not decode: {type(exc).__name__}: {exc}",
                field="file",
                hint="Send WAV, MP3, OGG, FLAC or M4A audio.",
            ) from None
        duration = len(audio) / 16000
        if duration <= 0:
            raise InvalidRequest("the audio has zero length", field="file")
        segments, info = self.model.transcribe(
            audio,
            language=p.language,
            task=p.task,
            beam_size=p.beam_size,
            temperature=p.temperature if p.temperature > 0 else [0.0, 0.2, 0.4, 0.6, 0.8, 1.0],
            initial_prompt=p.initial_prompt,
            word_timestamps=p.word_timestamps,
            vad_filter=True,
            condition_on_previous_text=False,  # a repetition cannot feed the next window
        )
        out: list[dict[str, Any]] = []
        total = max(1, round(duration))
        try:
            for seg in segments:
                if cancelled():
                    raise Cancelled("cancelled while transcribing")
                words = [
                    {
                        "word": w.word.strip(),
                        "start": round(float(w.start), 3),
                        "end": round(float(w.end), 3),
                        "probability": round(float(w.probability), 4),
                    }
                    for w in seg.words or []
                    if w.word.strip()
                ]
                out.append(
                    {
                        "id": len(out),
                        "start": round(float(seg.start), 3),
                        "end": round(float(seg.end), 3),
                        "text": seg.text.strip(),
                        "avg_logprob": round(float(seg.avg_logprob), 4),
                        "no_speech_prob": round(float(seg.no_speech_prob), 4),
                        "compression_ratio": round(float(seg.compression_ratio), 4),
                        "temperature": float(seg.temperature or 0.0),
                        "words": words,
                    }
                )
                emit({"type": "progress", "step": min(total, round(seg.end)), "total": total})
        except RuntimeError as exc:  # CTranslate2's own failures
            raise EngineFailed(f"faster-whisper failed: {exc}") from None
        text = " ".join(s["text"] for s in out if s["text"]).strip()
        speech_s = float(getattr(info, "duration_after_vad", duration) or 0.0)
        no_speech = not text
        doc = {
            "task": p.task,
            "language": info.language,
            "language_probability": round(float(info.language_probability), 4),
            "duration": round(duration, 3),
            "speech_duration": round(speech_s, 3),
            "text": text,
            "no_speech": no_speech,
            "segments": out,
        }
        took = time.perf_counter() - start
        n_words = sum(len(s["words"]) for s in out)
        return EngineOutput(
            data=json.dumps(doc, ensure_ascii=False, indent=1).encode("utf-8"),
            media_type="application/json",
            engine_version=self.version,
            load_ms=load_ms,
            generate_ms=took * 1000,
            text=text,
            facts=TranscriptFacts(
                warnings=[NO_SPEECH_WARNING] if no_speech else [],
                language=info.language,
                language_probability=round(float(info.language_probability), 4),
                duration_s=round(duration, 3),
                speech_s=round(speech_s, 3),
                segments=len(out),
                words=n_words,
                no_speech=no_speech,
                task=p.task,
                source=p.audio or f"upload:{p.upload}",
            ),
        )


def create(settings: Any) -> WhisperEngine:
    return WhisperEngine(threads=settings.threads or min(4, os.cpu_count() or 1))
