"""The sidecar's kept-alive connection against the real telemetry server (fakes behind it, a real port).

One connection per sidecar for every batch, though the batches are further apart than the
client timeout; a slow-loris client is still cut off at the client timeout; a connection the server
dropped (restart, idle close) costs a reconnect, never a lost batch; an idle connection keeps neither
its last batch nor a large read buffer. Each runs on both event loops the operator can have
(telemetry.eventloop: asyncio's standard loop by default, uvloop by choice): the deadlines are the
server's own timers, which must hold on either.
"""

from __future__ import annotations

import asyncio
import asyncio.sslproto
import datetime as dt
import gc
import json
import socket
import ssl
import tempfile
import time
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

import pytest
from aiohttp import web

from carbontrack.sidecar.transport import Transport
from carbontrack.telemetry import eventloop, tls
from carbontrack.telemetry.connections import TLS_READ_BUFFER
from carbontrack.telemetry.server import TelemetryServer
from tests.cases.telemetry_fakes import FakeAuth, FakeRegistry, body

T = TypeVar("T")
LOOPS = pytest.mark.parametrize("kind", ["uvloop", "asyncio"])


def on(kind: eventloop.LoopKind, coro: Coroutine[Any, Any, T]) -> T:
    with eventloop.runner(kind) as runner:
        assert eventloop.loop_name(runner.get_loop()) == kind
        return runner.run(coro)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def serve(registry: FakeRegistry, port: int, client_timeout_s: float, idle_s: float) -> TelemetryServer:
    server = TelemetryServer(
        registry,  # type: ignore[arg-type]
        FakeAuth(),  # type: ignore[arg-type]
        max_body_bytes=1 << 16,
        client_timeout_s=client_timeout_s,
        idle_timeout_s=idle_s,
    )
    await server.start("127.0.0.1", port)
    return server


def post(transport: Transport, seq: int) -> int:
    return transport.post("good", json.dumps(body(seq)).encode()).status


@LOOPS
def test_batches_further_apart_than_the_client_timeout_share_one_connection(kind: eventloop.LoopKind) -> None:
    async def run() -> None:
        registry, port = FakeRegistry(), free_port()
        server = await serve(registry, port, client_timeout_s=0.3, idle_s=5.0)
        transport = Transport(f"http://127.0.0.1:{port}", "", timeout_s=5)
        try:
            for seq in (1, 2, 3):
                assert await asyncio.to_thread(post, transport, seq) == 200
                await asyncio.sleep(0.6)  # twice the client timeout between batches
            assert transport.connections == 1
            assert registry.aggregate.energy_j == 30.0
        finally:
            transport.close()
            await server.stop()

    on(kind, run())


def test_an_idle_kept_alive_connection_does_not_keep_its_last_body() -> None:
    """aiohttp holds a connection's last request while it waits for the next one, so a body cached on
    the request would stay in memory for every idle sidecar connection (server._read_body)."""

    async def run() -> None:
        registry, port = FakeRegistry(), free_port()
        server = await serve(registry, port, client_timeout_s=1.0, idle_s=5.0)
        transport = Transport(f"http://127.0.0.1:{port}", "", timeout_s=5)
        try:
            assert await asyncio.to_thread(post, transport, 1) == 200
            await asyncio.sleep(0.1)  # the connection now waits for its next request
            gc.collect()
            waiting = [o for o in gc.get_objects() if isinstance(o, web.BaseRequest)]
            assert waiting, "aiohttp no longer keeps the last request: this test's premise changed"
            assert all(r._read_bytes is None for r in waiting)
        finally:
            transport.close()
            await server.stop()

    on("asyncio", run())


def test_the_tls_site_reads_through_a_4_kib_buffer_not_asyncios_256_kib() -> None:
    """asyncio's TLS layer zero-fills its read buffer for every connection as it opens; at the default
    256 KiB that was most of the operator's memory at 8000 kept-alive pods (connections.TLS_READ_BUFFER)."""
    material = tls.renew(None, ["localhost"], dt.datetime.now(dt.UTC))
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    with tempfile.TemporaryDirectory() as d:
        (Path(d) / "tls.crt").write_bytes(material.cert_pem)
        (Path(d) / "tls.key").write_bytes(material.key_pem)
        context.load_cert_chain(Path(d) / "tls.crt", Path(d) / "tls.key")

    async def run() -> int:
        server = TelemetryServer(FakeRegistry(), FakeAuth(), max_body_bytes=1 << 16)  # type: ignore[arg-type]
        await server.start("127.0.0.1", free_port(), context)
        try:
            return asyncio.sslproto.SSLProtocol.max_size
        finally:
            await server.stop()

    default = asyncio.sslproto.SSLProtocol.max_size
    try:
        asyncio.sslproto.SSLProtocol.max_size = 256 * 1024
        assert on("asyncio", run()) == TLS_READ_BUFFER == 4 * 1024
    finally:
        asyncio.sslproto.SSLProtocol.max_size = default


@LOOPS
def test_trickled_headers_are_cut_off_at_the_client_timeout_not_the_idle_one(
    kind: eventloop.LoopKind,
) -> None:
    async def run() -> float:
        server = await serve(FakeRegistry(), port := free_port(), client_timeout_s=0.3, idle_s=30.0)
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            started = time.monotonic()
            writer.write(b"POST /v1/telemetry HTTP/1.1\r\nHost: x\r\nX-Trickle: ")
            while time.monotonic() - started < 5:
                writer.write(b"x")
                try:
                    if await asyncio.wait_for(reader.read(100), 0.1) == b"":
                        break
                except TimeoutError:
                    continue
            closed_after = time.monotonic() - started
            writer.close()
            return closed_after
        finally:
            await server.stop()

    closed_after = on(kind, run())
    assert closed_after < 1.5, closed_after


@LOOPS
def test_an_idle_connection_is_closed_after_the_idle_timeout(kind: eventloop.LoopKind) -> None:
    async def run() -> tuple[bool, bool]:
        server = await serve(FakeRegistry(), port := free_port(), client_timeout_s=0.2, idle_s=1.0)
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            await asyncio.sleep(0.6)  # past the client timeout: an idle connection stays
            open_at_06 = not reader.at_eof()
            closed = await asyncio.wait_for(reader.read(100), 3) == b""
            writer.close()
            return open_at_06, closed
        finally:
            await server.stop()

    assert on(kind, run()) == (True, True)


@LOOPS
def test_a_restarted_server_costs_a_reconnect_not_a_batch(kind: eventloop.LoopKind) -> None:
    async def run() -> None:
        registry, port = FakeRegistry(), free_port()
        server = await serve(registry, port, client_timeout_s=1.0, idle_s=5.0)
        transport = Transport(f"http://127.0.0.1:{port}", "", timeout_s=5)
        try:
            assert await asyncio.to_thread(post, transport, 1) == 200
            await server.stop()  # the kept-alive connection dies with it
            server = await serve(registry, port, client_timeout_s=1.0, idle_s=5.0)
            assert await asyncio.to_thread(post, transport, 2) == 200  # resent at once on a fresh one
            assert transport.connections == 2
            assert registry.aggregate.energy_j == 20.0
        finally:
            transport.close()
            await server.stop()

    on(kind, run())


def test_an_unreachable_operator_is_status_0_never_an_exception() -> None:
    transport = Transport(f"http://127.0.0.1:{free_port()}", "", timeout_s=1)
    result = transport.post("good", b"{}")
    assert result.status == 0 and result.error
