"""The job's totals from the operator's ack, through the sidecar, to the client and the model card."""

from __future__ import annotations

import json
import socket
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import yaml

from carbontrack.api.model_card import co2_eq_emissions, hardware_used
from carbontrack.api.wire import GpuCounter, JobTotals, TelemetryAck, TelemetryBatch
from carbontrack.core.accounting.aggregation import JobAggregate, Receipt
from carbontrack.intensity.static import Intensity
from carbontrack.sidecar.app import _MarkerProtocol
from carbontrack.sidecar.backends import make_backend
from carbontrack.sidecar.config import SidecarConfig
from carbontrack.sidecar.markers import parse
from carbontrack.sidecar.state import GO, MAX_CTL_JOB_BYTES, STOP, SidecarState
from carbontrack.state.answers import accepted_body, job_totals, status_gpu_models
from carbontrack.trainer import client
from tests.cases.batches import telemetry_batch

H100 = "NVIDIA H100 80GB HBM3"
RECEIPT = Receipt(received_at=1002.0, pod_started_at=0.0, gpus=8)
TOTALS = JobTotals(emissions_grams=200.0, energy_joules=7.2e6, zone="DE", gpus={H100: 2, "": 1})


def batch(pod: str, gpus: list[GpuCounter]) -> TelemetryBatch:
    return telemetry_batch(pod, f"b-{pod}", 1, gpus=gpus, sent_at=1001.0, method="energy-counter")


def aggregate() -> JobAggregate:
    """Two H100s in p0 (1.8 MJ each) and one GPU without a model name in p1 (3.6 MJ): 2 kWh at 100 g/kWh."""
    agg = JobAggregate()
    p0 = [GpuCounter(index=i, uuid=f"GPU-{i}", name=H100, energy_joules=1.8e6) for i in (0, 1)]
    p1 = [GpuCounter(index=0, uuid="GPU-9", energy_joules=3.6e6)]
    for b in (batch("p0", p0), batch("p1", p1)):
        agg.apply(b, RECEIPT, pue=1.0, intensity_g_per_kwh=100.0)
    return agg


def test_the_ack_block_is_the_aggregates_totals_with_the_gpu_models_status_lists() -> None:
    agg = aggregate()
    models = status_gpu_models(agg)
    assert models == {H100: 2, "": 1}
    totals = job_totals(agg, Intensity(g_per_kwh=100.0, zone="DE", source="static"), models)
    assert totals == TOTALS
    assert json.loads(accepted_body(7, stop=False, job=totals)) == {
        "accepted": True, "seq": 7, "message": "",
        "job": {"emissionsGrams": 200.0, "energyJoules": 7.2e6, "zone": "DE", "gpus": {H100: 2, "": 1}},
    }  # fmt: skip


@pytest.mark.parametrize(
    ("stop", "job", "keys"),
    [
        (False, None, {"accepted", "seq", "message"}),
        (True, None, {"accepted", "seq", "message", "stop"}),
        (True, TOTALS, {"accepted", "seq", "message", "stop", "job"}),
    ],
)
def test_an_ack_has_stop_and_job_only_when_set(stop: bool, job: JobTotals | None, keys: set[str]) -> None:
    body = accepted_body(3, stop=stop, job=job)
    assert set(json.loads(body)) == keys
    assert TelemetryAck.model_validate_json(body) == TelemetryAck(accepted=True, seq=3, stop=stop, job=job)


def sidecar_state() -> SidecarState:
    config = SidecarConfig(
        operator_url="", job_namespace="ml", job_name="llama", pod_namespace="ml", pod_name="p0",
        backend="simulated",
    )  # fmt: skip
    return SidecarState(config, lambda visible: make_backend(config, visible), now=0.0)


JOB_JSON = b'"job":{"emissionsGrams":200.0,"energyJoules":7200000.0,"zone":"DE","gpus":{"' + H100.encode()
JOB_JSON += b'":2,"":1}}'


def test_the_sidecar_keeps_the_latest_totals_and_adds_them_to_its_control_datagrams() -> None:
    state = sidecar_state()
    assert state.control() == GO and state.job_totals is None  # nothing known: the bytes older clients got
    assert state.on_ack(TelemetryAck(accepted=True, seq=1, job=TOTALS)) is False  # stop unchanged
    assert state.job_totals == TOTALS
    assert state.control() == b'{"v":1,"k":"ctl","stop":false,' + JOB_JSON + b"}"
    assert state.on_ack(TelemetryAck(accepted=True, seq=2, stop=True)) is True  # no job: the last kept
    assert state.control() == b'{"v":1,"k":"ctl","stop":true,' + JOB_JSON + b"}"
    old_client_view = json.loads(state.control())  # what a client older than `job` reads: k and stop
    assert (old_client_view["k"], old_client_view["stop"]) == ("ctl", True)


