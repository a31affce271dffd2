"""The telemetry server's connection limits against its real listener (fakes behind it, a real port).

A connection beyond the cap is closed at accept, before any TLS; one that does not complete TLS and a
request head within the first-request deadline is closed; one that did keeps the idle timeout; every
way a connection ends gives its place back; a refused token closes the connection. Timers run on both
event loops the operator can have (telemetry.eventloop).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import platform
import socket
import ssl
import tempfile
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

import pytest

from carbontrack.state import metrics
from carbontrack.telemetry import eventloop, tls
from carbontrack.telemetry import gc_tuning as heap
from carbontrack.telemetry.connections import TRIM_AFTER, ConnectionGate
from carbontrack.telemetry.server import TelemetryServer
from tests.cases.telemetry_fakes import FakeAuth, FakeRegistry, body

T = TypeVar("T")
LOOPS = pytest.mark.parametrize("kind", ["uvloop", "asyncio"])


def on(kind: eventloop.LoopKind, coro: Coroutine[Any, Any, T]) -> T:
    with eventloop.runner(kind) as runner:
        return runner.run(coro)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def serving_context() -> ssl.SSLContext:
    material = tls.renew(None, ["localhost"], dt.datetime.now(dt.UTC))
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    with tempfile.TemporaryDirectory() as d:
        (Path(d) / "tls.crt").write_bytes(material.cert_pem)
        (Path(d) / "tls.key").write_bytes(material.key_pem)
        context.load_cert_chain(Path(d) / "tls.crt", Path(d) / "tls.key")
    return context


def client_context() -> ssl.SSLContext:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def too_many() -> float:
    sample = {"reason": "too-many-connections"}
    return metrics.REGISTRY.get_sample_value("carbontrack_telemetry_rejected_total", sample) or 0.0


async def until(condition: Callable[[], bool], timeout_s: float = 3.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "condition not reached"
        await asyncio.sleep(0.01)


async def closed_after(reader: asyncio.StreamReader, timeout_s: float = 5.0) -> float:
    """Seconds until the server closes the connection (nothing read on it)."""
    started = time.monotonic()
    with contextlib.suppress(ConnectionResetError):
        assert await asyncio.wait_for(reader.read(100), timeout_s) == b""
    return time.monotonic() - started


async def serve(
    tls_on: bool, cap: int = 0, first_request_s: float = 5.0, idle_s: float = 5.0
) -> tuple[TelemetryServer, int]:
    port = free_port()
    server = TelemetryServer(
        FakeRegistry(),  # type: ignore[arg-type]
        FakeAuth(),  # type: ignore[arg-type]
        max_body_bytes=1 << 16,
        client_timeout_s=1.0,
        idle_timeout_s=idle_s,
        max_connections=cap,
        first_request_s=first_request_s,
    )
    await server.start("127.0.0.1", port, serving_context() if tls_on else None)
    return server, port


def request(token: str = "good", seq: int = 1) -> bytes:
    data = json.dumps(body(seq)).encode()
    head = (
        f"POST /v1/telemetry HTTP/1.1\r\nHost: operator\r\nAuthorization: Bearer {token}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(data)}\r\n\r\n"
    )
    return head.encode() + data


async def answer(reader: asyncio.StreamReader) -> bytes:
    """One response's head and body (the fake's answers are small)."""
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
    return head + await reader.readexactly(length)


@LOOPS
def test_a_connection_beyond_the_cap_is_closed_at_accept_before_any_tls(kind: eventloop.LoopKind) -> None:
    async def run() -> None:
        server, port = await serve(tls_on=True, cap=2)
        assert server.connections is not None
        try:
            held = [await asyncio.open_connection("127.0.0.1", port) for _ in range(2)]  # no handshake yet
            await until(lambda: server.connections is not None and server.connections.open == 2)
            before = too_many()
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            assert await closed_after(reader) < 1.0  # no ServerHello, no wait for one
            assert too_many() == before + 1 and server.connections.open == 2
            writer.close()
            held[0][1].close()
            await until(lambda: server.connections is not None and server.connections.open == 1)
            reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=client_context())
            writer.write(request())
            assert (await answer(reader)).startswith(b"HTTP/1.1 200")  # a freed place serves a sidecar
            writer.close()
            held[1][1].close()
        finally:
            await server.stop()

    on(kind, run())


@LOOPS
@pytest.mark.parametrize("handshake", [False, True], ids=["no-client-hello", "tls-done"])
def test_a_connection_without_a_request_is_closed_at_the_first_request_deadline(
    kind: eventloop.LoopKind, handshake: bool
) -> None:
    """Counted from accept: a handshake that never starts, or one done with no request after it."""

    async def run() -> float:
        server, port = await serve(tls_on=True, first_request_s=0.4, idle_s=30.0)
        try:
            context = client_context() if handshake else None
            reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=context)
            after = await closed_after(reader)
            writer.close()
            await until(lambda: server.connections is not None and server.connections.open == 0)
            return after
        finally:
            await server.stop()

    assert on(kind, run()) < 1.5


@LOOPS
def test_plain_http_without_a_request_is_closed_at_the_first_request_deadline(
    kind: eventloop.LoopKind,
) -> None:
    async def run() -> float:
        server, port = await serve(tls_on=False, first_request_s=0.4, idle_s=30.0)
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            after = await closed_after(reader)
            writer.close()
            await until(lambda: server.connections is not None and server.connections.open == 0)
            return after
        finally:
            await server.stop()

    assert 0.3 < on(kind, run()) < 1.5


@LOOPS
def test_a_connection_that_sent_its_request_keeps_the_idle_timeout(kind: eventloop.LoopKind) -> None:
    """The first-request deadline is for the first request only: a sidecar's kept-alive connection waits
    the idle timeout for its next batch."""

    async def run() -> list[bytes]:
        server, port = await serve(tls_on=True, first_request_s=0.2, idle_s=5.0)
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=client_context())
            answers = []
            for seq in (1, 2):
                writer.write(request(seq=seq))
                answers.append((await answer(reader))[:12])
                await asyncio.sleep(0.5)  # past the first-request deadline
            writer.close()
            return answers
        finally:
            await server.stop()

    assert on(kind, run()) == [b"HTTP/1.1 200"] * 2


@LOOPS
def test_every_way_a_connection_ends_gives_its_place_back(kind: eventloop.LoopKind) -> None:
    async def run() -> int:
        server, port = await serve(tls_on=True, cap=3, first_request_s=0.3)
        try:
            _, garbage = await asyncio.open_connection("127.0.0.1", port)
            garbage.write(b"GET / HTTP/1.1\r\n\r\n")  # not a ClientHello: the handshake fails
            silent = await asyncio.open_connection("127.0.0.1", port)  # the handshake times out
            reader, served = await asyncio.open_connection("127.0.0.1", port, ssl=client_context())
            served.write(request())
            await answer(reader)
            served.close()  # closed by the client after an answer
            refused = await asyncio.open_connection("127.0.0.1", port)  # beyond the cap, maybe
            await asyncio.sleep(0.6)
            for writer in (garbage, silent[1], refused[1]):
                writer.close()
            await until(lambda: server.connections is not None and server.connections.open == 0)
            return server.connections.open if server.connections else -1
        finally:
            await server.stop()

    assert on(kind, run()) == 0


@pytest.mark.parametrize(("token", "status"), [("good", b"200"), ("forged", b"401")])
def test_a_refused_token_closes_the_connection_and_a_good_one_keeps_it(token: str, status: bytes) -> None:
    async def run() -> tuple[bytes, bool]:
        server, port = await serve(tls_on=False)
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(request(token))
            reply = await answer(reader)
            try:
                closed = await asyncio.wait_for(reader.read(1), 0.5) == b""
            except TimeoutError:
                closed = False
            writer.close()
            return reply, closed
        finally:
            await server.stop()

    reply, closed = on("asyncio", run())
    assert reply.split(b" ")[1] == status
    assert closed == (status == b"401")
    assert (b"Connection: close" in reply) == (status == b"401")


def test_the_gate_counts_refuses_beyond_the_cap_and_asks_for_a_trim_once_a_flood_drains() -> None:
    gate = ConnectionGate(max_connections=TRIM_AFTER * 2)
    assert all(gate.admit(now=0.0) for _ in range(TRIM_AFTER * 2))
    assert not gate.admit(now=0.0) and gate.refused == 1 and gate.open == TRIM_AFTER * 2
    drained = [gate.release() for _ in range(TRIM_AFTER)]
    assert drained == [False] * (TRIM_AFTER - 1) + [True]  # half gone, and TRIM_AFTER of them
    assert gate.high_water == TRIM_AFTER  # the next flood is measured from here
    assert not any(gate.release() for _ in range(TRIM_AFTER - 1))


def test_without_a_cap_every_connection_is_admitted() -> None:
    gate = ConnectionGate(max_connections=0)
    assert all(gate.admit(now=0.0) for _ in range(10_000)) and gate.refused == 0


def test_a_trim_asked_for_many_times_runs_once() -> None:
    async def run() -> int:
        runs = 0

        def trimmed() -> bool:
            nonlocal runs
            runs += 1
            return True

        original, heap.TRIM_DELAY_S = heap.TRIM_DELAY_S, 0.05
        heap_release = heap.release_free_memory
        try:
            heap.release_free_memory = trimmed  # type: ignore[assignment]
            for _ in range(5):
                heap.release_free_memory_soon()
            await asyncio.sleep(0.2)
        finally:
            heap.TRIM_DELAY_S = original
            heap.release_free_memory = heap_release  # type: ignore[assignment]
            heap._trim = None
        return runs

    assert asyncio.run(run()) == 1


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="malloc_trim is glibc's")
def test_the_trim_hands_freed_memory_back_on_glibc() -> None:
    """Freed blocks below a live one are not returned by `free` itself: only a trim gives them back."""
    freed = [bytes(2048) + bytes([i % 256]) for i in range(20_000)]  # 40 MB of malloc'd blocks
    pinned = bytes(4096) + b"!"
    del freed
    assert heap.release_free_memory() is True
    assert pinned.endswith(b"!")
