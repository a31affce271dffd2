"""Which boots of a pod are live, and which fold to make room for a new one.

A boot (one sidecar process, one boot id) is *live* while it is sending: a batch under it was accepted,
or refused as backwards or beyond a ceiling (plausibility.SENDING), within `Limits.live_window_s`. A
live boot never folds. A new boot id that would take its pod past `Limits.live_boots_per_pod` sources folds
the pod's oldest quiet boots; when too few are quiet, the new boot is refused (429 `live-boots`,
counted) until one goes quiet.

Why: folding is what keeps status bounded (core.accounting.folding), and a folded boot's later batches
count only past the energy counted for it. Were the oldest boot folded whatever it was doing, a holder
of the pod's token (the training code can read a projected token in its own pod) could send batches
under two new boot ids next to the running sidecar and fold its live boot away, over and over, each
fold a boot whose id the pod must remember.

A boot's `final` batch does not make it quiet: anyone holding the pod's token can send one under the
running sidecar's boot id (its `/healthz` shows it), and a boot quiet at once could then be folded by a
new boot id next to it.

Why honest restarts still work: a restarted sidecar's old boot stops sending, so it goes quiet by
itself within the window. The new boot takes the free place, or is answered 429 and retries with
backoff; its counters are cumulative, so it loses nothing by waiting.

A boot refused a place for longer than that is *held out* (`HeldOut`), and so is a pod with more boots
refused at once than `HELD_OUT_TRACKED`: an honest restart waits at most one window, so a boot still
retrying after `HELD_OUT_WINDOWS` windows, or a crowd of refused boots, is kept out by boots that a
token holder keeps live (beside the sidecar before it was first heard, or in the place its restart
freed). The pod's energy is then not being counted, and the pod counts as unmeasured
(core.rollout.coverage): staging and production carbon gates fail closed, naming it, rather than judge
a total that misses a sidecar.

Time is the operator's receive clock (Receipt.received_at), never the sender's. An aggregate restored
from status did not hear the sidecars while no operator was listening: every boot gets a full window
from the first batch this aggregate received (`listening_since`) before it counts as quiet.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from carbontrack.core.accounting.folding import Limits
from carbontrack.core.accounting.sources import Source


def is_quiet(src: Source, now: float, window_s: float, listening_since: float) -> bool:
    """No batch under the boot was accepted, or refused as backwards or beyond a ceiling, in the last
    `window_s` it could be heard (a boot whose batches a token holder's claims crowd out or outbid is
    still sending, and must not fold). A `final` batch does not count as silence (see the docstring)."""
    heard = max(src.received_at, src.heard_at, listening_since)
    return now - heard >= window_s


def boots_to_fold(
    pod_sources: list[Source], now: float, limits: Limits, listening_since: float
) -> list[Source] | None:
    """The pod's boots that fold to make room for one new boot, oldest first (by their first batch's
    arrival); None when fewer of them are quiet than must go."""
    excess = len(pod_sources) + 1 - limits.live_boots_per_pod
    if excess <= 0:
        return []
    oldest_first = sorted(pod_sources, key=lambda s: (s.first_received_at, s.received_at, s.boot_id))
    quiet = [s for s in oldest_first if is_quiet(s, now, limits.live_window_s, listening_since)]
    return quiet[:excess] if len(quiet) >= excess else None


HELD_OUT_WINDOWS = 2.0
"""Live windows a boot may be refused a place, still retrying, before its pod counts as unmeasured."""
HELD_OUT_TRACKED = 8
"""Refused boots tracked per pod: the ones refused first are kept (they are the ones held out longest).
More refused at once than this is no honest restart either: the pod is held out at once, and for as long
as the sidecar's boot, pushed out of the tracking by such a crowd, would take to be held out again."""


@dataclass
class HeldOut:
    """Per pod, the boots refused a place (429 `live-boots`): when each was first and last refused, until it
    is admitted, and when a refused boot last found the tracking full. Not kept in status: a held-out
    sidecar keeps retrying, so a restarted operator finds it again within `HELD_OUT_WINDOWS` windows."""

    refusals: dict[str, dict[str, tuple[float, float]]] = field(default_factory=dict)
    crowded: dict[str, float] = field(default_factory=dict)

    def refused(self, pod: str, boot_id: str, now: float, window_s: float) -> None:
        boots = self.refusals.setdefault(pod, {})
        first = boots[boot_id][0] if boot_id in boots else now
        boots[boot_id] = (first, now)
        for gone in [b for b, (_, last) in boots.items() if now - last >= window_s]:
            del boots[gone]  # no longer retrying
        while len(boots) > HELD_OUT_TRACKED:
            del boots[max(boots, key=lambda b: boots[b][0])]
            self.crowded[pod] = now

    def admitted(self, pod: str, boot_id: str) -> None:
        boots = self.refusals.get(pod)
        if boots is not None:
            boots.pop(boot_id, None)
            if not boots:
                del self.refusals[pod]

    def pods(self, now: float, window_s: float) -> set[str]:
        """Pods with a boot refused a place for `HELD_OUT_WINDOWS` windows and again within the last, or
        with more boots refused than are tracked within the last `HELD_OUT_WINDOWS` + 1: a crowd may
        have pushed the sidecar's boot out of the tracking, which then needs that long to hold it out
        again (it is refused within a window of the crowd's end, retrying)."""
        held = HELD_OUT_WINDOWS * window_s
        crowded = {pod for pod, at in self.crowded.items() if now - at < held + window_s}
        return crowded | {
            pod
            for pod, boots in self.refusals.items()
            if any(now - last < window_s and last - first >= held for first, last in boots.values())
        }
