"""The complete, typed parameters an engine receives: what the content types' planners make of a request, what the
record stores as its `params`, and what a client can send again to repeat it.

They live here, below the content types, so that `GenerationJob.params` is one declared union (`EngineParams`)
instead of `Any`: an engine narrows it to its own type with `params_of` and reads typed fields, and "go to
definition" leads from a request's `params.seed` to the sampler that uses it. The content types re-export them.
"""

from __future__ import annotations

from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, model_validator

SEED_LIMIT = 2**32  # seeds are 0 .. 2^32-1 for every engine
MAX_TOKENS_LIMIT = 65_536  # the schema's bound; the context size bounds it further at run time


# --- text (llama.cpp, remote OpenAI-compatible servers) ---------------------------------------------------
class ResponseFormat(BaseModel):
    """What shape the answer takes: free text, any JSON object, or JSON matching `json_schema` (checked with
    jsonschema before the record succeeds; sampling constrained to it by llguidance)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    type: Literal["text", "json_object", "json_schema"]
    json_schema: dict[str, Any] | None = Field(None, description="json_schema: the JSON schema of the answer.")
    name: str | None = Field(None, max_length=64, description="The schema's name (OpenAI's json_schema.name).")
    strict: bool = Field(True, description="Always enforced: the answer matches its schema or the record fails.")

    @model_validator(mode="after")
    def _schema_given(self) -> ResponseFormat:
        if (self.type == "json_schema") != (self.json_schema is not None):
            raise ValueError("json_schema is given exactly when type is json_schema")
        return self


class ToolFunction(BaseModel):
    """A function the model may call: its name, what it does, and the JSON schema of its arguments."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")
    description: str | None = Field(None, max_length=4000)
    parameters: dict[str, Any] | None = Field(None, description="JSON schema of the arguments object.")


class TextSettings(BaseModel):
    """The complete sampling parameters of a text generation, as recorded (send them as `params` to repeat it)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_tokens: int = Field(gt=0, le=MAX_TOKENS_LIMIT)
    temperature: float = Field(ge=0, le=2, description="0 is greedy decoding.")
    top_p: float = Field(gt=0, le=1)
    seed: int = Field(ge=0, lt=SEED_LIMIT, description="Always set: drawn and recorded when not given.")
    stop: list[str] = Field(default_factory=list, max_length=8)
    response_format: ResponseFormat | None = Field(None, description="JSON output (None: free text).")
    tools: list[ToolFunction] = Field(default_factory=list, max_length=64, description="Functions it may call.")
    tool_choice: str | None = Field(
        None, description="none, auto, required, or a function's name (None: auto when tools are given)."
    )
    parallel_tool_calls: bool = Field(True, description="Whether one answer may hold several calls.")


# --- images (the portrait model; diffusers checkpoints on torch or OpenVINO) -------------------------------
# Request names of the diffusers schedulers (genforge.engines.diffusers.SCHEDULERS); "default" keeps
# the checkpoint's own.
ImageScheduler = Literal["default", "euler", "euler_a", "ddim", "dpmpp_2m", "heun", "pndm", "unipc", "lcm"]
# diffusers weights: "default" is the backend's own precision (float32 on the CPU, float16 on CUDA); "int8"
# compresses the weights to int8 with nncf (OpenVINO only; the compute stays float32); "w8a8" runs the UNet and
# the text encoder with int8 weights and activations, calibrated on the checkpoint's own denoising (OpenVINO only;
# about 2x OpenVINO float32's speed on a CPU with VNNI, pixels further from float32 than int8's).
ImagePrecision = Literal["default", "int8", "w8a8"]
# What turns the latents into pixels: "full", the checkpoint's own VAE decoder; "tiny", the AutoencoderTiny (TAESD
# layout) of GENFORGE_IMAGE_TINY_DECODER, about 1/18 of the compute, a little less detail.
ImageDecoder = Literal["full", "tiny"]


class PortraitSettings(BaseModel):
    """The portrait model's complete parameters: a square size and the seed (the face)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    width: int
    height: int
    seed: int = Field(ge=0, lt=SEED_LIMIT)


class LoraUse(BaseModel):
    """A LoRA adapter applied to a diffusers checkpoint (`genforge models add FILE --type lora --name NAME`).
    `sha256` is recorded by the run (the file that ran); sent again, the run refuses a file that differs."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1, max_length=200)
    weight: float = Field(1.0, ge=-4.0, le=4.0, description="0 leaves the base model's output unchanged.")
    sha256: str | None = Field(None, pattern=r"^[0-9a-f]{64}$")


# strength when params.init_image is given without one: img2img keeps the init image's layout at 0.75 (a quarter
# of the noise schedule is skipped); inpainting repaints the masked region from noise (1.0).
IMG2IMG_STRENGTH = 0.75
INPAINT_STRENGTH = 1.0


class DiffusersSettings(BaseModel):
    """A diffusers checkpoint's complete parameters."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    width: int
    height: int
    steps: int
    guidance_scale: float
    negative_prompt: str
    scheduler: ImageScheduler
    seed: int = Field(ge=0, lt=SEED_LIMIT)
    precision: ImagePrecision = "default"
    decoder: ImageDecoder = "full"
    # img2img and inpainting: the init image and the mask (white = repaint) by content id or upload id
    init_image: str | None = None
    mask: str | None = None
    strength: float | None = Field(None, gt=0, le=1, description="Set whenever init_image is.")
    loras: tuple[LoraUse, ...] = ()


ImageSettings = PortraitSettings | DiffusersSettings


