"""The telemetry server's connections: a cap, a deadline for the first request, and TLS set up late.

What a connection may hold, and for how long:
- *A cap* on open connections per process (`max_connections`, counted from accept to close): one beyond
  it is closed at accept, before TLS or HTTP state exists for it, and counted as refused
  (`carbontrack_telemetry_rejected_total{reason="too-many-connections"}`). Each kept-alive connection
  holds tens of KB below Python (OpenSSL's state, the transports, aiohttp's handler), so the cap is
  what bounds the memory strangers can make the operator hold; a sidecar refused at the cap keeps its
  batch and retries.
- *A first-request deadline* (`first_request_s`, from accept): the TLS handshake and a complete request
  head must arrive within it, or the connection is closed unanswered. A sidecar sends its batch as soon
  as it connects; a connection that only holds a slot loses it within seconds.
- *Later requests*: a kept-alive connection waits `idle_timeout_s` for its next request, whose head
  must then arrive within `header_timeout_s` of its first byte (slow-loris clients are cut off).
- *TLS is set up after the cap is checked*, and aiohttp's handler only once the handshake is done: a
  connection that never completes its handshake costs the TLS layer's state and nothing more.

When a flood of connections has gone (the open count halves from a high-water mark at least
`TRIM_AFTER` above it), the process hands its freed heap back to the system (telemetry.gc_tuning):
the allocator would otherwise keep the flood's peak as resident memory.
"""

from __future__ import annotations

import asyncio
import asyncio.sslproto
import logging
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache

from aiohttp import web
from aiohttp.web_protocol import RequestHandler

from carbontrack.state import metrics
from carbontrack.telemetry import gc_tuning as heap

log = logging.getLogger("carbontrack.telemetry")

TLS_READ_BUFFER = 4 * 1024
"""asyncio gives every TLS connection a 256 KiB read buffer, allocated and zero-filled when it opens, so
thousands of kept-alive sidecar connections would hold gigabytes. The buffer only carries ciphertext
from the socket into OpenSSL, so any size is correct; a smaller one costs more reads for a larger body
(a 10 KB batch: 3 instead of 1), a few % of a batch's whole cost. Memory is what limits the pods per
operator (README "Scale"), so 4 KiB (benchmarks/tls_floor.py measures the sizes; benchmarks/RESULTS.md
has the figures). It is asyncio's class attribute, so it holds for the process's client side too
(uvloop has its own buffer, malloc'd and never zero-filled, and ignores it)."""
TLS_SHUTDOWN_S = 2.0
"""How long a closing TLS connection waits for the client's close_notify (asyncio's default: 30 s, during
which a client that never answers would keep a connection the server has already given up)."""
TRIM_AFTER = 500
"""Connections that must have closed since the high-water mark before the freed heap is handed back:
trimming walks the allocator's free lists, a few ms, so it follows floods, not ordinary churn."""
REFUSAL_LOG_S = 60.0
"""At most one warning a minute while connections are refused at the cap."""


@dataclass(frozen=True)
class ConnectionLimits:
    max_connections: int = 0
    """Open connections per process; 0: no cap."""
    first_request_s: float = 5.0
    header_timeout_s: float = 10.0
    idle_timeout_s: float = 60.0


class ConnectionGate:
    """The server's open connections, counted from accept to close, against the cap."""

    def __init__(self, max_connections: int) -> None:
        self.max_connections = max_connections
        self.open = 0
        self.high_water = 0
        """The most open at once since the heap was last handed back."""
        self.refused = 0
        self._warned_at = float("-inf")

    def admit(self, now: float) -> bool:
        """Count a connection in; False (counted as refused) when it would go beyond the cap."""
        if self.max_connections and self.open >= self.max_connections:
            self.refused += 1
            metrics.rejected.labels("too-many-connections").inc()
            if now - self._warned_at >= REFUSAL_LOG_S:
                self._warned_at = now
                log.warning(
                    "telemetry connections refused at the cap",
                    extra={"maxConnections": self.max_connections, "refusedSoFar": self.refused},
                )
            return False
        self.open += 1
        self.high_water = max(self.high_water, self.open)
        return True

    def release(self) -> bool:
        """Count a connection out; True when a flood has just drained and the heap should be trimmed."""
        self.open -= 1
        if self.high_water - self.open >= TRIM_AFTER and self.open <= self.high_water // 2:
            self.high_water = self.open
            return True
        return False


TlsFactory = Callable[..., asyncio.BaseProtocol]


def _nothing() -> None:
    """A slot already given back."""


@cache
def _counted_tls(base: type[asyncio.BaseProtocol]) -> TlsFactory:
    """`base` (the loop's own TLS protocol: asyncio's, or uvloop's) that gives its slot back on close.

    The slot is released here, not by the HTTP handler, because a connection whose handshake never
    completes never reaches the handler."""

    class CountedTLS(base):  # type: ignore[valid-type,misc]
        def __init__(self, *args: object, release: Callable[[], None], **kwargs: object) -> None:
            super().__init__(*args, **kwargs)
            self._release_slot = release

        def connection_lost(self, exc: Exception | None) -> None:
            release, self._release_slot = self._release_slot, _nothing
            release()
            super().connection_lost(exc)

    return CountedTLS


