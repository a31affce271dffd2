"""Job building and sidecar injection: a pure function from the spec to the Job, idempotent."""

from __future__ import annotations

import copy

import pytest

from carbontrack.api.crd import CarbonTrackedJobSpec
from carbontrack.controller.config import OperatorConfig
from carbontrack.controller.jobbuilder import SIDECAR_NAME, InjectionError, build_job, inject
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
    from carbontrack.controller.jobbuilder import CA_CONFIGMAP

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
