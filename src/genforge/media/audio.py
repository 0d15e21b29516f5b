"""WAV in and out (PCM 16-bit mono), with the stdlib only: speech engines write it, the validator reads it."""

from __future__ import annotations

import io
import math
import sys
import wave
from array import array
from dataclasses import dataclass

SAMPLE_WIDTH = 2  # bytes: PCM 16-bit
WAV_HEADER_BYTES = 44  # what encode_wav puts before the samples (RIFF, fmt and data chunk headers)


@dataclass(frozen=True)
class Wav:
    sample_rate: int
    channels: int
    sample_width: int  # bytes per sample
    frames: bytes  # the raw PCM samples

    @property
    def n_frames(self) -> int:
        return len(self.frames) // (self.sample_width * self.channels) if self.channels else 0

    @property
    def duration_s(self) -> float:
        return self.n_frames / self.sample_rate if self.sample_rate else 0.0


def encode_wav(pcm: bytes, sample_rate: int) -> bytes:
    """Mono PCM16 samples (little-endian) wrapped in a RIFF/WAVE container."""
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(SAMPLE_WIDTH)
        w.setframerate(sample_rate)
        w.writeframes(pcm)
    return buf.getvalue()


def decode_wav(data: bytes) -> Wav:
    """Read a WAV file's format and samples; ValueError if it is not a readable PCM WAV.

    Reads up to the end of the data, so a streaming header with a placeholder frame count (what
    `espeak-ng --stdout` writes) still gives the real samples.
    """
    try:
        with wave.open(io.BytesIO(data)) as w:
            rate, channels, width = w.getframerate(), w.getnchannels(), w.getsampwidth()
            frames = w.readframes(w.getnframes())
    except (wave.Error, EOFError) as exc:
        raise ValueError(f"not a readable WAV file: {exc or 'truncated'}") from None
    usable = len(frames) - len(frames) % (width * channels or 1)
    return Wav(rate, channels, width, frames[:usable])


def silence(seconds: float, sample_rate: int) -> bytes:
    """Zero PCM16 samples lasting `seconds` (whole samples)."""
    return bytes(int(round(sample_rate * seconds)) * SAMPLE_WIDTH)


def rms(pcm16: bytes) -> float:
    """Root mean square of PCM16 samples on a [-1, 1] scale (0 for no samples)."""
    samples = array("h")
    samples.frombytes(pcm16[: len(pcm16) - len(pcm16) % 2])
    if sys.byteorder != "little":  # WAV samples are little-endian
        samples.byteswap()
    if not samples:
        return 0.0
    return math.sqrt(sum(x * x for x in samples) / len(samples)) / 32768.0