def test_totals_too_large_for_an_older_clients_buffer_are_not_relayed() -> None:
    state = sidecar_state()
    many = {f"GPU model {i:02d} " + "x" * 60: 1 for i in range(64)}
    big = TOTALS.model_copy(update={"gpus": many})
    assert len(big.model_dump_json(by_alias=True)) > MAX_CTL_JOB_BYTES
    state.on_ack(TelemetryAck(accepted=True, seq=1, stop=True, job=big))
    assert state.job_totals == big and state.control() == STOP


def test_the_marker_protocol_answers_a_poll_with_the_totals() -> None:
    state = sidecar_state()
    state.on_ack(TelemetryAck(accepted=True, seq=1, job=TOTALS))
    sent: list[bytes] = []
    fake: Any = SimpleNamespace(state=state, on_datagram=parse)
    proto = _MarkerProtocol(fake)
    proto.connection_made(SimpleNamespace(sendto=lambda data, addr: sent.append(data)))  # type: ignore[arg-type]
    proto.datagram_received(b'{"v":1,"c":"c","q":1,"t":0,"k":"step","s":3}', ("127.0.0.1", 1))
    proto.datagram_received(b'{"v":1,"c":"c","q":2,"t":0,"k":"poll","s":3}', ("127.0.0.1", 1))
    assert sent == [state.control()]


def test_job_totals_polls_the_sidecar_and_returns_its_answer(receiver: socket.socket) -> None:
    host, port = receiver.getsockname()
    c = client.Client(f"{host}:{port}", nvml=False)
    client_addr = receiver.recvfrom(65536)[1]  # the hello
    assert c.job_totals(timeout_s=0.05) is None  # nobody answered: unknown
    assert parse(receiver.recv(65536)).kind == "poll"
    receiver.sendto(b'{"v":1,"k":"ctl","stop":false,' + JOB_JSON + b"}", client_addr)
    want = client.JobTotals(emissions_g=200.0, energy_j=7.2e6, zone="DE", gpus={H100: 2, "": 1})
    assert c.job_totals(timeout_s=2) == want
    assert c.should_stop() is False
    receiver.sendto(b'{"v":1,"k":"ctl","stop":true,"job":{"zone":7}}', client_addr)  # a bad block
    for _ in range(100):
        if c.should_stop():
            break
    assert c.should_stop() is True and c.job_totals(timeout_s=0.01) == want  # the stop read, the block not
    c.close()


def test_job_totals_without_a_sidecar_is_none() -> None:
    assert client.Client("", nvml=False).job_totals() is None


CLIENT_TOTALS = client.JobTotals(emissions_g=200.0, energy_j=7.2e6, zone="DE", gpus={H100: 2, "": 1})
BLOCK = {
    "emissions": 200.0,
    "source": "carbontrack",
    "training_type": "fine-tuning",
    "geographical_location": "grid zone DE",
    "hardware_used": f"2 x {H100}, 1 x GPU (model not reported)",
}


class FakeClient:
    def __init__(self, totals: client.JobTotals | None) -> None:
        self.totals = totals
        self.kinds: list[str] = []

    def job_totals(self, timeout_s: float = 0.5) -> client.JobTotals | None:
        return self.totals

    def report_checkpoint(self, step: int, uri: str) -> bool:
        self.kinds.append("ckpt")
        return True

    def end(self, step: int | None = None) -> bool:
        self.kinds.append("end")
        return True

    def should_stop(self) -> bool:
        return False


def trainer_state(step: int = 40, world_zero: bool = True) -> Any:
    from transformers import TrainerState

    state = TrainerState()
    state.global_step = step
    state.is_world_process_zero = world_zero
    return state


def validated(block: dict[str, Any]) -> dict[str, Any]:
    """The block as huggingface_hub reads it back from card metadata."""
    from huggingface_hub import ModelCardData

    card = ModelCardData(co2_eq_emissions=block)
    out: dict[str, Any] = yaml.safe_load(card.to_yaml())["co2_eq_emissions"]
    return out


def test_the_shared_formatter_gives_the_reports_block() -> None:
    assert co2_eq_emissions(200.0, "DE", {H100: 2, "": 1}, "fine-tuning") == BLOCK
    assert hardware_used({}) == "unknown" and hardware_used({H100: 0}) == "unknown"


