"""Image speed: seconds per image through POST /api/v1/content/generate vs the engine called directly.

1. portrait at 1024x1024: the API (HTTP, queue, engine worker process, validator, fsync'd artifact, database)
   against genforge's portrait engine called in a plain process, which renders and encodes the PNG the
   same way (zlib level 1, Huffman only; provenance chunks). Goal: API overhead under 5 % of that reference, and
   under 0.5 s per image through the API on 2 cores.
2. the tiny random Stable Diffusion pipeline of the tests (built on the spot): seconds per denoising step
   (the image's time over its steps, so text encoding, VAE decoding and the PNG are spread over them)
   through the API against genforge's diffusers engine called directly.

Runs alternate between the two sides so that machine noise hits both alike; medians are reported.

    .venv/bin/python benchmarks/image_speed.py [--runs 10] [--sd-runs 8] [--sd-size 64] [--sd-steps 30]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
from _server import GENFORGE, Server, rss_mb

ROOT = Path(__file__).resolve().parent.parent

# The reference: genforge's engine in its own plain process (no server, no worker, no database), one
# generation per line on stdin, answering {"s": seconds for render + PNG encode, "bytes": PNG size}.
DIRECT = r"""
import json, sys, time, uuid
from pathlib import Path
from genforge.catalog import PACKAGED, ModelCatalog, ResolvedModel
from genforge.config import Settings
from genforge.engines import create_engine
from genforge.engines.base import GenerationJob
from genforge.storage import path_stat, sha256_path
kind, path, params = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
if kind == "portrait":
    path = str(ModelCatalog(Settings(), db=None).packaged_path(PACKAGED["portrait"]))
model = ResolvedModel("bench", "image", kind, path, sha256_path(Path(path)), path_stat(Path(path))[0], False)
engine = create_engine(kind, Settings())
t = time.perf_counter()
engine.load(model)
print(json.dumps({"load_s": time.perf_counter() - t}), flush=True)
for line in sys.stdin:
    job = GenerationJob(str(uuid.uuid4()), "image", model, "a lighthouse at dusk", None, dict(params))
    t = time.perf_counter()
    out = engine.generate(job, lambda event: None, lambda: False)
    print(json.dumps({"s": time.perf_counter() - t, "bytes": len(out.data)}), flush=True)
