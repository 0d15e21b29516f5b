"""The FastAPI app factory. Routers stay thin: parse, call the service, return its record."""

from __future__ import annotations

import logging
import threading
from contextlib import asynccontextmanager

from fastapi import FastAPI

from genforge import __version__
from genforge.api import content, models, openai, system
from genforge.api.errors import BodySizeLimit, install_error_handlers
from genforge.api.web import WebUI
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
        runtime.close()

    app = FastAPI(title="genforge", version=__version__, lifespan=lifespan)
    install_error_handlers(app)
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_body_bytes)
    app.include_router(system.router)
    app.include_router(content.router)
    app.include_router(models.router)
    app.include_router(openai.router)
    app.mount("/", WebUI(), name="web")  # last: every API route above wins
    return app
