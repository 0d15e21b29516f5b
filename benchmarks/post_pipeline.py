"""A full post (caption, portrait, narration, 1080x1920 video) through the API vs the sum of its parts made by
the same engines called directly, in one run; and the video encode's speed against real time.

API: a real `genforge serve` (its own data dir), a persona with the packaged portrait and Piper voice, `POST
/api/v1/posts` for Instagram timed at the client: HTTP, planning, four records, the queue, the engine worker
processes, every validator (the video's decodes every frame), fsynced artifacts and the commits included.
Direct (benchmarks/_post_parts.py, its own process): the engines' own classes on the same parameters and inputs
the API's records say they used; no HTTP, database, worker process or validation. Both are warmed up with one
post first; then runs alternate. Prints medians and the ratio API / direct (goal <= 1.1), and the video encode's
real-time factor (seconds of video per second of encoding; goal > 1).

    .venv/bin/python benchmarks/post_pipeline.py [--runs 3]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

import httpx
from _server import Server

PERSONA = {
    "name": "mira",
    "text": {"system": "You are Mira, a cheerful travel blogger. Write in the first person."},
    "image": {"model": "portrait", "seed": 4242},
    "speech": {"model": "piper-en-us-joe"},
}
POST = {"persona": "mira", "brief": "a sunrise hike above the clouds", "platform": "instagram"}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    here = os.path.dirname(os.path.abspath(__file__))
    direct = subprocess.Popen(
        [sys.executable, os.path.join(here, "_post_parts.py")], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    api_s, direct_s, parts_api, parts_direct, rtf = [], [], [], [], []
    with Server({"GENFORGE_PRELOAD": "false"}) as srv, httpx.Client(base_url=srv.url, timeout=900) as client:
        assert client.post("/api/v1/personas", json=PERSONA).status_code == 201
        for i in range(args.runs + 1):  # the first of each is the warm-up
            t = time.perf_counter()
            resp = client.post("/api/v1/posts", json={**POST, "params": {"caption": {"seed": 100 + i}}})
            elapsed = time.perf_counter() - t
            post = resp.json()
            assert resp.status_code == 201, resp.text
            records = post["parts"]
            direct.stdin.write(json.dumps(records) + "\n")
            direct.stdin.flush()
            times = json.loads(direct.stdout.readline())
            if i == 0:
                continue
            api_s.append(elapsed)
            direct_s.append(sum(times[p] for p in records))
            parts_api.append({p: r["timings"]["total_ms"] / 1000 for p, r in records.items()})
            parts_direct.append(times)
            rtf.append(times["video_s"] / times["video"])
            print(
                f"run {i}: API {elapsed:.2f} s, direct {direct_s[-1]:.2f} s ("
                + ", ".join(f"{p} {times[p]:.2f}" for p in records)
                + f"), video {times['video_s']:.2f} s encoded at {rtf[-1]:.2f}x real time, "
                + f"caption retries {len(records['caption']['attempts'])}",
                flush=True,
            )
    direct.stdin.close()
    direct.wait(timeout=60)
    api, ref = statistics.median(api_s), statistics.median(direct_s)
    print(f"post through the API {api:.2f} s vs its parts direct {ref:.2f} s: ratio {api / ref:.3f} (goal <= 1.1)")
    for part in ("caption", "image", "narration", "video"):
        a = statistics.median(r[part] for r in parts_api)
        d = statistics.median(r[part] for r in parts_direct)
        print(f"  {part}: record total {a:.2f} s, engine direct {d:.2f} s")
    print(f"video encode (direct): {statistics.median(rtf):.2f}x real time (goal > 1), load {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
