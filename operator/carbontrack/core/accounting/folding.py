"""Bounded telemetry state: finished sidecar boots fold into per-pod totals; pods and bytes are capped.

Why: unbounded, every (pod, boot id) is a full source in status, so batches under fresh boot ids from
one pod's token, a legitimate job with thousands of pods, or a sidecar that restarts a lot grow
`status.telemetry.sources` until the apiserver refuses the object ("etcdserver: request is too large",
etcd's limit is 1.5 MiB) and status never changes again.

What is kept, per job:
- at most `Limits.live_boots_per_pod` sources per pod: a sidecar restart leaves the previous boot a
  source, so its last in-flight batch still counts;
- a new boot beyond that folds the pod's oldest *quiet* boots, never a live one; when too few are quiet
  it is refused (429) until one is (core.accounting.boots);
- folded boots go into the pod's `PodFold`: their energy, uncertainty, shared energy and counts are
  added in, their high step kept, and each boot id remembered with the cumulative energy counted for it
  (the newest `folded_ids_per_pod`, plus a count of all). A batch under a remembered folded boot id
  that adds nothing to its energy is a duplicate (409) and changes nothing; one whose counter passes it
  adds the difference to the pod's folded totals (below);
- at most `Limits.pods_per_job` pods, and the estimated status bytes of sources and folds under
  `Limits.status_budget_bytes`: a batch that would add a pod or a source beyond either is refused
  (422, counted in status.telemetry.refused, and the TelemetryAccepted condition says why).

Two forms of sources (state.telemetry_status): one object per source while they fit the budget, then
compact rows of what exact totals need (`COMPACT_ROW_BYTES`); `status_bytes` counts the form the
status writer will pick, so a job of 2,000 eight-GPU pods fits 512 KiB.

Why refuse rather than fold at the job level: folding a whole pod would drop what proves its counters
were seen, so its next batch (or a replay) would count its whole cumulative energy a second time;
refusing keeps every total exact (it may miss energy, and says so), and the sidecar keeps sending its
cumulative counter, so nothing is lost if room appears.

Why a folded boot still counts growth: a boot folds once it has been quiet for the live window, and a
sidecar whose counters sit below a claim a token holder made under its boot id (its `/healthz` shows
the id) sends only duplicates, which say nothing of liveness (core.accounting.boots), so its boot can
fold while it runs. Its counters keep growing; once they pass the energy counted for the boot, the
difference counts, checked against the pod's ceiling like any growth. So the job counts at least the
larger of the claim and the sidecar's own counter, whatever was folded.

Why a folded boot id list may be bounded without losing exactness: an id is forgotten only when it is
quiet, neither folded nor sent to within the live window (the oldest such first), and an honest sidecar
never sends again under a boot that went quiet (the process is gone). Ids that are still sent to stay,
up to `Limits.folded_ids_cap` (the status schema's bound); a fold that would pass it is refused (429
`live-boots`) until one goes quiet, so a token holder cannot push a running sidecar's folded id off the
list by folding its own boots. Whatever boot id a token holder uses, a remembered one, one that fell
off the list or a brand-new one, its energy is checked against the pod's ceiling since the pod started
(core.accounting.plausibility) counted *with the folded totals*, exactly as for any fresh boot id.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from carbontrack.api.crd import MAX_FOLDED_IDS, MAX_SOURCE_PROFILES, PROFILE_REASON_CHARS

if TYPE_CHECKING:
    from carbontrack.api.wire import TelemetryBatch
    from carbontrack.core.accounting.sources import Source

LIVE_BOOTS_PER_POD = 2
LIVE_WINDOW_S = 60.0
"""A boot that had a batch accepted within this is live (core.accounting.boots): six of the sidecar's
10 s intervals, twice its longest backoff (30 s)."""
FOLDED_IDS_PER_POD = 16
PODS_PER_JOB = 2000
STATUS_BUDGET_BYTES = 512 * 1024
"""Sources and folds together; the rest of the object (spec with its template, metadata, the other
status fields, kubectl's last-applied copy of the spec) keeps the other 1 MiB of etcd's 1.5 MiB."""


@dataclass(frozen=True)
class Limits:
    """A job's telemetry bounds in status (see the module docstring); the operator's config sets the pod and
    byte caps and the live window."""

    live_boots_per_pod: int = LIVE_BOOTS_PER_POD
    live_window_s: float = LIVE_WINDOW_S
    folded_ids_per_pod: int = FOLDED_IDS_PER_POD
    """Folded boot ids a pod keeps once the older ones are quiet."""
    folded_ids_cap: int = MAX_FOLDED_IDS
    """Folded boot ids a pod keeps at most, quiet or not."""
    pods_per_job: int = PODS_PER_JOB
    status_budget_bytes: int = STATUS_BUDGET_BYTES


@dataclass
class PodFold:
    """The finished boots of one pod, summed, and per remembered boot id the energy counted for it."""

    pod: str
    boots: int = 0
    """Boots folded in, ever (marks keeps only the newest)."""
    marks: dict[str, float] = field(default_factory=dict)
    """Remembered folded boot id -> the cumulative energy counted for it, oldest first."""
    touched_at: dict[str, float] = field(default_factory=dict, compare=False)
    """Boot id -> when (the operator's clock) it was folded or a batch under it last arrived; not kept in
    status: an id this operator has not seen touched counts as quiet."""
    energy_j: float = 0.0
    uncertainty_j: float = 0.0
    shared_energy_j: float = 0.0
    global_step: int = 0
    steps_seen: int = 0
    markers_dropped: int = 0
    records_dropped: int = 0
    unmeasured: int = 0
    """Folded boots whose method was `unavailable` (the job's energy is then not fully measured)."""

    @property
    def boot_ids(self) -> list[str]:
        """The remembered folded boot ids, oldest first."""
        return list(self.marks)

    def knows(self, boot_id: str) -> bool:
        return boot_id in self.marks

    def touch(self, boot_id: str, now: float) -> None:
        """A batch under a remembered boot id arrived: it is not forgotten for a live window."""
        self.touched_at[boot_id] = max(self.touched_at.get(boot_id, now), now)

    def take(self, src: Source, now: float, limits: Limits) -> None:
        """A quiet boot's source into the pod's totals; its id remembered at its energy."""
        self.boots += 1
        self.marks.pop(src.boot_id, None)  # an id forgotten once and folded again goes to the end
        self.marks[src.boot_id] = src.energy_j
        self.touched_at[src.boot_id] = now
        self.energy_j += src.energy_j
        self.uncertainty_j += src.uncertainty_j
        self.shared_energy_j += src.shared_energy_j
        self.global_step = max(self.global_step, src.global_step)
        self.steps_seen += src.steps_seen
        self.markers_dropped += src.markers_dropped
        self.records_dropped += src.records_dropped
        self.unmeasured += src.method == "unavailable"
        excess = max(len(self.marks) - limits.folded_ids_per_pod, 0)
        for boot_id in self._quiet(now, limits)[:excess]:
            del self.marks[boot_id]
            self.touched_at.pop(boot_id, None)

    def has_room(self, folding: int, now: float, limits: Limits) -> bool:
        """Whether `folding` more boots fit under `Limits.folded_ids_cap` once quiet ids are forgotten."""
        after = len(self.marks) + folding
        forgettable = min(len(self._quiet(now, limits)), max(after - limits.folded_ids_per_pod, 0))
        return after - forgettable <= limits.folded_ids_cap

    def grow(self, boot_id: str, batch: TelemetryBatch) -> float:
        """A folded boot's counter passed the energy counted for it: the difference into the pod's totals
        (with the batch's uncertainty and shared energy in proportion, its step kept if higher); returns
        the difference."""
        energy_j = batch.energy_joules
        growth_j = energy_j - self.marks[boot_id]
        share = growth_j / energy_j
        self.marks[boot_id] = energy_j
        self.energy_j += growth_j
        self.uncertainty_j += batch.uncertainty_joules * share
        self.shared_energy_j += batch.shared_energy_joules * share
        self.global_step = max(self.global_step, batch.global_step)
        return growth_j

    def _quiet(self, now: float, limits: Limits) -> list[str]:
        """Remembered ids neither folded nor sent to within the live window, oldest first."""
        window = limits.live_window_s
        return [b for b in self.marks if now - self.touched_at.get(b, -float("inf")) >= window]


# JSON size estimates: upper bounds of what state/status.py serializes (a unit test checks them against the
# real serialization); text is counted as json.dumps escapes it, which UTF-8 storage never exceeds.
_NUMBER = 25
"""The longest float or int repr with its separator (e.g. -1.2345678901234567e+308,)."""
SOURCE_FIXED_BYTES = 440 + 13 * _NUMBER
"""Keys, punctuation, booleans and the numbers of one SourceStatus."""
FOLD_FIXED_BYTES = 250 + 10 * _NUMBER
GPU_BYTES = 2 * _NUMBER + 14
"""Per GPU of a source: its energy, its sharing word and the quotes of its uuid (text counted apart)."""


def text_bytes(text: str) -> int:
    """A string with its quotes and a separator."""
    return len(json.dumps(text)) + 1


def source_bytes(pod: str, boot_id: str, method: str, method_reason: str, gpu_uuids: list[str]) -> int:
    """The JSON size of one SourceStatus, at most."""
    return (
        SOURCE_FIXED_BYTES
        + text_bytes(pod)
        + text_bytes(boot_id)
        + text_bytes(method)
        + text_bytes(method_reason)
        + sum(GPU_BYTES + text_bytes(u) for u in gpu_uuids)
    )


COMPACT_ROW_BYTES = 3 * _NUMBER + 3 * 17 + 2 * 12 + 3
"""One source's row in the compact form (state.telemetry_status), its pod and boot id apart: energy,
uncertainty and shared energy (floats), seq, global step and steps seen (integers up to 2^53), the two
arrival times in whole seconds (up to 1e11) and its profile's index (below MAX_SOURCE_PROFILES)."""
COMPACT_FIXED_BYTES = 400 + MAX_SOURCE_PROFILES * (80 + 6 * PROFILE_REASON_CHARS + 2 * _NUMBER)
"""The compact form's keys and punctuation, and its profile table at its longest (every character of
a reason escaped as \\uXXXX, as json.dumps writes non-ASCII)."""


def compact_source_bytes(pod: str, boot_id: str) -> int:
    """The JSON size of one source's row in the compact form, at most: fixed once the source exists."""
    return COMPACT_ROW_BYTES + text_bytes(pod) + text_bytes(boot_id)


def folded_id_bytes(boot_id: str) -> int:
    """One remembered folded boot id in status: the id and the energy counted for it."""
    return text_bytes(boot_id) + _NUMBER


def fold_bytes(fold: PodFold) -> int:
    """The JSON size of one pod's folded boots in status, at most."""
    return FOLD_FIXED_BYTES + text_bytes(fold.pod) + sum(folded_id_bytes(b) for b in fold.marks)
