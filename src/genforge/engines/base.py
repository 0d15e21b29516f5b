"""The engine contract: what every engine receives, what it returns, and the two ways engines run.

Engines know nothing of HTTP or the database: this module imports pydantic and genforge.errors only, and a
test proves that importing any engine module loads neither SQLAlchemy, Alembic nor FastAPI.

- `OneAtATimeEngine` (images, speech): `generate()` runs one job to the end, reporting progress through
  `emit` and checking `cancelled()` between steps.
- `BatchingEngine` (llama.cpp): `submit()` queues a job, `step()` advances every running job by one engine
  step, `cancel()` stops one, `busy` says whether there is work. The worker calls `step()` in a loop, so
  many jobs share one model pass.
The worker (genforge/worker.py) dispatches on which of the two an engine declares itself to be.
"""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field

from genforge.engines.params import EngineParams, P
from genforge.errors import InvalidOutput

if TYPE_CHECKING:
    from genforge.media.images import PixelCheck

# Progress and token events: {"type": "token", "text": ...} or {"type": "progress", "step": i, "total": n}.
Emit = Callable[[dict[str, Any]], None]


@dataclass(frozen=True)
class ResolvedModel:
    """An installed model whose file is present and whose hash is known: what an engine loads."""

    name: str
    content_type: str
    engine: str
    path: str
    sha256: str
    size_bytes: int
    chat: bool
    source: dict[str, Any] | None = None  # pulled from a hub: {"repo", "revision", "file"}
    # A remote model (engine "remote"): `path` is the server's base URL, `sha256` empty (no file here).
    served_model: str | None = None  # the model id the remote serves
    api_key_env: str | None = None  # the environment variable holding its API key, if it needs one
    # Registered with --allow-insecure: its key (or the URL's password) may go over plain http to a host that is
    # not this machine. Without it the engine refuses to send them there.
    allow_insecure: bool = False


@dataclass(frozen=True)
class VideoInputs:
    """Video only: the stored artifacts a video is made of, by path (the engine never reads the database)."""

    image_path: str
    narration_path: str


@dataclass(frozen=True)
class LoraFile:
    """A LoRA adapter resolved for a job: its file, its sha256, the weight to apply."""

    name: str
    path: str
    sha256: str
    weight: float


@dataclass(frozen=True)
class ImageInputs:
    """Images (diffusers): the stored pictures a job starts from, by path, and the LoRAs it applies. The engine
    never reads the database: the service resolved them (content ids or uploads the caller may use)."""

    init_image: str | None = None
    mask: str | None = None  # white = repaint; the unmasked pixels are pasted back from the init image
    loras: tuple[LoraFile, ...] = ()


@dataclass(frozen=True)
class AudioInput:
    """Transcripts only: the audio file to transcribe (a stored speech record's, or an upload), by path."""

    path: str


@dataclass(frozen=True)
class CaptionWord:
    """Video captions: one spoken word of the narration and when it is spoken (seconds)."""

    word: str
    start: float
    end: float


@dataclass(frozen=True)
class TextPolicy:
    """Text only: what a generated text must respect to count as a success (a persona's forbidden phrases, a
    platform's character limit). The text validator enforces it; the service retries with the next seed."""

    forbidden_phrases: tuple[str, ...] = ()
    max_chars: int | None = None
    min_words: int | None = None  # e.g. a caption that will be spoken: emoji alone are not a caption


@dataclass(frozen=True)
class IdentityPolicy:
    """What a persona's images must show: its face, as measured against its reference images (content ids or
    upload ids) by genforge.core.identity. Below `min_similarity` the service retries with the next seed, up to
    `attempts` runs (GENFORGE_POLICY_ATTEMPTS when None)."""

    references: tuple[str, ...]
    min_similarity: float
    attempts: int | None = None


@dataclass(frozen=True)
class OutputLimits:
    """The most one artifact may be (GENFORGE_SPEECH_MAX_*, GENFORGE_VIDEO_MAX_*): an engine stops as soon as its
    output is over a limit, and the validator fails output that is (both `invalid_output`). None: no limit."""

    max_duration_s: float | None = None
    max_bytes: int | None = None


