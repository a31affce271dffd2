"""A second decoder of the telemetry wire protocol (msgspec), derived from api.wire's models.

api.wire's pydantic models are the one definition of the wire rules. This module reads them (field names
and aliases, types, bounds, defaults) and builds msgspec structs that decode the same JSON in C: a batch's
hundred step records cost a small struct each instead of a validated model each. Nothing is written twice
by hand except TelemetryBatch's two validators (the version an integer, each GPU listed once), and an
unknown kind of constraint or validator stops the import, so a rule added to api.wire cannot be missed.

`decode_batch` answers only where its answer is provably the pydantic path's; otherwise it returns None
and the caller takes the pydantic path, which gives every refusal with its message. tests/unit/
test_wire_decoders.py holds the two decoders to identical decisions and values.
"""

from __future__ import annotations

import re
import types
from typing import Annotated, Any, Literal, Union, get_args, get_origin

import annotated_types as at
import msgspec
from pydantic import BaseModel

from carbontrack.api.wire import StepRecord, TelemetryBatch, WireModel, parse_batch

_VALIDATORS = {"_integer_version", "_each_gpu_once"}
"""TelemetryBatch's validators, which decode_batch applies by hand (msgspec's Literal[1] is strict)."""

_BOUNDS = {
    at.Ge: "ge",
    at.Le: "le",
    at.Gt: "gt",
    at.Lt: "lt",
    at.MinLen: "min_length",
    at.MaxLen: "max_length",
}
"""annotated_types' constraints that pydantic puts in a field's metadata -> msgspec.Meta's argument (and
the constraint's attribute: the names are the same)."""

_SPACED_KEY = re.compile(rb'"\s+:')


def _meta(metadata: list[Any]) -> msgspec.Meta | None:
    """The msgspec bounds for pydantic's field metadata; any other kind of constraint stops the import."""
    bounds: dict[str, Any] = {}
    for item in metadata:
        name = _BOUNDS.get(type(item))
        if name is None:
            raise TypeError(f"the fast wire decoder does not know the constraint {item!r}")
        bounds[name] = getattr(item, name)
    return msgspec.Meta(**bounds) if bounds else None


def _wire_type(annotation: Any, metadata: list[Any]) -> Any:
    """The msgspec type for a pydantic field's annotation, with its bounds (on the non-null member)."""
    origin, args = get_origin(annotation), get_args(annotation)
    if origin in (Union, types.UnionType):
        members = [a for a in args if a is not type(None)]
        if len(members) != 1:
            raise TypeError(f"the fast wire decoder does not know the union {annotation!r}")
        return Union[_wire_type(members[0], metadata), None]  # noqa: UP007 (built at run time)
    if isinstance(annotation, type) and issubclass(annotation, WireModel):
        wire: Any = _struct_for(annotation)
    elif origin is list:
        wire = list[_wire_type(args[0], [])]  # type: ignore[misc]
    elif origin is dict and args[0] is str:
        wire = dict[str, _wire_type(args[1], [])]  # type: ignore[misc]
    elif origin is Literal or annotation in (int, float, str, bool):
        wire = annotation
    else:
        raise TypeError(f"the fast wire decoder does not know the type {annotation!r}")
    meta = _meta(metadata)
    return Annotated[wire, meta] if meta is not None else wire


_STRUCTS: dict[type[BaseModel], type[msgspec.Struct]] = {}
_MODELS: dict[type[msgspec.Struct], type[BaseModel]] = {}


def _struct_for(model: type[WireModel]) -> type[msgspec.Struct]:
    """The msgspec struct of a wire model: its aliases on the wire, its optional fields UNSET when absent
    (so the keys a body had can be counted), unknown keys refused."""
    if model in _STRUCTS:
        return _STRUCTS[model]
    if (
        model.__pydantic_decorators__.field_validators.keys()
        - (_VALIDATORS if model is TelemetryBatch else set())
        or model.__pydantic_decorators__.model_validators
    ):
        raise TypeError(f"the fast wire decoder does not apply {model.__name__}'s validators")
    fields: list[Any] = []
    for name, info in model.model_fields.items():
        wire = _wire_type(info.annotation, info.metadata)
        if info.is_required() or name == "version":  # a missing version is refused as unknown
            fields.append((name, wire))
        else:
            fields.append((name, Union[wire, msgspec.UnsetType], msgspec.UNSET))  # noqa: UP007
    fields.sort(key=lambda f: len(f) == 3)  # required first, as a struct wants
    rename = {name: info.alias or name for name, info in model.model_fields.items()}
    struct = msgspec.defstruct(
        f"Wire{model.__name__}", fields, rename=rename, forbid_unknown_fields=True, gc=False
    )
    _STRUCTS[model], _MODELS[struct] = struct, model
    return struct


