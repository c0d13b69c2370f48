"""Serve a deploykit web package on this machine: ``python serve.py [FOLDER] [--port 8080]``.

The standard library only. Sends ``.mjs`` as JavaScript and ``.wasm`` as WebAssembly (a
browser refuses modules and wasm of another type, and Python's own guess depends on the
system), binds to 127.0.0.1 unless ``--host`` says otherwise, and serves nothing outside
the folder. Any static host that sends those two types serves the package as well.
"""

from __future__ import annotations

import argparse
import functools
import http.server
from pathlib import Path

TYPES = {".mjs": "text/javascript", ".js": "text/javascript", ".wasm": "application/wasm",
         ".json": "application/json"}


class Handler(http.server.SimpleHTTPRequestHandler):
    extensions_map = {**http.server.SimpleHTTPRequestHandler.extensions_map, **TYPES}

    def log_message(self, fmt: str, *args) -> None:
        """One short line per request that failed; nothing for the others."""
        if len(args) > 1 and str(args[1]).startswith(("4", "5")):
            super().log_message(fmt, *args)


def main() -> None:
    p = argparse.ArgumentParser(description="serve a deploykit web package")
    p.add_argument("folder", nargs="?", default=str(Path(__file__).resolve().parent),
                   help="the package folder (default: the one this file is in)")
    p.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8080, help="port (default 8080; 0: any free)")
    a = p.parse_args()
    handler = functools.partial(Handler, directory=a.folder)
    with http.server.ThreadingHTTPServer((a.host, a.port), handler) as server:
        host, port = server.server_address[:2]
        print(f"serving {a.folder} on http://{host}:{port}/  (Ctrl-C stops)", flush=True)
        try:
            server.serve_forever()
        except KeyboardInterrupt:
            print("stopped")


if __name__ == "__main__":
    main()
