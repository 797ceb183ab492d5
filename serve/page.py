"""``GET /``: a page to try every served model from a browser (serve/static/, no build step).

Plain HTML, CSS and JavaScript shipped in the package and served by the Gateway itself, with
nothing fetched from elsewhere, so the page works offline. It talks to the same API as any
client: ``/v1/models``, ``/v1/audio/transcriptions``, ``/v1/audio/speech`` and the
``/v1/realtime`` WebSocket. Loading the page needs no API key; ``GET /page.json`` tells it
whether the API wants one (so it asks before calling the API rather than after a 401), and the
key entered is kept in the tab's ``sessionStorage``.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles

STATIC = Path(__file__).with_name("static")


def add_page(app: FastAPI, *, api_key_required: bool) -> None:
    """Serve the page at ``/``, its files under ``/static/`` and its settings at ``/page.json``."""

    async def index() -> FileResponse:
        return FileResponse(STATIC / "index.html", media_type="text/html")

    async def settings() -> JSONResponse:
        return JSONResponse({"api_key_required": api_key_required})

    app.add_api_route("/", index, methods=["GET"], include_in_schema=False)
    app.add_api_route("/page.json", settings, methods=["GET"], include_in_schema=False)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
