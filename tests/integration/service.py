"""A stand-in for the operator's Service: forwards to whichever replica passes its readiness probe.

No kube-proxy runs here (kwok pods have no network), so this does the one thing the Service does for
telemetry: send each request to a Ready endpoint, as kube-proxy would after the kubelet's probe.
"""

from __future__ import annotations

import threading
import urllib.error
import urllib.request
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from tests.integration.sidecars import free_port


class ReadyService:
    def __init__(self, backends: Callable[[], list[str]]) -> None:
        """`backends`: the replicas' base URLs, asked on every request (replicas come and go)."""
        self.backends = backends
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.forwarded: dict[str, int] = {}
        service = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                target = service.ready_backend()
                if target is None:
                    self.send_response(503)
                    self.end_headers()
                    return
                service.forwarded[target] = service.forwarded.get(target, 0) + 1
                req = urllib.request.Request(target + self.path, data=body, method="POST")
                for name in ("Authorization", "Content-Type"):
                    if self.headers.get(name):
                        req.add_header(name, self.headers[name])
                try:
                    with urllib.request.urlopen(req, timeout=10) as r:
                        status, payload = r.status, r.read()
                except urllib.error.HTTPError as exc:
                    status, payload = exc.code, exc.read()
                except OSError:
                    status, payload = 502, b""
                self.send_response(status)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def ready_backend(self) -> str | None:
        for url in self.backends():
            try:
                with urllib.request.urlopen(url + "/readyz", timeout=1) as r:
                    if r.status == 200:
                        return url
            except OSError:
                continue
        return None

    def __enter__(self) -> ReadyService:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
