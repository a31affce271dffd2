"""kopf's peering rule as the telemetry path applies it (ha/peering.py)."""

from __future__ import annotations

import datetime as dt

from carbontrack.ha.peering import blockers, is_active, parse_peers, seniority_priority

NOW = dt.datetime(2026, 11, 22, 12, 0, 0, tzinfo=dt.UTC)


def rec(priority: int, seen_s_ago: float = 1, lifetime: int = 60) -> dict[str, object]:
    return {"priority": priority, "lifetime": lifetime,
            "lastseen": (NOW - dt.timedelta(seconds=seen_s_ago)).isoformat()}  # fmt: skip


def test_seniority_earlier_start_wins_and_the_salt_never_reorders_starts() -> None:
    older = seniority_priority(1_000.000, salt=999)
    newer = seniority_priority(1_000.001, salt=0)
    assert older > newer
    assert seniority_priority(5.0, salt=1) != seniority_priority(5.0, salt=2)
    assert seniority_priority(1.8e9, salt=0) < 0 < 666  # kopf --dev outranks every replica
    assert seniority_priority(1_000.0, salt=1) == -1_000_000 * 1000 + 1


def test_the_highest_live_priority_is_the_only_active_one() -> None:
    status = {"a": rec(-10), "b": rec(-20)}
    assert is_active(status, "a", -10, NOW)
    assert not is_active(status, "b", -20, NOW)
    assert [p.identity for p in blockers(parse_peers(status), "b", -20, NOW)] == ["a"]


def test_a_dead_peer_blocks_nobody() -> None:
    status = {"a": rec(-10, seen_s_ago=61), "b": rec(-20)}
    assert is_active(status, "b", -20, NOW)


def test_same_priority_pauses_both_as_kopf_does() -> None:
    status = {"a": rec(0), "b": rec(0)}
    assert not is_active(status, "a", 0, NOW) and not is_active(status, "b", 0, NOW)


def test_not_active_before_announcing_itself_or_after_its_own_record_expired() -> None:
    assert not is_active({"a": rec(-10)}, "b", 100, NOW)
    assert not is_active({"b": rec(100, seen_s_ago=120)}, "b", 100, NOW)
    assert not is_active(None, "b", 100, NOW)


def test_unreadable_records_are_ignored() -> None:
    status = {"junk": "x", "bad": {"lastseen": "yesterday"}, "b": rec(1)}
    assert [p.identity for p in parse_peers(status)] == ["b"]
    assert is_active(status, "b", 1, NOW)
    naive = {"b": {"priority": 1, "lifetime": 60, "lastseen": "2026-11-22T11:59:59"}}
    assert is_active(naive, "b", 1, NOW)
