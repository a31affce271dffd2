"""The Prometheus provider's I/O: one instant query (`GET URL/api/v1/query`), read by core.gates.metric_gates.

A gate names one of the endpoints the cluster admin lists (state.config.PrometheusSettings), never a
URL, and the request goes there and nowhere else: redirects are not followed, no proxy from the
environment is used, the answer is read up to `max_response_bytes` and within the gate's
`timeoutSeconds` (connecting included). What a measurement keeps of a failure is the endpoint's name and
a short reason, never the URL or a page of the answer.

Everything that prevents a number (an unknown endpoint, a refused connection, a timeout, a redirect,
an answer too large or not the API's JSON, no or several series, a non-finite sample) is a
MeasurementError: an error of the measurement, which the analysis counts against
consecutiveErrorLimit, never a failed measurement.
"""

from __future__ import annotations

import json
import os
from typing import Any

import aiohttp

from carbontrack.api.crd import PrometheusProvider
from carbontrack.core.gates.metric_gates import MeasurementError, parse_query_result, short_reason
from carbontrack.state.config import PrometheusEndpoint, PrometheusSettings

CHUNK_BYTES = 64 * 1024


def endpoint_for(provider: PrometheusProvider, settings: PrometheusSettings) -> PrometheusEndpoint:
    """The listed endpoint the gate names; an unknown name is an error that lists the known ones."""
    found = settings.named(provider.endpoint)
    if found is None:
        known = ", ".join(e.name for e in settings.endpoints) or "none"
        raise MeasurementError(
            f"no Prometheus endpoint named {provider.endpoint!r} (the operator lists: {known}; "
            "chart value prometheus.endpoints)"
        )
    return found


async def query(provider: PrometheusProvider, settings: PrometheusSettings) -> float:
    """The gate's query, answered by its endpoint: one finite number, or a MeasurementError."""
    endpoint = endpoint_for(provider, settings)
    where = f"endpoint {endpoint.name}"
    timeout = aiohttp.ClientTimeout(total=provider.timeout_seconds)
    try:
        async with (
            aiohttp.ClientSession(timeout=timeout, trust_env=False) as session,
            session.get(
                endpoint.url.rstrip("/") + "/api/v1/query",
                params={"query": provider.query},
                allow_redirects=False,
            ) as response,
        ):
            if 300 <= response.status < 400:
                raise MeasurementError(f"{where}: HTTP {response.status}, a redirect (not followed)")
            body = await _read_capped(response, settings.max_response_bytes, where)
    except TimeoutError as exc:
        raise MeasurementError(f"{where}: no answer within {provider.timeout_seconds:g} s") from exc
    except aiohttp.ClientError as exc:
        raise MeasurementError(f"{where} unreachable: {_client_reason(exc)}") from exc
    return parse_query_result(_json(body, response.status, where))


async def _read_capped(response: aiohttp.ClientResponse, limit: int, where: str) -> bytes:
    """The answer's body, refused as soon as it is known to pass `limit` bytes (by its length, or while
    reading it)."""
    too_large = MeasurementError(f"{where}: the answer is larger than {limit} bytes")
    if response.content_length is not None and response.content_length > limit:
        raise too_large
    body = bytearray()
    async for chunk in response.content.iter_chunked(CHUNK_BYTES):
        body += chunk
        if len(body) > limit:
            raise too_large
    return bytes(body)


def _json(body: bytes, status: int, where: str) -> Any:
    try:
        return json.loads(body)
    except (ValueError, RecursionError) as exc:
        raise MeasurementError(f"{where}: HTTP {status}, not the API's JSON") from exc


def _client_reason(exc: aiohttp.ClientError) -> str:
    """Why the connection failed, in a few words (the OS's reason where there is one)."""
    if isinstance(exc, aiohttp.ClientConnectorError) and exc.os_error.errno:
        return short_reason(os.strerror(exc.os_error.errno), 60)  # the OS's words carry the address too
    return type(exc).__name__
