"""Job building and sidecar injection: a pure function from the spec to the Job, idempotent."""

from __future__ import annotations

import copy

import pytest

from carbontrack.api.crd import CarbonTrackedJobSpec
from carbontrack.state.config import OperatorConfig
from carbontrack.workload.jobbuilder import SIDECAR_NAME, InjectionError, build_job, inject
from tests.cases.crs import TEMPLATE, valid_spec

CFG = OperatorConfig(operator_url="http://op:8443", sidecar_image="img:1")


def test_injection_adds_a_native_sidecar_env_and_token_volume() -> None:
    out = inject(TEMPLATE, "llama", "ml", CFG)
    init = out["spec"]["initContainers"][0]
    assert init["name"] == SIDECAR_NAME and init["restartPolicy"] == "Always" and init["image"] == "img:1"
    sc = init["securityContext"]
    assert sc["runAsNonRoot"] and sc["readOnlyRootFilesystem"] and not sc["allowPrivilegeEscalation"]
    assert sc["capabilities"] == {"drop": ["ALL"]} and sc["seccompProfile"] == {"type": "RuntimeDefault"}
    assert init["resources"]["limits"] == {"cpu": "50m", "memory": "96Mi"}
    env = {e["name"]: e for e in init["env"]}
    assert env["POD_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    assert env["CARBONTRACK_OPERATOR_URL"]["value"] == "http://op:8443"
    trainer_env = {e["name"]: e["value"] for e in out["spec"]["containers"][0]["env"]}
    assert trainer_env == {"CARBONTRACK_SIDECAR_ADDR": "127.0.0.1:9477"}
    token = out["spec"]["volumes"][0]["projected"]["sources"][0]["serviceAccountToken"]
    assert token["audience"] == "carbontrack"
    assert out["metadata"]["labels"]["carbontrack.io/job"] == "llama"
    assert TEMPLATE["spec"].get("initContainers") is None  # the input is not modified


def test_injection_is_idempotent() -> None:
    once = inject(TEMPLATE, "llama", "ml", CFG)
    assert inject(copy.deepcopy(once), "llama", "ml", CFG) == once


def test_a_template_with_a_container_of_the_sidecars_name_is_refused() -> None:
    template = copy.deepcopy(TEMPLATE)
    template["spec"]["containers"].append({"name": SIDECAR_NAME, "image": "x"})
    with pytest.raises(InjectionError, match="already has a container"):
        inject(template, "llama", "ml", CFG)


def test_job_is_indexed_elastic_and_owned() -> None:
    spec = CarbonTrackedJobSpec.model_validate(valid_spec())
    job = build_job("llama", "ml", "uid-1", spec, 2, CFG)
    assert job["spec"]["completionMode"] == "Indexed"
    assert job["spec"]["parallelism"] == job["spec"]["completions"] == 2
    owner = job["metadata"]["ownerReferences"][0]
    assert (owner["kind"], owner["uid"], owner["controller"]) == ("CarbonTrackedJob", "uid-1", True)


def test_an_https_operator_gets_its_ca_mounted_into_the_sidecar() -> None:
    from carbontrack.workload.jobbuilder import CA_CONFIGMAP

    tls = OperatorConfig(operator_url="https://carbontrack.carbontrack-system.svc:8443")
    pod = inject(copy.deepcopy(TEMPLATE), "llama", "ml", tls)["spec"]
    sidecar = pod["initContainers"][0]
    assert {"name": "CARBONTRACK_CA_FILE", "value": "/var/run/carbontrack/ca/ca.crt"} in sidecar["env"]
    volume = next(v for v in pod["volumes"] if v["name"] == "carbontrack-ca")
    assert volume["configMap"]["name"] == CA_CONFIGMAP and "optional" not in volume["configMap"]
    assert any(m["name"] == "carbontrack-ca" for m in sidecar["volumeMounts"])
    plain = inject(copy.deepcopy(TEMPLATE), "llama", "ml", OperatorConfig(operator_url="http://x:8443"))[
        "spec"
    ]
    assert all(v["name"] != "carbontrack-ca" for v in plain["volumes"])


def test_the_sidecar_gets_no_gpu_env_by_default_only_in_the_opt_in_nvml_mode() -> None:
    """CDI and GKE ignore NVIDIA_VISIBLE_DEVICES, hardened clusters refuse it, and where it works it
    hands every GPU of the node to the sidecar: by default the trainer's client measures instead."""

    def sidecar_env(config: OperatorConfig) -> dict[str, str]:
        init = inject(TEMPLATE, "llama", "ml", config)["spec"]["initContainers"][0]
        return {e["name"]: e.get("value", "") for e in init["env"]}

    default = sidecar_env(CFG)
    assert "NVIDIA_VISIBLE_DEVICES" not in default and default["CARBONTRACK_ENERGY_BACKEND"] == "trainer"
    opt_in = sidecar_env(OperatorConfig(sidecar_backend="nvml"))
    assert opt_in["NVIDIA_VISIBLE_DEVICES"] == "all" and opt_in["CARBONTRACK_ENERGY_BACKEND"] == "nvml"
    assert OperatorConfig.from_env({}).sidecar_backend == "trainer"


def _trainer_env(job: dict[str, object]) -> dict[str, str]:
    """name -> value, or -> 'fieldRef:<path>' for downward-API env."""
    container = job["spec"]["template"]["spec"]["containers"][0]  # type: ignore[index]
    return {
        e["name"]: e.get(
            "value", "fieldRef:" + e.get("valueFrom", {}).get("fieldRef", {}).get("fieldPath", "")
        )
        for e in container["env"]
    }


def test_distributed_wiring_points_every_worker_at_worker_zero() -> None:
    spec = CarbonTrackedJobSpec.model_validate(valid_spec())
    job = build_job("llama", "ml", "uid-1", spec, 1, CFG)
    pod = job["spec"]["template"]
    assert pod["spec"]["subdomain"] == "llama"
    assert pod["metadata"]["annotations"]["carbontrack.io/world-size"] == "1"
    index = "fieldRef:metadata.annotations['batch.kubernetes.io/job-completion-index']"
    assert _trainer_env(job) == {
        "CARBONTRACK_SIDECAR_ADDR": "127.0.0.1:9477",
        "CARBONTRACK_RESUME_FROM": "fieldRef:metadata.annotations['carbontrack.io/resume-from']",
        "PET_NNODES": "1:8",
        "PET_RDZV_BACKEND": "c10d",
        "PET_RDZV_ENDPOINT": "llama-0.llama:29400",
        "PET_RDZV_ID": "uid-1",
        "PET_NODE_RANK": index,
        "RANK": index,
        "WORLD_SIZE": "fieldRef:metadata.annotations['carbontrack.io/world-size']",
        "MASTER_ADDR": "llama-0.llama",
        "MASTER_PORT": "29500",
        "TORCH_DISABLE_SHARE_RDZV_TCP_STORE": "1",
    }


@pytest.mark.parametrize(
    ("grace", "template_grace", "expected"), [(300, None, 300), (0, None, 0), (60, 600, 600)]
)
def test_the_pods_grace_period_is_the_halts_unless_the_template_asks_more(
    grace: int, template_grace: int | None, expected: int
) -> None:
    template = copy.deepcopy(TEMPLATE)
    if template_grace is not None:
        template["spec"]["terminationGracePeriodSeconds"] = template_grace
    spec = CarbonTrackedJobSpec.model_validate(
        valid_spec(template=template, halt={"gracePeriodSeconds": grace})
    )
    job = build_job("llama", "ml", "uid-1", spec, 1, CFG)
    assert job["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] == expected


def test_env_the_user_sets_is_kept_and_wiring_can_be_turned_off() -> None:
    template = copy.deepcopy(TEMPLATE)
    template["spec"]["containers"][0]["env"] = [{"name": "MASTER_PORT", "value": "1234"}]
    spec = CarbonTrackedJobSpec.model_validate(valid_spec(template=template))
    assert _trainer_env(build_job("llama", "ml", "u", spec, 1, CFG))["MASTER_PORT"] == "1234"
    off = CarbonTrackedJobSpec.model_validate(valid_spec(distributed={"enabled": False}))
    job = build_job("llama", "ml", "u", off, 1, CFG)
    assert "subdomain" not in job["spec"]["template"]["spec"]
    assert set(_trainer_env(job)) == {"CARBONTRACK_SIDECAR_ADDR", "CARBONTRACK_RESUME_FROM"}


@pytest.mark.parametrize(
    ("name", "template_subdomain", "match"),
    [
        ("llama.v2", None, "no dots"),
        ("7b-lora", None, "starts with a letter"),
        ("x" * 62, None, "at most 61 characters"),
        ("llama", "mine", "sets subdomain 'mine'"),
    ],
)
def test_names_the_wiring_cannot_use_are_refused_with_the_way_out(
    name: str, template_subdomain: str | None, match: str
) -> None:
    template = copy.deepcopy(TEMPLATE)
    if template_subdomain:
        template["spec"]["subdomain"] = template_subdomain
    spec = CarbonTrackedJobSpec.model_validate(valid_spec(template=template))
    with pytest.raises(InjectionError, match=match) as info:
        build_job(name, "ml", "u", spec, 1, CFG)
    assert "spec.distributed.enabled: false" in str(info.value)


def test_the_headless_service_selects_the_jobs_pods_and_is_owned() -> None:
    from carbontrack.workload.jobbuilder import build_service

    svc = build_service("llama", "ml", "uid-1")
    assert svc["metadata"]["name"] == "llama" and svc["metadata"]["ownerReferences"][0]["uid"] == "uid-1"
    assert svc["spec"]["clusterIP"] == "None" and svc["spec"]["publishNotReadyAddresses"] is True
    assert svc["spec"]["selector"] == {"carbontrack.io/job": "llama"}
    assert [p["port"] for p in svc["spec"]["ports"]] == [29400, 29500]


@pytest.mark.parametrize(
    ("existing", "why"),
    [
        ({"spec": {"clusterIP": "None"}}, None),
        ({"spec": {"clusterIP": "10.0.0.7"}}, "not headless"),
        (
            {
                "spec": {"clusterIP": "None"},
                "ownerReferences": [{"controller": True, "uid": "other", "kind": "JobSet", "name": "js"}],
            },
            "controlled by JobSet/js",
        ),
        ({"spec": {"clusterIP": "None"}, "ownerReferences": [{"controller": True, "uid": "uid-1"}]}, None),
    ],
)
def test_a_service_of_the_jobs_name_is_adopted_only_when_it_can_serve(
    existing: dict[str, object], why: str | None
) -> None:
    from carbontrack.workload.service import adoption_conflict

    svc = {
        "metadata": {"name": "llama", "ownerReferences": existing.get("ownerReferences")},
        "spec": existing["spec"],
    }
    found = adoption_conflict(svc, "uid-1")
    assert (found is None) if why is None else (why in (found or ""))
