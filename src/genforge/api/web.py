"""The browser UI: static files from genforge/web, sent with a Content-Security-Policy that allows no inline
script. The UI talks to the public API with relative URLs only, so it works under GENFORGE_ROOT_PATH."""

from __future__ import annotations

from pathlib import Path

from fastapi.staticfiles import StaticFiles

WEB_DIR = Path(__file__).resolve().parent.parent / "web"
# Only our own files run; images, audio and downloads come through fetch() as blob: URLs (so that an API key
# header goes with them).
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' blob:; media-src 'self' blob:; "
    "connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
)
HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",  # revalidate: an upgraded server serves its own UI at once
}


class WebUI(StaticFiles):
    def __init__(self) -> None:
        super().__init__(directory=WEB_DIR, html=True)

    async def get_response(self, path, scope):
        response = await super().get_response(path, scope)
        response.headers.update(HEADERS)
        return response
