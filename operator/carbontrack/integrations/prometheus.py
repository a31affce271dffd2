"""The Prometheus provider's I/O: one instant query (`GET ADDRESS/api/v1/query`), read by core.analysis.

Everything that prevents a number (refused connection, timeout, HTTP error, a body that is not the
API's JSON, no or several series) is a MeasurementError: an error of the measurement, which the
analysis counts against consecutiveErrorLimit, never a failed measurement.
"""

from __future__ import annotations

import aiohttp

from carbontrack.api.crd import PrometheusProvider
from carbontrack.core.gates.metric_gates import MeasurementError, parse_query_result


async def query(provider: PrometheusProvider) -> float:
    url = provider.address.rstrip("/") + "/api/v1/query"
    timeout = aiohttp.ClientTimeout(total=provider.timeout_seconds)
    try:
        async with (
            aiohttp.ClientSession(timeout=timeout, trust_env=False) as session,
            session.get(url, params={"query": provider.query}) as response,
        ):
            try:
                body = await response.json(content_type=None)
            except ValueError as exc:
                raise MeasurementError(f"HTTP {response.status} from {url}: not the API's JSON") from exc
    except TimeoutError as exc:
        raise MeasurementError(f"{url}: no answer within {provider.timeout_seconds:g} s") from exc
    except aiohttp.ClientError as exc:
        raise MeasurementError(f"{url} unreachable: {exc or type(exc).__name__}") from exc
    return parse_query_result(body)