def _tls_protocol(loop: asyncio.AbstractEventLoop) -> TlsFactory:
    """The TLS protocol `loop` uses for its own TLS servers, counted."""
    if type(loop).__module__.startswith("uvloop"):
        import uvloop.loop

        return _counted_tls(getattr(uvloop.loop, "SSLProtocol"))  # noqa: B009  # not in uvloop's stubs
    return _counted_tls(asyncio.sslproto.SSLProtocol)


class _Handler(RequestHandler):
    """aiohttp's connection handler with three deadlines instead of one: the first request's head must
    be complete by `first_request_by` (loop time, from accept); an idle kept-alive connection lives
    `keepalive_timeout` (longer than the sidecars' interval, so each keeps one connection); once a
    later request's first bytes arrive its head must be complete within `header_timeout_s` (a
    slow-loris client is cut off). aiohttp's own timer closes the connection when its close time
    passes while it waits for a request; this only brings that close time forward."""

    __slots__ = ("first_request_by", "header_timeout_s", "release_slot")

    def __init__(
        self,
        manager: web.Server,
        header_timeout_s: float,
        first_request_by: float,
        release_slot: Callable[[], None] | None,
        **kwargs: object,
    ) -> None:
        super().__init__(manager, **kwargs)  # type: ignore[arg-type]
        self.header_timeout_s = header_timeout_s
        self.first_request_by = first_request_by
        self.release_slot = release_slot
        """Set where this handler is the connection's own protocol (plain HTTP); TLS releases it."""

    def _close_by(self, deadline: float) -> None:
        if deadline < self._next_keepalive_close_time:
            self._next_keepalive_close_time = deadline
            if self._keepalive_handle is not None:
                self._keepalive_handle.cancel()
            self._keepalive_handle = self._loop.call_at(deadline, self._process_keepalive)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self._close_by(self.first_request_by)

    def connection_lost(self, exc: BaseException | None) -> None:
        if self.release_slot is not None:
            self.release_slot()
            self.release_slot = None
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        # between requests (the first one included: its task may not have started yet)
        if not self._request_in_progress and not self._messages and not self._force_close:
            self._close_by(self._loop.time() + self.header_timeout_s)
        super().data_received(data)


class _Handshaking(asyncio.Protocol):
    """The TLS layer's application while the handshake runs: it puts the HTTP handler in its place once
    the handshake is done, so a connection that never finishes one never gets a handler."""

    __slots__ = ("make_handler",)

    def __init__(self, make_handler: Callable[[], _Handler]) -> None:
        self.make_handler = make_handler

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        handler = self.make_handler()
        transport.set_protocol(handler)
        handler.connection_made(transport)


class _Gate(asyncio.Protocol):
    """The protocol of every accepted socket, for the moment of its acceptance: it closes the socket
    beyond the cap, or hands it to TLS (or, in plain HTTP, to the handler) and steps aside."""

    __slots__ = ("site",)

    def __init__(self, site: _Site) -> None:
        self.site = site

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.site.accept(transport)  # type: ignore[arg-type]


class _Site(web.TCPSite):
    """aiohttp's TCPSite with `_Gate` in front of every connection (TLS included, so the cap is checked
    before any TLS state exists) and `_Handler` behind it."""

    def __init__(
        self,
        runner: web.AppRunner,
        host: str,
        port: int,
        ssl_context: ssl.SSLContext | None,
        limits: ConnectionLimits,
    ) -> None:
        super().__init__(runner, host, port, ssl_context=ssl_context)
        self.limits = limits
        self.gate = ConnectionGate(limits.max_connections)

    async def start(self) -> None:
        self._runner._reg_site(self)
        if self._ssl_context is not None:
            asyncio.sslproto.SSLProtocol.max_size = TLS_READ_BUFFER
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: _Gate(self), self._host, self._port, backlog=self._backlog
        )

    def accept(self, transport: asyncio.Transport) -> None:
        """Close `transport` beyond the cap; else give it its TLS layer (or its handler), which keeps
        its slot until it closes."""
        server = self._runner.server
        assert server is not None
        loop = server._loop
        now = loop.time()
        if not self.gate.admit(now):
            transport.abort()
            return
        limits = self.limits
        first_request_by = now + limits.first_request_s

        def handler(release_slot: Callable[[], None] | None) -> _Handler:
            kwargs = server._kwargs
            return _Handler(
                server, limits.header_timeout_s, first_request_by, release_slot, loop=loop, **kwargs
            )

        protocol: asyncio.BaseProtocol
        if self._ssl_context is None:
            protocol = handler(self._release)
        else:
            protocol = _tls_protocol(loop)(
                loop, _Handshaking(lambda: handler(None)), self._ssl_context, None, True,
                ssl_handshake_timeout=limits.first_request_s, ssl_shutdown_timeout=TLS_SHUTDOWN_S,
                release=self._release,
            )  # fmt: skip
        transport.set_protocol(protocol)
        protocol.connection_made(transport)

    def _release(self) -> None:
        if self.gate.release():
            heap.release_free_memory_soon()


async def serve(
    runner: web.AppRunner, host: str, port: int, ssl_context: ssl.SSLContext | None, limits: ConnectionLimits
) -> ConnectionGate:
    """Listen on `host:port` for `runner`'s application within `limits`; the gate that counts."""
    site = _Site(runner, host, port, ssl_context, limits)
    await site.start()
    return site.gate
