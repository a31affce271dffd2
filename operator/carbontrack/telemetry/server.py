"""The operator's HTTP server: telemetry ingestion, /metrics, /healthz and /readyz.

POST /v1/telemetry answers, and counts in carbontrack_telemetry_rejected_total{reason}:
  200 accepted (body: TelemetryAck)      401 bad or missing token
  400 malformed (not UTF-8 JSON, nested over 200 deep, duplicate keys, a GPU index or UUID twice, not the
      schema: strict types, no coercion) or unknown version (anything but the integer 1)
  403 token bound to another pod or job  404 no such CarbonTrackedJob   409 a batch that adds no energy
      (a replayed seq, or a folded boot's counter not past what was counted for it), or a batch after
      the job finished and its final-flush grace period (reason finished)
  408 body not received within the client timeout (a slow-loris client; headers alike: the connection
      is closed unanswered when they are not complete in time)
  413 body over the size limit           422 counters or steps went backwards (adding no energy), or
      energy beyond what the pod's GPUs could draw (since the source's first batch arrived, or since the
      pod started), more GPUs than the pod holds, or a new pod or source status has no room for
      (core.accounting.folding)
  421 the job is another shard's (misdirected; the sidecar keeps the batch and retries)
  429 a token new to the cache from an address past its first contacts (telemetry.auth), with
      Retry-After: no TokenReview is made; or a new boot id while the pod's sidecar boots are all live
      (core.accounting.boots): the sidecar keeps the batch and retries
  503 this replica is a standby (peering), or the apiserver shed load or failed while the batch was being
      authorized: the sidecar keeps the batch and retries
Nothing a sidecar sends can raise out of the handler: an unexpected error is a 500 that is counted.
After a 401, 403 or 429 the connection is closed. Connections themselves are capped and must send their
first request promptly (telemetry.connections).
"""

from __future__ import annotations

import asyncio
import logging
import math
import ssl
import time

from aiohttp import ClientError, web
from kubernetes_asyncio.client import ApiClient
from kubernetes_asyncio.client.exceptions import ApiException
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from carbontrack.api.wire import (
    ACK_JOB_HEADER,
    TELEMETRY_PATH,
    TelemetryAck,
    TelemetryBatch,
    WireError,
)
from carbontrack.api.wire_fast import decode_batch
from carbontrack.core.accounting.aggregation import Receipt, Verdict
from carbontrack.state import metrics
from carbontrack.state.answers import accepted_body, job_totals, status_gpu_models
from carbontrack.state.config import OperatorConfig
from carbontrack.state.registry import ForeignJob, Registry
from carbontrack.telemetry.auth import Authenticator, AuthError, FirstContacts
from carbontrack.telemetry.connections import ConnectionGate, ConnectionLimits, serve

log = logging.getLogger("carbontrack.telemetry")

_VERDICT_STATUS = {
    Verdict.DUPLICATE: 409,
    Verdict.BACKWARDS: 422,
    Verdict.ABSURD: 422,
    Verdict.IMPLAUSIBLE: 422,
    Verdict.TOO_MANY_PODS: 422,
    Verdict.STATUS_FULL: 422,
    Verdict.FINISHED: 409,
    Verdict.TOO_MANY_GPUS: 422,
    Verdict.LIVE_BOOTS: 429,  # the sidecar keeps the batch and retries after a backoff (sidecar.policy)
}
"""422 for a capacity refusal too: the sidecar drops the batch's step records and keeps sending its
cumulative counters, so its energy is counted exactly if room appears (core.accounting.folding)."""


_CLOSE_AFTER = frozenset({401, 403, 429})
"""Refusals after which the connection is closed: a client without a token that passes keeps no
connection, nor its place under the cap (telemetry.connections), by repeating requests on it."""


def _refuse(status: int, reason: str, message: str, seq: int = 0) -> web.Response:
    metrics.rejected.labels(reason).inc()
    body = TelemetryAck(accepted=False, seq=seq, message=message).model_dump_json(by_alias=True)
    response = web.Response(status=status, text=body, content_type="application/json")
    if status in _CLOSE_AFTER:
        response.force_close()
    return response


