"""What one kept-alive TLS connection costs the operator's server before any telemetry work (issue 15).

Two figures for each server, each in its own process on this machine:

  * memory: RSS growth per idle connection, after 2000 clients each sent one 10 KB POST and keep the
    connection open (what every sidecar does between batches);
  * CPU: the server process's CPU per 10 KB POST, with 20 connections kept busy.

Servers: `aiohttp` (what the operator runs, with a handler that only reads the body) at asyncio's TLS
read buffer of 256 KiB (its default), 16 KiB and 4 KiB (the operator's, telemetry.connections), and the
peer, a bare `asyncio.Protocol` that finds the body by Content-Length and answers a fixed ack: the
floor under any HTTP framework on the same loop and TLS.

    python benchmarks/tls_floor.py [--connections 2000] [--requests 5000]
"""

from __future__ import annotations

import argparse
import asyncio
import asyncio.sslproto
import os
import ssl
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import cpu_seconds, free_port, rss_mb

ACK = b'{"accepted":true,"seq":1,"message":""}'
RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (
    len(ACK),
    ACK,
)
BODY = b'{"steps":"' + b"x" * 10_000 + b'"}'
REQUEST = (
    b"POST /v1/telemetry HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
    b"Authorization: Bearer " + b"t" * 900 + b"\r\nContent-Length: %d\r\n\r\n" % len(BODY) + BODY
)


class Bare(asyncio.Protocol):
    """HTTP/1.1 with Content-Length only: the least a server can do per request."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport: asyncio.Transport = transport  # type: ignore[assignment]
        self.buffer = bytearray()
        self.need = -1

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while True:
            if self.need < 0:
                end = self.buffer.find(b"\r\n\r\n")
                if end < 0:
                    return
                head = bytes(self.buffer[:end]).lower()
                at = head.index(b"content-length:") + 15
                self.need = int(head[at:].split(b"\r\n", 1)[0])
                del self.buffer[: end + 4]
            if len(self.buffer) < self.need:
                return
            del self.buffer[: self.need]
            self.need = -1
            self.transport.write(RESPONSE)


def serve(kind: str, port: int, read_buffer: int, certs: str) -> None:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(f"{certs}/tls.crt", f"{certs}/tls.key")
    asyncio.sslproto.SSLProtocol.max_size = read_buffer

    async def main() -> None:
        if kind == "bare":
            await asyncio.get_running_loop().create_server(Bare, "127.0.0.1", port, ssl=context, backlog=4096)
        else:
            from aiohttp import web

            async def handler(request: web.Request) -> web.Response:
                await request.content.read()  # not request.read(): aiohttp would keep the body
                return web.Response(body=ACK, content_type="application/json")

            app = web.Application()
            app.router.add_post("/v1/telemetry", handler)
            runner = web.AppRunner(app, access_log=None, keepalive_timeout=600)
            await runner.setup()
            await web.TCPSite(runner, "127.0.0.1", port, ssl_context=context, backlog=4096).start()
        await asyncio.Event().wait()

    asyncio.run(main())


async def clients(port: int, connections: int, per_connection: int, hold: bool) -> list[object]:
    asyncio.sslproto.SSLProtocol.max_size = 16 * 1024  # thousands of connections in this process too
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    kept: list[object] = []

    async def one() -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=context)
        for _ in range(per_connection):
            writer.write(REQUEST)
            await reader.readuntil(ACK)
        if hold:
            kept.append(writer)
        else:
            writer.close()

    for start in range(0, connections, 200):  # 200 handshakes at a time
        await asyncio.gather(*(one() for _ in range(min(200, connections - start))))
    return kept


def measure(kind: str, read_buffer: int, certs: str, connections: int, requests: int) -> tuple[float, float]:
    """(KB of RSS per idle connection, µs of server CPU per request)."""
    port = free_port()
    server = subprocess.Popen([sys.executable, __file__, "--serve", kind, "--port", str(port),
                               "--read-buffer", str(read_buffer), "--certs", certs])  # fmt: skip
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                asyncio.run(clients(port, 1, 1, hold=False))
                break
            except OSError:
                time.sleep(0.2)
        asyncio.run(clients(port, 20, 10, hold=False))  # warm
        before = rss_mb(server.pid)

        async def hold() -> float:
            kept = await clients(port, connections, 1, hold=True)
            await asyncio.sleep(1)
            grown = rss_mb(server.pid) - before
            for writer in kept:
                writer.close()  # type: ignore[attr-defined]
            return grown

        per_connection_kb = asyncio.run(hold()) * 1024 / connections
        cpu0 = cpu_seconds(server.pid)
        asyncio.run(clients(port, 20, requests // 20, hold=False))
        per_request_us = (cpu_seconds(server.pid) - cpu0) / requests * 1e6
        return per_connection_kb, per_request_us
    finally:
        server.kill()
        server.wait(10)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--connections", type=int, default=2000)
    parser.add_argument("--requests", type=int, default=5000)
    parser.add_argument("--serve", choices=["aiohttp", "bare"], help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--read-buffer", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--certs", default="", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve, args.port, args.read_buffer, args.certs)
        return 0
    import datetime as dt

    from carbontrack.telemetry import tls
    from carbontrack.telemetry.connections import TLS_READ_BUFFER

    certs = tempfile.mkdtemp(prefix="tls-floor-")
    material = tls.renew(None, ["localhost"], dt.datetime.now(dt.UTC))
    Path(certs, "tls.crt").write_bytes(material.cert_pem)
    Path(certs, "tls.key").write_bytes(material.key_pem)
    print(f"{args.connections} idle connections; {args.requests} POSTs of {len(BODY)} bytes over 20 "
          f"(pid {os.getpid()})\n\n| server | TLS read buffer | KB per idle connection | µs CPU per request |"
          "\n| --- | ---: | ---: | ---: |")  # fmt: skip
    for kind, size in (("aiohttp", 256 * 1024), ("aiohttp", 16 * 1024), ("aiohttp", TLS_READ_BUFFER),
                       ("bare", TLS_READ_BUFFER)):  # fmt: skip
        kb, us = measure(kind, size, certs, args.connections, args.requests)
        peer = " (peer)" if kind == "bare" else ""
        print(f"| {kind}{peer} | {size // 1024} KiB | {kb:.0f} | {us:.0f} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
