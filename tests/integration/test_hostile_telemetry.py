"""Hostile telemetry on the real control plane, against the real HTTPS operator: forged, foreign and
replayed tokens, malformed, absurd and fuzzed bodies, slow-loris clients, and a pod's own token trying
to inject energy. Each is refused with a 4xx (never a 5xx), counted, and changes no total.
"""

from __future__ import annotations

import contextlib
import json
import re
import select
import socket
import ssl
import time
from typing import Any

from tests.cases.bodies import batch_doc, hostile
from tests.integration.harness import (
    Operator,
    apply,
    ctj,
    pod_token,
    post,
    running_pods,
    status,
    wait,
)


def test_bad_telemetry_is_refused_and_counted(operator: Operator, namespace: str) -> None:
    cluster = operator.cluster
    for name in ("mine", "theirs"):
        assert apply(cluster, namespace, ctj(name, 1)).returncode == 0
    ((mine, mine_uid),) = running_pods(cluster, namespace, "mine", 1)
    ((theirs, theirs_uid),) = running_pods(cluster, namespace, "theirs", 1)
    my_token = pod_token(cluster, namespace, mine, mine_uid)
    their_token = pod_token(cluster, namespace, theirs, theirs_uid)

    def batch(seq: int, joules: float, pod: str = mine, job: str = "mine", step: int = 1) -> dict[str, Any]:
        return batch_doc(
            namespace, job, pod, boot="b1", seq=seq, sent_at=1.7e9 + seq * 10, joules=joules,
            stepsSeen=step, globalStep=step,
        )  # fmt: skip

    assert post(operator.url, my_token, batch(1, 100.0))[0] == 200
    assert post(operator.url, "garbage", batch(2, 110.0))[0] == 401
    other_audience = cluster.kubectl(
        "create", "token", "default", "-n", namespace, "--audience=somebody-else", "--bound-object-kind=Pod",
        f"--bound-object-name={mine}", f"--bound-object-uid={mine_uid}",
    ).stdout.strip()  # fmt: skip
    assert post(operator.url, other_audience, batch(2, 110.0))[0] == 401  # a valid token, not for us
    assert post(operator.url, their_token, batch(2, 110.0))[0] == 403  # bound to another pod
    assert post(operator.url, their_token, batch(2, 110.0, pod=theirs))[0] == 403  # their pod, our job
    assert post(operator.url, my_token, batch(1, 100.0))[0] == 409  # replay
    assert post(operator.url, my_token, batch(3, 50.0))[0] == 422  # counter went backwards
    assert post(operator.url, my_token, {**batch(4, 1e14)})[0] == 422  # absurd
    assert post(operator.url, my_token, batch(4, -5.0))[0] == 400  # negative joules
    assert post(operator.url, my_token, json.dumps(batch(4, float("nan"))).encode())[0] == 400  # NaN
    assert post(operator.url, my_token, batch(4, 1e30))[0] == 400  # beyond any counter: 1e30 W
    assert post(operator.url, my_token, batch(4, 100.0, step=0))[0] == 422  # the step went back, no energy
    assert post(operator.url, my_token, {**batch(5, 120.0), "version": 9})[0] == 400
    assert post(operator.url, my_token, b"{not json")[0] == 400
    assert post(operator.url, my_token, b"x" * (2 << 20))[0] == 413
    wait(lambda: status(cluster, namespace, "mine").get("energyJoules") == 100.0, what="status 100 J")
    assert status(cluster, namespace, "theirs").get("energyJoules", 0) == 0
    metrics = operator.metrics()
    for reason in (
        "invalid-token",
        "wrong-pod",
        "wrong-job",
        "duplicate",
        "backwards",
        "absurd",
        "unknown-version",
        "malformed",
        "too-large",
    ):
        assert f'carbontrack_telemetry_rejected_total{{reason="{reason}"}}' in metrics, reason


def _trickle_until_closed(
    slow_headers: list[socket.socket],
    slow_bodies: list[socket.socket],
    opened_at: dict[socket.socket, float],
    until: float,
) -> tuple[dict[socket.socket, bytes], list[float], list[bytes]]:
    """Send each connection one more byte every 0.25 s (never done) until the server closes it or
    `until` (monotonic): (those still open, seconds each closed one lived, what each closed one got)."""
    open_ = {s: b"" for s in slow_headers + slow_bodies}
    closed_after: list[float] = []
    replies: list[bytes] = []
    while open_ and time.monotonic() < until:
        for sock in list(open_):
            with contextlib.suppress(OSError):
                sock.sendall(b"x" if sock in slow_headers else b" ")
            readable, _, _ = select.select([sock], [], [], 0)
            if readable:
                try:
                    chunk = sock.recv(4096)
                except OSError:
                    chunk = b""
                open_[sock] += chunk
                if not chunk:
                    closed_after.append(time.monotonic() - opened_at[sock])
                    replies.append(open_[sock])
                    sock.close()
                    del open_[sock]
        time.sleep(0.25)
    return open_, closed_after, replies