"""


class Direct:
    def __init__(self, kind: str, path: str, params: dict, data_dir: str):
        self.proc = subprocess.Popen(
            [sys.executable, "-c", DIRECT, kind, path, json.dumps(params)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env={**os.environ, "GENFORGE_DATA_DIR": data_dir},
        )
        self.load_s = json.loads(self.proc.stdout.readline())["load_s"]

    def run(self) -> dict:
        self.proc.stdin.write("go\n")
        self.proc.stdin.flush()
        return json.loads(self.proc.stdout.readline())

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(timeout=60)


def api_run(client: httpx.Client, body: dict) -> tuple[float, dict]:
    t = time.perf_counter()
    resp = client.post("/api/v1/content/generate", json=body)
    elapsed = time.perf_counter() - t
    resp.raise_for_status()
    return elapsed, resp.json()


def compare(client: httpx.Client, body: dict, direct: Direct, runs: int) -> dict:
    api_run(client, body)  # warm-up: starts the image worker and loads the model there
    direct.run()
    api_s, direct_s, engine_s = [], [], []
    for i in range(runs):
        body = {**body, "params": {**body["params"], "seed": 1000 + i}}
        elapsed, rec = api_run(client, body)
        api_s.append(elapsed)
        engine_s.append(rec["timings"]["generate_ms"] / 1000)
        direct_s.append(direct.run()["s"])
    api, ref = statistics.median(api_s), statistics.median(direct_s)
    return {
        "api": api,
        "direct": ref,
        "engine_in_worker": statistics.median(engine_s),
        "api_min": min(api_s),
        "direct_min": min(direct_s),
        "ratio": api / ref,
        "overhead_ms": (api - ref) * 1000,
        "overhead_pct": (api - ref) / ref * 100,
        "record": rec,
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=10, help="portrait images per side")
    ap.add_argument("--sd-runs", type=int, default=8, help="tiny diffusers images per side")
    ap.add_argument("--sd-size", type=int, default=64)
    ap.add_argument("--sd-steps", type=int, default=30)
    args = ap.parse_args()

    sys.path.insert(0, str(ROOT / "tests"))
    from image_fixtures import build_tiny_sd

    with tempfile.TemporaryDirectory(prefix="gf-bench-images-") as scratch:
        run(args, build_tiny_sd(Path(scratch) / "tiny-sd"), scratch)


def run(args, tiny: Path, scratch: str) -> None:
    sd_params = {"width": args.sd_size, "height": args.sd_size, "steps": args.sd_steps, "seed": 1}
    portrait_params = {"width": 1024, "height": 1024, "seed": 1}

    with Server(env={"GENFORGE_PRELOAD": "false"}) as srv, httpx.Client(base_url=srv.url, timeout=600) as client:
        added = subprocess.run(
            [GENFORGE, "models", "add", str(tiny), "--type", "image", "--name", "tiny-sd"],
            env=srv.env,
            capture_output=True,
            text=True,
        )
        assert added.returncode == 0, added.stderr

        direct = Direct("portrait", "", portrait_params, scratch)
        portrait = compare(
            client,
            {"content_type": "image", "prompt": "a lighthouse at dusk", "model": "portrait", "params": portrait_params},
            direct,
            args.runs,
        )
        portrait["load_s"] = direct.load_s
        direct.close()

        direct = Direct(
            "diffusers",
            str(tiny),
            {**sd_params, "guidance_scale": 7.5, "negative_prompt": "", "scheduler": "default"},
            scratch,
        )
        sd = compare(
            client,
            {"content_type": "image", "prompt": "a lighthouse at dusk", "model": "tiny-sd", "params": sd_params},
            direct,
            args.sd_runs,
        )
        sd["load_s"] = direct.load_s
        direct.close()
        server_rss = rss_mb(srv.proc.pid)

    rec = portrait["record"]
    load1, load5, _ = os.getloadavg()
    print(
        f"{os.cpu_count()} cores, load average {load1:.1f} / {load5:.1f} (1 / 5 min) at the end; "
        f"{rec['model']['engine_version']}; "
        f"{sd['record']['model']['engine_version']}"
    )
    print(
        f"portrait 1024x1024 ({args.runs} alternating runs, PNG zlib level 1 Huffman-only, "
        f"{rec['artifact']['size_bytes'] / 1e6:.2f} MB):"
    )
    print(f"  direct engine + PNG encode: {portrait['direct']:.3f} s/image (median; min {portrait['direct_min']:.3f})")
    print(
        f"  through the API:            {portrait['api']:.3f} s/image (median; min {portrait['api_min']:.3f}); "
        f"engine time in the worker {portrait['engine_in_worker']:.3f} s"
    )
    print(
        f"  API overhead: {portrait['overhead_ms']:.1f} ms = {portrait['overhead_pct']:.1f} % of the reference "
        f"(goal < 5 %); ratio API / direct = {portrait['ratio']:.3f}; model load {portrait['load_s']:.2f} s"
    )
    steps = args.sd_steps
    print(f"tiny diffusers {args.sd_size}x{args.sd_size}, {steps} steps ({args.sd_runs} alternating runs):")
    print(f"  direct engine + PNG encode: {sd['direct'] / steps:.4f} s/step ({sd['direct']:.3f} s/image)")
    print(f"  through the API:            {sd['api'] / steps:.4f} s/step ({sd['api']:.3f} s/image)")
    print(
        f"  API overhead: {sd['overhead_ms']:.1f} ms/image = {sd['overhead_pct']:.1f} %; "
        f"ratio API / direct = {sd['ratio']:.3f}"
    )
    print(f"server RSS (server + engine workers): {server_rss:.0f} MB")


if __name__ == "__main__":
    main()
