"""Prometheus metrics (GET /metrics). Module-level: one set per process, like the registry itself."""

from __future__ import annotations

from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from genforge.contenttypes.text import TextRecord

if TYPE_CHECKING:
    from genforge.contenttypes import ContentRecord
    from genforge.core.jobs import JobQueue

REQUESTS = Counter(
    "genforge_requests", "Generation requests by content type and final status", ["content_type", "status"]
)
FAILURES = Counter("genforge_failures", "Failed generations by error code", ["code"])
GENERATION_SECONDS = Histogram(
    "genforge_generation_seconds",
    "Engine time per successful generation",
    ["content_type"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120, 300),
)
TOKENS = Counter("genforge_tokens_generated", "Completion tokens generated")
TOKENS_PER_SECOND = Histogram(
    "genforge_tokens_per_second",
    "Decoding speed per text generation",
    buckets=(5, 10, 20, 40, 60, 80, 100, 120, 160, 200, 300),
)
MODEL_LOAD_SECONDS = Histogram(
    "genforge_model_load_seconds",
    "Model load time when a request had to load it",
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30),
)
QUEUE_DEPTH = Gauge("genforge_queue_depth", "Jobs waiting for a free slot")
RUNNING = Gauge("genforge_jobs_running", "Jobs running now")


# What a `genforge worker` counts itself (the queue gauges are the API process's: they read its runner).
GENERATION_METRICS = (REQUESTS, FAILURES, GENERATION_SECONDS, TOKENS, TOKENS_PER_SECOND, MODEL_LOAD_SECONDS)


def serve_worker_metrics(host: str, port: int) -> None:
    """Serve this worker's generation metrics on http://host:port/ in a thread of its own (OSError if taken)."""
    registry = CollectorRegistry(auto_describe=True)
    for metric in GENERATION_METRICS:
        registry.register(metric)
    start_http_server(port, addr=host, registry=registry)


def observe_success(record: ContentRecord) -> None:
    """Count a succeeded record (a genforge.contenttypes.ContentRecord)."""
    REQUESTS.labels(record.content_type, "succeeded").inc()
    timings = record.timings
    if timings.generate_ms:
        GENERATION_SECONDS.labels(record.content_type).observe(timings.generate_ms / 1000)
    if timings.load_ms:
        MODEL_LOAD_SECONDS.observe(timings.load_ms / 1000)
    tokens = record.usage.completion_tokens if isinstance(record, TextRecord) and record.usage else None
    if tokens:
        TOKENS.inc(tokens)
        if timings.generate_ms:
            TOKENS_PER_SECOND.observe(tokens / (timings.generate_ms / 1000))


def observe_failure(content_type: str, code: str) -> None:
    REQUESTS.labels(content_type, "cancelled" if code == "cancelled" else "failed").inc()
    FAILURES.labels(code).inc()


def track_runner(runner: JobQueue) -> None:
    """Read queue depth and running jobs from the runner at scrape time."""
    QUEUE_DEPTH.set_function(lambda: runner.depth)
    RUNNING.set_function(lambda: runner.running)
