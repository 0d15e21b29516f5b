"""Piper neural text-to-speech (`piper-tts`, ONNX Runtime). Runs inside the engine worker process.

The voice is a `.onnx` file with its `.onnx.json` config beside it (the packaged `piper-en-us-joe` voice,
or any Piper voice added with `genforge models add PATH --type speech`). Piper yields one audio chunk
per sentence: each is a progress event, and `sentence_silence` seconds of silence go between them.

Seeds. The voice graph samples its noise with ONNX `RandomNormalLike` nodes that take no per-call seed,
so Piper cannot be seeded per request. Without a seed the natural (sampled) prosody is used and the
audio differs a little from run to run. With a seed, synthesis is deterministic: both noise scales are
set to 0, which gives the same bytes for the same text and settings, for every seed value (the record
says so in `deterministic` and a warning). piper-tts is GPL-3.0-or-later: it is the optional `speech` extra.
"""

from __future__ import annotations

import importlib.metadata as metadata
import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

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
from genforge.media.audio import WAV_HEADER_BYTES, encode_wav, silence

if TYPE_CHECKING:
    from piper import PiperVoice

    from genforge.config import Settings

# onnxruntime's Linux wheel has telemetry that writes a device id under ~/.cache/Microsoft at *import*;
# the switch must be set before onnxruntime is imported in this (worker) process.
os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")

INSTALL_HINT = "Install the speech extra: `pip install 'genforge[speech]'` (piper-tts is GPL-3.0)."


def config_path(model_path: str | Path) -> Path:
    """A Piper voice's config: `NAME.onnx.json` beside `NAME.onnx`."""
    return Path(f"{model_path}.json")


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "unknown"


