"""``/widget/``: the widget's files when ``server.widget`` is on, and nothing else; off by default.
(The widget itself is tested in a browser: tests/browser/test_widget.py.)"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from chatpush.api.widget import widget_files


async def test_off_by_default(client: Any) -> None:
    for path in ("/widget", "/widget/", "/widget/widget.js"):
        assert (await client.get(path, allow_redirects=False)).status == 404, path


async def test_the_page_and_its_files(make_client: Callable[..., Any], make_settings: Any) -> None:
    client = await make_client(make_settings(server={"widget": True}))
    page = await client.get("/widget/")
    assert page.status == 200
    assert page.headers["Content-Type"].startswith("text/html")
    assert page.headers["X-Content-Type-Options"] == "nosniff"
    assert "frame-ancestors" not in page.headers["Content-Security-Policy"]  # embeddable
    html = await page.text()
    assert 'src="widget.js"' in html and "data-chatpush-widget" in html
    # Module scripts load only with a JavaScript type.
    for name in ("widget.js", "vendor/cometd/Client.js", "vendor/cometd/WebSocketTransport.js"):
        reply = await client.get(f"/widget/{name}")
        assert reply.status == 200, name
        assert reply.headers["Content-Type"].startswith("text/javascript"), name
    assert (await client.get("/widget/widget.css")).headers["Content-Type"].startswith("text/css")
    assert "Apache License" in await (await client.get("/widget/vendor/cometd/LICENSE")).text()
    moved = await client.get("/widget?service=sales", allow_redirects=False)
    assert (moved.status, moved.headers["Location"]) == (301, "/widget/?service=sales")


async def test_only_the_widget_files_answer(
    make_client: Callable[..., Any], make_settings: Any
) -> None:
    client = await make_client(make_settings(server={"widget": True}))
    assert set(widget_files()) >= {"index.html", "widget.js", "widget.css"}
    assert "vendor/cometd/README.md" not in widget_files()
    for path in (
        "/widget/nope.js",
        "/widget/../config.py",
        "/widget/%2e%2e/config.py",
        "/widget/vendor/cometd/README.md",
        "/widget/vendor/",
        "/widget//etc/passwd",
    ):
        reply = await client.get(path, allow_redirects=False)
        assert reply.status == 404, path
