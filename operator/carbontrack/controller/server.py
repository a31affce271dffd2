"""The operator's HTTP server: telemetry ingestion, /metrics, /healthz and /readyz.

POST /v1/telemetry answers, and counts in carbontrack_telemetry_rejected_total{reason}:
  200 accepted (body: TelemetryAck)      401 bad or missing token
  400 malformed (not UTF-8 JSON, nested over 200 deep, duplicate keys, not the schema: strict types, no
      coercion) or unknown version (anything but the integer 1)
  403 token bound to another pod or job  404 no such CarbonTrackedJob         409 replayed seq
  408 body not received within the client timeout (a slow-loris client; headers alike: the connection
      is closed unanswered when they are not complete in time)
  413 body over the size limit           422 counters or steps went backwards, or energy beyond what
      the pod's GPUs could draw (since the previous batch arrived, or since the pod started)
  503 this replica is a standby (peering), or the apiserver shed load or failed while the batch was being
      authorized: the sidecar keeps the batch and retries
Nothing a sidecar sends can raise out of the handler: an unexpected error is a 500 that is counted.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time

from aiohttp import ClientError, web
from kubernetes_asyncio.client.exceptions import ApiException
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from carbontrack.api.wire import TELEMETRY_PATH, TelemetryAck, WireError, parse_batch
from carbontrack.controller import metrics
from carbontrack.controller.auth import Authenticator, AuthError
from carbontrack.controller.registry import Registry
from carbontrack.core.aggregation import Receipt, Verdict

log = logging.getLogger("carbontrack.telemetry")

_VERDICT_STATUS = {
    Verdict.DUPLICATE: 409, Verdict.BACKWARDS: 422, Verdict.ABSURD: 422, Verdict.IMPLAUSIBLE: 422,
}  # fmt: skip


def _refuse(status: int, reason: str, message: str, seq: int = 0) -> web.Response:
    metrics.rejected.labels(reason).inc()
    body = TelemetryAck(accepted=False, seq=seq, message=message).model_dump_json(by_alias=True)
    return web.Response(status=status, text=body, content_type="application/json")


def _defer(reason: str, message: str) -> web.Response:
    """503 with Retry-After: not a refusal; the sidecar keeps the batch and sends it again."""
    response = _refuse(503, reason, message)
    response.headers["Retry-After"] = "2"
    return response


class _Site(web.TCPSite):
    """aiohttp's TCPSite, with a TLS handshake bounded like the headers (asyncio's default is 60 s,
    during which a client that never finishes its handshake would hold a connection)."""

    handshake_timeout_s = 10.0

    async def start(self) -> None:
        if self._ssl_context is None:
            return await super().start()
        self._runner._reg_site(self)
        assert self._runner.server is not None
        self._server = await asyncio.get_running_loop().create_server(
            self._runner.server, self._host, self._port, ssl=self._ssl_context, backlog=self._backlog,
            ssl_handshake_timeout=self.handshake_timeout_s,
        )  # fmt: skip
        return None


class TelemetryServer:
    def __init__(
        self, registry: Registry, auth: Authenticator, max_body_bytes: int, client_timeout_s: float = 10.0
    ) -> None:
        self.registry = registry
        self.client_timeout_s = client_timeout_s
        self.auth = auth
        self.ready = False
        self.active = True
        """False on a standby replica (see controller.peering): telemetry is refused, /readyz fails."""
        self.app = web.Application(client_max_size=max_body_bytes)
        self.app.router.add_post(TELEMETRY_PATH, self.telemetry)
        self.app.router.add_get("/metrics", self.metrics)
        self.app.router.add_get("/healthz", self.healthz)
        self.app.router.add_get("/readyz", self.readyz)
        self._runner: web.AppRunner | None = None

    async def start(self, host: str, port: int, ssl_context: ssl.SSLContext | None = None) -> None:
        """Listen; with `ssl_context`, HTTPS (its certificate can be reloaded in place: controller.tls)."""
        # aiohttp closes a connection whose request headers are not complete by the keep-alive deadline,
        # counted from the connection's start or its previous response, however slowly bytes trickle in;
        # after a refusal it reads ("lingers" on) an unread body for at most a second, not aiohttp's 10
        self._runner = web.AppRunner(
            self.app, access_log=None, keepalive_timeout=self.client_timeout_s, lingering_time=1.0
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
            return await self._telemetry(request)
        except web.HTTPRequestEntityTooLarge:
            return _refuse(413, "too-large", "batch larger than the limit")
        except (ApiException, ClientError, OSError) as exc:
            if isinstance(exc, ApiException) and exc.status != 429 and exc.status < 500:
                log.exception("telemetry handler failed")
                return _refuse(500, "internal", "internal error")
            # the apiserver shed load, failed or could not be reached (TokenReview, ownership, CR
            # read): the batch is deferred, not refused; the sidecar keeps it and retries
            log.warning("apiserver unavailable for telemetry: %s", str(exc)[:200])
            return _defer("apiserver-unavailable", "the apiserver is unavailable; retry")
        except Exception:
            log.exception("telemetry handler failed")
            return _refuse(500, "internal", "internal error")

    async def _telemetry(self, request: web.Request) -> web.Response:
        received_at = time.time()  # the operator's clock, never the batch's sentAt (core.aggregation)
        if not self.active:
            return _defer("standby", "this operator replica is a standby; retry")
        limit = request.app._client_max_size
        if request.content_length is not None and request.content_length > limit:
            return _refuse(413, "too-large", f"batch larger than {limit} bytes")
        header = request.headers.get("Authorization", "")
        token = header[7:].strip() if header.startswith("Bearer ") else ""
        try:
            raw = await asyncio.wait_for(request.read(), self.client_timeout_s)
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
        ack = TelemetryAck(accepted=True, seq=batch.seq, stop=state.stop)
        # `stop` only when asked: a sidecar older than the field parses the rest as before
        body = ack.model_dump_json(by_alias=True, exclude=None if state.stop else {"stop"})
        return web.Response(text=body, content_type="application/json")
