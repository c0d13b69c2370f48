"""Check a bundle's browser artifacts in a real headless browser.

:func:`serve` serves ``targets/web`` (the page and its npm packages) under ``/web/`` and the
bundle under ``/bundle/`` on 127.0.0.1; :func:`check` opens the page in headless Chromium
(Debian's ``/usr/bin/chromium`` driven by Playwright), waits until the page has run the probe
set through every ``tfjs`` / ``onnx-web`` artifact, and returns the parity the page computed.
"""

from __future__ import annotations

import functools
import http.server
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from deploykit._lazy import require
from deploykit.errors import DeploykitError, MissingDependencyError

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--disable-quic"]


class _Handler(http.server.SimpleHTTPRequestHandler):
    """Maps /web/... to targets/web and /bundle/... to the bundle; nothing else is served."""

    def __init__(self, *args, web: Path, bundle: Path, **kwargs) -> None:
        self.roots = {"/web/": web.resolve(), "/bundle/": bundle.resolve()}
        super().__init__(*args, directory=str(web), **kwargs)

    def translate_path(self, path: str) -> str:
        path = path.split("?", 1)[0].split("#", 1)[0]
        for prefix, root in self.roots.items():
            if path.startswith(prefix):
                target = (root / path[len(prefix):]).resolve()
                if target == root or root in target.parents:
                    return str(target)
        return str(Path("/nonexistent"))

    def end_headers(self) -> None:
        self.send_header("Cache-Control", "no-store")
        super().end_headers()

    def log_message(self, *args: Any) -> None:
        """Silence per-request logging (it would flood test output)."""


_Handler.extensions_map = {**_Handler.extensions_map, ".mjs": "text/javascript",
                           ".js": "text/javascript", ".wasm": "application/wasm"}


@contextmanager
def serve(bundle: str | Path, port: int = 0) -> Iterator[str]:
    """Serve the page and ``bundle`` on 127.0.0.1; yields the page's URL."""
    from deploykit.formats.web import web_dir

    handler = functools.partial(_Handler, web=web_dir(), bundle=Path(bundle))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/web/page/index.html"
    finally:
        server.shutdown()
        server.server_close()


def check(bundle: str | Path, *, screenshot: str | Path | None = None,
          timeout_s: float = 180.0) -> list[dict[str, Any]]:
    """Run the page on ``bundle`` in headless Chromium, which checks every browser artifact.

    Args:
        bundle: the bundle folder.
        screenshot: where to save a PNG of the page, if wanted.
        timeout_s: seconds the page may take.

    Returns:
        The page's result per artifact (target, batches, maxAbs, labelAgreement, pass).

    Raises:
        MissingDependencyError: Chromium or Playwright is not installed.
        DeploykitError: the page reported an error.
    """
    with serve(bundle) as url:
        return run_page(url, screenshot=screenshot, timeout_s=timeout_s)


def run_page(url: str, *, screenshot: str | Path | None = None, timeout_s: float = 180.0
             ) -> list[dict[str, Any]]:
    """Open deploykit's parity page at ``url`` (served by :func:`serve`, or a web package's
    ``index.html`` served by its ``serve.py``) in headless Chromium and wait for its results.

    Args:
        url: the page's address.
        screenshot: where to save a PNG of the page, if wanted.
        timeout_s: seconds the page may take.

    Returns:
        The page's result per artifact (target, batches, maxAbs, labelAgreement, pass).

    Raises:
        MissingDependencyError: Chromium or Playwright is not installed.
        DeploykitError: the page reported an error.
    """
    if not Path(CHROMIUM).exists():
        raise MissingDependencyError("chromium", "web", "(apt-get install chromium)")
    sync_api = require("playwright.sync_api", extra="dev", purpose="to drive Chromium")
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1100, "height": 700})
            page.goto(url)
            page.wait_for_function("window.deploykitDone === true", timeout=timeout_s * 1000)
            error = page.evaluate("window.deploykitError || null")
            if error:
                raise DeploykitError(f"the browser page failed: {error}")
            results = page.evaluate("window.deploykitResults")
            if screenshot:
                Path(screenshot).parent.mkdir(parents=True, exist_ok=True)
                page.screenshot(path=str(screenshot), full_page=True)
        finally:
            browser.close()
    return results
