"""One kept-alive HTTP(S) connection from the sidecar to the operator's telemetry endpoint.

urllib opens and closes a connection (and, over HTTPS, a TLS handshake) for every request, and on the
operator a batch over a fresh connection costs more CPU than one over a kept-alive connection
(benchmarks/RESULTS.md, "Telemetry ingest"). So the sidecar keeps one `http.client` connection open
and reconnects when it fails. A request that fails on a connection that had already
carried one (the operator closed it while idle, or restarted) is sent once more on a fresh connection
at once: batches are idempotent (cumulative counters, a sequence number), so a resend never counts
twice. The CA bundle is re-read when its file changes (the operator's CA rotates): a changed bundle
closes the connection, and the next handshake verifies with the new one.

Used from one worker thread at a time (the sidecar's ship loop awaits each send).
"""

from __future__ import annotations

import http.client
import os
import ssl
from dataclasses import dataclass
from urllib.parse import urlsplit

from carbontrack.api.wire import ACK_JOB_HEADER, TELEMETRY_PATH, TelemetryAck

MAX_ANSWER_BYTES = 1 << 16


@dataclass
class SendResult:
    status: int
    """HTTP status, or 0 when the operator could not be reached."""
    ack: TelemetryAck | None = None
    error: str = ""


def tls_context(url: str, ca_file: str) -> ssl.SSLContext | None:
    """For an https operator: trust only the operator's CA bundle, and check the server's name (the
    Service's DNS name in the URL)."""
    if not url.startswith("https://"):
        return None
    context = ssl.create_default_context(cafile=ca_file or None)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


def _file_signature(path: str) -> tuple[int, int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_ino, st.st_mtime_ns, st.st_size)


class Transport:
    def __init__(self, url: str, ca_file: str, timeout_s: float) -> None:
        parts = urlsplit(url)
        self.url = url
        self.https = parts.scheme == "https"
        self.host = parts.hostname or "localhost"
        self.port = parts.port or (443 if self.https else 80)
        self.path = parts.path.rstrip("/") + TELEMETRY_PATH
        self.ca_file = ca_file
        self.timeout_s = timeout_s
        self.conn: http.client.HTTPConnection | None = None
        self.used = 0
        """Requests answered on the current connection (a failure on a used one is retried once)."""
        self.connections = 0
        """Connections opened so far (the health endpoint and the tests read it)."""
        self._ca_signature: tuple[int, int, int] | None = None

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
        self.conn = None
        self.used = 0

    def _connect(self) -> http.client.HTTPConnection:
        signature = _file_signature(self.ca_file) if self.https else None
        if self.conn is not None and signature != self._ca_signature:
            self.close()  # the CA bundle rotated: verify the next handshake with the new one
        if self.conn is None:
            self._ca_signature = signature
            if self.https:
                context = tls_context(self.url, self.ca_file)
                self.conn = http.client.HTTPSConnection(
                    self.host, self.port, timeout=self.timeout_s, context=context
                )
            else:
                self.conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout_s)
            self.connections += 1
        return self.conn

    def _post_once(self, token: str, body: bytes) -> SendResult:
        conn = self._connect()
        conn.request(
            "POST",
            self.path,
            body=body,
            headers={
                "Content-Type": "application/json",
                "Authorization": f"Bearer {token}",
                ACK_JOB_HEADER: "1",  # this sidecar reads the job's totals in the ack (relays them)
            },
        )
        resp = conn.getresponse()
        raw = resp.read(MAX_ANSWER_BYTES)
        if resp.will_close or not resp.isclosed():
            self.close()  # the server ends it, or the answer was longer than we read
        else:
            self.used += 1
        if not 200 <= resp.status < 300:
            return SendResult(resp.status, None, raw[:4096].decode(errors="replace"))
        try:
            return SendResult(resp.status, TelemetryAck.model_validate_json(raw))
        except ValueError:
            return SendResult(resp.status, None, "unparseable ack")

    def post(self, token: str, body: bytes) -> SendResult:
        """POST one batch; never raises (the caller decides about retries from the status)."""
        for attempt in (1, 2):
            reused = self.conn is not None and self.used > 0
            try:
                return self._post_once(token, body)
            except (OSError, http.client.HTTPException, ValueError) as exc:
                self.close()
                if attempt == 1 and reused and not isinstance(exc, TimeoutError):
                    continue  # a stale kept-alive connection: once more on a fresh one
                return SendResult(0, None, str(exc) or type(exc).__name__)
        raise AssertionError("unreachable")
