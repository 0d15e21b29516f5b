"""Video: an MP4 of a stored image with a stored narration as its soundtrack (engines/video.py); its validator.

A video request names its two inputs by content id (`params.image`, `params.narration`); the service resolves
them to their stored files (succeeded records of the right types) and hands the paths to the engine. The record's
params keep the ids, so sending them again makes the same video.
"""

from __future__ import annotations

import io
import wave
from typing import TYPE_CHECKING, Literal

from genforge.contenttypes.base import ContentTypeSpec, Plan, check_model, facts_of, parse_params
from genforge.contenttypes.records import RecordBase
from genforge.engines.base import VideoFacts, VideoInputs, check_output, params_of
from genforge.engines.params import Platform, VideoParams, VideoSettings
from genforge.errors import GenforgeError, InvalidOutput, InvalidRequest

if TYPE_CHECKING:
    from genforge.engines.base import EngineOutput, GenerationJob

# Frame sizes (width, height) by platform: vertical 9:16 for reels and stories, 16:9 for X and YouTube.
PLATFORM_SIZES: dict[Platform, tuple[int, int]] = {
    "instagram": (1080, 1920),
    "reels": (1080, 1920),
    "story": (1080, 1920),
    "tiktok": (1080, 1920),
    "x": (1280, 720),
    "youtube": (1920, 1080),
    "square": (1080, 1080),
}
DEFAULT_PLATFORM: Platform = "instagram"
DURATION_TOLERANCE_S = 0.1  # the video lasts as long as its narration, within this
CAPTION_SLACK_S = 0.3  # a captioned word may end this much after the narration (timing rounding)


class VideoRecord(VideoFacts, RecordBase):
    content_type: Literal["video"]
    params: VideoSettings


def plan(req, settings, catalog) -> Plan:
    given = parse_params(VideoParams, req.params)
    if req.system is not None:
        raise InvalidRequest("system: a video takes no system prompt", field="system")
    platform = given.platform or DEFAULT_PLATFORM
    width, height = (given.width, given.height) if given.width else PLATFORM_SIZES[platform]
    model = req.model or catalog.default_for("video")
    check_model(catalog, model, "video")
    params = VideoSettings(**{**given.model_dump(), "platform": platform, "width": width, "height": height})
    return Plan(model, params, inputs={"image": (given.image, "image"), "narration": (given.narration, "speech")})


def wav_duration(path: str) -> float:
    with wave.open(path) as w:
        return w.getnframes() / w.getframerate()


def validate(out: EngineOutput, job: GenerationJob) -> None:
    """Decodes with PyAV (every frame), has a video and an audio stream of the asked size, and lasts as long as
    the narration."""
    import av

    if out.media_type != "video/mp4":
        raise InvalidOutput(f"the video engine returned {out.media_type!r}, not video/mp4")
    check_output(job, "the video", size_bytes=len(out.data))  # before decoding every frame of it
    p = params_of(job, VideoSettings)
    facts = out.facts
    if not isinstance(facts, VideoFacts):
        raise InvalidOutput(f"the video engine reported {type(facts).__name__}, not VideoFacts")
    if not isinstance(job.inputs, VideoInputs):  # the service resolves a video's inputs before the engine runs
        raise GenforgeError("a video job reached validation without its inputs")
    try:
        with av.open(io.BytesIO(out.data), mode="r") as c:
            video, audio = c.streams.video, c.streams.audio
            if not video or not audio:
                raise InvalidOutput("the MP4 lacks a video or an audio stream")
            size = (video[0].codec_context.width, video[0].codec_context.height)
            frames = sum(1 for _ in c.decode(video=0))
            duration = float(c.duration) / 1e6 if c.duration else 0.0
    except av.FFmpegError as exc:
        raise InvalidOutput(f"the MP4 does not decode: {exc}") from None
    check_output(job, "the video", duration_s=duration)
    if size != (p.width, p.height):
        raise InvalidOutput(f"the video is {size[0]}x{size[1]}, not the asked {p.width}x{p.height}")
    if frames != facts.frames or frames == 0:
        raise InvalidOutput(f"{frames} frames decode, the engine reported {facts.frames}")
    narration = wav_duration(job.inputs.narration_path)
    if abs(duration - narration) > DURATION_TOLERANCE_S:
        raise InvalidOutput(f"the video lasts {duration:.2f} s, the narration {narration:.2f} s")
    if p.captions:
        check_captions(job, facts, narration)


def check_captions(job: GenerationJob, facts: VideoFacts, narration_s: float) -> None:
    """The caption track: every captioned word timed in order and inside the narration, all of them drawn."""
    words = job.captions or ()
    if not words or facts.captions is None:
        raise InvalidOutput("captions were asked for and the video has none")
    if facts.captions.words != len(words):
        raise InvalidOutput(f"{facts.captions.words} captioned words drawn, the narration has {len(words)}")
    last = 0.0
    for w in words:
        if not (last - 0.01 <= w.start <= w.end <= narration_s + CAPTION_SLACK_S):
            raise InvalidOutput(
                f"the caption {w.word!r} is timed {w.start:.2f}-{w.end:.2f} s: out of order or past the "
                f"narration's {narration_s:.2f} s"
            )
        last = w.start


def record_section(row) -> dict:
    return facts_of(row, VideoFacts)


SPEC = ContentTypeSpec(
    name="video",
    params=VideoParams,
    settings=VideoSettings,
    facts=VideoFacts,
    record=VideoRecord,
    plan=plan,
    validate=validate,
    media_type="video/mp4",
    suffix=".mp4",
    no_model_hint="Install the video extra: `pip install 'genforge[video]'` (PyAV), then ask for the model "
    "`h264-kenburns`.",
    check_model_path=None,
    record_section=record_section,
)
