"""`carbontrack report NAME [-n NS] --format model-card|json|csv`: a job's carbon figures for other tools.

    carbontrack report llama -n ml --format model-card >> README.md   # then move it into the front matter
    carbontrack report llama -n ml --format csv > emissions.csv        # CodeCarbon's columns and units
    carbontrack report llama -n ml --format json

It reads the job's status (core/reports/report.py has the shapes and the units). `--training-type` says
pre-training or fine-tuning; unset, the annotation `carbontrack.io/training-type` on the job, else
fine-tuning. A job that is not finished is reported as measured so far, with a note on stderr.

Exit status: 0 printed, 1 the job has no measurements yet, 2 the job or the cluster cannot be reached.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from typing import Any, cast

from pydantic import ValidationError

from carbontrack.api.contract import TRAINING_TYPE_ANNOTATION, Phase
from carbontrack.api.crd import GROUP, PLURAL, VERSION, CarbonTrackedJob
from carbontrack.api.model_card import TRAINING_TYPES, TrainingType
from carbontrack.cli.kube import load_config
from carbontrack.core.reports.report import (
    as_json,
    codecarbon_csv,
    model_card_yaml,
    run_report,
)

FORMATS = ("model-card", "json", "csv")


def render(obj: dict[str, Any], fmt: str, training_type: str | None) -> str:
    """The report of one CarbonTrackedJob object (as the apiserver returns it) in `fmt`."""
    job = CarbonTrackedJob.model_validate(obj)
    annotated = (job.metadata.get("annotations") or {}).get(TRAINING_TYPE_ANNOTATION)
    if training_type is None and annotated is not None and annotated not in TRAINING_TYPES:
        allowed = " or ".join(TRAINING_TYPES)
        raise ValueError(f"annotation {TRAINING_TYPE_ANNOTATION}={annotated!r}: must be {allowed}")
    chosen = training_type or annotated or "fine-tuning"
    kind = cast(TrainingType, chosen)
    report = run_report(job)
    if fmt == "model-card":
        return model_card_yaml(report, kind)
    if fmt == "csv":
        return codecarbon_csv(report)
    return json.dumps(as_json(report, kind), indent=2) + "\n"


async def _report(args: argparse.Namespace) -> int:
    from kubernetes_asyncio import client
    from kubernetes_asyncio.client.exceptions import ApiException

    if not await load_config(args.kubeconfig, args.context):
        return 2
    async with client.ApiClient() as api:
        try:
            obj = await client.CustomObjectsApi(api).get_namespaced_custom_object(
                GROUP, VERSION, args.namespace, PLURAL, args.name
            )
        except ApiException as exc:
            print(f"{args.namespace}/{args.name}: {exc.status} {exc.reason}", file=sys.stderr)
            return 2
    try:
        text = render(obj, args.format, args.training_type)
    except (ValueError, ValidationError) as exc:
        print(f"{args.namespace}/{args.name}: {exc}", file=sys.stderr)
        return 1
    phase = (obj.get("status") or {}).get("phase")
    if phase != Phase.SUCCEEDED:
        print(f"note: {args.namespace}/{args.name} is {phase}: figures so far", file=sys.stderr)
    sys.stdout.write(text)
    return 0


def report(args: argparse.Namespace) -> int:
    return asyncio.run(_report(args))


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "report",
        help="print a job's emissions as a model-card block, JSON or CodeCarbon CSV",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("name", help="the CarbonTrackedJob")
    p.add_argument("-n", "--namespace", default="default")
    p.add_argument("--format", choices=FORMATS, default="model-card")
    p.add_argument("--training-type", choices=TRAINING_TYPES, default=None)
    p.add_argument("--kubeconfig", default=None, help="default: $KUBECONFIG or ~/.kube/config")
    p.add_argument("--context", default=None, help="kubeconfig context")
    p.set_defaults(func=report)
