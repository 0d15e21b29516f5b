"""Transcripts, listen-back and captions: what they cost, measured in one run against a real `genforge serve`.

1. Transcription real-time factor (audio seconds / transcription seconds, higher is faster) of a Piper narration
   of a 60-word paragraph: faster-whisper direct in this process (whisper-base, int8, the engine's settings:
   VAD, word timings, greedy) vs POST /v1/audio/transcriptions (engine time, `timings.generate_ms`, and the
   client's wall time). Goal: >= 10x real time on 2 cores.
2. Listen-back's cost per narration: the same paragraph spoken with `listen_back` off and on (deterministic
   synthesis, so both make the same audio); the extra wall time over the narration's own synthesis time
   (`timings.generate_ms`). Goal: <= 25 %.
3. Caption rendering's cost on the video encode: the same image and narration made into a 1080x1920 video with
   and without `params.captions`; the video records' `timings.generate_ms` (the engine's encode), median of runs.
   Goal: <= 15 %.
Runs alternate; medians; the load average is printed with each figure.

    .venv/bin/python benchmarks/listen_captions.py [--runs 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time

import httpx
from _server import GENFORGE, Server

PARAGRAPH = (
    "Genforge turns a short brief into finished media on your own hardware. "
    "This paragraph exists only to measure how quickly the speech engine works. "
    "It contains about sixty words, a few commas, and four sentences of ordinary English. "
    "If the numbers look good, the service can narrate articles and video scripts "
    "without sending a single byte to anybody else's cloud."
)


def load() -> str:
    return "/".join(f"{v:.1f}" for v in os.getloadavg())


def post(c: httpx.Client, body: dict) -> tuple[dict, float]:
    t = time.perf_counter()
    r = c.post("/api/v1/content/generate", json=body)
    took = time.perf_counter() - t
    r.raise_for_status()
    return r.json(), took


def direct_rtf(model_dir: str, wav: bytes, runs: int) -> float:
    """faster-whisper in this process, as the engine runs it; median audio s / transcription s."""
    import io

    from faster_whisper import WhisperModel, decode_audio

    m = WhisperModel(model_dir, device="cpu", compute_type="int8", cpu_threads=os.cpu_count() or 1)
    audio = decode_audio(io.BytesIO(wav), sampling_rate=16000)
    duration = len(audio) / 16000
    out = []
    for i in range(runs + 1):
        t = time.perf_counter()
        segs, _ = m.transcribe(
            audio, beam_size=1, word_timestamps=True, vad_filter=True, condition_on_previous_text=False, language=None
        )
        list(segs)
        if i:  # the first run warms up
            out.append(duration / (time.perf_counter() - t))
    return statistics.median(out)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    with Server() as srv:
        env = {**os.environ, "GENFORGE_DATA_DIR": srv.data}
        subprocess.run([GENFORGE, "models", "pull", "whisper-base"], env=env, check=True, capture_output=True)
        model_dir = os.path.join(srv.data, "models", "whisper-base")
        with httpx.Client(base_url=srv.url, timeout=1200) as c:
            speech, _ = post(c, {"content_type": "speech", "prompt": PARAGRAPH, "params": {"seed": 1}})
            wav = c.get(speech["artifact"]["url"]).content
            duration = speech["duration_s"]

            # 1. transcription RTF
            api_engine, api_wall = [], []
            for _ in range(args.runs + 1):
                t = time.perf_counter()
                r = c.post(
                    "/v1/audio/transcriptions",
                    files={"file": ("p.wav", wav, "audio/wav")},
                    data={"model": "whisper-base", "response_format": "verbose_json"},
                )
                wall = time.perf_counter() - t
                r.raise_for_status()
                rec = c.get(f"/api/v1/content/{r.json()['genforge']['content_id']}").json()
                api_engine.append(duration / (rec["timings"]["generate_ms"] / 1000))
                api_wall.append(duration / wall)
            api_engine, api_wall = api_engine[1:], api_wall[1:]  # the first run loads the model
            direct = direct_rtf(model_dir, wav, args.runs)
            print(
                f"transcription of {duration:.1f} s: direct {direct:.1f}x real time, API engine "
                f"{statistics.median(api_engine):.1f}x, API wall {statistics.median(api_wall):.1f}x "
                f"(ratio API wall / direct {statistics.median(api_wall) / direct:.2f}); load {load()}"
            )

            # 2. listen-back's cost
            plain, listened, synth = [], [], []
            for _ in range(args.runs):
                rec, wall = post(c, {"content_type": "speech", "prompt": PARAGRAPH, "params": {"seed": 1}})
                plain.append(wall)
                synth.append(rec["timings"]["generate_ms"] / 1000)
                rec, wall = post(
                    c, {"content_type": "speech", "prompt": PARAGRAPH, "params": {"seed": 1, "listen_back": True}}
                )
                assert rec["listen_back"]["wer"] <= rec["listen_back"]["threshold"], rec["listen_back"]
                listened.append(wall)
            extra = statistics.median(listened) - statistics.median(plain)
            print(
                f"listen-back: speech {statistics.median(plain):.2f} s wall (synthesis "
                f"{statistics.median(synth):.2f} s), with listen-back {statistics.median(listened):.2f} s: "
                f"+{extra:.2f} s = {100 * extra / statistics.median(synth):.0f} % of the synthesis; load {load()}"
            )

            # 3. captions on the video encode
            image, _ = post(c, {"content_type": "image", "prompt": "x", "model": "portrait", "params": {"seed": 3}})
            base = {"image": image["id"], "narration": speech["id"], "platform": "instagram"}
            enc_plain, enc_caps = [], []
            for _ in range(args.runs):
                rec, _ = post(c, {"content_type": "video", "prompt": "v", "params": base})
                enc_plain.append(rec["timings"]["generate_ms"] / 1000)
                rec, _ = post(c, {"content_type": "video", "prompt": "v", "params": {**base, "captions": True}})
                enc_caps.append(rec["timings"]["generate_ms"] / 1000)
            a, b = statistics.median(enc_plain), statistics.median(enc_caps)
            print(
                f"captions: encode {a:.2f} s without, {b:.2f} s with ({100 * (b - a) / a:+.0f} %), "
                f"{duration:.1f} s of 1080x1920 video; load {load()}"
            )


if __name__ == "__main__":
    sys.exit(main())
