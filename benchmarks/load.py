"""Sustained load and the cost of access control, in one run.

    .venv/bin/python benchmarks/load.py [--seconds 20] [--tokens 8] [--queue 8]

1. Capacity: short text generations (sync, `max_tokens` --tokens) from 8 closed-loop clients for
   --capacity-seconds; completed requests per second is the capacity C.
2. Load: requests arrive at a fixed rate of 50 %, 100 % and 150 % of C for --seconds each (open loop: an
   arrival does not wait for earlier answers). Per level: throughput of accepted requests, p50/p99 latency of
   accepted ones, share of 429s (load shed by the bounded queue), any other status, and the server's RSS.
   The queue is --queue places (GENFORGE_QUEUE_SIZE): a level sheds once the excess arrivals have filled it,
   after queue / (0.5 C) seconds at 150 %, so the queue must be small against the level's length.
3. Auth cost: GET /api/v1/content/{id} (a cheap route) on a server with a key and a rate-limited key
   (limit never reached, so the token bucket runs) against a server without keys, alternating rounds;
   the median per-request difference is what auth + rate limiting cost. On a busy machine that difference
   drowns in the noise of the HTTP round trip, so the key check alone (KeyStore.lookup + the token bucket,
   what api/auth.authenticate does) is also timed in-process.
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import os
import shutil
import statistics
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import httpx
from _server import GENFORGE, Server, rss_mb

BODY = {"content_type": "text", "prompt": "Say hello.", "params": {"seed": 1, "temperature": 0}}


def make_key(server: Server, name: str, *opts: str) -> str:
    out = subprocess.run(
        [GENFORGE, "keys", "create", "--name", name, *opts], env=server.env, capture_output=True, text=True, check=True
    )
    return out.stdout.strip().splitlines()[-1]


class Clients(threading.local):
    def get(self, headers: dict) -> httpx.Client:
        if not hasattr(self, "client"):
            self.client = httpx.Client(timeout=120, headers=headers)
        return self.client


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


def capacity(url: str, headers: dict, body: dict, seconds: float, clients: int = 8) -> float:
    done, stop = [], time.perf_counter() + seconds
    local = Clients()

    def loop():
        while time.perf_counter() < stop:
            if local.get(headers).post(url, json=body).status_code == 201:
                done.append(time.perf_counter())

    start = time.perf_counter()
    threads = [threading.Thread(target=loop) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return len(done) / (time.perf_counter() - start)


def level(url: str, headers: dict, body: dict, rate: float, seconds: float) -> dict:
    local = Clients()

    def one(_):
        t = time.perf_counter()
        try:
            status = local.get(headers).post(url, json=body).status_code
        except httpx.HTTPError:
            status = 0
        return status, time.perf_counter() - t

    n = max(1, int(rate * seconds))
    futures = []
    with cf.ThreadPoolExecutor(max_workers=96) as pool:
        start = time.perf_counter()
        for i in range(n):
            delay = start + i / rate - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            futures.append(pool.submit(one, i))
        results = [f.result() for f in futures]
        elapsed = time.perf_counter() - start
    ok = [lat for status, lat in results if status == 201]
    statuses = [status for status, _ in results]
    return {
        "offered_rps": rate,
        "accepted_rps": len(ok) / elapsed,
        "p50_ms": pct(ok, 0.50) * 1000,
        "p99_ms": pct(ok, 0.99) * 1000,
        "shed_429": statuses.count(429) / len(statuses),
        "other": sorted({s for s in statuses if s not in (201, 429)}),
        "n": len(statuses),
    }


def auth_rounds(plain: Server, keyed: Server, key: str, rounds: int, requests: int) -> tuple[float, float]:
    """Median per-request latency (µs) of GET /api/v1/content/{id} without and with a key, alternating."""

    def setup(server: Server, headers: dict) -> tuple[httpx.Client, str]:
        client = httpx.Client(base_url=server.url, headers=headers, timeout=60)
        rec = client.post("/api/v1/content/generate", json={**BODY, "params": {"max_tokens": 2, "seed": 1}}).json()
        return client, f"/api/v1/content/{rec['id']}"

    sides = [setup(plain, {}), setup(keyed, {"Authorization": f"Bearer {key}"})]
    per = [[], []]
    for r in range(rounds):
        for i in (r % 2, 1 - r % 2):  # alternate which side goes first
            client, path = sides[i]
            for _ in range(requests):
                t = time.perf_counter()
                assert client.get(path).status_code == 200
                per[i].append(time.perf_counter() - t)
    return statistics.median(per[0]) * 1e6, statistics.median(per[1]) * 1e6


def key_check_us(n: int = 3000) -> tuple[float, float]:
    """(µs per key lookup + token bucket, µs per lookup of a revoked/unknown key), medians, in-process."""
    from genforge.core.access import KeyStore, RateLimiter
    from genforge.stores.db import Database

    data = Path(tempfile.mkdtemp(prefix="gf-bench-"))
    try:
        db = Database(f"sqlite:///{data / 'genforge.db'}")
        db.migrate()
        keys, bucket = KeyStore(db), RateLimiter()
        _, token = keys.create("bench", "admin", rate="1000000/s")
        for _ in range(200):  # warm the connection pool
            keys.lookup(token)

        def timed(fn) -> float:
            samples = []
            for _ in range(n):
                t = time.perf_counter()
                fn()
                samples.append(time.perf_counter() - t)
            return statistics.median(samples) * 1e6

        def check():
            caller = keys.lookup(token)
            bucket.take(caller.id, *caller.rate)

        return timed(check), timed(lambda: keys.lookup(token[:-4] + "xxxx"))
    finally:
        db.dispose()
        shutil.rmtree(data, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=20)
    ap.add_argument("--capacity-seconds", type=float, default=10)
    ap.add_argument("--tokens", type=int, default=8)
    ap.add_argument("--queue", type=int, default=8)
    ap.add_argument("--auth-rounds", type=int, default=6)
    ap.add_argument("--auth-requests", type=int, default=200)
    args = ap.parse_args()
    body = {**BODY, "params": {**BODY["params"], "max_tokens": args.tokens}}
    print(
        f"load: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}, max_tokens {args.tokens}, "
        f"queue {args.queue}"
    )

    keyed = Server({"GENFORGE_QUEUE_SIZE": str(args.queue)})
    admin = make_key(keyed, "bench", "--scope", "admin", "--rate", "1000000/s")
    with keyed:
        url, headers = keyed.url + "/api/v1/content/generate", {"Authorization": f"Bearer {admin}"}
        level(url, headers, body, 2, 2)  # warm up
        cap = capacity(url, headers, body, args.capacity_seconds)
        print(f"capacity: {cap:.1f} requests/s (8 closed-loop clients, {args.capacity_seconds:g} s)")
        print("| load | offered req/s | accepted req/s | p50 ms | p99 ms | 429 share | other statuses | RSS MB |")
        print("|---|---|---|---|---|---|---|---|")
        rows = {}
        for share in (0.5, 1.0, 1.5):
            row = level(url, headers, body, cap * share, args.seconds)
            rows[share] = row
            print(
                f"| {share:.0%} | {row['offered_rps']:.1f} | {row['accepted_rps']:.1f} | {row['p50_ms']:.0f} | "
                f"{row['p99_ms']:.0f} | {row['shed_429']:.1%} | {row['other'] or '-'} | {rss_mb(keyed.proc.pid):.0f} |"
            )
        ratio = rows[1.5]["p99_ms"] / rows[1.0]["p99_ms"]
        print(f"p99 at 150 % / p99 at 100 %: {ratio:.2f} (goal <= 2)")
        with Server() as plain:
            without, with_key = auth_rounds(plain, keyed, admin, args.auth_rounds, args.auth_requests)
    print(
        f"auth: GET /api/v1/content/{{id}} median {without:.0f} µs without keys, {with_key:.0f} µs with a key "
        f"(rate-limited): auth + rate limiting cost {with_key - without:.0f} µs a request "
        f"(ratio {with_key / without:.2f}; goal < 1000 µs)"
    )
    check, wrong = key_check_us()
    print(f"key check in-process: {check:.0f} µs (lookup + token bucket), {wrong:.0f} µs for a wrong key (median)")


if __name__ == "__main__":
    main()
