"""Issue 6 in-process: async jobs, queue, cancel, SSE events, metrics, restart recovery (real model)."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from conftest import (
    CONTENT,
    GENERATE,
    MID_GENERATION_FAILURE,
    TEXT_SETTINGS,
    ScriptedRunner,
    assert_error,
    assert_succeeded_text,
    files_under,
    runtime_of,
    text_body,
    wait_for,
)
from genforge.stores.db import ContentRow

pytestmark = pytest.mark.both_modes
LONG = {"prompt": "Write a very long story about the sea, with many chapters.", "max_tokens": 1500}


def sse_events(lines) -> list[tuple[str, dict]]:
    """Parse `event:`/`data:` lines into (event, data) pairs."""
    events, name = [], None
    for line in lines:
        if line.startswith("event: "):
            name = line[7:]
        elif line.startswith("data: "):
            events.append((name, json.loads(line[6:])))
    return events


def status_of(client, content_id: str) -> dict:
    resp = client.get(f"{CONTENT}/{content_id}")
    assert resp.status_code == 200, resp.text
    return resp.json()


def test_async_job_lifecycle(live):
    resp = live.client.post(GENERATE, json={**text_body(max_tokens=24, seed=4), "mode": "async"})
    assert resp.status_code == 202, resp.text
    rec = resp.json()
    assert rec["status"] in ("pending", "running") and rec["artifact"] is None
    assert resp.headers["location"] == f"{CONTENT}/{rec['id']}"
    done = wait_for(
        lambda: (r := status_of(live.client, rec["id"]))["status"] == "succeeded" and r, what="the async job to succeed"
    )
    assert_succeeded_text(done)
    assert done["usage"]["completion_tokens"] <= 24


def test_queue_position_cancel_pending_and_running(app_with):
    client = app_with(parallel=1, queue_size=4)
    first = client.post(GENERATE, json={**text_body(**LONG), "mode": "async"}).json()
    wait_for(lambda: status_of(client, first["id"])["status"] == "running", what="the first job to run")
    second = client.post(GENERATE, json={**text_body(**LONG), "mode": "async"})
    assert second.status_code == 202
    waiting = status_of(client, second.json()["id"])
    assert waiting["status"] == "pending" and waiting["queue_position"] == 1

    cancelled = client.post(f"{CONTENT}/{waiting['id']}/cancel")
    assert cancelled.status_code == 200, cancelled.text
    assert cancelled.json()["status"] == "cancelled" and cancelled.json()["artifact"] is None

    stopped = client.post(f"{CONTENT}/{first['id']}/cancel").json()
    assert stopped["status"] == "cancelled", stopped
    assert stopped["error"]["code"] == "cancelled" and stopped["artifact"] is None
    assert files_under(runtime_of(client).settings.artifacts_dir) == []
    # cancelling what has finished is refused, not pretended
    assert_error(client.post(f"{CONTENT}/{first['id']}/cancel"), 409, "conflict")
    assert_error(client.post(f"{CONTENT}/no-such-id/cancel"), 404, "not_found")


def test_queue_full_is_429_and_records_nothing(app_with):
    client = app_with(parallel=1, queue_size=1)
    running = client.post(GENERATE, json={**text_body(**LONG), "mode": "async"}).json()
    wait_for(lambda: status_of(client, running["id"])["status"] == "running", what="the job to run")
    queued = client.post(GENERATE, json={**text_body(**LONG), "mode": "async"}).json()
    refused = client.post(GENERATE, json={**text_body(**LONG), "mode": "async"})
    err = assert_error(refused, 429, "queue_full")
    assert int(refused.headers["retry-after"]) >= 1 and err["content_id"] is None
    assert client.get(CONTENT).json()["total"] == 2  # the refused request left no record
    for rec in (queued, running):
        client.post(f"{CONTENT}/{rec['id']}/cancel")


def test_sse_tokens_concatenate_to_the_final_text(live):
    with live.client.stream("POST", GENERATE, json={**text_body(max_tokens=32, seed=9), "stream": True}) as resp:
        assert resp.status_code == 201  # the record is created, as without streaming
        assert resp.headers["content-type"].startswith("text/event-stream")
        events = sse_events(resp.iter_lines())
    tokens = [data["text"] for name, data in events if name == "token"]
    finals = [(name, data) for name, data in events if name in ("done", "failed")]
    assert len(tokens) > 1 and len(finals) == 1 and events[-1] == finals[0]
    name, record = finals[0]
    assert name == "done"
    assert_succeeded_text(record)
    assert "".join(tokens) == record["text"]
    # a finished job's event stream is its final event alone
    with live.client.stream("GET", f"{CONTENT}/{record['id']}/events") as resp:
        assert sse_events(resp.iter_lines()) == [("done", status_of(live.client, record["id"]))]


def test_engine_failure_mid_stream_ends_with_failed_event(scripted_app):
    client = scripted_app(ScriptedRunner(tokens=["It", " was"], error=MID_GENERATION_FAILURE))
    with client.stream("POST", GENERATE, json={**text_body(), "stream": True}) as resp:
        events = sse_events(resp.iter_lines())
    assert [name for name, _ in events] == ["token", "token", "failed"]
    record = events[-1][1]
    assert record["status"] == "failed" and record["error"]["code"] == "engine_failed"
    assert record["artifact"] is None and status_of(client, record["id"])["status"] == "failed"


@pytest.mark.only_in(
    "embedded", reason="generation metrics are counted where the job runs: a worker, which serves no /metrics"
)
def test_metrics_move_with_requests(live):
    def value(name: str, labels: str = "") -> float:
        text = live.client.get("/metrics").text
        for line in text.splitlines():
            if line.startswith(name + labels + " ") or (not labels and line.startswith(name + " ")):
                return float(line.split()[-1])
        return 0.0

    ok = 'genforge_requests_total{content_type="text",status="succeeded"}'
    before_ok, before_tokens = value(ok), value("genforge_tokens_generated_total")
    before_invalid = value('genforge_failures_total{code="engine_failed"}')
    rec = live.generate(max_tokens=8, seed=2)
    assert value(ok) == before_ok + 1
    assert value("genforge_tokens_generated_total") == before_tokens + rec["usage"]["completion_tokens"]
    text = live.client.get("/metrics").text
    for name in (
        "genforge_generation_seconds_bucket",
        "genforge_tokens_per_second_bucket",
        "genforge_queue_depth",
        "genforge_jobs_running",
        "genforge_model_load_seconds_bucket",
    ):
        assert name in text, name
    assert value('genforge_failures_total{code="engine_failed"}') == before_invalid


@pytest.mark.only_in(
    "embedded", reason="start-up recovery is the embedded mode's; workers' leases find lost jobs (e2e/test_distributed)"
)
def test_restart_resolves_unfinished_records_and_orphans(app_with, tmp_path):
    data = tmp_path / "restart"
    client = app_with(data_dir=data, preload=False)
    runtime = runtime_of(client)
    with runtime.db.session() as s:
        for status in ("pending", "running"):
            s.add(
                ContentRow(
                    id=f"left-{status}",
                    content_type="text",
                    status=status,
                    prompt="p",
                    quality="standard",
                    params=TEXT_SETTINGS,
                    extra={},
                    created_at=datetime.now(UTC),
                )
            )
    orphan = runtime.store.root / "ab" / ("ab" + "0" * 62 + ".txt")
    orphan.parent.mkdir(parents=True, exist_ok=True)
    orphan.write_text("written just before a crash")
    again = app_with(data_dir=data, preload=False)  # a second start on the same data dir recovers
    for status in ("pending", "running"):
        rec = status_of(again, f"left-{status}")
        assert rec["status"] == "failed" and rec["error"]["code"] == "interrupted", rec
    assert not orphan.exists()
