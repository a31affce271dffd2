"""The trainer client: one datagram per call, never blocking, never raising, a no-op without a sidecar."""

from __future__ import annotations

import ast
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from carbontrack.sidecar.markers import parse
from carbontrack.trainer import client

CLIENT_SRC = Path(client.__file__)
TRAINER_DIR = CLIENT_SRC.parent
FRAMEWORK_CALLBACKS = {"huggingface.py"}
"""Modules that import their framework (transformers, and PyYAML with it): loaded only where it is."""
TRAINER_MAY_IMPORT = {"carbontrack.api.contract", "carbontrack.api.model_card", "carbontrack.api.logs"}
"""The stdlib-only modules of carbontrack.api; everything else in the package needs the operator's
dependencies."""


def addr(sock: socket.socket) -> str:
    host, port = sock.getsockname()
    return f"{host}:{port}"


def imported_modules(source: Path) -> set[str]:
    tree = ast.parse(source.read_text())
    return {
        f"{n.module}.{a.name}" if isinstance(n, ast.ImportFrom) and n.module == "carbontrack.api" else
        (n.module if isinstance(n, ast.ImportFrom) else a.name)
        for n in ast.walk(tree)
        if isinstance(n, ast.Import | ast.ImportFrom)
        for a in n.names
        if not (isinstance(n, ast.ImportFrom) and n.module == "__future__")
    }  # fmt: skip


@pytest.mark.parametrize(
    "module", sorted(p.name for p in TRAINER_DIR.glob("*.py") if p.name not in FRAMEWORK_CALLBACKS)
)
def test_client_imports_only_the_standard_library(module: str) -> None:
    """Each module the client loads: the standard library, its own package, and api's stdlib-only modules."""
    modules = imported_modules(TRAINER_DIR / module)
    ours = {m for m in modules if m.split(".")[0] == "carbontrack"}
    foreign = {m.split(".")[0] for m in modules - ours}
    assert foreign <= set(sys.stdlib_module_names), foreign - set(sys.stdlib_module_names)
    assert {m for m in ours if not m.startswith("carbontrack.trainer.")} <= TRAINER_MAY_IMPORT, ours


def test_the_client_loads_nothing_outside_the_standard_library() -> None:
    """What `from carbontrack.trainer import client` loads in a fresh interpreter, transitively."""
    probe = (
        "import sys\n"
        "before = set(sys.modules)\n"
        "from carbontrack.trainer import client\n"
        "print('\\n'.join(sorted(set(sys.modules) - before)))"
    )
    env = {**os.environ, "PYTHONPATH": str(CLIENT_SRC.parents[2])}  # this checkout's package
    out = subprocess.run(
        [sys.executable, "-c", probe], env=env, capture_output=True, text=True, check=True
    ).stdout
    loaded = set(out.split())
    ours = {m for m in loaded if m.split(".")[0] == "carbontrack"}
    foreign = {m.split(".")[0] for m in loaded - ours}
    assert foreign <= set(sys.stdlib_module_names), foreign - set(sys.stdlib_module_names)
    allowed = {"carbontrack", "carbontrack._moved", "carbontrack.api", "carbontrack.trainer"}
    assert {m for m in ours if not m.startswith("carbontrack.trainer.")} <= allowed | TRAINER_MAY_IMPORT, ours


def test_the_old_import_paths_fail_naming_the_new_ones() -> None:
    """The two lines a training script wrote before the trainer's code moved to carbontrack.trainer."""
    with pytest.raises(ImportError, match=r"import carbontrack\.trainer\.client instead") as raised:
        import carbontrack.client  # noqa: F401
    assert raised.value.name == "carbontrack.client" and "carbontrack.client" not in sys.modules
    with pytest.raises(ImportError, match=r"import carbontrack\.trainer\.huggingface instead") as raised:
        from carbontrack.integrations.huggingface import CarbonTrackCallback  # noqa: F401
    assert raised.value.name == "carbontrack.integrations.huggingface"


