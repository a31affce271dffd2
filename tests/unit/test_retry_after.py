"""A Job create the apiserver sheds (429) is retried when it says, not after a fixed 5 s."""

from __future__ import annotations

from kubernetes_asyncio.client.exceptions import ApiException

from carbontrack.controller.job_writes import retry_after


def shed(headers: dict[str, str] | None) -> ApiException:
    exc = ApiException(status=429, reason="Too Many Requests")
    exc.headers = headers
    return exc


def test_the_apiservers_retry_after_is_used_and_bounded() -> None:
    assert retry_after(shed({"Retry-After": "1"})) == 1.0
    assert retry_after(shed({"Retry-After": "600"})) == 30.0
    assert retry_after(shed({"Retry-After": "0"})) == 0.1
    assert retry_after(shed(None)) == 1.0
    assert retry_after(shed({"Retry-After": "Wed, 21 Oct 2026 07:28:00 GMT"})) == 1.0
