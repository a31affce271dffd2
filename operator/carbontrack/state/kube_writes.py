"""API writes whose answer the operator does not read: sent through the client library, answer unread.

kubernetes_asyncio turns every answer into its models: a Job's create or patch answers with the whole
Job, deserialized into V1Job and its nested models (datetimes parsed and all), which the operator then
drops, at a cost that shows when a thousand jobs are created at once (benchmarks/RESULTS.md,
"Reconcile"). `_preload_content=False` skips it; the client then raises nothing for a refusal, so this
does what it would have done: an answer outside 2xx is the same ApiException (status, reason, body),
so every caller's handling of 404, 409, 422 and 429 is unchanged.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from kubernetes_asyncio.client.exceptions import ApiException
from kubernetes_asyncio.client.rest import RESTResponse


async def write(call: Callable[..., Awaitable[Any]], *args: Any, **kwargs: Any) -> None:
    """`await call(*args, **kwargs)` (a client library API method), raising ApiException as it would,
    without building the answer's objects."""
    response = await call(*args, _preload_content=False, **kwargs)
    try:
        # read to the end: aiohttp closes a connection whose answer was left unread, and a new TLS
        # connection per write costs far more than the models
        body = await response.read()
    finally:
        response.release()
    if not 200 <= response.status <= 299:
        raise ApiException(http_resp=RESTResponse(response, body))  # type: ignore[arg-type]  # as rest.py does