def test_without_a_sidecar_every_call_is_a_no_op(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(client.ENV_ADDR, raising=False)
    c = client.Client()
    assert not c.enabled
    assert c.step(1) is False
    assert c.report_eval({"acc": 1.0}) is False
    assert c.report_dp(1.0, 0.01, 1e-5) is False
    assert c.end() is False


def test_hello_then_one_parseable_datagram_per_step(receiver: socket.socket) -> None:
    c = client.Client(addr(receiver))
    hello = parse(receiver.recv(65536))
    assert hello.kind == "hello"
    for s in (1, 2, 3):
        assert c.step(s)
    markers = [parse(receiver.recv(65536)) for _ in range(3)]
    assert [(m.kind, m.step, m.seq) for m in markers] == [("step", 1, 2), ("step", 2, 3), ("step", 3, 4)]
    assert markers[0].client == hello.client
    assert markers[0].t <= markers[1].t  # monotonic clock


def test_eval_dp_and_end_messages(receiver: socket.socket) -> None:
    c = client.Client(addr(receiver))
    receiver.recv(65536)
    c.step(7, metrics={"loss": 0.5})
    c.report_eval({"eval_accuracy": 0.9})
    c.report_dp(1.1, 0.004, 1e-5, accountant_epsilon=2.5)
    c.end()
    kinds = [parse(receiver.recv(65536)) for _ in range(4)]
    assert [(m.kind, m.step) for m in kinds] == [("step", 7), ("eval", 7), ("dp", 7), ("end", 7)]
    assert kinds[0].metrics == {"loss": 0.5}
    assert kinds[2].dp == {
        "noise_multiplier": 1.1,
        "sample_rate": 0.004,
        "delta": 1e-5,
        "accountant_epsilon": 2.5,
    }


def test_bad_input_never_raises_into_the_training_loop(receiver: socket.socket) -> None:
    c = client.Client(addr(receiver))
    assert c.report_eval({"x": float("nan")}) is False  # not JSON-representable: dropped, counted
    assert c.report_eval({"x": object()}) is False  # type: ignore[dict-item]
    assert c.report_eval({f"m{i}": 1.0 for i in range(10_000)}) is False  # over the datagram limit
    assert c.errors == 3
    assert c.step("seven") is False  # type: ignore[arg-type]


def test_dead_sidecar_does_not_block_or_raise() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    c = client.Client(f"127.0.0.1:{port}")  # nothing listens: ICMP port unreachable comes back
    results = [c.step(i) for i in range(100)]
    assert c.sent + c.errors == 101  # hello + 100 steps, each either sent or counted
    assert any(results)


def test_malformed_address_disables_the_client() -> None:
    c = client.Client("not-an-address")
    assert not c.enabled and c.errors == 1


def test_hf_callback_reports_steps_evals_and_end(receiver: socket.socket) -> None:
    from transformers import TrainerControl, TrainerState

    from carbontrack.trainer.huggingface import CarbonTrackCallback

    cb = CarbonTrackCallback(client.Client(addr(receiver)))
    receiver.recv(65536)
    state = TrainerState()
    state.global_step = 12
    args, control = object(), TrainerControl()
    cb.on_step_end(args, state, control)
    cb.on_evaluate(args, state, control, metrics={"eval_accuracy": 0.93, "epoch": 1, "note": "x"})
    cb.on_train_end(args, state, control)
    got = [json.loads(receiver.recv(65536)) for _ in range(3)]
    assert [(m["k"], m["s"]) for m in got] == [("step", 12), ("eval", 12), ("end", 12)]
    assert got[1]["m"] == {"eval_accuracy": 0.93, "epoch": 1.0}


def test_step_never_touches_nvml() -> None:
    """The hot path: step() sends one datagram; reading the GPUs is the sampler thread's job."""
    tree = ast.parse(CLIENT_SRC.read_text())
    step = next(
        f for c in tree.body if isinstance(c, ast.ClassDef) and c.name == "Client"
        for f in c.body if isinstance(f, ast.FunctionDef) and f.name == "step"
    )  # fmt: skip
    names = {n.attr if isinstance(n, ast.Attribute) else getattr(n, "id", "") for n in ast.walk(step)}
    assert not names & {"sampler", "nvml", "lib", "ctypes", "sample_now", "energy_mj", "power_mw"}, names


def test_without_the_nvml_library_the_hello_says_why_and_no_sampler_runs(receiver: socket.socket) -> None:
    c = client.Client(addr(receiver), nvml="/nonexistent/libnvidia-ml.so.1")
    hello = parse(receiver.recv(65536))
    assert c.sampler is None and hello.kind == "hello"
    assert hello.error is not None and hello.error.startswith("/nonexistent/libnvidia-ml.so.1: ")
    off = client.Client(addr(receiver), nvml=False)
    assert off.sampler is None and parse(receiver.recv(65536)).error == "disabled (CARBONTRACK_NVML=off)"


def test_the_clients_names_are_the_contracts() -> None:
    """The client reads the environment the operator injects under the contract's names."""
    from carbontrack.api import contract

    assert client.ENV_ADDR == contract.ENV_SIDECAR_ADDR


def test_should_stop_reads_the_sidecars_answer_and_checkpoints_travel_as_markers(
    receiver: socket.socket,
) -> None:
    c = client.Client(addr(receiver), nvml=False)
    hello_from = receiver.recvfrom(65536)[1]
    assert c.should_stop() is False  # a hello just left: no poll needed, nothing answered
    receiver.sendto(b'{"v":1,"k":"ctl","stop":true}', hello_from)
    for _ in range(100):
        if c.should_stop():
            break
    assert c.should_stop() is True
    assert c.report_checkpoint(120, "s3://bucket/run/step-120")
    got = [parse(receiver.recv(65536)) for _ in range(2)]
    ckpt = next(m for m in got if m.kind == "ckpt")
    assert (ckpt.step, ckpt.uri) == (120, "s3://bucket/run/step-120")
    receiver.sendto(b'{"v":1,"k":"ctl","stop":false}', hello_from)
    assert c.hold(timeout_s=5, poll_s=0.01) is False  # the stop was withdrawn: carry on


@pytest.mark.parametrize(
    ("raw", "want"),
    [("", None), ("120 /ckpt/step-120", (120, "/ckpt/step-120")), ("x /a", None), ("7", None)],
)
def test_resume_from_reads_the_injected_env(raw: str, want: tuple[int, str] | None) -> None:
    assert client.resume_from({"CARBONTRACK_RESUME_FROM": raw}) == want


def test_hf_callback_on_a_stop_request_saves_stops_and_reports_the_checkpoint(
    receiver: socket.socket,
) -> None:
    from types import SimpleNamespace

    from transformers import TrainerControl, TrainerState

    from carbontrack.trainer.huggingface import CarbonTrackCallback

    c = client.Client(addr(receiver), nvml=False)
    client_addr = receiver.recvfrom(65536)[1]
    cb = CarbonTrackCallback(c)
    state, control = TrainerState(), TrainerControl()
    state.global_step = 40
    args = SimpleNamespace(output_dir="/out")
    cb.on_step_end(args, state, control)
    assert not control.should_save and not control.should_training_stop  # no stop asked
    receiver.sendto(b'{"v":1,"k":"ctl","stop":true}', client_addr)
    state.global_step = 41
    for _ in range(100):
        cb.on_step_end(args, state, control)
        if control.should_training_stop:
            break
    assert control.should_save and control.should_training_stop
    cb.on_save(args, state, control)
    got = []
    while (m := parse(receiver.recv(65536))).kind != "ckpt":
        got.append(m.kind)
    assert (m.step, m.uri) == (41, "/out/checkpoint-41")
