"""The telemetry wire protocol between the sidecar and the operator (one module, both sides).

A batch carries **cumulative** counters since the sidecar booted (energy per GPU, steps seen,
drops), so delivery is idempotent: a retried, duplicated, reordered or lost batch never changes a
total, because the newest cumulative value per (pod, boot id) wins. Per-step records ride along for
step statistics; they are identified by step number, so a record delivered twice is recognised.
"""

from __future__ import annotations

import json
import operator
import re
from typing import Annotated, Any, Literal

from pydantic import ConfigDict, Field, ValidationError, field_validator
from pydantic_core import from_json

from carbontrack.api.base import KubeModel

WIRE_VERSION: Literal[1] = 1
TELEMETRY_PATH = "/v1/telemetry"
ACK_JOB_HEADER = "X-Carbontrack-Ack-Job"
"""A sidecar that sends this header (value `1`) reads `job` in the ack; without it the ack carries no
`job` (a sidecar older than the field refuses unknown fields, and would lose `stop` with them)."""
MAX_BATCH_BYTES = 1 << 20  # operator refuses larger bodies with 413
MAX_STEP_RECORDS = 10_000  # per batch
MAX_GPUS = 64
MAX_JSON_DEPTH = 200
"""jiter's fixed nesting limit (pydantic_core.from_json): it stops there with an error, never a stack
overflow; a batch nests 4 deep (Python's json alone raises RecursionError on deep enough nesting)."""

Method = Literal["energy-counter", "power-integration", "simulated", "unavailable"]
"""How energy was measured: the NVML counter, integrated power samples, a simulated trace, or not at all."""

Sharing = Literal["exclusive", "shared", "mig"]
"""Whose energy a GPU's reading is: this job's alone (exclusive), or the whole board's while other
processes (shared: time-slicing, MPS, a neighbour) or other MIG instances (mig) may use it too."""

Joules = Annotated[float, Field(ge=0, le=1e15)]
Seconds = Annotated[float, Field(ge=0, le=1e9)]
Count = Annotated[int, Field(ge=0, le=1 << 53)]


class WireModel(KubeModel):
    """Strict wire model: finite numbers only, unknown fields refused, no coercion.

    Strict mode: an int field takes only a JSON integer (not `true`, not `1.0`), a str only a string,
    a bool only `true`/`false`; a float field takes an integer too (JSON has one number type).
    """

    model_config = ConfigDict(
        alias_generator=KubeModel.model_config.get("alias_generator"),
        populate_by_name=True,
        extra="forbid",
        allow_inf_nan=False,
        strict=True,
    )


class ObjectRef(WireModel):
    namespace: str = Field(min_length=1, max_length=63)
    name: str = Field(min_length=1, max_length=253)


class PodRef(ObjectRef):
    uid: str = Field("", max_length=64)


class GpuCounter(WireModel):
    """Cumulative energy of one GPU since the sidecar booted."""

    index: int = Field(ge=0, lt=MAX_GPUS)
    uuid: str = Field("", max_length=96)
    name: str = Field("", max_length=96)
    """The product name NVML gives (e.g. NVIDIA H100 80GB HBM3): the hardware a report names."""
    energy_joules: Joules
    lost: bool = False
    """NVML reported the GPU lost; its counter is frozen at the last good value."""
    sharing: Sharing = "exclusive"
    foreign_processes: Count = 0
    """Compute processes on the GPU that are not the trainer's (from the trainer's NVML)."""
    uncertainty_joules: Joules = 0.0
    """Stated bound on |energy_joules - true energy| for this GPU's method (README: uncertainty)."""
    method: Method | None = None
    """This GPU's method when it differs from the batch's (one counterless GPU among counters)."""


class StepRecord(WireModel):
    """Energy attributed to the steps (first_step, step], measured between two markers."""

    step: Count
    first_step: Count
    """Previous marker's step; step - first_step > 1 when markers were lost in between."""
    energy_joules: Joules
    duration_s: Seconds
    ended_at: float = Field(ge=0, le=1e11)
    """Unix time of the marker that closed the record."""


class EvalReport(WireModel):
    step: Count
    metrics: dict[str, float] = Field(max_length=64)