@dataclass
class GenerationJob:
    content_id: str
    content_type: str
    model: ResolvedModel
    prompt: str
    system: str | None
    # The complete, typed parameters of the content type (engines/params.py): exactly what the record stores and a
    # client can send again. The seed is always set for text and images. An engine reads its own with params_of().
    params: EngineParams
    # Text only: a whole chat (the OpenAI API) instead of prompt + system, and raw continuation (no template).
    messages: list[dict[str, Any]] | None = None
    raw: bool = False
    # Speech only: why the espeak-ng fallback runs (the request allowed it), for the record's warnings.
    fallback_reason: str | None = None
    policy: TextPolicy | None = None
    inputs: VideoInputs | ImageInputs | None = None
    limits: OutputLimits | None = None
    audio: AudioInput | None = None  # transcripts: what to transcribe
    captions: tuple[CaptionWord, ...] | None = None  # videos with captions: the narration's timed words


def check_output(
    job: GenerationJob, what: str, *, size_bytes: int | None = None, duration_s: float | None = None
) -> None:
    """Raise InvalidOutput when output of this size (bytes of the artifact) or length is over the job's limits;
    engines call it as their output grows (to stop early), validators on the finished output."""
    limits = job.limits
    if limits is None:
        return
    setting = f"GENFORGE_{job.content_type.upper()}_MAX_"
    if limits.max_bytes is not None and size_bytes is not None and size_bytes > limits.max_bytes:
        raise InvalidOutput(
            f"{what} is {size_bytes} bytes, over the limit of {limits.max_bytes}",
            hint=f"Ask for shorter output, or raise {setting}BYTES on the server.",
            details={"limit": limits.max_bytes},
        )
    if limits.max_duration_s is not None and duration_s is not None and duration_s > limits.max_duration_s:
        raise InvalidOutput(
            f"{what} lasts {duration_s:.1f} s, over the limit of {limits.max_duration_s:g} s",
            hint=f"Ask for shorter output, or raise {setting}DURATION_S on the server.",
            details={"limit": limits.max_duration_s},
        )


# --- what engines return: the artifact and the facts of its type -------------------------------------
class _Facts(BaseModel):
    """The facts an engine reports with its output; stored with the record and served in its section.
    Engines fill every field; they are optional so that a failed record (no output) has the same shape."""

    model_config = ConfigDict(extra="forbid")

    warnings: list[str] = Field(
        default_factory=list,
        description="Anything the caller should know about the "
        "result (a limit applied, a parameter without effect, a prompt ignored).",
    )


class TextFacts(_Facts):
    ttft_ms: float | None = Field(None, description="Milliseconds from admission to the first generated token.")
    batch_size_max: int | None = Field(None, description="Most sequences decoded together with this one.")
    prompt_tokens_cached: int | None = Field(None, description="Prompt tokens reused from a slot's KV cache.")
    kv_cache_type: str | None = Field(None, description="llama.cpp: the KV cache's precision, f16 or q8_0.")
    forced_tokens: int | None = Field(
        None, description="Constrained answers: tokens the grammar forced, decoded in batches without sampling."
    )
    tool_template: Literal["model", "generic"] | None = Field(
        None,
        description="With tools: 'model' when the model's chat template rendered them, 'generic' when genforge "
        "described them in the system message (templates without tool support).",
    )


class ImageDetails(BaseModel):
    """How the image was made; diffusers fills the pipeline fields, the portrait engine the others."""

    model_config = ConfigDict(extra="forbid")

    pipeline: str | None = Field(None, description="diffusers pipeline class.")
    scheduler: str | None = Field(None, description="diffusers scheduler class that ran.")
    device: str | None = Field(None, description="cpu or cuda.")
    dtype: str | None = Field(None, description="float32 or float16.")
    denoising_steps: int | None = Field(None, description="Denoising steps the scheduler ran.")
    native_size: int | None = Field(None, description="Portrait: the network's native square size.")
    downscaled: bool | None = Field(None, description="Portrait: downscaled from the native size.")
    resample: str | None = Field(None, description="Portrait: the downscaling filter, when downscaled.")
    truncation_psi: float | None = Field(None, description="Portrait: StyleGAN truncation.")
    precision: str | None = Field(
        None,
        description="Inference precision: f32 (portrait), fp32 or fp16 (torch), fp32, int8 or w8a8 (OpenVINO).",
    )
    backend: str | None = Field(None, description="diffusers: the runtime that ran the networks, torch or openvino.")
    backend_version: str | None = Field(None, description="diffusers: that runtime's version.")
    cache_key: str | None = Field(
        None, description="OpenVINO: the converted model's cache entry (checkpoint sha256, OpenVINO, precision)."
    )
    decoder: str | None = Field(
        None, description="diffusers: what decoded the latents, full (the checkpoint's VAE) or tiny (AutoencoderTiny)."
    )
    decoder_sha256: str | None = Field(None, description="diffusers: the tiny decoder's sha256 (its directory's).")
    decoder_cache_key: str | None = Field(None, description="OpenVINO: the converted tiny decoder's cache entry.")
    stage_ms: dict[str, float] | None = Field(
        None, description="diffusers: milliseconds in text_encoder, denoise (all steps) and decoder."
    )
    stages: list[str] | None = Field(None, description="Portrait: the stages reported as progress steps.")
    license: str | None = Field(None, description="Portrait: the licence of the weights.")
    mode: str | None = Field(None, description="diffusers: txt2img, img2img or inpaint.")
    strength: float | None = Field(None, description="img2img and inpaint: how much of the schedule ran.")
    loras: list[dict[str, Any]] | None = Field(None, description="LoRAs applied: name, weight, sha256.")


