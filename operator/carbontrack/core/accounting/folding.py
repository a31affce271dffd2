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
  added in, their high step kept, and their boot ids remembered (the newest `folded_ids_per_pod`, plus
  a count of all). A batch under a remembered folded boot id is a duplicate (409) and changes nothing;
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

Why a folded boot id list may be bounded without losing exactness: only a quiet boot folds, and an
honest sidecar never sends again under a boot that went quiet (the process is gone). Only a holder of
the pod's token can, and whatever boot id it uses, a remembered one (refused), one that fell off the
list or a brand-new one, its energy is checked against the pod's ceiling since the pod started
(core.accounting.plausibility) counted *with the folded totals*, exactly as for any fresh boot id.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from carbontrack.api.crd import MAX_SOURCE_PROFILES, PROFILE_REASON_CHARS

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
    pods_per_job: int = PODS_PER_JOB
    status_budget_bytes: int = STATUS_BUDGET_BYTES


@dataclass
class PodFold:
    """The finished boots of one pod, summed: everything a total needs, nothing per boot but its id."""

    pod: str
    boots: int = 0
    """Boots folded in, ever (boot_ids keeps only the newest)."""
    boot_ids: list[str] = field(default_factory=list)
    """The newest folded boot ids, oldest first: a batch under one of them is a duplicate."""
    energy_j: float = 0.0
    uncertainty_j: float = 0.0
    shared_energy_j: float = 0.0
    global_step: int = 0
    steps_seen: int = 0
    markers_dropped: int = 0
    records_dropped: int = 0
    unmeasured: int = 0
    """Folded boots whose method was `unavailable` (the job's energy is then not fully measured)."""

    def knows(self, boot_id: str) -> bool:
        return boot_id in self.boot_ids


# JSON size estimates: upper bounds of what state/status.py serializes (a unit test checks them against the
# real serialization); text is counted as json.dumps escapes it, which UTF-8 storage never exceeds.
_NUMBER = 25
"""The longest float or int repr with its separator (e.g. -1.2345678901234567e+308,)."""
SOURCE_FIXED_BYTES = 440 + 13 * _NUMBER
"""Keys, punctuation, booleans and the numbers of one SourceStatus."""
FOLD_FIXED_BYTES = 220 + 10 * _NUMBER
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


def fold_bytes(fold: PodFold) -> int:
    """The JSON size of one pod's folded boots in status, at most."""
    return FOLD_FIXED_BYTES + text_bytes(fold.pod) + sum(text_bytes(b) for b in fold.boot_ids)