class DPParams(WireModel):
    """DP-SGD parameters as the trainer reports them; the operator recomputes epsilon itself."""

    step: Count
    noise_multiplier: float = Field(gt=0, le=1e6)
    sample_rate: float = Field(gt=0, le=1)
    delta: float = Field(gt=0, lt=1)
    accountant_epsilon: float | None = Field(None, ge=0)


class CheckpointReport(WireModel):
    """A checkpoint the trainer saved: where (its own URI: a path, s3://, ...) and at which global step."""

    step: Count
    uri: str = Field(min_length=1, max_length=1024)


class TelemetryBatch(WireModel):
    """One POST from a sidecar to the operator."""

    version: Literal[1] = 1
    job: ObjectRef
    pod: PodRef
    boot_id: str = Field(min_length=1, max_length=64)
    """New on every sidecar start: counters restart from zero under a new boot id."""
    seq: Count
    """Increases with every batch of one boot."""
    sent_at: float = Field(ge=0, le=1e11)
    method: Method
    method_reason: str = Field("", max_length=300)
    """Why the method is what it is; always set for `unavailable` (e.g. mismatched UUIDs)."""
    gpus: list[GpuCounter] = Field(default_factory=list, max_length=MAX_GPUS)
    steps_seen: Count = 0
    """Step markers received since boot."""
    global_step: Count = 0
    """Highest global step seen since boot."""
    markers_dropped: Count = 0
    """Markers the client sent that never arrived (gaps in the client's sequence numbers)."""
    records_dropped: Count = 0
    """Per-step records dropped from the sidecar's buffer while the operator was unreachable."""
    steps: list[StepRecord] = Field(default_factory=list, max_length=MAX_STEP_RECORDS)
    evals: list[EvalReport] = Field(default_factory=list, max_length=1000)
    dp: DPParams | None = None
    final: bool = False
    """The sidecar is shutting down; no further batch will come from this boot."""
    checkpoint: CheckpointReport | None = None
    """The newest checkpoint the trainer reported since the previous batch (sent at once)."""

    @field_validator("version", mode="before")
    @classmethod
    def _integer_version(cls, value: object) -> object:
        """A Literal compares by equality, and `True == 1.0 == 1` in Python: strict mode lets them by."""
        if type(value) is not int:
            raise ValueError("version must be the integer 1")
        return value

    @field_validator("gpus")
    @classmethod
    def _each_gpu_once(cls, gpus: list[GpuCounter]) -> list[GpuCounter]:
        """A GPU listed twice would be counted twice, and one index under two readings is no reading."""
        indices = [g.index for g in gpus]
        if len(set(indices)) < len(indices):
            raise ValueError(f"GPU index {_repeated(indices)} is listed more than once")
        uuids = [g.uuid for g in gpus if g.uuid]
        if len(set(uuids)) < len(uuids):
            raise ValueError(f"GPU {_repeated(uuids)!r} is listed more than once")
        return gpus

    @property
    def energy_joules(self) -> float:
        return sum(g.energy_joules for g in self.gpus)

    @property
    def uncertainty_joules(self) -> float:
        return sum(g.uncertainty_joules for g in self.gpus)

    @property
    def shared_energy_joules(self) -> float:
        """Board energy of GPUs that are not this job's alone (MIG or shared with other processes)."""
        return sum(g.energy_joules for g in self.gpus if g.sharing != "exclusive")


def _repeated(values: list[Any]) -> Any:
    """The first value that occurs twice in `values` (which has one)."""
    seen: set[Any] = set()
    return next(v for v in values if v in seen or seen.add(v))  # type: ignore[func-returns-value]


class JobTotals(WireModel):
    """The job's running totals as the operator holds them when it answers (its in-memory aggregate,
    ahead of status by at most one status interval): what a model card's `co2_eq_emissions` needs."""

    emissions_grams: float = Field(ge=0)
    energy_joules: float = Field(ge=0)
    zone: str = Field(max_length=64)
    gpus: dict[str, Count] = Field(default_factory=dict, max_length=MAX_GPUS)
    """GPU model name -> GPUs of it seen (status.gpus: the newest boot of each pod); "" = not reported."""


class TelemetryAck(WireModel):
    """The operator's answer: which seq it has, so the sidecar can drop what was delivered."""

    accepted: bool
    seq: Count
    message: str = ""
    stop: bool = False
    """A halt is under way: the trainer should save a checkpoint, report it, and stop (the sidecar relays
    this to the client's `should_stop()`)."""
    job: JobTotals | None = None
    """The job's totals, only for a sidecar that asked (ACK_JOB_HEADER); relayed to `client.job_totals()`."""


