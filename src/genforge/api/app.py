"""The FastAPI app factory. Routers stay thin: parse, call the service, return its record."""

from __future__ import annotations

import logging
import threading
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.concurrency import run_in_threadpool
from fastapi.middleware.cors import CORSMiddleware

from genforge import __version__
from genforge.api import auth, content, keys, models, openai, personas, posts, system
from genforge.api.errors import BodySizeLimit, install_error_handlers
from genforge.api.network import HostOriginGuard
from genforge.api.web import WebUI
from genforge.config import Settings
from genforge.core.access import Auth
from genforge.runtime import Runtime

log = logging.getLogger("genforge.api")


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        runtime = Runtime.open(settings, recover=True)
        runtime.worker.attach_loop()  # engine events are read on this loop, not by a thread each
        app.state.runtime = runtime
        app.state.auth = Auth(settings, runtime.db)
        if settings.preload:
            threading.Thread(target=runtime.preload, name="genforge-preload", daemon=True).start()
        yield
        # Off the loop: the loop reads the engines' pipes, and the draining jobs wait for their last messages.
        await run_in_threadpool(runtime.close, drain_s=settings.drain_timeout_s)

    # Operation ids are the route functions' names, so that OpenAPI links can name them.
    app = FastAPI(
        title="genforge", version=__version__, lifespan=lifespan, generate_unique_id_function=lambda route: route.name
    )
    install_error_handlers(app)
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_body_bytes)
    if settings.cors_origin_list:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origin_list,
            allow_methods=["*"],
            allow_headers=["Authorization", "Content-Type"],
            expose_headers=["Location", "Retry-After", "X-Genforge-Content-Id"],
        )
    app.add_middleware(  # outermost: a foreign Host or Origin gets nothing else
        HostOriginGuard,
        allowed_hosts=settings.allowed_host_names,
        bound_host=settings.host,
        cors_origins=settings.cors_origin_list,
    )
    app.include_router(system.router)  # /healthz, /readyz without a key; /metrics guards itself
    app.include_router(content.router, dependencies=auth.GUARD, responses=auth.RESPONSES)
    app.include_router(content.uploads_router, dependencies=auth.GUARD, responses=auth.RESPONSES)
    app.include_router(models.router, dependencies=auth.GUARD, responses=auth.RESPONSES)
    app.include_router(keys.router, responses=auth.RESPONSES)  # admin keys only (its own guard)
    app.include_router(openai.router, dependencies=auth.GUARD, responses=auth.OPENAI_RESPONSES)
    app.include_router(personas.router, dependencies=auth.GUARD, responses=auth.RESPONSES)
    app.include_router(posts.router, dependencies=auth.GUARD, responses=auth.RESPONSES)
    app.mount("/", WebUI(), name="web")  # last: every API route above wins
    return app
