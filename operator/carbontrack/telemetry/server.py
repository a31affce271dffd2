"""The operator's HTTP server: telemetry ingestion, /metrics, /healthz and /readyz.

POST /v1/telemetry answers, and counts in carbontrack_telemetry_rejected_total{reason}:
  200 accepted (body: TelemetryAck)      401 bad or missing token
  400 malformed (not UTF-8 JSON, nested over 200 deep, duplicate keys, a GPU index or UUID twice, not the
      schema: strict types, no coercion) or unknown version (anything but the integer 1)
  403 token bound to another pod or job  404 no such CarbonTrackedJob   409 replayed seq or folded boot
  408 body not received within the client timeout (a slow-loris client; headers alike: the connection
      is closed unanswered when they are not complete in time)
  413 body over the size limit           422 counters or steps went backwards, or energy beyond what
      the pod's GPUs could draw (since the previous batch arrived, or since the pod started), more GPUs
      than the pod holds, or a new pod or source status has no room for (core.accounting.folding)
  429 a new boot id while the pod's sidecar boots are all live (core.accounting.boots): retried
  503 this replica is a standby (peering), or the apiserver shed load or failed while the batch was being
      authorized: the sidecar keeps the batch and retries
Nothing a sidecar sends can raise out of the handler: an unexpected error is a 500 that is counted.
"""

from __future__ import annotations

import asyncio
import asyncio.sslproto
import logging
import ssl
import time

from aiohttp import ClientError, web
from aiohttp.web_protocol import RequestHandler
from kubernetes_asyncio.client.exceptions import ApiException
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from carbontrack.api.wire import ACK_JOB_HEADER, TELEMETRY_PATH, TelemetryAck, WireError, parse_batch
from carbontrack.core.accounting.aggregation import Receipt, Verdict
from carbontrack.state import metrics
from carbontrack.state.answers import accepted_body, job_totals, status_gpu_models
from carbontrack.state.registry import Registry
from carbontrack.telemetry.auth import Authenticator, AuthError

log = logging.getLogger("carbontrack.telemetry")

_VERDICT_STATUS = {
    Verdict.DUPLICATE: 409,
    Verdict.BACKWARDS: 422,
    Verdict.ABSURD: 422,
    Verdict.IMPLAUSIBLE: 422,
    Verdict.TOO_MANY_PODS: 422,
    Verdict.STATUS_FULL: 422,
    Verdict.TOO_MANY_GPUS: 422,
    Verdict.LIVE_BOOTS: 429,  # the sidecar keeps the batch and retries after a backoff (sidecar.policy)
}
"""422 for a capacity refusal too: the sidecar drops the batch's step records and keeps sending its
cumulative counters, so its energy is counted exactly if room appears (core.accounting.folding)."""


def _refuse(status: int, reason: str, message: str, seq: int = 0) -> web.Response:
    metrics.rejected.labels(reason).inc()
    body = TelemetryAck(accepted=False, seq=seq, message=message).model_dump_json(by_alias=True)
    return web.Response(status=status, text=body, content_type="application/json")


def _unavailable(reason: str, message: str) -> web.Response:
    """503 with Retry-After: not a refusal; the sidecar keeps the batch and sends it again."""
    response = _refuse(503, reason, message)
    response.headers["Retry-After"] = "2"
    return response


async def _read_body(request: web.BaseRequest, limit: int) -> bytes:
    """The body, as `request.read()` gives it but not kept on the request: aiohttp holds a connection's
    last request until the next one arrives, so a kept body would stay in memory, a batch's size, for
    every idle kept-alive sidecar connection."""
    chunks: list[bytes] = []
    size = 0
    while chunk := await request.content.readany():
        size += len(chunk)
        if size > limit:
            raise web.HTTPRequestEntityTooLarge(max_size=limit, actual_size=size)
        chunks.append(chunk)
    return b"".join(chunks)


