"""Regenerate podtemplatespec.json: the PodTemplateSpec schema of the pinned Kubernetes, for the CRD.

    python -m carbontrack.api.make_podtemplate [OPENAPI_V3_JSON]

The input is the apiserver's own OpenAPI v3 document for the core group, as the pinned release ships
it in its Go module (`k8s.io/kubernetes@v1.36.3/api/openapi-spec/v3/api__v1_openapi.json`; by default
looked up under `$CARBONTRACK_CACHE/go/mod`, where `make setup` downloads it). As Kubeflow's and
JobSet's generators do, the one schema the CRD needs is resolved into a structural schema and vendored
as data, so the CRD carries the real PodTemplateSpec: `kubectl apply` refuses a typo (`resource:`,
`nodeSelecter:`) the way it refuses one in a plain Job, and `kubectl explain ctj.spec.template` works.

The rewrite, and why each step:
- `$ref` / single `allOf` inlined (a CRD schema has no references); no type is recursive here.
- `default`s dropped: the apiserver would write them into the stored CR, and the template must be
  stored as the user wrote it (the Job's own defaulting applies when the Job is created).
- list-type, map-type, patch-strategy, union and `readOnly` markers dropped: CRD list-map keys must
  be required or defaulted (`ports[].protocol` is neither without its default), and lists of a CR
  are replaced whole anyway.
- IntOrString and Quantity become `x-kubernetes-int-or-string` (Quantity with its pattern), as
  controller-gen writes them: a quantity is an integer or a string (`cpu: 0.5` must be `"500m"`).
- ObjectMeta becomes the fields a pod template may carry (name, generateName, namespace, labels,
  annotations, finalizers), as controller-gen's generateEmbeddedObjectMeta does.
- Descriptions cut to their first sentence, for size: in full the schema is 317 kB of JSON and the
  CRD would not fit `kubectl apply`'s last-applied annotation (256 KiB); cut, it is 150 kB, and
  `kubectl explain` still says what each field is.
"""

from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path
from typing import Any

KUBERNETES = "v1.36.3"
"""The pinned release (tests/cluster/controlplane.py runs the same)."""
ROOT_SCHEMA = "io.k8s.api.core.v1.PodTemplateSpec"
OUT = Path(__file__).with_name("podtemplatespec.json")
QUANTITY_PATTERN = (
    r"^(\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))"
    r"(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$"
)
"""resource.Quantity's syntax, as controller-gen writes it."""
_DROPPED = {
    "default",
    "readOnly",
    "x-kubernetes-list-type",
    "x-kubernetes-list-map-keys",
    "x-kubernetes-map-type",
    "x-kubernetes-patch-strategy",
    "x-kubernetes-patch-merge-key",
    "x-kubernetes-unions",
}
_STRING_MAP = {"type": "object", "additionalProperties": {"type": "string"}}


def first_sentence(text: str) -> str:
    found = re.match(r"(.+?\.)(\s|$)", text, re.S)
    return found.group(1) if found else text


def default_input() -> Path:
    cache = Path(os.environ.get("CARBONTRACK_CACHE", Path.home() / ".cache" / "carbontrack"))
    return (
        cache
        / "go"
        / "mod"
        / "k8s.io"
        / f"kubernetes@{KUBERNETES}"
        / "api/openapi-spec/v3/api__v1_openapi.json"
    )


def _embedded_meta(description: str) -> dict[str, Any]:
    return {
        "type": "object",
        "description": description,
        "properties": {
            "name": {"type": "string"},
            "generateName": {"type": "string"},
            "namespace": {"type": "string"},
            "labels": _STRING_MAP,
            "annotations": _STRING_MAP,
            "finalizers": {"type": "array", "items": {"type": "string"}},
        },
    }


def structural(schemas: dict[str, Any], node: Any, seen: tuple[str, ...] = ()) -> Any:
    """One OpenAPI v3 node of the Kubernetes document as a structural CRD schema node."""
    if isinstance(node, list):
        return [structural(schemas, n, seen) for n in node]
    if not isinstance(node, dict):
        return node
    ref = node.get("$ref") or (node["allOf"][0].get("$ref") if len(node.get("allOf", ())) == 1 else None)
    if ref:
        name = ref.rsplit("/", 1)[-1]
        if name in seen:
            raise ValueError(f"recursive schema {name}: cannot be inlined into a CRD")
        wrapper = {k: v for k, v in node.items() if k not in ("$ref", "allOf")}
        if name == "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta":
            return _embedded_meta(first_sentence(wrapper.get("description", "")))
        target = structural(schemas, schemas[name], (*seen, name))
        return {**target, **structural(schemas, wrapper, seen)}  # the field's own description wins
    if node.get("format") == "int-or-string" or "oneOf" in node:  # IntOrString, Quantity
        out: dict[str, Any] = {"x-kubernetes-int-or-string": True}
        if {"type": "number"} in node.get("oneOf", ()):
            out["pattern"] = QUANTITY_PATTERN  # a string's syntax; no anyOf needed beside int-or-string
        if "description" in node:
            out["description"] = first_sentence(node["description"])
        return out
    result: dict[str, Any] = {}
    for key, value in node.items():
        if key in _DROPPED:
            continue
        if key == "description":
            result[key] = first_sentence(value)
        elif key == "properties":
            result[key] = {name: structural(schemas, sub, seen) for name, sub in value.items()}
        elif key in ("items", "additionalProperties"):
            result[key] = structural(schemas, value, seen)
        else:
            result[key] = value
    if "properties" in result or "additionalProperties" in result:
        result.setdefault("type", "object")
    return result


def generate(openapi: dict[str, Any]) -> dict[str, Any]:
    schemas = openapi["components"]["schemas"]
    schema: dict[str, Any] = structural(schemas, schemas[ROOT_SCHEMA], (ROOT_SCHEMA,))
    schema["description"] = (
        f"A PodTemplateSpec (Kubernetes {KUBERNETES}) with the training container(s); the operator injects "
        "its sidecar."
    )
    return schema


def render(schema: dict[str, Any]) -> str:
    return json.dumps(schema, indent=1, sort_keys=True) + "\n"


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    source = Path(args[0]) if args else default_input()
    OUT.write_text(render(generate(json.loads(source.read_text()))))
    print(f"wrote {OUT} from {source}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
