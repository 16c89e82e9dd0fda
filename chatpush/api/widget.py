"""The chat widget page at ``/widget/`` (``[server] widget = true``; docs/widget.md).

Static files of the package (``chatpush/widget/``: the page, one script, a style sheet and the
official CometD JavaScript client under ``vendor/``), served from a list made at start-up: only
those files answer, so no path a client types reaches another file. The widget itself talks to
the public Chat API v2 (REST and CometD) like any other customer.
"""

from __future__ import annotations

from pathlib import Path

from aiohttp import web

from chatpush.config import Settings

ROOT = Path(__file__).resolve().parent.parent / "widget"
PREFIX = "/widget/"
_TYPES = {
    ".html": "text/html",
    ".js": "text/javascript",  # module scripts need a JavaScript type
    ".css": "text/css",
    ".txt": "text/plain",
    "": "text/plain",  # LICENSE, NOTICE
}
# The page loads only its own files; it connects to the chat service it is given (any origin).
_POLICY = (
    "default-src 'self'; connect-src 'self' http: https: ws: wss:; img-src 'self' data:; "
    "object-src 'none'; base-uri 'none'; form-action 'none'"
)


def widget_files(root: Path = ROOT) -> dict[str, Path]:
    """URL path below ``/widget/`` → file, for every servable file of the widget folder."""
    files = {}
    for path in sorted(root.rglob("*")):
        if path.is_file() and path.suffix in _TYPES and not path.name.startswith("."):
            files[path.relative_to(root).as_posix()] = path
    return files


def setup_widget(app: web.Application, settings: Settings) -> None:
    """Add the widget's routes when ``server.widget`` is on; nothing otherwise."""
    if not settings.server.widget:
        return
    files = widget_files()

    async def page(request: web.Request) -> web.StreamResponse:
        name = request.match_info.get("name") or "index.html"
        path = files.get(name)
        if path is None:
            raise web.HTTPNotFound(text=f"no widget file {name[:100]!r}\n")
        return web.FileResponse(
            path,
            headers={
                "Content-Type": _TYPES[path.suffix],
                "Cache-Control": "no-cache",
                "X-Content-Type-Options": "nosniff",
                "Content-Security-Policy": _POLICY,
            },
        )

    async def to_page(request: web.Request) -> web.StreamResponse:
        query = f"?{request.query_string}" if request.query_string else ""
        raise web.HTTPMovedPermanently(PREFIX + query)

    app.router.add_get("/widget", to_page)
    app.router.add_get(PREFIX, page)
    app.router.add_get(PREFIX + "{name:.+}", page)
