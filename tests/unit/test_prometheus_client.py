"""integrations.prometheus against local HTTP servers: a gate reaches only the endpoint it names, follows no
redirect, reads a capped answer within its timeout, and keeps no URL or page of an answer in its error."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from carbontrack.api.crd import PrometheusProvider
from carbontrack.core.gates.metric_gates import MeasurementError
from carbontrack.integrations import prometheus
from carbontrack.state.config import PrometheusEndpoint, PrometheusSettings, prometheus_endpoints

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
SCALAR = {"status": "success", "data": {"resultType": "scalar", "result": [1.7e9, "0.97"]}}


def provider(endpoint: str = "main", timeout: float = 2) -> PrometheusProvider:
    return PrometheusProvider.model_validate({"endpoint": endpoint, "query": "up", "timeoutSeconds": timeout})


def ask(handler: Handler, gate: PrometheusProvider | None = None, max_bytes: int = 1 << 20) -> Any:
    """The answer (a float) or the MeasurementError of one query against a server running `handler` as
    the endpoint `main`, and the paths the server saw."""
    seen: list[str] = []

    async def recorded(request: web.Request) -> web.StreamResponse:
        seen.append(request.path_qs)
        return await handler(request)

    async def main() -> float | MeasurementError:
        app = web.Application()
        app.router.add_get("/{tail:.*}", recorded)
        async with TestServer(app) as server:
            url = str(server.make_url("")).rstrip("/")
            settings = PrometheusSettings((PrometheusEndpoint("main", url),), max_bytes)
            try:
                return await prometheus.query(gate or provider(), settings)
            except MeasurementError as exc:
                return exc

    return asyncio.run(main()), seen


def test_a_named_endpoint_is_asked_the_gates_query() -> None:
    async def answer(request: web.Request) -> web.Response:
        return web.json_response(SCALAR)

    value, seen = ask(answer)
    assert value == 0.97 and seen == ["/api/v1/query?query=up"]


def test_an_unknown_endpoint_is_an_error_that_names_the_known_ones_and_contacts_nothing() -> None:
    async def answer(request: web.Request) -> web.Response:
        return web.json_response(SCALAR)

    err, seen = ask(answer, provider("other"))
    assert str(err) == (
        "no Prometheus endpoint named 'other' (the operator lists: main; chart value prometheus.endpoints)"
    )
    assert seen == []


def test_a_redirect_is_not_followed() -> None:
    """A listed endpoint that redirects (to the cloud's metadata service, say) sends the operator nowhere."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    listener.setblocking(False)
    port = listener.getsockname()[1]

    async def redirect(request: web.Request) -> web.Response:
        raise web.HTTPFound(f"http://127.0.0.1:{port}/latest/meta-data/")

    err, seen = ask(redirect)
    assert str(err) == "endpoint main: HTTP 302, a redirect (not followed)"
    assert seen == ["/api/v1/query?query=up"]
    with pytest.raises(BlockingIOError):
        listener.accept()  # nobody knocked
    listener.close()


@pytest.mark.parametrize("chunked", [False, True])
def test_an_answer_past_the_cap_is_an_error(chunked: bool) -> None:
    async def big(request: web.Request) -> web.StreamResponse:
        if not chunked:
            return web.Response(body=b"x" * 5000)
        response = web.StreamResponse()
        response.enable_chunked_encoding()
        await response.prepare(request)
        for _ in range(10):
            await response.write(b"x" * 1000)
        return response

    err, _ = ask(big, max_bytes=4096)
    assert str(err) == "endpoint main: the answer is larger than 4096 bytes"


def test_a_slow_answer_is_an_error_after_the_gates_timeout() -> None:
    async def slow(request: web.Request) -> web.Response:
        await asyncio.sleep(5)
        return web.json_response(SCALAR)

    err, _ = ask(slow, provider(timeout=0.2))
    assert str(err) == "endpoint main: no answer within 0.2 s"


def test_an_answer_that_is_no_json_keeps_no_text_of_it() -> None:
    async def page(request: web.Request) -> web.Response:
        return web.Response(status=500, text="<html>aws_secret_access_key=AKIA... [" * 3 + "[" * 100_000)

    err, _ = ask(page)
    assert str(err) == "endpoint main: HTTP 500, not the API's JSON"


def test_an_error_answer_keeps_only_the_errortype_and_a_short_reason() -> None:
    async def refused(request: web.Request) -> web.Response:
        body = {"status": "error", "errorType": "bad_data", "error": "parse error: " + "y" * 400}
        return web.json_response(body, status=400)

    err, _ = ask(refused)
    assert str(err).startswith("query failed (bad_data): parse error: yyy") and len(str(err)) < 150


def test_infinity_is_an_error_quoting_the_sample() -> None:
    async def inf(request: web.Request) -> web.Response:
        return web.json_response({**SCALAR, "data": {"resultType": "scalar", "result": [1, "+Inf"]}})

    err, _ = ask(inf)
    assert str(err) == "the sample '+Inf' is not a finite number"


def test_a_refused_connection_names_the_endpoint_not_its_url() -> None:
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    port = closed.getsockname()[1]
    closed.close()
    settings = PrometheusSettings((PrometheusEndpoint("down", f"http://127.0.0.1:{port}"),))
    with pytest.raises(MeasurementError) as err:
        asyncio.run(prometheus.query(provider("down"), settings))
    assert str(err.value).startswith("endpoint down unreachable: ") and "127.0.0.1" not in str(err.value)


def test_the_chart_writes_the_endpoints_as_a_json_list() -> None:
    text = json.dumps([{"name": "main", "url": "http://prometheus-operated.monitoring:9090"},
                       {"name": "thanos", "url": "https://thanos.monitoring/prefix"}])  # fmt: skip
    assert prometheus_endpoints(text) == (
        PrometheusEndpoint("main", "http://prometheus-operated.monitoring:9090"),
        PrometheusEndpoint("thanos", "https://thanos.monitoring/prefix"),
    )
    assert prometheus_endpoints("") == ()


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("{", "not JSON"),
        ('{"name": "main"}', "a JSON list"),
        ('[{"name": "main"}]', "each entry is {name, url}"),
        ('[{"name": "Main", "url": "http://p:9090"}]', "not a DNS label"),
        ('[{"name": "main", "url": "p:9090"}]', "not an http(s) URL"),
        ('[{"name": "main", "url": "http://user:pw@p:9090"}]', "without credentials"),
        ('[{"name": "a", "url": "http://p"}, {"name": "a", "url": "http://q"}]', "listed twice"),
    ],
)
def test_a_malformed_endpoint_list_stops_the_operator_with_the_reason(text: str, reason: str) -> None:
    with pytest.raises(ValueError, match="CARBONTRACK_PROMETHEUS_ENDPOINTS") as err:
        prometheus_endpoints(text)
    assert reason in str(err.value)
