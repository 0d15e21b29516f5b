"""A real `genforge serve` process: an engine crash fails the one request it hits, and the server goes on."""

from __future__ import annotations

import os
import signal
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from conftest import (
    CONTENT,
    GENERATE,
    Server,
    assert_error,
    assert_failed,
    assert_succeeded_text,
    failed_record,
    files_under,
    long_generation_body,
    run_cli,
    text_body,
    wait_for,
)

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    srv = Server(tmp_path_factory.mktemp("server") / "data").start()
    try:
        srv.wait_ready()
        yield srv
    finally:
        srv.stop()


def test_the_server_generates_real_text(server):
    resp = server.http.post(GENERATE, json=text_body("Name two planets.", max_tokens=16))
    assert resp.status_code == 201, resp.text
    assert_succeeded_text(resp.json())


def test_outputs_larger_than_the_pipes_buffer_reach_the_client_whole(server):
    """A 1024x1024 portrait is a ~1.3 MB message from the engine worker, larger than the socket's buffer, read
    on the server's uvloop event loop. Before the fix, uvloop had made the pipe non-blocking and about one in three
    such messages ended in BlockingIOError halfway, which the server took for a dead worker (502, worker killed)."""
    restarts = server.readiness()["checks"]["engine_worker"]["restarts"]
    for seed in range(6):
        body = {"content_type": "image", "model": "portrait", "prompt": "a face",
                "params": {"width": 1024, "height": 1024, "seed": seed}}  # fmt: skip
        resp = server.http.post(GENERATE, json=body)
        assert resp.status_code == 201, resp.text
        artifact = resp.json()["artifact"]
        assert artifact["size_bytes"] > 1_000_000, artifact
        assert server.http.get(artifact["url"]).content[:8] == b"\x89PNG\r\n\x1a\n"
    assert server.readiness()["checks"]["engine_worker"]["restarts"] == restarts


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGSEGV], ids=["SIGKILL", "SIGSEGV"])
def test_engine_worker_killed_mid_generation_is_502_and_the_next_request_succeeds(server, sig):
    pid = server.wait_ready()
    restarts = server.readiness()["checks"]["engine_worker"]["restarts"]
    files = files_under(server.data_dir / "artifacts")

    with ThreadPoolExecutor(1) as pool:
        long_request, _ = start_long_generation(server, pool)
        time.sleep(1.0)  # into the generation
        assert not long_request.done(), "the generation finished before the engine could be killed"
        os.kill(pid, sig)
        resp = long_request.result(timeout=120)

    err = assert_error(resp, 502, "engine_failed")
    assert sig.name in err["message"], err
    rec = failed_record(server.http, resp, "engine_failed")
    assert rec["content_type"] == "text"
    assert files_under(server.data_dir / "artifacts") == files, "the crashed generation left a file"
    assert server.proc.poll() is None, "the server died with its engine"

    new_pid = server.wait_ready()
    assert new_pid != pid
    assert server.readiness()["checks"]["engine_worker"]["restarts"] == restarts + 1

    after = server.http.post(GENERATE, json=text_body("Say hello.", max_tokens=12))
    assert after.status_code == 201, after.text
    assert_succeeded_text(after.json())


def test_an_engine_killed_while_idle_is_replaced_on_the_next_request(server):
    pid = server.wait_ready()
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: server.engine_pid() != pid, timeout=30, what="the dead worker to be noticed")

    resp = server.http.post(GENERATE, json=text_body("Name a colour.", max_tokens=8))
    assert resp.status_code == 201, resp.text
    assert_succeeded_text(resp.json())


def start_long_generation(server: Server, pool: ThreadPoolExecutor):
    """Post a long generation from a thread; returns (future of the response, the running record's id)."""
    future = pool.submit(server.http.post, GENERATE, json=long_generation_body())
    running = wait_for(
        lambda: server.http.get(CONTENT, params={"status": "running"}).json()["items"],
        timeout=60,
        interval=0.05,
        what="the generation to start",
    )
    return future, running[0]["id"]


def test_a_cli_command_beside_the_server_leaves_its_running_generation_alone(server):
    pid = server.wait_ready()
    with ThreadPoolExecutor(1) as pool:
        future, content_id = start_long_generation(server, pool)
        listed = run_cli(server.data_dir, "content", "list")
        assert listed.returncode == 0, listed.stderr
        assert not future.done(), "the generation finished before the CLI command ran"
        during = server.http.get(f"{CONTENT}/{content_id}").json()
        os.kill(pid, signal.SIGKILL)  # end the long generation now rather than wait for it
        assert_error(future.result(timeout=120), 502, "engine_failed")

    assert during["status"] == "running", (
        f"a CLI command run beside the server made its running generation {during['status']}: {during['error']}"
    )


def test_a_server_killed_mid_generation_reports_it_failed_after_restart(tmp_path):
    data_dir = tmp_path / "data"
    first = Server(data_dir).start()
    try:
        worker_pid = first.wait_ready()
        with ThreadPoolExecutor(1) as pool:
            future, content_id = start_long_generation(first, pool)
            first.proc.kill()  # the whole server, engine worker orphaned
            first.proc.wait(timeout=30)
            with pytest.raises(httpx.TransportError):
                future.result(timeout=60)
        wait_for(lambda: not pid_alive(worker_pid), timeout=30, what="the orphaned engine worker to exit")
    finally:
        first.stop()

    second = Server(data_dir).start()
    try:
        second.wait_ready()
        rec = second.http.get(f"{CONTENT}/{content_id}").json()
        assert_failed(rec, "interrupted")
        assert files_under(data_dir / "artifacts") == []
        after = second.http.post(GENERATE, json=text_body("Say hello.", max_tokens=8))
        assert after.status_code == 201, after.text
    finally:
        second.stop()


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as f:  # a zombie is dead, only not yet reaped
        return f.read().split(") ")[-1][0] != "Z"


def test_sigterm_to_the_whole_service_shuts_down_cleanly(tmp_path):
    """systemd (and `timeout`) send SIGTERM to every process of the service at once: the engine worker must
    leave its stopping to the server, not die first and be taken for a crash that is restarted mid-shutdown."""
    srv = Server(tmp_path / "data").start(new_session=True)
    try:
        pid = srv.wait_ready()
        wait_for(
            lambda: srv.readiness()["checks"]["engine_worker"]["detail"] == "model loaded",
            timeout=60,
            what="the engine worker to load the default model",
        )  # so it is past its start-up
        os.killpg(srv.proc.pid, signal.SIGTERM)
        # uvicorn shuts down gracefully, then re-raises the signal so the exit status names it
        assert srv.proc.wait(timeout=30) in (0, -signal.SIGTERM), srv.log()
        assert "Application shutdown complete" in srv.log(), srv.log()
        wait_for(lambda: not pid_alive(pid), timeout=10, what="the engine worker to stop")
        assert "restarting" not in srv.log() and "killed by" not in srv.log(), srv.log()
    finally:
        srv.stop()