class ImageInputRef(BaseModel):
    """An input picture of an image record: a content id or an upload (and the sha256 of its file)."""

    model_config = ConfigDict(extra="forbid")

    role: str = Field(description="init_image, mask, or reference (a persona's face).")
    content_id: str | None = Field(None, description="The image record it came from.")
    upload_id: str | None = Field(None, description="The upload it came from.")
    sha256: str = Field(description="sha256 of the input's file.")


class IdentityFacts(BaseModel):
    """A persona's face identity, measured on the output (genforge.core.identity)."""

    model_config = ConfigDict(extra="forbid")

    similarity: float = Field(
        description="1 - the Euclidean distance between the dlib face embeddings of the output and the nearest "
        "reference face (1: the same embedding; two different portrait faces measured at most 0.65, median 0.3: "
        "docs/benchmarks.md)."
    )
    threshold: float = Field(description="The persona's min_similarity: lower is refused (policy_violation).")
    reference: list[str] = Field(description="The reference images (content ids or upload ids).")
    model: str = Field(description="The face embedding model and its landmark model.")


class ImageFacts(_Facts):
    width: int | None = Field(None, description="Width of the image in pixels.")
    height: int | None = Field(None, description="Height of the image in pixels.")
    steps: int | None = Field(
        None, description="Steps reported as progress (denoising steps, or the portrait's stages)."
    )
    image: ImageDetails | None = None
    content_hash: str | None = Field(None, description="sha256 of the decoded pixels: finds a stripped copy.")
    inputs: list[ImageInputRef] | None = Field(None, description="The pictures it was made from (img2img, mask).")
    identity: IdentityFacts | None = Field(None, description="A persona's face, measured on this image.")


class ListenBack(BaseModel):
    """Listen-back of a narration: what a transcription model heard, against the text the voice was given."""

    model_config = ConfigDict(extra="forbid")

    wer: float = Field(description="Word error rate of the transcript against the text (after normalisation).")
    threshold: float = Field(description="The most WER a narration may have (GENFORGE_LISTEN_BACK_MAX_WER).")
    transcript_id: str = Field(description="The transcript record of what was heard.")
    model: str = Field(description="The transcription model.")
    heard: str = Field(description="The transcript's text.")
    attempts: int = Field(description="Narrations made until one passed (each is in the record's attempts).")


class SpeechFacts(_Facts):
    sample_rate: int | None = Field(None, description="Samples per second of the WAV.")
    duration_s: float | None = Field(None, description="Length of the audio in seconds.")
    voice: str | None = Field(None, description="The voice (and speaker) that spoke.")
    sentences: int | None = Field(None, description="Sentences synthesised (one progress step each).")
    deterministic: bool | None = Field(None, description="Whether the same request gives the same audio bytes.")
    content_hash: str | None = Field(None, description="sha256 of the decoded samples: finds a stripped copy.")
    listen_back: ListenBack | None = Field(None, description="Listen-back's verdict, when it ran.")


class TranscriptFacts(_Facts):
    language: str | None = Field(None, description="The language transcribed (given, or detected).")
    language_probability: float | None = Field(None, description="How sure the detection was (1 when given).")
    duration_s: float | None = Field(None, description="Length of the audio in seconds.")
    speech_s: float | None = Field(None, description="Seconds of it that voice activity detection found speech in.")
    segments: int | None = Field(None, description="Segments transcribed.")
    words: int | None = Field(None, description="Words transcribed (each with its timing in the artifact).")
    no_speech: bool | None = Field(None, description="True when the audio holds no speech: the text is empty.")
    task: str | None = Field(None, description="transcribe, or translate (into English).")
    source: str | None = Field(None, description="What was transcribed: a record's id, or upload:SHA256.")


class CaptionsFacts(BaseModel):
    model_config = ConfigDict(extra="forbid")

    transcript_id: str = Field(description="The transcript of the narration whose word timings the captions use.")
    words: int = Field(description="Captioned words.")
    style: dict[str, Any] = Field(description="The caption style (position, size, highlight).")
    font: str = Field(description="The font file that drew them.")


