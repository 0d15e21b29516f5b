"""Structured output: genforge's constrained /v1 answers against llama-server's json_schema, and against the same
genforge requests unconstrained, on the same model, schema, prompts and max_tokens, in one run.

    LLAMA_SERVER=$(bash benchmarks/build_llama_server.sh) .venv/bin/python benchmarks/structured.py [--requests 8]

Prints, for each server: seconds per valid object, objects per second (valid ones only), completion tokens per
second, and the share of answers that fail validation (for genforge: reported as a success, which must be 0 %; an
honest `invalid_output` error is counted apart). For genforge also the tokens the grammar forced (decoded in
batches, not sampled) and the sampled tokens per second against the same requests unconstrained. Ratios are
against references measured in the same run; the machine's load average is printed with them.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import httpx
import jsonschema

sys.path.insert(0, str(Path(__file__).parent))
from _server import Server  # noqa: E402
from concurrency import llama_server  # noqa: E402

MODEL = "smollm2-135m-instruct"
SCHEMA = {
    "type": "object",
    "additionalProperties": False,
    "required": ["name", "category", "price", "rating", "in_stock", "reviews"],
    "properties": {
        "name": {"type": "string", "maxLength": 40},
        "category": {"type": "string", "enum": ["kitchen", "garden", "office", "toys"]},
        "price": {"type": "integer", "minimum": 1, "maximum": 1000},
        "rating": {"type": "integer", "minimum": 1, "maximum": 5},
        "in_stock": {"type": "boolean"},
        "reviews": {
            "type": "array",
            "maxItems": 2,
            "items": {
                "type": "object",
                "additionalProperties": False,
                "required": ["author", "stars", "text"],
                "properties": {
                    "author": {"type": "string", "maxLength": 20},
                    "stars": {"type": "integer", "minimum": 1, "maximum": 5},
                    "text": {"type": "string", "maxLength": 60},
                },
            },
        },
    },
}
PROMPTS = [
    "Describe a kettle for a shop catalogue as JSON.",
    "Describe a garden hose for a shop catalogue as JSON.",
    "Describe a desk lamp for a shop catalogue as JSON.",
    "Describe a toy train for a shop catalogue as JSON.",
    "Describe a frying pan for a shop catalogue as JSON.",
    "Describe a stapler for a shop catalogue as JSON.",
    "Describe a watering can for a shop catalogue as JSON.",
    "Describe a puzzle for a shop catalogue as JSON.",
]
FORMAT = {"type": "json_schema", "json_schema": {"name": "product", "schema": SCHEMA, "strict": True}}


def run(url: str, requests: int, max_tokens: int, constrained: bool, genforge: bool) -> dict:
    """`requests` chat completions one after another; what came back, how long, how much of it validates."""
    valid = invalid_ok = refused = tokens = forced = 0
    sampled_rate: list[float] = []
    start = time.perf_counter()
    with httpx.Client(timeout=600) as client:
        for i in range(requests):
            body = {
                "model": MODEL,
                "messages": [{"role": "user", "content": PROMPTS[i % len(PROMPTS)]}],
                "max_tokens": max_tokens,
                "temperature": 0.6,
                "seed": i,
                **({"response_format": FORMAT} if constrained else {}),
            }
            resp = client.post(url + "/v1/chat/completions", json=body)
            if resp.status_code != 200:
                refused += 1  # an honest error (genforge: invalid_output after its attempts)
                continue
            out = resp.json()
            n = out["usage"]["completion_tokens"]
            tokens += n
            if genforge:
                rec = client.get(f"{url}/api/v1/content/{resp.headers['X-Genforge-Content-Id']}").json()
                f = rec.get("forced_tokens") or 0
                forced += f
                sampled_rate.append((n - f) / (rec["timings"]["generate_ms"] / 1000))
            if not constrained:
                continue
            try:
                jsonschema.validate(json.loads(out["choices"][0]["message"]["content"]), SCHEMA)
                valid += 1
            except (ValueError, jsonschema.ValidationError):
                invalid_ok += 1  # a 200 whose JSON does not validate
    wall = time.perf_counter() - start
    return {
        "wall_s": wall,
        "valid": valid,
        "invalid_200": invalid_ok,
        "refused": refused,
        "tokens": tokens,
        "forced": forced,
        "sampled_tps": statistics.median(sampled_rate) if sampled_rate else None,
    }


def report(name: str, r: dict, requests: int) -> None:
    per_obj = r["wall_s"] / r["valid"] if r["valid"] else float("inf")
    print(
        f"{name:26s} {r['valid']}/{requests} valid, {r['invalid_200']} invalid with 200, {r['refused']} refused; "
        f"{per_obj:.2f} s per valid object, {r['valid'] / r['wall_s']:.3f} objects/s, "
        f"{r['tokens'] / r['wall_s']:.1f} tokens/s"
        + (f", {r['forced']} of {r['tokens']} tokens forced" if r["forced"] else ""),
        flush=True,
    )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=8)
    ap.add_argument("--max-tokens", type=int, default=200)
    args = ap.parse_args()
    print(f"load average before: {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores", flush=True)
    results: dict[str, dict] = {}
    with Server({"GENFORGE_PARALLEL": "1"}) as srv:
        run(srv.url, 1, 16, True, True)  # warm: the model and llguidance's tokenizer
        results["genforge json_schema"] = run(srv.url, args.requests, args.max_tokens, True, True)
        report("genforge json_schema", results["genforge json_schema"], args.requests)  # as each phase ends
        results["genforge free"] = run(srv.url, args.requests, args.max_tokens, False, True)
        report("genforge free", results["genforge free"], args.requests)
    ref = llama_server(1)
    if ref is not None:
        proc, url = ref
        try:
            run(url, 1, 16, True, False)
            results["llama-server json_schema"] = run(url, args.requests, args.max_tokens, True, False)
            report("llama-server json_schema", results["llama-server json_schema"], args.requests)
        finally:
            proc.kill()
    g, free = results["genforge json_schema"], results["genforge free"]
    if g["sampled_tps"] and free["sampled_tps"]:
        print(
            f"sampled tokens/s, constrained / free (genforge): {g['sampled_tps'] / free['sampled_tps']:.3f} "
            f"({g['sampled_tps']:.1f} / {free['sampled_tps']:.1f}, medians per request)"
        )
    if "llama-server json_schema" in results:
        ls = results["llama-server json_schema"]
        ratio = (g["valid"] / g["wall_s"]) / (ls["valid"] / ls["wall_s"]) if ls["valid"] else float("inf")
        print(f"valid objects/s, genforge / llama-server: {ratio:.3f}")
        print(f"llama-server answers that fail validation with 200: {ls['invalid_200'] / args.requests:.0%}")
    else:
        print("llama-server: not available (set LLAMA_SERVER to a built llama-server binary to compare)")
    print(f"genforge answers that fail validation with 200: {g['invalid_200'] / args.requests:.0%}")
    print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
