"""Provenance costs, in one run: Content Credentials against the generation they sign, and a verified hub pull
against a plain HTTP download of the same file.

1. Signing: the portrait engine (1024x1024 PNG) and Piper (a paragraph of about 20 s of speech) run in this
   process, as in the engine worker; each output is then signed as the service signs it (`Credentials.sign`:
   keystore read, C2PA manifest built and embedded with c2pa-python, ES256). Reported per artifact: generation
   seconds, signing milliseconds, their ratio; and the time of the content hash the validators now add (sha256
   of the pixels or samples they have decoded anyway). Goals: signing under 5 % of a portrait, under 2 % of speech.
2. Pull: the packaged SmolLM2 GGUF (98 MB) served by the local hub server of the tests (tests/hub_server.py):
   `genforge.stores.hub.pull_file` (metadata HEAD, ranged GET through huggingface_hub, sha256 while writing, fsync,
   verification, rename) against a plain streamed GET of the same URL to a file (1 MiB chunks, fsync).
   Runs alternate; medians. Goal: hub pull >= 0.9x the plain download's speed.

    .venv/bin/python benchmarks/credentials.py [--runs 5] [--pull-runs 9] [--pull-only]
"""

from __future__ import annotations

import argparse
import io
import os
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

PARAGRAPH = (
    "Genforge turns a short brief into finished media on your own hardware. "
    "This paragraph exists only to measure how much signing adds to the speech engine. "
    "It contains about sixty words, a few commas, and four sentences of ordinary English. "
    "If the numbers look good, every voice-over leaves the machine with its Content Credentials."
)


def median_ms(values: list[float]) -> float:
    return statistics.median(values) * 1000


def decode(media_type: str, data: bytes):
    if media_type == "image/png":
        from PIL import Image

        im = Image.open(io.BytesIO(data))
        im.load()
        return im
    from genforge.media.audio import decode_wav

    return decode_wav(data)


def digest(decoded) -> str:
    from genforge.media.digests import pixels_digest, samples_digest

    return samples_digest(decoded) if hasattr(decoded, "frames") else pixels_digest(decoded)


def signing(runs: int) -> None:
    from genforge.planning import plan
    from genforge.validation import validate

    from genforge.config import Settings
    from genforge.contenttypes.request import GenerateRequest
    from genforge.engines import create_engine
    from genforge.engines.base import GenerationJob
    from genforge.runtime import Runtime
    from genforge.stores.credentials import Credentials

    data = Path(tempfile.mkdtemp(prefix="gf-bench-cred-"))
    settings = Settings(data_dir=data, preload=False)
    rt = Runtime.open(settings)
    creds = Credentials(data)
    creds.ensure()  # made once per instance; not part of the per-artifact cost
    cases = [
        ("portrait 1024x1024 PNG", GenerateRequest(content_type="image", model="portrait", prompt="a face")),
        ("speech (Piper) WAV", GenerateRequest(content_type="speech", prompt=PARAGRAPH)),
    ]
    print(f"{'artifact':<26} {'generate s':>10} {'sign ms':>8} {'sign/gen':>9} {'hash ms':>8} {'size':>9}")
    try:
        for label, req in cases:
            name, params = plan(req, settings, rt.catalog)
            model = rt.catalog.resolve(name, req.content_type)
            engine = create_engine(model.engine, settings)
            engine.load(model)
            gen, sign, hashed, size, audio = [], [], [], 0, 0.0
            for i in range(runs + 1):  # the first is a warm-up
                job = GenerationJob(str(uuid.uuid4()), req.content_type, model, req.prompt, None, dict(params))
                t = time.perf_counter()
                out = engine.generate(job, lambda event: None, lambda: False)
                g = time.perf_counter() - t
                validate(req.content_type, out, params, req.prompt)
                t = time.perf_counter()
                signed = creds.sign(
                    content_id=job.content_id,
                    content_type=req.content_type,
                    media_type=out.media_type,
                    data=out.data,
                    model=model,
                    params=params,
                )
                s = time.perf_counter() - t
                decoded = decode(out.media_type, out.data)  # what the validator has decoded anyway
                t = time.perf_counter()
                digest(decoded)  # the content hash the validator adds to that
                h = time.perf_counter() - t
                if i:
                    gen.append(g)
                    sign.append(s)
                    hashed.append(h)
                    size, audio = len(signed.data), float(out.extra.get("duration_s", 0))
            ratio = statistics.median(sign) / statistics.median(gen)
            extra = f" ({audio:.1f} s of audio)" if audio else ""
            print(
                f"{label:<26} {statistics.median(gen):>10.3f} {median_ms(sign):>8.1f} {ratio:>8.1%} "
                f"{median_ms(hashed):>8.1f} {size / 1e6:>7.2f} MB{extra}"
            )
    finally:
        rt.close()
        shutil.rmtree(data, ignore_errors=True)


def pull(runs: int) -> None:
    import httpx

    from conftest import packaged_model_path
    from genforge.stores import hub
    from hub_server import Hub, HubFile

    blob = packaged_model_path().read_bytes()
    state = Hub()
    state.files["bench/smol/smol.gguf"] = HubFile(blob)
    server = state.serve()
    endpoint = f"http://127.0.0.1:{server.server_address[1]}"
    os.environ["HF_ENDPOINT"] = endpoint
    os.environ.pop("HF_HUB_OFFLINE", None)
    url = f"{endpoint}/bench/smol/resolve/main/smol.gguf"
    work = Path(tempfile.mkdtemp(prefix="gf-bench-pull-"))
    plain_s, hub_s = [], []
    try:
        for i in range(runs + 1):  # the first round is a warm-up
            target = work / "plain.gguf"
            t = time.perf_counter()
            with httpx.stream("GET", url) as r, open(target, "wb") as f:
                for chunk in r.iter_bytes(1 << 20):
                    f.write(chunk)
                f.flush()
                os.fsync(f.fileno())
            p = time.perf_counter() - t
            assert target.stat().st_size == len(blob)
            target.unlink()
            root = work / f"hub{i}"
            t = time.perf_counter()
            pulled = hub.pull_file(hub.parse_ref("hf:bench/smol/smol.gguf"), root)
            h = time.perf_counter() - t
            assert pulled.size_bytes == len(blob)
            shutil.rmtree(root)
            if i:
                plain_s.append(p)
                hub_s.append(h)
    finally:
        server.shutdown()
        shutil.rmtree(work, ignore_errors=True)
    mb = len(blob) / 1e6
    p, h = statistics.median(plain_s), statistics.median(hub_s)
    print(f"pull of {mb:.0f} MB: plain HTTP {p:.3f} s ({mb / p:.0f} MB/s), verified hub pull {h:.3f} s "
          f"({mb / h:.0f} MB/s); hub speed / plain speed = {p / h:.2f}x")  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--pull-runs", type=int, default=9)
    ap.add_argument("--pull-only", action="store_true")
    args = ap.parse_args()
    print(f"load average {os.getloadavg()[0]:.1f}, {os.cpu_count()} cores")
    if not args.pull_only:
        signing(args.runs)
    pull(args.pull_runs)


if __name__ == "__main__":
    main()
