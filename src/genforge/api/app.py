"""The FastAPI app factory. Routers stay thin: parse, call the service, return its record."""

from __future__ import annotations

import logging
import threading
from contextlib import asynccontextmanager

from fastapi import FastAPI

from genforge import __version__
from genforge.api import content, models, openai, personas, posts, system
from genforge.api.errors import BodySizeLimit, install_error_handlers
from genforge.config import Settings
from genforge.runtime import Runtime

log = logging.getLogger("genforge.api")


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        runtime = Runtime.open(settings, recover=True)
        app.state.runtime = runtime
        if settings.preload:
            threading.Thread(target=runtime.preload, name="genforge-preload", daemon=True).start()
        yield
        runtime.close(drain_s=settings.drain_timeout_s)

    # Operation ids are the route functions' names, so that OpenAPI links can name them.
    app = FastAPI(
        title="genforge", version=__version__, lifespan=lifespan, generate_unique_id_function=lambda route: route.name
    )
    install_error_handlers(app)
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_body_bytes)
    app.include_router(system.router)
    app.include_router(content.router)
    app.include_router(models.router)
    app.include_router(openai.router)
    app.include_router(personas.router)
    app.include_router(posts.router)
    return app