def test_slow_loris_clients_are_cut_off_while_others_are_served(operator: Operator, namespace: str) -> None:
    """Connections that trickle headers or a body are closed after the client timeout (3 s here)."""
    cluster = operator.cluster
    assert apply(cluster, namespace, ctj("loris", 1)).returncode == 0
    ((pod, uid),) = running_pods(cluster, namespace, "loris", 1)
    token = pod_token(cluster, namespace, pod, uid)
    found = re.search(r'rejected_total\{reason="slow-client"\} ([0-9.]+)', operator.metrics())
    before = float(found.group(1)) if found else 0.0
    host, port = "127.0.0.1", operator.port
    tls = ssl.create_default_context()  # the operator's CA (harness.trust): slow clients speak TLS too

    opened_at: dict[socket.socket, float] = {}

    def connect() -> socket.socket:
        """A connection (over TLS, the handshake done: 200 handshakes take seconds on a busy machine, so
        each connection's cut-off is timed from its own start)."""
        start = time.monotonic()
        raw = socket.create_connection((host, port))
        sock = tls.wrap_socket(raw, server_hostname="localhost") if operator.tls else raw
        opened_at[sock] = start
        return sock

    started = time.monotonic()
    slow_headers = [connect() for _ in range(150)]
    for sock in slow_headers:
        sock.sendall(b"POST /v1/telemetry HTTP/1.1\r\nHost: operator\r\nX-Trickle: ")
    slow_bodies = [connect() for _ in range(50)]
    for sock in slow_bodies:
        sock.sendall(
            b"POST /v1/telemetry HTTP/1.1\r\nHost: operator\r\nContent-Type: application/json\r\n"
            b"Authorization: Bearer " + token.encode() + b"\r\nContent-Length: 4000\r\n\r\n{"
        )
    t0 = time.monotonic()
    code, _ = post(operator.url, token, batch_doc(namespace, "loris", pod, boot="b1", joules=7.0))
    assert code == 200 and time.monotonic() - t0 < 2, "a good client waited behind slow ones"

    open_, closed_after, replies = _trickle_until_closed(slow_headers, slow_bodies, opened_at, started + 20)
    assert not open_, f"{len(open_)} slow connections still open after 20 s"
    assert max(closed_after) < 3 + 4, f"slowest cut off after {max(closed_after):.1f} s"
    assert sum(b"408" in reply.split(b"\r\n", 1)[0] for reply in replies) == len(slow_bodies)
    counted = f'carbontrack_telemetry_rejected_total{{reason="slow-client"}} {before + 50:.1f}'
    assert counted in operator.metrics()
    wait(lambda: status(cluster, namespace, "loris").get("energyJoules") == 7.0, what="only the good batch")


def test_fuzzed_bodies_never_get_a_5xx_and_change_nothing(operator: Operator, namespace: str) -> None:
    """Random bytes and random JSON, with a valid pod-bound token, for a fixed budget of examples."""
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    cluster = operator.cluster
    assert apply(cluster, namespace, ctj("fuzz", 1)).returncode == 0
    ((pod, uid),) = running_pods(cluster, namespace, "fuzz", 1)
    token = pod_token(cluster, namespace, pod, uid)
    good = batch_doc(namespace, "fuzz", pod, sent_at=1.7e9, joules=5.0)
    assert post(operator.url, token, good)[0] == 200
    json_values = st.recursive(
        st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
        lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
        max_leaves=20,
    )
    mutated = st.fixed_dictionaries({k: st.just(v) for k, v in good.items()}).flatmap(
        # every field but the energy counters: whatever is accepted must leave the total at 5 J
        lambda base: st.dictionaries(
            st.sampled_from(sorted(set(base) - {"gpus"})), json_values, max_size=3
        ).map(lambda changes: {**base, **changes})
    )
    statuses: list[int] = []

    @settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
    @given(st.one_of(st.binary(max_size=2000), mutated.map(lambda d: json.dumps(d).encode())))
    def send(body: bytes) -> None:
        code, _ = post(operator.url, token, body)
        statuses.append(code)
        assert code < 500, body

    send()
    # 429: a new boot id while the pod's two boots are live (core.accounting.boots)
    assert statuses and all(c in (200, 400, 403, 404, 409, 422, 429) for c in statuses), sorted(set(statuses))
    time.sleep(1.5)
    assert status(cluster, namespace, "fuzz").get("energyJoules") == 5.0


