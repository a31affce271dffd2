"""Telemetry bodies as a sidecar POSTs them (batch_doc), and those a hostile or broken sender may POST,
shared by the unit tests (the handler under aiohttp's test client) and the integration tests (the
operator on the real control plane).

Each hostile body must be refused with a 400 and counted under its reason; none may cause a 5xx or a
traceback.
"""

from __future__ import annotations

import json
import time
from typing import Any

from carbontrack.api.wire import MAX_JSON_DEPTH


def batch_doc(
    namespace: str,
    job: str,
    pod: str,
    *,
    boot: str = "b",
    seq: int = 1,
    sent_at: float | None = None,
    joules: float = 1.0,
    **fields: Any,
) -> dict[str, Any]:
    """A well-formed batch document in the wire's field names: one simulated GPU at `joules`, sent now
    unless `sent_at` says; `fields` add or replace wire fields (stepsSeen, method, gpus, ...) and keep
    the order json.dumps writes them in."""
    return {
        "version": 1, "job": {"namespace": namespace, "name": job},
        "pod": {"namespace": namespace, "name": pod},
        "bootId": boot, "seq": seq, "sentAt": time.time() if sent_at is None else sent_at,
        "method": "simulated", "gpus": [{"index": 0, "energyJoules": joules}], **fields,
    }  # fmt: skip


GOOD: dict[str, Any] = batch_doc("ml", "llama", "p", sent_at=1.7e9, joules=5.0)


def body_of(doc: dict[str, Any], **changes: Any) -> bytes:
    return json.dumps({**doc, **changes}).encode()


def hostile(good: dict[str, Any]) -> list[tuple[str, bytes, str]]:
    """(name, body, rejection reason) for bodies derived from a good batch document: each would be a
    valid new batch (seq 7) but for the one thing done to it."""
    base = {**good, "seq": 7, "sentAt": 1234.5, "bootId": "b", "gpus": [{"index": 0, "energyJoules": 5.5}]}

    def _body(**changes: Any) -> bytes:
        return body_of(base, **changes)

    def swap(old: bytes, new: bytes, body: bytes | None = None) -> bytes:
        body = _body() if body is None else body
        assert old in body, (old, body[:200])  # the table cannot quietly send a good batch instead
        return body.replace(old, new)

    unversioned = json.dumps({k: v for k, v in base.items() if k != "version"}).encode()
    return [
        ("nested-100000", b"[" * 100_000, "malformed"),
        ("nested-in-a-field", _body()[:-1] + b', "x": ' + b"[" * 100_000, "malformed"),
        ("nested-objects", b'{"a":' * 50_000, "malformed"),
        ("just-over-the-depth", b"[" * (MAX_JSON_DEPTH + 1) + b"]" * (MAX_JSON_DEPTH + 1), "malformed"),
        ("float-1e400", swap(b"5.5", b"1e400"), "malformed"),
        ("sent-at-1e400", swap(b"1234.5", b"1e400"), "malformed"),
        ("int-5000-digits", swap(b'"seq": 7', b'"seq": 7' + b"0" * 5000), "malformed"),
        ("int-4000-digits", swap(b'"seq": 7', b'"seq": 7' + b"0" * 4000), "malformed"),
        ("nan-literal", swap(b"5.5", b"NaN"), "malformed"),
        ("infinity-literal", swap(b"5.5", b"Infinity"), "malformed"),
        ("duplicate-seq", swap(b'"seq": 7', b'"seq": 7, "seq": 99'), "malformed"),
        ("duplicate-nested", swap(b'"index": 0', b'"index": 0, "index": 1'), "malformed"),
        ("invalid-utf8", swap(b'"b"', b'"\xc3\x28"'), "malformed"),
        ("utf16", json.dumps(base).encode("utf-16"), "malformed"),
        ("lone-surrogate", swap(b'"b"', b'"\\ud800"'), "malformed"),
        ("bom", b"\xef\xbb\xbf" + _body(), "malformed"),
        ("version-true", _body(version=True), "unknown-version"),
        ("version-float", _body(version=1.0), "unknown-version"),
        ("version-string", _body(version="1"), "unknown-version"),
        ("version-missing", unversioned, "unknown-version"),
        ("seq-float", _body(seq=7.0), "malformed"),
        ("seq-bool", _body(seq=True), "malformed"),
        ("seq-string", _body(seq="7"), "malformed"),
        ("joules-bool", _body(gpus=[{"index": 0, "energyJoules": True}]), "malformed"),
        ("joules-string", _body(gpus=[{"index": 0, "energyJoules": "5"}]), "malformed"),
        ("index-float", _body(gpus=[{"index": 0.0, "energyJoules": 5}]), "malformed"),
        ("gpu-index-twice", _body(gpus=[{"index": 0, "energyJoules": 5.5}] * 3), "malformed"),
        ("gpu-uuid-twice", _body(gpus=[{"index": i, "uuid": "GPU-a", "energyJoules": 5.5} for i in (0, 1)]),
         "malformed"),
        ("final-int", _body(final=1), "malformed"),
        ("boot-id-int", _body(bootId=7), "malformed"),
        ("not-an-object", b"[1, 2, 3]", "malformed"),
        ("empty", b"", "malformed"),
    ]  # fmt: skip


HOSTILE = hostile(GOOD)