def _refuse_auth(exc: AuthError, seq: int) -> web.Response:
    """The authenticator's refusal; a 429 says when to try again."""
    response = _refuse(exc.status, exc.reason, str(exc), seq)
    if exc.retry_after_s > 0:
        response.headers["Retry-After"] = str(max(1, math.ceil(exc.retry_after_s)))
    return response


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


class TelemetryServer:
    def __init__(
        self,
        registry: Registry,
        auth: Authenticator,
        max_body_bytes: int,
        client_timeout_s: float = 10.0,
        idle_timeout_s: float = 60.0,
        *,
        max_connections: int = 0,
        first_request_s: float = 5.0,
    ) -> None:
        """`max_connections` (0: no cap) and `first_request_s`: see telemetry.connections."""
        self.registry = registry
        self.client_timeout_s = client_timeout_s
        self.connection_limits = ConnectionLimits(
            max_connections=max_connections,
            first_request_s=first_request_s,
            header_timeout_s=client_timeout_s,
            idle_timeout_s=max(idle_timeout_s, client_timeout_s),
        )
        """The idle timeout is longer than the sidecars' interval (10 s, +-10 %), or every batch would
        find its connection closed."""
        self.connections: ConnectionGate | None = None
        """The open connections, once listening."""
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

    @classmethod
    def from_config(cls, registry: Registry, api: ApiClient, cfg: OperatorConfig) -> TelemetryServer:
        """The server and its authenticator as the operator's settings (the chart's values) make them."""
        first_contacts = None
        if cfg.first_contacts_per_s > 0:
            first_contacts = FirstContacts(cfg.first_contacts_per_s, cfg.first_contact_burst)
        auth = Authenticator(api, cfg.token_cache_s, cfg.refused_token_cache_s, first_contacts)
        return cls(
            registry, auth, cfg.max_body_bytes, cfg.client_timeout_s, cfg.idle_timeout_s,
            max_connections=cfg.max_connections, first_request_s=cfg.first_request_timeout_s,
        )  # fmt: skip

    async def start(self, host: str, port: int, ssl_context: ssl.SSLContext | None = None) -> None:
        """Listen; with `ssl_context`, HTTPS (its certificate can be reloaded in place: telemetry.tls)."""
        # aiohttp closes an idle connection at the keep-alive deadline (telemetry.connections brings it
        # forward for a first request and a trickled one); after a refusal aiohttp reads ("lingers" on)
        # an unread body for at most a second, not its default 10
        limits = self.connection_limits
        self._runner = web.AppRunner(
            self.app, access_log=None, keepalive_timeout=limits.idle_timeout_s, lingering_time=1.0
        )
        await self._runner.setup()
        self.connections = await serve(self._runner, host, port, ssl_context, limits)
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

    async def _read_batch(self, request: web.Request) -> TelemetryBatch | web.Response:
        """The request's batch, or the refusal to answer: too large, too slow, cut off or malformed."""
        limit = request.app._client_max_size
        if request.content_length is not None and request.content_length > limit:
            return _refuse(413, "too-large", f"batch larger than {limit} bytes")
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
            return decode_batch(raw)  # depth-limited, strict, duplicate keys refused: never a 500
        except WireError as exc:
            return _refuse(400, exc.reason, str(exc))

    async def _handle_telemetry(self, request: web.Request) -> web.Response:
        received_at = time.time()  # the operator's clock, never the batch's sentAt (core.accounting)
        if not self.active:
            return _unavailable("standby", "this operator replica is a standby; retry")
        batch = await self._read_batch(request)
        if isinstance(batch, web.Response):
            return batch
        header = request.headers.get("Authorization", "")
        token = header[7:].strip() if header.startswith("Bearer ") else ""
        try:
            self.auth.admit(token, request.remote or "")  # a new token, from an address within its limit
            identity = await self.auth.identify(token)
            if batch.job.namespace != batch.pod.namespace:
                raise AuthError(403, "wrong-job", "a pod reports only for a job in its own namespace")
            pod = await self.auth.authorize(identity, batch.pod.namespace, batch.pod.name, batch.job.name)
        except AuthError as exc:
            return _refuse_auth(exc, batch.seq)
        try:
            state = await self.registry.get(batch.job.namespace, batch.job.name)
        except ForeignJob as exc:
            return _refuse(421, "misdirected", str(exc), batch.seq)
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