class VideoFacts(_Facts):
    width: int | None = Field(None, description="Frame width in pixels.")
    height: int | None = Field(None, description="Frame height in pixels.")
    fps: int | None = Field(None, description="Frames per second.")
    frames: int | None = Field(None, description="Video frames encoded.")
    duration_s: float | None = Field(None, description="Length of the video track in seconds.")
    narration_s: float | None = Field(None, description="Length of the narration (the soundtrack) in seconds.")
    video_codec: str | None = Field(None, description="h264.")
    audio_codec: str | None = Field(None, description="aac.")
    realtime_factor: float | None = Field(None, description="Seconds of video encoded per second of encoding.")
    captions: CaptionsFacts | None = Field(None, description="Burned-in captions, when asked for.")


@dataclass
class EngineOutput:
    data: bytes  # the artifact's bytes, exactly as they will be stored
    media_type: str
    engine_version: str
    load_ms: float
    generate_ms: float
    facts: _Facts
    text: str | None = None
    finish_reason: str | None = None
    usage: dict[str, Any] | None = None
    # What the engine learned about the model while running (a remote's base URL, served id, fingerprint):
    # extra fields of the record's `model` (records.ModelInfo).
    provenance: dict[str, Any] | None = None
    # The engine kind that made the output when it is not the one the job was sent to (the OpenVINO image
    # engine falling back to torch); the record then names it.
    engine: str | None = None
    # Images: the pixel checks made on the array that was encoded (genforge.media.images.PixelCheck); the
    # validator then checks the PNG's bytes instead of decoding them again.
    pixels: PixelCheck | None = None


# --- the two engine protocols --------------------------------------------------------------------------
class OneAtATimeEngine(ABC):
    kind: ClassVar[str]
    content_types: ClassVar[tuple[str, ...]]
    uses_cores: ClassVar[bool] = True  # False for engines that compute elsewhere (a remote server)

    @abstractmethod
    def load(self, model: ResolvedModel) -> float:
        """Load (or keep) the model; returns milliseconds spent loading, 0 when already warm."""

    @abstractmethod
    def generate(self, job: GenerationJob, emit: Emit, cancelled: Callable[[], bool]) -> EngineOutput:
        """Run the model. Raises typed errors from genforge.errors, never returns empty output as success."""


@dataclass
class Update:
    """A token or progress event of a running job."""

    job_id: str
    event: dict[str, Any]


@dataclass
class Done:
    job_id: str
    output: Any  # EngineOutput for a generation, load milliseconds (float) for a load


@dataclass
class Failed:
    job_id: str
    error: BaseException


EngineEvent = Update | Done | Failed


class BatchingEngine(ABC):
    kind: ClassVar[str]
    content_types: ClassVar[tuple[str, ...]]

    @abstractmethod
    def load(self, model: ResolvedModel) -> float:
        """Load (or keep) the model; returns milliseconds spent loading, 0 when already warm."""

    @abstractmethod
    def submit(self, job: GenerationJob) -> list[EngineEvent]:
        """Queue a job; it starts at a later step."""

    @abstractmethod
    def step(self) -> list[EngineEvent]:
        """Advance every running job by one step; the events of all of them."""

    @abstractmethod
    def cancel(self, job_id: str) -> list[EngineEvent]:
        """Stop a job: at once when it is waiting, at the next step when it is running."""

    @property
    @abstractmethod
    def busy(self) -> bool:
        """Whether a job is waiting or running."""


class EngineClient(Protocol):
    """How the core runs a job on an engine, wherever the engine lives: a typed job in, its events to `emit` as
    they happen (tokens, progress), its typed output back, or a typed error. `engines.pool.EnginePool` implements
    it (engines in supervised child processes); `started` runs once the engine has the job, `cancel` stops it
    between tokens or steps."""

    def generate(
        self,
        job: GenerationJob,
        emit: Emit | None = None,
        timeout: float | None = None,
        cancel: threading.Event | None = None,
        started: Callable[[], None] | None = None,
    ) -> EngineOutput: ...

    def load(self, model: ResolvedModel, timeout: float = 300) -> float: ...

    def stop(self) -> None: ...


def params_of(job: GenerationJob, kind: type[P]) -> P:
    """The job's parameters as the type this engine runs (its planner made them so); any other is a bug, refused."""
    if not isinstance(job.params, kind):
        from genforge.errors import EngineFailed

        raise EngineFailed(f"the engine got {type(job.params).__name__} parameters, not {kind.__name__}")
    return job.params