class _Handler(RequestHandler):
    """aiohttp's connection handler with two deadlines instead of one: an idle kept-alive connection
    lives `keepalive_timeout` (longer than the sidecars' interval, so each keeps one connection), but
    once a request's first bytes arrive its headers must be complete within `header_timeout_s` (a
    slow-loris client is cut off). aiohttp's own timer closes the connection when its close
    time passes while it waits for a request; this only brings that close time forward."""

    __slots__ = ("header_timeout_s",)

    def __init__(self, manager: web.Server, header_timeout_s: float, **kwargs: object) -> None:
        super().__init__(manager, **kwargs)  # type: ignore[arg-type]
        self.header_timeout_s = header_timeout_s

    def data_received(self, data: bytes) -> None:
        # between requests (the first one included: its task may not have started yet)
        if not self._request_in_progress and not self._messages and not self._force_close:
            deadline = self._loop.time() + self.header_timeout_s
            if deadline < self._next_keepalive_close_time:
                self._next_keepalive_close_time = deadline
                if self._keepalive_handle is not None:
                    self._keepalive_handle.cancel()
                self._keepalive_handle = self._loop.call_at(deadline, self._process_keepalive)
        super().data_received(data)


TLS_READ_BUFFER = 4 * 1024
"""asyncio gives every TLS connection a 256 KiB read buffer, allocated and zero-filled when it opens, so
thousands of kept-alive sidecar connections would hold gigabytes. The buffer only carries ciphertext
from the socket into OpenSSL, so any size is correct; a smaller one costs more reads for a larger body
(a 10 KB batch: 3 instead of 1), a few % of a batch's whole cost. Memory is what limits the pods per
operator (README "Scale"), so 4 KiB (benchmarks/tls_floor.py measures the sizes; benchmarks/RESULTS.md
has the figures). It is asyncio's class attribute, so it holds for the process's client side too
(uvloop has its own buffer, malloc'd and never zero-filled, and ignores it)."""


class _Site(web.TCPSite):
    """aiohttp's TCPSite, with a TLS handshake bounded like the headers (asyncio's default is 60 s,
    during which a client that never finishes its handshake would hold a connection), and _Handler."""

    handshake_timeout_s = 10.0

    async def start(self) -> None:
        self._runner._reg_site(self)
        if self._ssl_context is not None:
            asyncio.sslproto.SSLProtocol.max_size = TLS_READ_BUFFER
        server = self._runner.server
        assert server is not None
        header_timeout_s = self.handshake_timeout_s

        def handler() -> _Handler:
            return _Handler(server, header_timeout_s, loop=server._loop, **server._kwargs)

        self._server = await asyncio.get_running_loop().create_server(
            handler,
            self._host,
            self._port,
            ssl=self._ssl_context,
            backlog=self._backlog,
            ssl_handshake_timeout=self.handshake_timeout_s if self._ssl_context else None,
        )
        return None