class WireError(ValueError):
    """A body that is not a batch: `reason` is the rejection label (malformed, unknown-version)."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    doc = dict(pairs)
    if len(doc) != len(pairs):
        seen: set[str] = set()
        dup = next(k for k, _ in pairs if k in seen or seen.add(k))  # type: ignore[func-returns-value]
        raise WireError("malformed", f"duplicate key {dup[:64]!r}")
    return doc


def parse_json(raw: bytes) -> Any:
    """A JSON document from untrusted bytes, or WireError; never RecursionError or a stack overflow.

    Refused: invalid UTF-8, lone surrogates, NaN/Infinity literals, integers over 4300 digits, nesting
    deeper than MAX_JSON_DEPTH (all by jiter, whose recursion is bounded), and duplicate keys (which parsers
    resolve differently: refusing them leaves no room for two readings of one batch). Numbers that
    overflow a float (1e400) parse as infinity and are refused by the models (`allow_inf_nan=False`).
    """
    try:
        from_json(raw, allow_inf_nan=False)  # depth, encoding, surrogates, number syntax
        # depth is now at most MAX_JSON_DEPTH, so the stdlib's recursive parser is safe; it runs
        # again only to see every key of every object
        return json.loads(raw, object_pairs_hook=_no_duplicates)
    except WireError:
        raise
    except (ValueError, RecursionError) as exc:  # RecursionError: unreachable, kept as a backstop
        raise WireError("malformed", f"body is not JSON: {str(exc)[:200]}") from None


_SPACED_KEY = re.compile(rb'"\s+:')


_FIELDS_SET = operator.attrgetter("__pydantic_fields_set__")  # model_fields_set, without its property


def _pair_count(b: TelemetryBatch) -> int:
    """Key-value pairs the body of `b` had (each model's fields set, each metrics map's keys)."""
    n = len(_FIELDS_SET(b)) + len(_FIELDS_SET(b.job)) + len(_FIELDS_SET(b.pod))
    n += sum(map(len, map(_FIELDS_SET, b.gpus))) + sum(map(len, map(_FIELDS_SET, b.steps)))
    n += sum(len(e.model_fields_set) + len(e.metrics) for e in b.evals)
    return n + (len(b.dp.model_fields_set) if b.dp is not None else 0)


def parse_batch(raw: bytes) -> TelemetryBatch:
    """The batch in a request body, or WireError naming why not (what the operator answers with 400).

    Fast path: one `model_validate_json` instead of the checked path's two parses and a dict's
    validation, taken only where its answer is provably the checked path's. With no backslash in the
    body every `"` delimits a string, so (no whitespace before a colon) the key count is
    `raw.count(b'":')`; if it equals the pairs the model holds, no object repeated a key. Anything
    else (an error, an escape, a mismatch) takes _parse_batch_checked, which gives every refusal with
    its message; tests/unit/test_wire_properties.py checks the two paths agree.
    """
    if b"\\" not in raw and _SPACED_KEY.search(raw) is None:
        try:
            batch = TelemetryBatch.model_validate_json(raw)
        except ValueError:
            pass
        else:
            if "version" in batch.model_fields_set and raw.count(b'":') == _pair_count(batch):
                return batch  # (a missing version is refused as unknown, not taken as the default)
    return _parse_batch_checked(raw)


def _parse_batch_checked(raw: bytes) -> TelemetryBatch:
    """parse_json (depth, encoding, surrogates, number syntax, duplicate keys), the version, the model."""
    doc = parse_json(raw)
    if isinstance(doc, dict):
        version = doc.get("version")
        if type(version) is not int or version != WIRE_VERSION:  # `true == 1` and `1.0 == 1` in Python
            shown = str(version)[:40]
            message = f"unsupported telemetry version {shown!r}; this operator speaks 1"
            raise WireError("unknown-version", message)
    try:
        return TelemetryBatch.model_validate(doc)
    except ValidationError as exc:
        errors = exc.errors(include_url=False, include_input=False)[:3]
        raise WireError("malformed", f"invalid batch: {errors}") from None
