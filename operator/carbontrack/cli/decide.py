"""`carbontrack approve|reject NAME --reason TEXT`: a person's decision on a Paused job.

    carbontrack approve llama -n ml --reason "accuracy 0.83 is fine for this data set"
    carbontrack reject llama -n ml --reason "regression on the long-context eval"

It asks the apiserver who the caller is (a SelfSubjectReview, authentication.k8s.io/v1, the API
`kubectl auth whoami` uses) and writes `carbontrack.io/approve` (or `/reject`) with the value
`{"by":USER,"reason":TEXT}`, the form the chart's admission policy requires (`by` must be the user
the apiserver authenticated); the operator's next judgement keeps it in the job's decision log, acts on
it once, records who, when, why and at which stage in status.decisions, posts an Event, and removes
the annotation. The kubectl equivalent, accepted by the policy only with your own user name:

    kubectl annotate ctj llama -n ml carbontrack.io/approve='{"by":"alice","reason":"0.83 is fine"}'

Exit status: 0 written (and, with --wait, acted on), 1 the job is not Paused, the operator did not
act in time, or it refused the approval (gates.approval.distinctFrom), 2 the job or the cluster
cannot be reached, or the apiserver refused the write (its admission policy's message is printed).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from typing import Any

from carbontrack.api.contract import APPROVE_ANNOTATION, REJECT_ANNOTATION, Phase
from carbontrack.api.crd import GROUP, PLURAL, VERSION
from carbontrack.cli.kube import load_config
from carbontrack.core.rollout.approvals import annotation_value

FIELD_MANAGER = "carbontrack-cli"


async def _whoami(api: Any) -> str:
    from kubernetes_asyncio import client

    review = await client.AuthenticationV1Api(api).create_self_subject_review(
        client.V1SelfSubjectReview(api_version="authentication.k8s.io/v1", kind="SelfSubjectReview")
    )
    user = review.status.user_info if review.status else None
    return str(user.username) if user and user.username else "unknown"


async def _decide(args: argparse.Namespace) -> int:
    """Write the decision's annotation on a Paused job and, with --wait, wait for the operator to act."""
    from kubernetes_asyncio import client
    from kubernetes_asyncio.client.exceptions import ApiException

    if not await load_config(args.kubeconfig, args.context):
        return 2
    async with client.ApiClient() as api:
        custom = client.CustomObjectsApi(api)
        key = APPROVE_ANNOTATION if args.command == "approve" else REJECT_ANNOTATION
        try:
            ctj = await custom.get_namespaced_custom_object(GROUP, VERSION, args.namespace, PLURAL, args.name)
            phase = (ctj.get("status") or {}).get("phase")
            if phase != Phase.PAUSED and not args.force:
                print(
                    f"{args.namespace}/{args.name} is {phase or 'without a phase'}, not Paused: nothing to "
                    f"{args.command} (the operator would record it as Ignored)",
                    file=sys.stderr,
                )
                return 1
            by = await _whoami(api)
            earlier = (ctj.get("status") or {}).get("decisions") or []
            before = earlier[-1] if earlier else None  # the history is bounded: compare the newest
            body = {"metadata": {"annotations": {key: annotation_value(by, args.reason)}}}
            await custom.patch_namespaced_custom_object(
                GROUP,
                VERSION,
                args.namespace,
                PLURAL,
                args.name,
                body,
                field_manager=FIELD_MANAGER,
                _content_type="application/merge-patch+json",  # else the client picks JSON patch for a dict
            )  # type: ignore[call-arg]
            print(f"{args.command} of {args.namespace}/{args.name} by {by} written ({key})")
            return await _wait_for_operator(custom, args, before) if args.wait else 0
        except ApiException as exc:
            print(f"{args.namespace}/{args.name}: {exc.status} {_message(exc)}", file=sys.stderr)
            return 2


async def _wait_for_operator(custom: Any, args: argparse.Namespace, before: Any) -> int:
    """Poll until status.decisions has a newer entry than `before` (0), or until --timeout (1)."""
    deadline = time.monotonic() + args.timeout
    while time.monotonic() < deadline:
        await asyncio.sleep(0.5)
        obj = await custom.get_namespaced_custom_object(GROUP, VERSION, args.namespace, PLURAL, args.name)
        decisions = (obj.get("status") or {}).get("decisions") or []
        if decisions and decisions[-1] != before:
            last = decisions[-1]
            print(f"{last['decision']} by {last['by']}; phase {obj['status'].get('phase')}")
            return 1 if last["decision"] == "Refused" else 0
    print(f"the operator did not act within {args.timeout:g} s", file=sys.stderr)
    return 1


def _message(exc: Any) -> str:
    """The apiserver's own words (its Status message), else the HTTP reason."""
    try:
        return str(json.loads(exc.body)["message"])[:1000]
    except (TypeError, ValueError, KeyError):
        return str(exc.reason)


def decide(args: argparse.Namespace) -> int:
    return asyncio.run(_decide(args))


def add_parser(sub: Any) -> None:
    for command, what in (
        ("approve", "continue a Paused job as if its gates passed"),
        ("reject", "halt a Paused job, as a failed gate"),
    ):
        p = sub.add_parser(
            command, help=what, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
        )
        p.add_argument("name", help="the CarbonTrackedJob")
        p.add_argument("-n", "--namespace", default="default")
        p.add_argument("--reason", default="", help="why, recorded in status.decisions and the Event")
        p.add_argument("--kubeconfig", default=None, help="default: $KUBECONFIG or ~/.kube/config")
        p.add_argument("--context", default=None, help="kubeconfig context")
        p.add_argument("--wait", action="store_true", help="wait until the operator has acted on it")
        p.add_argument("--timeout", type=float, default=60.0, help="seconds --wait waits (default 60)")
        p.add_argument("--force", action="store_true", help="write it even when the job is not Paused")
        p.set_defaults(func=decide)