def test_the_callback_writes_the_block_into_a_fresh_output_dir(tmp_path: Path) -> None:
    from transformers import TrainerControl

    from carbontrack.trainer.huggingface import CarbonTrackCallback

    out = tmp_path / "model"
    cb = CarbonTrackCallback(FakeClient(CLIENT_TOTALS))  # type: ignore[arg-type]
    cb.on_train_end(SimpleNamespace(output_dir=str(out)), trainer_state(), TrainerControl())
    written = yaml.safe_load((out / "co2_eq_emissions.yaml").read_text())
    assert written == {"co2_eq_emissions": BLOCK} and cb.card_path == out / "co2_eq_emissions.yaml"
    assert validated(written["co2_eq_emissions"]) == BLOCK
    assert not (out / "README.md").exists() and [p.name for p in out.iterdir()] == ["co2_eq_emissions.yaml"]


CARD = """---
license: apache-2.0
tags:
- carbon
co2_eq_emissions:
  emissions: 1.0
---

# My model

Trained on a cluster.
"""


def test_the_callback_merges_the_block_into_the_model_cards_front_matter(tmp_path: Path) -> None:
    from transformers import TrainerControl

    from carbontrack.trainer.huggingface import CarbonTrackCallback

    (tmp_path / "README.md").write_text(CARD)
    cb = CarbonTrackCallback(FakeClient(CLIENT_TOTALS), training_type="pre-training")  # type: ignore[arg-type]
    cb.on_save(SimpleNamespace(output_dir=str(tmp_path)), trainer_state(), TrainerControl())
    text = (tmp_path / "README.md").read_text()
    head, body = text.split("\n---\n", 1)
    meta = yaml.safe_load(head.removeprefix("---\n"))
    want = {**BLOCK, "training_type": "pre-training"}
    assert meta == {"license": "apache-2.0", "tags": ["carbon"], "co2_eq_emissions": want}
    assert body == "\n# My model\n\nTrained on a cluster.\n"
    assert validated(meta["co2_eq_emissions"]) == want
    assert not (tmp_path / "co2_eq_emissions.yaml").exists()
    from huggingface_hub import metadata_load

    assert metadata_load(tmp_path / "README.md") == meta  # the Hub's own reader finds it


@pytest.mark.parametrize(
    ("totals", "world_zero", "enabled"),
    [(None, True, True), (CLIENT_TOTALS, False, True), (CLIENT_TOTALS, True, False)],
    ids=["totals-unknown", "not-the-main-process", "switched-off"],
)
def test_the_callback_writes_nothing_unless_it_knows_the_totals_and_is_the_writer(
    tmp_path: Path, totals: client.JobTotals | None, world_zero: bool, enabled: bool
) -> None:
    from transformers import TrainerControl

    from carbontrack.trainer.huggingface import CarbonTrackCallback

    cb = CarbonTrackCallback(FakeClient(totals), write_model_card=enabled)  # type: ignore[arg-type]
    cb.on_save(
        SimpleNamespace(output_dir=str(tmp_path)), trainer_state(world_zero=world_zero), TrainerControl()
    )
    assert list(tmp_path.iterdir()) == [] and cb.card_path is None


def test_a_card_without_front_matter_is_left_alone_and_the_block_goes_beside_it(tmp_path: Path) -> None:
    from carbontrack.trainer.huggingface import write_model_card

    (tmp_path / "README.md").write_text("# No metadata\n")
    assert write_model_card(tmp_path, BLOCK) == tmp_path / "co2_eq_emissions.yaml"
    assert (tmp_path / "README.md").read_text() == "# No metadata\n"


def test_an_unknown_training_type_is_refused() -> None:
    from carbontrack.trainer.huggingface import CarbonTrackCallback

    with pytest.raises(ValueError, match="pre-training, fine-tuning"):
        CarbonTrackCallback(training_type="training")  # type: ignore[arg-type]


def test_the_callback_pulls_neither_pydantic_nor_the_operator_into_the_trainer() -> None:
    import subprocess
    import sys

    probe = "import sys, carbontrack.trainer.huggingface as _; print(sorted(set(sys.modules) & set(%r)))"
    heavy = (
        "pydantic",
        "kubernetes_asyncio",
        "aiohttp",
        "carbontrack.api.crd",
        "carbontrack.api.wire",
        "carbontrack.core.reports.report",
    )
    out = subprocess.run([sys.executable, "-c", probe % (heavy,)], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
