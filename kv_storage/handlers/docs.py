"""``/api/docs``: the Swagger UI, served from the files in ``kv_storage/static``.

The UI is swagger-ui-dist from npm, vendored at a pinned version with its licence
(``scripts/vendor-swagger-ui.sh``), so the page works offline and is not the outdated copy
that aiohttp-apispec bundles. It reads only this service's own API document: it takes no
configuration from its address. Its pages carry a Content-Security-Policy (``DOCS_CSP``,
set with every answer's headers in ``kv_storage.headers``) that lets them load scripts and
styles from this service alone and talk to nothing else, and may not be framed.
``app.docs.enabled = false`` removes the UI and the document.
"""

from pathlib import Path

from aiohttp import web

STATIC = Path(__file__).resolve().parents[1] / "static"
UI_PATH = "/api/docs"
STATIC_PATH = "/api/docs/static"

DOCS_CSP = "; ".join(
    (
        "default-src 'none'",
        "script-src 'self'",
        # Swagger UI (React) sets style attributes on its elements.
        "style-src 'self' 'unsafe-inline'",
        "img-src 'self' data:",
        "font-src 'self' data:",
        # The document, and "Try it out" requests: this service only.
        "connect-src 'self'",
        "form-action 'self'",
        "base-uri 'none'",
        "frame-ancestors 'none'",
    )
)

_INDEX = (STATIC / "docs" / "index.html").read_bytes()


async def swagger_ui(request: web.Request) -> web.Response:
    return web.Response(body=_INDEX, content_type="text/html")


def is_docs_route(template: str) -> bool:
    """The UI and its files (not the API document, which is JSON like every answer), by the
    template of their route."""
    return template in (UI_PATH, STATIC_PATH)


def add_routes(app: web.Application) -> None:
    app.router.add_get(UI_PATH, swagger_ui)
    app.router.add_static(STATIC_PATH, STATIC, follow_symlinks=False)
