"""Every kopf handler of the operator, registered in one place.

Handler ids are the functions' names (kopf's default); kopf stores the progress of the reconcile's
create, update and resume handlers under them in annotations (carbontrack.io/reconcile, ...), so a
renamed handler would run again on every existing object.

| trigger                                    | handler                         | module                      |
|--------------------------------------------|---------------------------------|-----------------------------|
| start-up, clean-up                         | startup, cleanup                | controller.startup          |
| start-up, clean-up (with shards)           | start_sharding, stop_sharding   | controller.sharding         |
| CarbonTrackedJob create, resume, spec edit | reconcile                       | controller.reconcile        |
| CarbonTrackedJob delete                    | deleted                         | controller.reconcile        |
| CarbonTrackedJob timer (judge interval)    | promote                         | controller.judgement        |
| CarbonTrackedJob event                     | publish_ca                      | controller.tls              |
| managed Job event                          | job_event                       | controller.job_watch        |
| Kueue AdmissionCheck, Workload event       | on_admission_check, on_workload | integrations.kueue.handlers |

With shards (CARBONTRACK_SHARDS above 1), the CarbonTrackedJob handlers run only for jobs labelled with
this shard and the Job watch only for the Jobs this shard built (the apiserver already filters both
watches: controller.sharding), and the Kueue handlers only in shard 0: an AdmissionCheck and a
Workload's budget check are answered once, whatever the number of shards.
"""

from __future__ import annotations

from typing import Any

import kopf

from carbontrack.api.contract import LABEL_MANAGED
from carbontrack.api.crd import GROUP, PLURAL, VERSION
from carbontrack.controller.job_watch import job_event
from carbontrack.controller.judgement import promote
from carbontrack.controller.reconcile import deleted, reconcile
from carbontrack.controller.sharding import owns_label, start_sharding, stop_sharding
from carbontrack.controller.startup import cleanup, startup
from carbontrack.controller.tls import publish_ca
from carbontrack.integrations.kueue import client as kueue
from carbontrack.integrations.kueue.handlers import on_admission_check, on_workload
from carbontrack.state.config import SHARD_LABEL, UNSHARDED_OWNER, OperatorConfig


def register(config: OperatorConfig, registry: kopf.OperatorRegistry | None = None) -> kopf.OperatorRegistry:
    """Register every handler in `registry` and return it for `kopf.run`.

    By default that is kopf's own registry, which also holds kopf's fallback login handlers (through
    the installed Kubernetes client); a test passes an empty one to read what is registered.

    The judgement timer runs at the configured interval; a round that fails on a transient error (the
    apiserver hanging up under load) runs again after one interval, not kopf's default 60 s. The Kueue
    handlers are registered only where the operator answers Kueue's admission checks."""
    registry = registry if registry is not None else kopf.get_default_registry()
    sharding = config.sharding
    jobs: dict[str, Any] = {"labels": {SHARD_LABEL: str(sharding.shard)}} if sharding.enabled else {}
    managed = {LABEL_MANAGED: "true", **({SHARD_LABEL: owns_label(sharding)} if sharding.enabled else {})}
    kopf.on.startup(registry=registry)(startup)
    if sharding.enabled:
        kopf.on.startup(registry=registry)(start_sharding)
        kopf.on.cleanup(registry=registry)(stop_sharding)
    kopf.on.cleanup(registry=registry)(cleanup)
    kopf.on.create(GROUP, VERSION, PLURAL, registry=registry, **jobs)(reconcile)
    kopf.on.resume(GROUP, VERSION, PLURAL, registry=registry, **jobs)(reconcile)
    kopf.on.update(GROUP, VERSION, PLURAL, field="spec", registry=registry, **jobs)(reconcile)
    kopf.on.delete(GROUP, VERSION, PLURAL, optional=True, registry=registry, **jobs)(deleted)
    kopf.on.timer(
        GROUP,
        VERSION,
        PLURAL,
        interval=config.judge_interval_s,
        initial_delay=1.0,
        backoff=config.judge_interval_s,
        registry=registry,
        **jobs,
    )(promote)
    kopf.on.event(GROUP, VERSION, PLURAL, registry=registry, **jobs)(publish_ca)
    kopf.on.event("batch", "v1", "jobs", labels=managed, registry=registry)(job_event)
    if config.kueue_admission_check and sharding.shard == UNSHARDED_OWNER:
        kopf.on.event(kueue.GROUP, kueue.VERSION, "admissionchecks", registry=registry)(on_admission_check)
        kopf.on.event(kueue.GROUP, kueue.VERSION, "workloads", registry=registry)(on_workload)
    return registry