_BATCH = _struct_for(TelemetryBatch)
_STEP = _struct_for(StepRecord)
_DECODER = msgspec.json.Decoder(_BATCH)
_STEP_KEYS = len(StepRecord.model_fields)
"""Every field of a step record is required: each record had exactly this many keys."""
if any(not info.is_required() for info in StepRecord.model_fields.values()):
    raise TypeError("the fast wire decoder counts a step record's keys as all of its fields")


_Default = tuple[str, Any, bool]
"""(field, default value or factory, whether it is a factory)."""
_FIELDS: dict[type[BaseModel], list[_Default]] = {
    model: [
        (name, info.default_factory or info.default, info.default_factory is not None)
        for name, info in model.model_fields.items()
    ]
    for model in _MODELS.values()
}
if any(m.__pydantic_post_init__ or m.__private_attributes__ for m in _MODELS.values()):
    raise TypeError("the fast wire decoder builds models that have no post-init and no private attributes")
_set = object.__setattr__


def _construct(model: type[BaseModel], values: dict[str, Any], present: set[str]) -> BaseModel:
    """`model.model_construct(present, **values)` for a model with every field in `values`, without
    its per-call work (a wire model has no extra fields, no private attributes, no post-init)."""
    built = model.__new__(model)
    _set(built, "__dict__", values)
    _set(built, "__pydantic_fields_set__", present)
    _set(built, "__pydantic_extra__", None)
    _set(built, "__pydantic_private__", None)
    return built


def _model(wire: msgspec.Struct) -> tuple[BaseModel, int]:
    """The pydantic model of a decoded struct, built without validating again (msgspec has), and the
    keys its JSON object had, nested ones included. Step records stay structs with StepRecord's field
    names: building a model for each is the cost this decoder exists to avoid."""
    model = _MODELS[type(wire)]
    values: dict[str, Any] = {}
    present: set[str] = set()
    keys = 0
    for name, default, factory in _FIELDS[model]:
        value = getattr(wire, name)
        if value is msgspec.UNSET:
            values[name] = default() if factory else default
            continue
        present.add(name)
        keys += 1
        if isinstance(value, msgspec.Struct):
            value, nested = _model(value)
            keys += nested
        elif isinstance(value, dict):
            keys += len(value)
        elif isinstance(value, list) and value:
            if type(value[0]) is _STEP:
                keys += _STEP_KEYS * len(value)
            else:
                pairs = [_model(item) for item in value]
                value = [m for m, _ in pairs]
                keys += sum(n for _, n in pairs)
        values[name] = value
    return _construct(model, values, present), keys


def _each_gpu_once(wire: Any) -> bool:
    """TelemetryBatch._each_gpu_once: no GPU index, and no non-empty UUID, listed twice."""
    indices = [g.index for g in wire.gpus]
    uuids = [g.uuid for g in wire.gpus if g.uuid]  # UNSET is falsy: an absent UUID is ""
    return len(set(indices)) == len(indices) and len(set(uuids)) == len(uuids)


def decode_fast(raw: bytes) -> TelemetryBatch | None:
    """The batch in a request body where msgspec's decision is provably api.wire.parse_batch's, else None.

    With no backslash in the body every `"` delimits a string, so (no whitespace before a colon) the
    body's key count is `raw.count(b'":')`; if it equals the keys the structs hold, no object repeated a
    key (msgspec keeps the last of a repeated key). msgspec refuses what pydantic's strict models refuse
    (non-finite numbers, invalid UTF-8, a float where an int belongs, unknown keys); any refusal, escape
    or mismatch answers None, and the pydantic path decides, with its message."""
    if b"\\" in raw or _SPACED_KEY.search(raw) is not None:
        return None
    try:
        wire = _DECODER.decode(raw)
    except (msgspec.ValidationError, msgspec.DecodeError):
        return None
    if not _each_gpu_once(wire):
        return None
    batch, keys = _model(wire)
    if keys != raw.count(b'":'):
        return None
    assert isinstance(batch, TelemetryBatch)
    return batch


def decode_batch(raw: bytes) -> TelemetryBatch:
    """The batch in a request body, or WireError naming why not: msgspec where its answer is provably the
    pydantic path's (decode_fast), api.wire.parse_batch otherwise."""
    return decode_fast(raw) or parse_batch(raw)
