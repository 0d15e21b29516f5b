"""Health, readiness and metrics."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable

from fastapi import APIRouter, Depends, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel

from genforge import __version__
from genforge.api.auth import RESPONSES, Credentials, authenticate, authenticate_metrics, bearer
from genforge.errors import DatabaseUnavailable
from genforge.runtime import Readiness

router = APIRouter(tags=["system"])


class Health(BaseModel):
    status: str
    version: str


@router.get("/healthz", response_model=Health)
async def healthz() -> Health:  # on the event loop, not the thread pool: it answers while every thread is busy
    return Health(status="ok", version=__version__)


class SharedProbe:
    """Readiness computed on a thread of its own, once for every /readyz that arrives while it runs: a flood of
    probes costs one computation at a time, and a probe answers while the AnyIO thread pool is busy."""

    def __init__(self, compute: Callable[[], Readiness]):
        self.compute = compute
        self._pending: asyncio.Future | None = None

    async def get(self) -> Readiness:
        if self._pending is None:
            loop = asyncio.get_running_loop()
            self._pending = future = loop.create_future()

            def settle(result: Readiness | None, exc: BaseException | None) -> None:  # on the loop
                self._pending = None
                if exc is not None:
                    future.set_exception(exc)
                else:
                    future.set_result(result)

            def work() -> None:
                try:
                    result, exc = self.compute(), None
                except Exception as error:  # handed to the waiting probes, which answer 500 with it
                    result, exc = None, error
                with contextlib.suppress(RuntimeError):  # the loop closed meanwhile (shutdown): nobody waits
                    loop.call_soon_threadsafe(settle, result, exc)

            threading.Thread(target=work, name="genforge-readiness", daemon=True).start()
        return await asyncio.shield(self._pending)  # a probe that leaves does not cancel the others' answer


def _probe(request: Request) -> SharedProbe:
    state = request.app.state
    if getattr(state, "readiness_probe", None) is None:  # made on the loop: no race
        state.readiness_probe = SharedProbe(state.runtime.readiness)
    return state.readiness_probe


def _may_see_details(request: Request, creds: Credentials) -> bool:
    """The checks' details (versions, pids, paths, hosts) for a valid key; an anonymous probe gets the statuses.
    While auth is off every route is open to whoever reaches the server, so hiding them would protect nothing.
    A key that is sent must be valid (401 otherwise), as on every other route. A database that cannot answer
    (the probe's very subject) gives the statuses: it must not turn the probe into an error."""
    auth = request.app.state.auth
    try:
        if not auth.active():
            return True
        if creds is None:
            return False
        authenticate(request, creds)
    except DatabaseUnavailable:  # whether keys exist, or this one is valid, cannot be told: statuses only
        return False
    return True


@router.get(
    "/readyz",
    response_model=Readiness,
    responses={
        503: {"model": Readiness, "description": "Not ready: the failing checks say why."},
        401: RESPONSES[401],
        429: RESPONSES[429],
    },
)
async def readyz(request: Request):
    """Ready or not, and each check's `ok`; each check's `detail` (and figures) needs a valid API key
    (`Authorization: Bearer KEY`, optional here) once the server has keys."""
    creds = await bearer(request)  # read here, not declared as a dependency: the schema would call it required
    details = await run_in_threadpool(_may_see_details, request, creds)  # a short key lookup
    report = await _probe(request).get()
    body = report.model_dump(mode="json")
    if not details:
        body = {"ready": report.ready, "checks": {name: {"ok": check.ok} for name, check in report.checks.items()}}
    return JSONResponse(body, status_code=200 if report.ready else 503)


@router.get(
    "/metrics",
    response_class=Response,
    dependencies=[Depends(authenticate_metrics)],
    responses={
        **RESPONSES,
        200: {"description": "Prometheus metrics.", "content": {CONTENT_TYPE_LATEST: {"schema": {"type": "string"}}}},
    },
)
def metrics():
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)