class TelemetryServer:
    def __init__(
        self,
        registry: Registry,
        auth: Authenticator,
        max_body_bytes: int,
        client_timeout_s: float = 10.0,
        idle_timeout_s: float = 60.0,
    ) -> None:
        self.registry = registry
        self.client_timeout_s = client_timeout_s
        self.idle_timeout_s = max(idle_timeout_s, client_timeout_s)
        """How long a kept-alive connection may wait for its next request: longer than the sidecars'
        interval (10 s, +-10 %), or every batch would find its connection closed."""
        self.auth = auth
        self.ready = False
        self.active = True
        """False on a standby replica (see ha.peering): telemetry is refused, /readyz fails."""
        self.app = web.Application(client_max_size=max_body_bytes)
        self.app.router.add_post(TELEMETRY_PATH, self.telemetry)
        self.app.router.add_get("/metrics", self.metrics)
        self.app.router.add_get("/healthz", self.healthz)
        self.app.router.add_get("/readyz", self.readyz)
        self._runner: web.AppRunner | None = None

    async def start(self, host: str, port: int, ssl_context: ssl.SSLContext | None = None) -> None:
        """Listen; with `ssl_context`, HTTPS (its certificate can be reloaded in place: telemetry.tls)."""
        # aiohttp closes an idle connection at the keep-alive deadline; _Handler brings it forward to the
        # client timeout once a request's first bytes arrive, however slowly the rest trickle in; after a
        # refusal aiohttp reads ("lingers" on) an unread body for at most a second, not its default 10
        self._runner = web.AppRunner(
            self.app, access_log=None, keepalive_timeout=self.idle_timeout_s, lingering_time=1.0
        )
        await self._runner.setup()
        site = _Site(self._runner, host, port, ssl_context=ssl_context)
        site.handshake_timeout_s = self.client_timeout_s
        await site.start()
        self.ready = True
        log.info("telemetry server listening", extra={"port": port, "tls": ssl_context is not None})

    async def stop(self) -> None:
        self.ready = False
        if self._runner:
            await self._runner.cleanup()

    async def healthz(self, request: web.Request) -> web.Response:
        return web.Response(text="ok")

    async def readyz(self, request: web.Request) -> web.Response:
        if not self.ready:
            return web.Response(status=503, text="starting")
        return web.Response(text="ok") if self.active else web.Response(status=503, text="standby")

    async def metrics(self, request: web.Request) -> web.Response:
        return web.Response(
            body=generate_latest(metrics.REGISTRY), headers={"Content-Type": CONTENT_TYPE_LATEST}
        )

    async def telemetry(self, request: web.Request) -> web.Response:
        try:
            return await self._handle_telemetry(request)
        except web.HTTPRequestEntityTooLarge:
            return _refuse(413, "too-large", "batch larger than the limit")
        except (ApiException, ClientError, OSError) as exc:
            if isinstance(exc, ApiException) and exc.status != 429 and exc.status < 500:
                log.exception("telemetry handler failed")
                return _refuse(500, "internal", "internal error")
            # the apiserver shed load, failed or could not be reached (TokenReview, ownership, CR
            # read): the batch is deferred, not refused; the sidecar keeps it and retries
            log.warning("apiserver unavailable for telemetry: %s", str(exc)[:200])
            return _unavailable("apiserver-unavailable", "the apiserver is unavailable; retry")
        except Exception:
            log.exception("telemetry handler failed")
            return _refuse(500, "internal", "internal error")

    async def _handle_telemetry(self, request: web.Request) -> web.Response:
        received_at = time.time()  # the operator's clock, never the batch's sentAt (core.accounting)
        if not self.active:
            return _unavailable("standby", "this operator replica is a standby; retry")
        limit = request.app._client_max_size
        if request.content_length is not None and request.content_length > limit:
            return _refuse(413, "too-large", f"batch larger than {limit} bytes")
        header = request.headers.get("Authorization", "")
        token = header[7:].strip() if header.startswith("Bearer ") else ""
        try:
            if request.content.is_eof():  # the whole body is buffered already: no task, no timer
                raw = await _read_body(request, limit)
            else:
                raw = await asyncio.wait_for(_read_body(request, limit), self.client_timeout_s)
        except ConnectionResetError:  # the sidecar hung up mid-body (its own timeout): it will resend
            return _refuse(400, "client-gone", "connection lost while reading the batch")
        except TimeoutError:
            response = _refuse(408, "slow-client", f"body not received within {self.client_timeout_s:g} s")
            response.force_close()
            return response
        try:
            batch = parse_batch(raw)  # depth-limited, strict, duplicate keys refused: never a 500
        except WireError as exc:
            return _refuse(400, exc.reason, str(exc))
        try:
            identity = await self.auth.identify(token)
            if batch.job.namespace != batch.pod.namespace:
                raise AuthError(403, "wrong-job", "a pod reports only for a job in its own namespace")
            pod = await self.auth.authorize(identity, batch.pod.namespace, batch.pod.name, batch.job.name)
        except AuthError as exc:
            return _refuse(exc.status, exc.reason, str(exc), batch.seq)
        state = await self.registry.get(batch.job.namespace, batch.job.name)
        if state is None:
            return _refuse(
                404, "unknown-job", f"no CarbonTrackedJob {batch.job.namespace}/{batch.job.name}", batch.seq
            )
        receipt = Receipt(received_at=received_at, pod_started_at=pod.started_at, gpus=pod.gpus)
        result = await self.registry.apply(state, batch, receipt)
        if result.verdict is not Verdict.ACCEPTED:
            return _refuse(_VERDICT_STATUS[result.verdict], result.verdict.value, result.message, batch.seq)
        job = None
        if request.headers.get(ACK_JOB_HEADER) == "1":  # a sidecar that reads `job` (older ones refuse it)
            if state.gpu_models is None:
                state.gpu_models = status_gpu_models(state.aggregate)
            job = job_totals(state.aggregate, state.intensity, state.gpu_models)
        body = accepted_body(batch.seq, state.stop, job)
        return web.Response(text=body, content_type="application/json")
