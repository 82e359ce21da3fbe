"""The web console: static files under ``/console``, every piece of data read by the page
itself from the admin API with the key the user types (kept in the tab's sessionStorage).

The page is public on purpose — it holds no data, only HTML, CSS and JavaScript shipped in
the package (``router/api/console/``, with uPlot vendored under ``vendor/``; nothing is
fetched from elsewhere). Starlette's ``StaticFiles`` serves them; the only addition is a
strict Content-Security-Policy, so the page can load nothing but its own files and can
talk only to this router.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from starlette.responses import RedirectResponse, Response
from starlette.staticfiles import StaticFiles
from starlette.types import Message, Receive, Scope, Send

CONSOLE_PATH = "/console"
CONSOLE_DIR = Path(__file__).with_name("console")

# Scripts, styles, images and API calls from this origin only; no framing (clickjacking).
SECURITY_HEADERS = {
    "content-security-policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
    ),
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
}


class ConsoleFiles(StaticFiles):
    """``StaticFiles`` with the console's security headers on every response."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                headers += [(k.encode(), v.encode()) for k, v in SECURITY_HEADERS.items()]
                message = {**message, "headers": headers}
            await send(message)

        await super().__call__(scope, receive, send_with_headers)


def mount_console(app: FastAPI) -> None:
    """Serve the console at ``/console/`` (``/console`` redirects there, so the page's
    relative links resolve)."""

    async def to_index() -> Response:
        return RedirectResponse(CONSOLE_PATH + "/", status_code=307)

    app.add_api_route(CONSOLE_PATH, to_index, methods=["GET", "HEAD"], include_in_schema=False)
    app.mount(CONSOLE_PATH, ConsoleFiles(directory=CONSOLE_DIR, html=True), name="console")


def console_url(host: str, port: int) -> str:
    """The address a person opens; a wildcard bind is shown as localhost."""
    shown = "127.0.0.1" if host in ("0.0.0.0", "", "::") else host
    if ":" in shown:
        shown = f"[{shown}]"
    return f"http://{shown}:{port}{CONSOLE_PATH}/"
