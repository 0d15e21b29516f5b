"""espeak-ng (the Debian package) as a subprocess: a light formant-synthesis fallback. Runs in the worker.

Used only when a request names the model `espeak-ng`, or when Piper is not installed and the request
allows a fallback (`params.fallback: true`); never silently. One process per sentence gives progress
events and our own sentence silence; the text goes through stdin, so text starting with `-` is never
taken for an option. espeak-ng is deterministic: the same text and settings give the same bytes.
"""

from __future__ import annotations

import os
import re
import subprocess
import time
from collections.abc import Callable

from genforge.engines.base import (
    Emit,
    EngineOutput,
    GenerationJob,
    OneAtATimeEngine,
    ResolvedModel,
    SpeechFacts,
    check_output,
    params_of,
)
from genforge.engines.params import SpeechSettings
from genforge.errors import Cancelled, EngineFailed, InvalidOutput, InvalidRequest, ModelUnavailable
from genforge.media.audio import WAV_HEADER_BYTES, decode_wav, encode_wav, silence

APT_HINT = "Install it with `apt-get install espeak-ng` (Debian/Ubuntu)."
DEFAULT_VOICE = "en-us"
BASE_WPM = 175  # espeak-ng's default rate, our speed 1.0
MIN_WPM, MAX_WPM = 80, 450  # espeak-ng's accepted range
SENTENCE_END = re.compile(r"(?<=[.!?;])\s+")
TIMEOUT_S = 60


def split_sentences(text: str) -> list[str]:
    return [s.strip() for s in SENTENCE_END.split(text.strip()) if s.strip()]


class EspeakEngine(OneAtATimeEngine):
    kind = "espeak-ng"
    content_types = ("speech",)

    def __init__(self) -> None:
        self.binary: str | None = None
        self.version = ""

    def load(self, model: ResolvedModel) -> float:
        """Check the program runs and read its version; 0 ms when already checked."""
        if self.binary == model.path and os.access(model.path, os.X_OK):
            return 0.0
        start = time.perf_counter()
        self.binary = None
        if not os.access(model.path, os.X_OK):
            raise ModelUnavailable(f"the espeak-ng program {model.path} is missing", hint=APT_HINT)
        try:
            proc = subprocess.run([model.path, "--version"], capture_output=True, text=True, timeout=TIMEOUT_S)
        except OSError as exc:
            raise ModelUnavailable(f"espeak-ng could not be started: {exc}", hint=APT_HINT) from None
        match = re.search(r"text-to-speech:\s*(\S+)", proc.stdout)
        if proc.returncode != 0 or match is None:
            raise ModelUnavailable(
                f"{model.path} --version failed: {(proc.stderr or proc.stdout).strip()[:200]}", hint=APT_HINT
            )
        self.binary, self.version = model.path, f"espeak-ng {match.group(1)}"
        return (time.perf_counter() - start) * 1000

    def _speak(self, sentence: str, voice: str, wpm: int) -> tuple[bytes, int]:
        if self.binary is None:  # generate() loads (finds the program) before it speaks
            raise EngineFailed("espeak-ng is not loaded")
        try:
            proc = subprocess.run(
                [self.binary, "-v", voice, "-s", str(wpm), "-b", "1", "--stdout"],
                input=sentence.encode("utf-8"),
                capture_output=True,
                timeout=TIMEOUT_S,
            )
        except FileNotFoundError:
            self.binary = None
            raise ModelUnavailable("the espeak-ng program disappeared", hint=APT_HINT) from None
        except subprocess.TimeoutExpired:
            raise EngineFailed(f"espeak-ng did not finish a sentence within {TIMEOUT_S} s") from None
        stderr = proc.stderr.decode("utf-8", "replace").strip()
        if proc.returncode != 0 and "voice does not exist" in stderr:
            raise InvalidRequest(
                f"params.voice: espeak-ng has no voice {voice!r}",
                field="params.voice",
                hint="List the voices with `espeak-ng --voices`.",
            )
        if proc.returncode != 0 or not proc.stdout:
            raise EngineFailed(f"espeak-ng exited with {proc.returncode}: {stderr[:300] or 'no output'}")
        try:  # --stdout writes a streaming header (frame count ~2^30); decode_wav reads to the end
            wav = decode_wav(proc.stdout)
        except ValueError as exc:
            raise InvalidOutput(f"espeak-ng wrote no usable WAV: {exc}") from None
        if wav.sample_width != 2 or wav.channels != 1:
            raise InvalidOutput(
                f"espeak-ng wrote {wav.channels}-channel {8 * wav.sample_width}-bit audio, not PCM 16-bit mono"
            )
        return wav.frames, wav.sample_rate

    def generate(self, job: GenerationJob, emit: Emit, cancelled: Callable[[], bool]) -> EngineOutput:
        load_ms = self.load(job.model)
        start = time.perf_counter()
        params = params_of(job, SpeechSettings)
        voice = params.voice or DEFAULT_VOICE
        speed = params.speed
        wpm = round(BASE_WPM * speed)
        warnings = []
        if not MIN_WPM <= wpm <= MAX_WPM:
            clamped = min(MAX_WPM, max(MIN_WPM, wpm))
            warnings.append(
                f"espeak-ng speaks {MIN_WPM}-{MAX_WPM} words a minute: speed {speed} "
                f"({wpm} wpm) was limited to {clamped} wpm (speed {clamped / BASE_WPM:.2f})"
            )
            wpm = clamped
        if params.seed is not None:
            warnings.append(
                f"espeak-ng has no randomness: seed {params.seed} changes nothing (the same text "
                "and settings always give the same audio)"
            )
        if job.fallback_reason:
            warnings.append(f"espeak-ng used as the fallback the request allowed: {job.fallback_reason}")
        sentences = split_sentences(job.prompt)
        parts: list[bytes] = []
        rate = pcm_bytes = 0
        for i, sentence in enumerate(sentences, start=1):
            if cancelled():
                raise Cancelled("cancelled between sentences")
            pcm, rate = self._speak(sentence, voice, wpm)
            if parts:
                parts.append(silence(params.sentence_silence, rate))
                pcm_bytes += len(parts[-1])
            parts.append(pcm)
            pcm_bytes += len(pcm)
            # stop as soon as the audio is over the limits, not after holding all of it
            check_output(job, "the audio", size_bytes=WAV_HEADER_BYTES + pcm_bytes, duration_s=pcm_bytes / 2 / rate)
            emit({"type": "progress", "step": i, "total": len(sentences)})
        if not parts:
            raise InvalidOutput("espeak-ng produced no audio: the text has no sentence to speak")
        pcm = b"".join(parts)
        return EngineOutput(
            data=encode_wav(pcm, rate),
            media_type="audio/wav",
            engine_version=self.version,
            load_ms=load_ms,
            generate_ms=(time.perf_counter() - start) * 1000,
            facts=SpeechFacts(
                sample_rate=rate,
                duration_s=round(len(pcm) / 2 / rate, 3),
                voice=voice,
                sentences=len(sentences),
                deterministic=True,
                warnings=warnings,
            ),
        )


def create(settings) -> EspeakEngine:
    return EspeakEngine()
