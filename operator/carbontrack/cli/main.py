"""`carbontrack` command line: one entry point, one subcommand per job the package does."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def _crd(args: argparse.Namespace) -> int:
    from carbontrack.api.crdgen import CRD_PATHS, crd_yaml

    text = crd_yaml()
    if args.output == "-":
        sys.stdout.write(text)
        return 0
    paths = [Path(args.output)] if args.output else [Path(p) for p in CRD_PATHS]
    stale = 0
    for path in paths:
        if args.check:
            current = path.read_text() if path.exists() else ""
            if current != text:
                print(f"{path} is out of date with the models: run `carbontrack crd`", file=sys.stderr)
                stale += 1
            else:
                print(f"{path} is up to date")
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        print(f"wrote {path}")
    return 1 if stale else 0


def _sidecar(args: argparse.Namespace) -> int:
    from carbontrack.sidecar.app import main as sidecar_main

    return sidecar_main()


def _operator(args: argparse.Namespace) -> int:
    import dataclasses
    import logging
    import os
    import socket
    import time

    import kopf

    from carbontrack.api.logs import setup_logging
    from carbontrack.controller.registration import register
    from carbontrack.controller.services import Launch
    from carbontrack.ha.peering import PeeringArgs, own_identity, seniority_priority
    from carbontrack.state.config import OperatorConfig
    from carbontrack.telemetry import eventloop

    setup_logging()
    cfg = dataclasses.replace(OperatorConfig.from_env(), watch_namespaces=tuple(args.namespace or ()))
    registry = register(cfg)
    identity = own_identity(os.environ.get("POD_NAME"), socket.gethostname(), os.getpid())
    priority = None
    peering = None
    if args.peering:
        priority = seniority_priority(time.time()) if args.priority is None else args.priority
        peering = PeeringArgs(args.peering, list(args.namespace or ()), identity, priority)
    memo = kopf.Memo(launch=Launch(cfg, peering, tuple(args.namespace or ())))
    with eventloop.runner(cfg.event_loop) as runner:
        loop = runner.get_loop()
        logging.getLogger("carbontrack.operator").info(
            "event loop", extra={"loop": eventloop.loop_name(loop)}
        )
        kopf.run(
            loop=loop,
            registry=registry,
            clusterwide=not args.namespace,
            namespaces=args.namespace or (),
            standalone=not args.peering,
            peering_name=args.peering or None,
            priority=priority,
            identity=identity,  # type: ignore[arg-type]  # kopf's Identity is a NewType of str, not exported
            memo=memo,
            liveness_endpoint=None,
        )
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="carbontrack", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    crd = sub.add_parser("crd", help="generate the CustomResourceDefinition from the models")
    crd.add_argument(
        "-o", "--output", help="file to write (default: crds/ and helm/carbontrack/crds/; - for stdout)"
    )
    crd.add_argument("--check", action="store_true", help="exit 1 if the file differs from the models")
    crd.set_defaults(func=_crd)
    sidecar = sub.add_parser("sidecar", help="run the energy sidecar (configured by CARBONTRACK_* env)")
    sidecar.set_defaults(func=_sidecar)
    op = sub.add_parser("operator", help="run the operator (kopf) with its telemetry server")
    op.add_argument("-n", "--namespace", action="append", help="watch only these namespaces (default: all)")
    op.add_argument(
        "--peering", default="", help="kopf peering name for several replicas (default: standalone)"
    )
    op.add_argument(
        "--priority",
        type=int,
        default=None,
        help="kopf peering priority (default: by seniority, the first replica started stays active)",
    )
    op.set_defaults(func=_operator)
    from carbontrack.cli.gates import add_parser as add_gates

    add_gates(sub)
    from carbontrack.cli.decide import add_parser as add_decide

    add_decide(sub)
    from carbontrack.cli.report import add_parser as add_report

    add_report(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    raise SystemExit(main())