def test_hostile_bodies_get_a_counted_400_never_a_5xx(operator: Operator, namespace: str) -> None:
    """Deep nesting, huge numbers, duplicate keys, invalid UTF-8 and lax types, with a valid pod token."""
    cluster = operator.cluster
    assert apply(cluster, namespace, ctj("hostile", 1)).returncode == 0
    ((pod, uid),) = running_pods(cluster, namespace, "hostile", 1)
    token = pod_token(cluster, namespace, pod, uid)
    good = batch_doc(namespace, "hostile", pod, joules=5.0)
    assert post(operator.url, token, good)[0] == 200
    counter = re.compile(r'carbontrack_telemetry_rejected_total\{reason="([a-z-]+)"\} ([0-9.]+)')

    def counted() -> dict[str, float]:
        found = counter.findall(operator.metrics())
        return {reason: float(value) for reason, value in found}

    log_before, before = operator.logs.read_text(), counted()
    cases = hostile({**good, "seq": 2})
    for name, body, _ in cases:
        code, answer = post(operator.url, token, body)
        assert code == 400, (name, code, answer)
        assert json.loads(answer)["accepted"] is False, name
    new_log = operator.logs.read_text()[len(log_before) :]
    assert "Traceback" not in new_log and "handler failed" not in new_log, new_log[-3000:]
    after = counted()
    for reason in {r for _, _, r in cases}:
        expected = before.get(reason, 0) + sum(r == reason for _, _, r in cases)
        assert after[reason] == expected, reason
    assert after.get("internal", 0) == before.get("internal", 0)
    grown = {**good, "seq": 3, "gpus": [{"index": 0, "energyJoules": 6.0}]}
    assert post(operator.url, token, grown)[0] == 200
    wait(lambda: status(cluster, namespace, "hostile").get("energyJoules") == 6.0, what="only good batches")


def test_a_pods_own_token_cannot_inject_energy(operator: Operator, namespace: str) -> None:
    """The attacks of issue 12, with the pod's own token: 1e14 J under a fresh boot id, and a sentAt
    far in the future to make a jump look slow; and 64 GPUs claimed on a pod of one. All are refused
    (422), counted by reason, shown in status.telemetry.refused, and change no total."""
    cluster = operator.cluster
    assert apply(cluster, namespace, ctj("inject", 1)).returncode == 0
    ((pod, uid),) = running_pods(cluster, namespace, "inject", 1)
    token = pod_token(cluster, namespace, pod, uid)

    def batch(boot: str, seq: int, joules: float, sent_at: float) -> dict[str, Any]:
        return batch_doc(namespace, "inject", pod, boot=boot, seq=seq, sent_at=sent_at, joules=joules)

    now = time.time()
    assert post(operator.url, token, batch("b1", 1, 5.0, now))[0] == 200
    code, answer = post(operator.url, token, batch("fresh", 1, 1e14, now))
    assert code == 422 and "since it started" in answer, answer
    # 20 kJ is within what 1 GPU may have drawn since the pod started, but not in the second since the
    # source's first batch arrived; a sentAt 30 years ahead used to stretch that second
    code, answer = post(operator.url, token, batch("b1", 2, 20_005.0, now + 1e9))
    assert code == 422 and "since the source's first batch arrived" in answer, answer
    assert post(operator.url, token, batch("b1", 3, 1e13, now + 1e9))[0] == 422
    assert post(operator.url, token, batch("b1", 4, 6.0, now))[0] == 200
    # 64 GPUs claimed on the pod of one GPU, each with a small figure: refused for the list itself
    many = {**batch("b1", 5, 0.0, now), "gpus": [{"index": i, "energyJoules": 0.1} for i in range(64)]}
    code, answer = post(operator.url, token, many)
    assert code == 422 and "the batch lists 64 GPUs; pod" in answer and "holds 1" in answer, answer

    def refused() -> dict[str, Any] | None:
        s = status(cluster, namespace, "inject")
        counts = s.get("telemetry", {}).get("refused", {})
        return s if counts.get("absurd") == 2 and counts.get("tooManyGpus") == 1 else None

    st = wait(refused, what="refusals in status")
    assert st["energyJoules"] == 6.0
    refused = {"backwards": 0, "absurd": 2, "implausible": 1, "tooManyPods": 0, "statusFull": 0,
               "liveBoots": 0, "tooManyGpus": 1, "finished": 0}  # fmt: skip
    assert st["telemetry"]["refused"] == refused
    assert [s["bootId"] for s in st["telemetry"]["sources"]] == ["b1"]
    received = st["telemetry"]["sources"][0]["receivedAt"]
    assert abs(received - time.time()) < 60  # the operator's clock, not the sentAt we sent
    metrics = operator.metrics()
    assert 'carbontrack_telemetry_rejected_total{reason="implausible"}' in metrics