class PiperEngine(OneAtATimeEngine):
    kind = "piper"
    content_types = ("speech",)

    def __init__(self, n_threads: int):
        self.n_threads = n_threads
        self._key: tuple[str, str, int, int] | None = None  # (path, sha256, config size, config mtime)
        self._voice: PiperVoice | None = None
        self._name = ""
        self.version = ""

    def load(self, model: ResolvedModel) -> float:
        """Keep one voice warm (an ONNX session with our thread count); 0 ms when it already is.

        The config is checked on every call: a voice whose .onnx.json went away or changed is not used warm.
        """
        start = time.perf_counter()
        cfg_file = config_path(model.path)
        if not Path(model.path).is_file():
            raise ModelUnavailable(
                f"the Piper voice file {model.path} of {model.name!r} is missing",
                hint=f"Reinstall it with `genforge models pull {model.name}`, or add the "
                "voice again with `genforge models add PATH.onnx --type speech`.",
            )
        if not cfg_file.is_file():
            raise ModelUnavailable(
                f"the Piper voice {model.name!r} has no config file {cfg_file}",
                hint="Put the voice's .onnx.json beside its .onnx file (Piper voices come as a pair).",
            )
        stat = cfg_file.stat()
        key = (model.path, model.sha256, stat.st_size, stat.st_mtime_ns)
        if self._key == key:
            return 0.0
        try:
            import onnxruntime as ort
            from piper import PiperConfig, PiperVoice
        except ImportError as exc:
            raise ModelUnavailable(f"piper-tts is not installed ({exc})", hint=INSTALL_HINT) from None
        self._key = self._voice = None
        try:
            config = PiperConfig.from_dict(json.loads(cfg_file.read_text(encoding="utf-8")))
        except (ValueError, KeyError, TypeError) as exc:
            raise ModelUnavailable(
                f"the Piper config {cfg_file} is not usable: {type(exc).__name__}: {exc}",
                hint="Use the .onnx.json that came with the voice.",
            ) from None
        # PiperVoice.load() takes no session options (ONNX Runtime would take every core and spin);
        # build the session ourselves and use PiperVoice's dataclass constructor.
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = self.n_threads
        opts.inter_op_num_threads = 1
        # No busy-waiting between ops: the engine shares the cores with the text worker (measured on 2 busy
        # cores: real-time factor 0.137 without spinning, 0.175 with it).
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        try:
            session = ort.InferenceSession(model.path, sess_options=opts, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own exception types (InvalidProtobuf, Fail, ...)
            raise ModelUnavailable(
                f"ONNX Runtime could not load the Piper voice {model.name!r} from "
                f"{model.path}: {type(exc).__name__}: {str(exc)[:300]}",
                hint="The file may be corrupt or not a Piper voice; check it with `genforge models verify`.",
            ) from None
        self._voice = PiperVoice(session=session, config=config)
        self._key = key
        self._name = Path(model.path).name.removesuffix(".onnx")
        self.version = f"piper-tts {_version('piper-tts')}, onnxruntime {ort.__version__}"
        return (time.perf_counter() - start) * 1000

    @property
    def _loaded_voice(self) -> PiperVoice:
        if self._voice is None:  # generate() loads the job's voice first
            raise EngineFailed("Piper has no voice loaded")
        return self._voice

    def _speaker(self, voice: str | None) -> tuple[int | None, str]:
        """Piper `voice` parameter: a speaker of a multi-speaker voice (name or number)."""
        config = self._loaded_voice.config
        if voice is None or voice == self._name:
            return None, self._name
        if config.num_speakers <= 1:
            raise InvalidRequest(
                f"params.voice: the Piper voice {self._name!r} has a single speaker; "
                f"leave voice unset (or {self._name!r})",
                field="params.voice",
                hint="Choose another voice with `model` (see `genforge models list`).",
            )
        if voice in config.speaker_id_map:
            return config.speaker_id_map[voice], f"{self._name}:{voice}"
        if voice.isdigit() and int(voice) < config.num_speakers:
            return int(voice), f"{self._name}:{voice}"
        names = ", ".join(list(config.speaker_id_map)[:20])
        raise InvalidRequest(
            f"params.voice: {voice!r} is not a speaker of {self._name!r} (speakers: {names})", field="params.voice"
        )

    def generate(self, job: GenerationJob, emit: Emit, cancelled: Callable[[], bool]) -> EngineOutput:
        from piper import SynthesisConfig

        load_ms = self.load(job.model)
        start = time.perf_counter()
        params, voice = params_of(job, SpeechSettings), self._loaded_voice
        speaker_id, voice_name = self._speaker(params.voice)
        speed = params.speed
        deterministic = params.seed is not None
        syn = SynthesisConfig(speaker_id=speaker_id, length_scale=voice.config.length_scale / speed)
        if deterministic:  # no seedable noise in the graph: a seed asks for reproducible output
            syn.noise_scale, syn.noise_w_scale = 0.0, 0.0
        rate = voice.config.sample_rate
        gap = silence(params.sentence_silence, rate)
        total = sum(1 for sentence in voice.phonemize(job.prompt) if sentence)
        parts: list[bytes] = []
        sentences = pcm_bytes = 0
        for sentences, chunk in enumerate(voice.synthesize(job.prompt, syn), start=1):
            if cancelled():
                raise Cancelled("cancelled between sentences")
            if parts:
                parts.append(gap)
                pcm_bytes += len(gap)
            parts.append(chunk.audio_int16_bytes)
            pcm_bytes += len(chunk.audio_int16_bytes)
            # stop as soon as the audio is over the limits, not after holding all of it
            check_output(job, "the audio", size_bytes=WAV_HEADER_BYTES + pcm_bytes, duration_s=pcm_bytes / 2 / rate)
            emit({"type": "progress", "step": sentences, "total": total})
        if not parts:
            raise InvalidOutput("Piper produced no audio: the text has nothing it can pronounce")
        pcm = b"".join(parts)
        warnings: list[str] = []
        if deterministic:
            warnings.append(
                f"Piper cannot seed its noise per request: seed {params.seed} selected deterministic "
                "synthesis (noise off), which gives the same audio for every seed value"
            )
        return EngineOutput(
            data=encode_wav(pcm, rate),
            media_type="audio/wav",
            engine_version=self.version,
            load_ms=load_ms,
            generate_ms=(time.perf_counter() - start) * 1000,
            facts=SpeechFacts(
                sample_rate=rate,
                duration_s=round(len(pcm) / 2 / rate, 3),
                voice=voice_name,
                sentences=sentences,
                deterministic=deterministic,
                warnings=warnings,
            ),
        )


def create(settings: Settings) -> PiperEngine:
    return PiperEngine(n_threads=settings.n_threads)
