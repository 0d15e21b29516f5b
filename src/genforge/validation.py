"""Validators: the last line of honesty. Output that fails here is never stored as a success."""

from __future__ import annotations

import io
import re

from genforge.engines.base import EngineOutput
from genforge.errors import InvalidOutput

# Chat-template and tokenizer markers that are not content: <|im_end|>, <end_of_turn>, <s>, </s>, [INST]...
SPECIAL_TOKENS = re.compile(r"<\|[^|>]{1,40}\|>|</?s>|<(?:start|end)_of_turn>|\[/?INST\]|<pad>|<unk>")


def validate_text(out: EngineOutput, params: dict, prompt: str = "") -> None:
    try:
        decoded = out.data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidOutput(f"the engine's text is not valid UTF-8 ({exc.reason} at byte {exc.start})") from None
    if decoded != out.text:
        raise InvalidOutput("the artifact bytes differ from the generated text")
    if not SPECIAL_TOKENS.sub("", decoded).strip():
        raise InvalidOutput("the model produced no text (empty after removing whitespace and special tokens)")
    if out.finish_reason not in ("stop", "length"):
        raise InvalidOutput(f"unknown finish reason {out.finish_reason!r}")
    usage = out.usage or {}
    if not usage.get("completion_tokens"):
        raise InvalidOutput("the engine reported no generated tokens")


# An image whose every channel has a standard deviation below this (on 0..255) is near-constant: the
# all-black picture a safety checker substitutes, NaN output cast to zeros, a blank canvas.
MIN_IMAGE_STDDEV = 2.0


def validate_image(out: EngineOutput, params: dict, prompt: str = "") -> None:
    from PIL import Image, ImageStat, UnidentifiedImageError

    from genforge.credentials import pixels_digest
    from genforge.images import PREFIX

    if out.media_type != "image/png":
        raise InvalidOutput(f"the image engine returned {out.media_type!r}, not image/png")
    try:
        with Image.open(io.BytesIO(out.data)) as im:
            im.load()
            fmt, size, text = im.format, im.size, dict(getattr(im, "text", {}))
            stddev = ImageStat.Stat(im if im.mode == "RGB" else im.convert("RGB")).stddev
            content_hash = pixels_digest(im)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise InvalidOutput(f"the image does not decode: {exc}") from None
    if fmt != "PNG":
        raise InvalidOutput(f"the image is {fmt}, not PNG")
    wanted = (params["width"], params["height"])
    if size != wanted:
        raise InvalidOutput(f"the image is {size[0]}x{size[1]}, {wanted[0]}x{wanted[1]} was requested")
    if max(stddev) < MIN_IMAGE_STDDEV:
        raise InvalidOutput(
            f"the image is constant or nearly so (largest channel standard deviation "
            f"{max(stddev):.2f}): a blank, black or NaN picture is not a generated image"
        )
    if text.get(PREFIX + "seed") != str(params["seed"]) or not text.get(PREFIX + "content_id"):
        raise InvalidOutput("the PNG does not carry its provenance (content id, seed)")
    out.extra["content_hash"] = content_hash  # of the pixels just decoded: finds the record of a stripped copy


# Speech: RMS on a [-1, 1] scale below this (about -40 dBFS) is silence; real speech measures 0.05-0.3.
SILENCE_RMS = 0.01
# Plausible duration per length unit (a word, or 6 characters of unspaced text): faster than ~750 words a
# minute or slower than ~50 (at speed 1), plus leading/trailing silence, is not speech of this text.
MIN_S_PER_UNIT, MAX_S_PER_UNIT, SLACK_S = 0.08, 1.2, 2.0
_SENTENCE_BREAK = re.compile(r"[.!?;]+(?:\s+|$)")


def speech_duration_range(text: str, speed: float = 1.0, sentence_silence: float = 0.0) -> tuple[float, float]:
    """The durations (s) that are plausible for speaking `text` at `speed` with these sentence gaps."""
    units = max(len(text.split()), len(text.strip()) / 6)
    digits = sum(ch.isdigit() for ch in text)  # "4567" is read as up to four words: room for it at the top
    gaps = max(0, len(_SENTENCE_BREAK.findall(text.strip())) - 1) + 1  # generous: one more than sentence breaks
    return (
        MIN_S_PER_UNIT * units / max(1.0, speed),
        MAX_S_PER_UNIT * (units + digits) / min(1.0, speed) + gaps * sentence_silence + SLACK_S,
    )


def validate_speech(out: EngineOutput, params: dict, prompt: str = "") -> None:
    from genforge.audio import decode_wav, rms
    from genforge.credentials import samples_digest

    if out.media_type != "audio/wav":
        raise InvalidOutput(f"the speech engine returned {out.media_type!r}, not audio/wav")
    try:
        wav = decode_wav(out.data)
    except ValueError as exc:
        raise InvalidOutput(f"the audio does not decode: {exc}") from None
    if wav.sample_width != 2 or wav.channels != 1:
        raise InvalidOutput(f"the audio is {wav.channels}-channel {8 * wav.sample_width}-bit, not PCM 16-bit mono")
    if wav.n_frames == 0:
        raise InvalidOutput("the audio has zero length")
    level = rms(wav.frames)
    if level < SILENCE_RMS:
        raise InvalidOutput(f"the audio is silent (RMS {level:.4f} is below {SILENCE_RMS})")
    low, high = speech_duration_range(
        prompt, float(params.get("speed", 1.0)), float(params.get("sentence_silence", 0.0))
    )
    if not low <= wav.duration_s <= high:
        raise InvalidOutput(
            f"{wav.duration_s:.2f} s of audio is implausible for {len(prompt.split())} words "
            f"(expected {low:.2f}-{high:.2f} s)"
        )
    if (
        out.extra.get("sample_rate") != wav.sample_rate
        or abs(float(out.extra.get("duration_s", -1)) - wav.duration_s) > 0.01
    ):
        raise InvalidOutput("the engine's sample rate or duration does not match the audio it returned")
    out.extra["content_hash"] = samples_digest(wav)  # of the samples just decoded: finds a re-written copy


VALIDATORS = {"text": validate_text, "image": validate_image, "speech": validate_speech}


def validate(content_type: str, out: EngineOutput, params: dict, prompt: str) -> None:
    """Raise InvalidOutput unless `out` is real, usable content of this type for this prompt and parameters."""
    VALIDATORS[content_type](out, params, prompt)