# --- speech (Piper, espeak-ng) ------------------------------------------------------------------------------
class SpeechParams(BaseModel):
    """Speech parameters. `seed`: Piper cannot seed its noise per request, so a seed asks for deterministic
    synthesis (noise off: the same audio for the same text and settings, whatever the seed's value);
    without one Piper samples its natural prosody. espeak-ng is always deterministic."""

    model_config = ConfigDict(extra="forbid")

    # Piper: a speaker of a multi-speaker voice; espeak-ng: its voice name (`espeak-ng --voices`, e.g. en-gb).
    voice: str | None = Field(default=None, min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:+-]*$")
    speed: float = Field(default=1.0, ge=0.25, le=4.0)  # Piper: length_scale = the voice's / speed
    seed: int | None = Field(default=None, ge=0, lt=SEED_LIMIT)
    sentence_silence: float = Field(default=0.2, ge=0, le=5.0)  # seconds between sentences
    # When no Piper voice is usable and no model is named: allow the espeak-ng fallback (recorded).
    fallback: bool = False
    # Listen-back: transcribe the narration (whisper-base) and fail it when its word error rate against the text
    # is over GENFORGE_LISTEN_BACK_MAX_WER (after retries). None: off for a plain request, on for a post's
    # narration when a transcription model is installed. Recorded as true or false.
    listen_back: bool | None = None


class SpeechSettings(SpeechParams):
    """The complete speech parameters, as recorded (send them as `params` to repeat the request)."""

    model_config = ConfigDict(extra="forbid", frozen=True)


# --- video (the packaged h264 encoder) ----------------------------------------------------------------------
Platform = Literal["instagram", "reels", "story", "tiktok", "x", "youtube", "square"]
Preset = Literal["ultrafast", "superfast", "veryfast", "faster", "fast", "medium"]


class CaptionStyle(BaseModel):
    """How burned-in captions look: white DejaVu Sans Bold with a dark outline on a dark box, inside the
    platform's safe area."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    position: Literal["bottom", "middle", "top"] = "bottom"
    size: Literal["small", "medium", "large"] = "medium"
    # False: one word at a time (the word being spoken); True: the phrase, its current word in yellow.
    highlight: bool = False


class VideoParams(BaseModel):
    """Video parameters: the two inputs by content id, the frame size (a platform's, or width and height) and
    the encoder's settings."""

    model_config = ConfigDict(extra="forbid")

    image: str = Field(min_length=1, max_length=64, description="Content id of a succeeded image record.")
    narration: str = Field(min_length=1, max_length=64, description="Content id of a succeeded speech record.")
    platform: Platform | None = Field(None, description="Sets the frame size.")
    width: int | None = Field(None, ge=128, le=3840, multiple_of=2)
    height: int | None = Field(None, ge=128, le=3840, multiple_of=2)
    fps: int = Field(30, ge=10, le=60)
    zoom: float = Field(1.15, ge=1.0, le=2.0, description="How far the slow zoom goes in (1: pan only).")
    preset: Preset = Field("ultrafast", description="libx264 speed preset (ultrafast: faster than real time).")
    crf: int = Field(23, ge=0, le=51, description="libx264 constant quality (lower is better and larger).")
    captions: bool = Field(False, description="Burn word-level captions of the narration into the frames.")
    caption_style: CaptionStyle = Field(default_factory=lambda: CaptionStyle())

    @model_validator(mode="after")
    def _size(self) -> VideoParams:
        if (self.width is None) != (self.height is None):
            raise ValueError("give both width and height, or neither (a platform sets them)")
        return self


class VideoSettings(VideoParams):
    """The complete video parameters, as recorded (send them as `params` to make the same video again)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    # Recorded as plain text (a record stays readable should a platform ever be dropped); always set by plan().
    platform: str  # type: ignore[assignment]  # narrower in VideoParams, where a request names one
    width: int
    height: int


# --- transcripts (faster-whisper) -----------------------------------------------------------------------------


class TranscriptParams(BaseModel):
    """Transcript parameters: the audio (a speech record's id, or an upload's id from POST /api/v1/uploads or
    /v1/audio/transcriptions), the language (ISO 639-1; none: detected) and the task."""

    model_config = ConfigDict(extra="forbid")

    audio: str | None = Field(None, min_length=1, max_length=64, description="Content id of a speech record.")
    upload: str | None = Field(
        None, min_length=1, max_length=64, description="An uploaded audio file's id (POST /api/v1/uploads)."
    )
    language: str | None = Field(None, pattern=r"^[a-z]{2,3}$", description="ISO 639-1 code; none: detected.")
    task: Literal["transcribe", "translate"] = Field("transcribe", description="translate: into English.")
    initial_prompt: str | None = Field(None, max_length=1000, description="Words and spelling to expect.")
    temperature: float = Field(0.0, ge=0.0, le=1.0)
    beam_size: int = Field(1, ge=1, le=10, description="1: greedy decoding (fastest).")
    word_timestamps: bool = Field(True, description="Time every word (about 6 % more work); false: segments only.")

    @model_validator(mode="after")
    def _one_input(self) -> TranscriptParams:
        if (self.audio is None) == (self.upload is None):
            raise ValueError("give exactly one of audio (a speech record's id) and upload (an uploaded file's id)")
        return self


class TranscriptSettings(TranscriptParams):
    """The complete transcript parameters, as recorded."""

    model_config = ConfigDict(extra="forbid", frozen=True)


# What a GenerationJob carries: one of these, never Any.
EngineParams = TextSettings | PortraitSettings | DiffusersSettings | SpeechSettings | VideoSettings | TranscriptSettings
P = TypeVar("P", TextSettings, PortraitSettings, DiffusersSettings, SpeechSettings, VideoSettings, TranscriptSettings)
