"""What the sidecar still owes the operator, bounded, and the batches that carry it.

Cumulative counters are never buffered: every batch carries the newest values, so nothing can be
lost by a dead operator but per-step detail. Per-step records wait here until a batch that carried
them is acknowledged; past the bound the oldest go first, and the count of them travels upward.
"""

from __future__ import annotations

import random
from collections import deque
from dataclasses import dataclass, field

from carbontrack.api.wire import CheckpointReport, DPParams, EvalReport, StepRecord, TelemetryBatch


@dataclass
class Outbox:
    limit: int = 10_000
    records: deque[StepRecord] = field(default_factory=deque)
    evals: deque[EvalReport] = field(default_factory=lambda: deque(maxlen=100))
    dp: DPParams | None = None
    checkpoint: CheckpointReport | None = None
    """The newest checkpoint the trainer reported; like dp, carried by every batch (the operator keeps
    the highest step), so a lost batch loses nothing."""
    records_dropped: int = 0
    seq: int = 0
    in_flight: tuple[int, int, list[EvalReport]] | None = None
    """(seq, last step record carried, evals carried) of the batch on the wire."""

    def add_record(self, record: StepRecord) -> None:
        self.records.append(record)
        while len(self.records) > self.limit:
            self.records.popleft()
            self.records_dropped += 1

    def add_eval(self, report: EvalReport) -> None:
        self.evals.append(report)

    def next_batch(self, base: TelemetryBatch, max_records: int = 5000) -> TelemetryBatch:
        """The next batch: the counters in `base` (with its sentAt, from the state's clock), plus the
        oldest pending records."""
        self.seq += 1
        records = list(self.records)[:max_records]
        evals = list(self.evals)
        self.in_flight = (self.seq, records[-1].step if records else -1, evals)
        return base.model_copy(
            update={
                "seq": self.seq,
                "steps": records,
                "evals": evals,
                "dp": self.dp,
                "checkpoint": self.checkpoint,
                "records_dropped": self.records_dropped,
            }
        )

    def ack(self, seq: int) -> None:
        """The operator has batch `seq`: forget what it carried (unless the buffer moved on since)."""
        if self.in_flight is None or self.in_flight[0] != seq:
            return
        _, last_step, evals = self.in_flight
        # Records are in increasing step order; some may have been pushed out by the bound meanwhile.
        while self.records and self.records[0].step <= last_step:
            self.records.popleft()
        carried = {id(e) for e in evals}
        self.evals = deque((e for e in self.evals if id(e) not in carried), maxlen=self.evals.maxlen)
        self.in_flight = None

    @property
    def pending(self) -> int:
        return len(self.records) + len(self.evals)


@dataclass
class Backoff:
    """Exponential backoff with full jitter (so a thousand sidecars do not retry in lockstep)."""

    base_s: float = 0.5
    max_s: float = 30.0
    failures: int = 0
    rng: random.Random = field(default_factory=random.Random)

    def next_delay(self) -> float:
        self.failures += 1
        return self.rng.uniform(0, min(self.max_s, self.base_s * 2 ** min(self.failures, 16)))

    def reset(self) -> None:
        self.failures = 0
