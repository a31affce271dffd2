"""Trainer-side client: tell the carbontrack sidecar where step boundaries are.

Standard library only (and carbontrack.api.contract, itself standard library only), so it fits any
training image. Every call sends one UDP datagram (trainer.datagram) to the sidecar on the pod's
loopback and returns: it never blocks, never raises into the training loop, and does nothing when no
sidecar is configured (CARBONTRACK_SIDECAR_ADDR unset), so the same script runs anywhere.

    from carbontrack.trainer import client
    client.step(global_step)                  # once per optimizer step, after it completes

Halts that checkpoint: while the operator halts the job, the sidecar answers each datagram from this
client with a control datagram `{"v":1,"k":"ctl","stop":true}` on the same loopback socket.
`should_stop()` reads them without blocking (and polls the sidecar at most once a second), so a
training loop checks it every step for the cost of a non-blocking recv:

    if client.should_stop():
        save(path); client.report_checkpoint(step, path); client.hold()

The job's totals: the trainer's pod cannot read its CarbonTrackedJob, so the operator's answers to the
sidecar carry the job's running totals (emissions, energy, grid zone, GPU models), and the control
datagrams add them. `job_totals()` polls the sidecar and returns them: what the Hugging Face callback
writes into the model card.

Energy is read here too, in the process that holds the GPUs: the client starts an NvmlSampler
(trainer.sampler) beside it when libnvidia-ml.so.1 loads.
"""

from __future__ import annotations

import os
import select
import socket
import time
import uuid
from typing import Any

from carbontrack.api import contract
from carbontrack.trainer.datagram import MAX_DATAGRAM, VERSION, decode_control, encode
from carbontrack.trainer.datagram import JobTotals as JobTotals  # the type job_totals() returns
from carbontrack.trainer.sampler import NvmlSampler, open_sampler

ENV_ADDR = contract.ENV_SIDECAR_ADDR
ENV_RESUME_FROM = contract.ENV_RESUME_FROM
"""`<step> <uri>`: the checkpoint a resumed job starts from (the operator writes it; empty when fresh)."""
POLL_INTERVAL_S = 1.0
_monotonic_ns = time.monotonic_ns


class Client:
    """One sender per trainer process. Cheap: the step message is a preformatted byte template."""

    def __init__(self, addr: str | None = None, nvml: bool | str | None = None) -> None:
        """`nvml`: False disables the sampler, a string is the library's path; None: from the env."""
        self.sent = 0
        self.errors = 0
        self._seq = 0
        self._last_step = 0
        self._id = uuid.uuid4().hex[:12]
        self._sock: socket.socket | None = None
        self._stop = False
        self._job: JobTotals | None = None
        self._polled = 0.0
        self._sent_seen = 0
        self.sampler: NvmlSampler | None = None
        addr = addr if addr is not None else os.environ.get(ENV_ADDR, "")
        if not addr:
            return
        try:
            host, _, port = addr.rpartition(":")
            sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_DGRAM)
            sock.setblocking(False)
            sock.connect((host.strip("[]") or "127.0.0.1", int(port)))
        except (OSError, ValueError):
            self.errors += 1
            return
        self._sock = sock
        self._send_raw = sock.send  # bound once: step() is the hot path
        head = f'{{"v":{VERSION},"c":"{self._id}","k":"step","q":'
        self._step_fmt = (head + '%d,"t":%d,"s":%d}').encode()
        self.sampler, nvml_error = open_sampler(self, nvml)
        self._send(self._message("hello", 0, **_identity(), **({"err": nvml_error} if nvml_error else {})))
        if self.sampler is not None:
            self.sampler.start()

    @property
    def sock(self) -> socket.socket | None:
        """The connected socket to the sidecar; None without a sidecar or once closed."""
        return self._sock

    @property
    def client_id(self) -> str:
        """New per process: the sidecar tells this process's datagrams from another's by it."""
        return self._id

    @property
    def markers(self) -> int:
        """The sequence number of the newest datagram this client sent (the sampler watches it)."""
        return self._seq

    @property
    def enabled(self) -> bool:
        return self._sock is not None

    def step(self, step: int, metrics: dict[str, float] | None = None) -> bool:
        """The global step `step` has just finished. Returns whether a datagram left."""
        if self._sock is None:
            return False
        self._last_step = step
        if metrics:
            return self._send(self._message("step", step, m=metrics))
        self._seq += 1
        try:
            self._send_raw(self._step_fmt % (self._seq, _monotonic_ns(), step))
        except (OSError, TypeError):
            self.errors += 1
            return False
        self.sent += 1
        return True

    def report_eval(self, metrics: dict[str, float], step: int | None = None) -> bool:
        """Evaluation results (e.g. eval_accuracy) for the quality gate."""
        if self._sock is None:
            return False
        return self._send(self._message("eval", self._step_or_last(step), m=metrics))

    def report_dp(
        self,
        noise_multiplier: float,
        sample_rate: float,
        delta: float,
        accountant_epsilon: float | None = None,
        step: int | None = None,
    ) -> bool:
        """DP-SGD parameters; the operator recomputes epsilon from them and shows yours beside it."""
        if self._sock is None:
            return False
        dp = {"noise_multiplier": noise_multiplier, "sample_rate": sample_rate, "delta": delta}
        if accountant_epsilon is not None:
            dp["accountant_epsilon"] = accountant_epsilon
        return self._send(self._message("dp", self._step_or_last(step), dp=dp))

    def end(self, step: int | None = None) -> bool:
        """Training is over; the sidecar closes the last step and flushes.

        Not the hot path: the GPUs are read once more right after the marker, so the last step's
        boundary has a reading after it without waiting for the sampler thread."""
        if self._sock is None:
            return False
        sent = self._send(self._message("end", self._step_or_last(step)))
        if self.sampler is not None:
            self.sampler.sample_now()
        return sent

    def report_checkpoint(self, step: int, uri: str) -> bool:
        """A checkpoint of global step `step` is saved at `uri` (a path, s3://..., whatever your loader
        reads): a halt waits for it, a resume starts from the newest one (status.checkpoint)."""
        if self._sock is None:
            return False
        self._last_step = step
        return self._send(self._message("ckpt", step, u=str(uri)[:1024]))

    def should_stop(self) -> bool:
        """The operator is halting the job: save a checkpoint, report it, and stop training. Never
        blocks; False without a sidecar."""
        if self._sock is None:
            return False
        # The sidecar answers every datagram while a stop stands, so a stepping trainer needs no poll;
        # one that sends nothing, or has been told to stop (to see it withdrawn), polls once a second.
        now = time.monotonic()
        quiet = self.sent == self._sent_seen
        self._sent_seen = self.sent
        if (quiet or self._stop) and now - self._polled >= POLL_INTERVAL_S:
            self._polled = now
            self._send(self._message("poll", self._last_step))
            self._sent_seen = self.sent
        self._read_control()
        return self._stop

    def job_totals(self, timeout_s: float = 0.5) -> JobTotals | None:
        """The job's totals as of the operator's last answer to the sidecar (every pod's energy, not only
        this one's), or None while unknown (no sidecar, no answer yet, an operator that sends no totals).
        Polls the sidecar and waits at most `timeout_s` for its answer (loopback: about a millisecond)."""
        if self._sock is None:
            return self._job
        self._read_control()  # what is already queued, so the wait below is for the poll's answer
        if not self._send(self._message("poll", self._last_step)):
            return self._job
        self._sent_seen = self.sent
        deadline = time.monotonic() + timeout_s
        while (left := deadline - time.monotonic()) > 0:
            try:
                ready, _, _ = select.select([self._sock], [], [], left)
            except (OSError, ValueError):
                break
            if ready and self._read_control():
                break
        return self._job

    def _read_control(self) -> bool:
        """Read every queued control datagram without blocking (stop, job totals); True if one came."""
        got = False
        while self._sock is not None:
            try:
                data = self._sock.recv(65536)
            except (BlockingIOError, InterruptedError):
                break
            except OSError:
                self.errors += 1
                break
            control = decode_control(data)
            if control is not None:
                got = True
                self._stop = control.stop
                if control.job is not None:
                    self._job = control.job
        return got

    def hold(self, timeout_s: float | None = None, poll_s: float = 1.0) -> bool:
        """After the checkpoint a stop asked for: wait to be stopped (the pod's SIGTERM when the Job is
        suspended) instead of exiting, because a worker that exits 0 completes its index and the Job
        could succeed instead of being suspended. True after timeout_s; False when the stop is withdrawn
        (the job was resumed before its workers were stopped: carry on training)."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while self.should_stop():
            if deadline is not None and time.monotonic() >= deadline:
                return True
            time.sleep(poll_s)
        return False

    def _step_or_last(self, step: int | None) -> int:
        return self._last_step if step is None else step

    def _message(self, kind: str, step: int, **fields: Any) -> bytes | None:
        self._seq += 1
        try:
            return encode(self._id, kind, self._seq, time.monotonic_ns(), step, **fields)
        except (TypeError, ValueError):
            self.errors += 1
            return None

    def _send(self, data: bytes | None) -> bool:
        if self._sock is None or data is None or len(data) > MAX_DATAGRAM:
            self.errors += data is not None
            return False
        try:
            self._sock.send(data)
        except OSError:
            self.errors += 1
            return False
        self.sent += 1
        return True

    def close(self) -> None:
        if self.sampler is not None:
            self.sampler.stop()
        if self._sock is not None:
            self._sock.close()
            self._sock = None


def _identity() -> dict[str, Any]:
    """What the sidecar needs to know which GPUs are this trainer's (the device plugin's env)."""
    return {
        "pid": os.getpid(),
        "visible": os.environ.get("NVIDIA_VISIBLE_DEVICES") or os.environ.get("CUDA_VISIBLE_DEVICES"),
        "rank": os.environ.get("RANK"),
    }


_default: Client | None = None


def default() -> Client:
    """The process-wide client, created on first use from the environment."""
    global _default
    if _default is None:
        _default = Client()
    return _default


def step(step: int, metrics: dict[str, float] | None = None) -> bool:
    """Client.step on the process-wide client."""
    return default().step(step, metrics)


def report_eval(metrics: dict[str, float], step: int | None = None) -> bool:
    """Client.report_eval on the process-wide client."""
    return default().report_eval(metrics, step)


def report_dp(
    noise_multiplier: float,
    sample_rate: float,
    delta: float,
    accountant_epsilon: float | None = None,
    step: int | None = None,
) -> bool:
    """Client.report_dp on the process-wide client."""
    return default().report_dp(noise_multiplier, sample_rate, delta, accountant_epsilon, step)


def resume_from(env: dict[str, str] | None = None) -> tuple[int, str] | None:
    """(step, uri) of the checkpoint this (resumed) pod starts from, or None on a fresh start."""
    raw = (os.environ if env is None else env).get(ENV_RESUME_FROM, "").strip()
    step, _, uri = raw.partition(" ")
    if not step.isdigit() or not uri:
        return None
    return int(step), uri


def should_stop() -> bool:
    """Client.should_stop on the process-wide client."""
    return default().should_stop()


def report_checkpoint(step: int, uri: str) -> bool:
    """Client.report_checkpoint on the process-wide client."""
    return default().report_checkpoint(step, uri)


def job_totals(timeout_s: float = 0.5) -> JobTotals | None:
    """Client.job_totals on the process-wide client."""
    return default().job_totals(timeout_s)


def hold(timeout_s: float | None = None) -> bool:
    """Client.hold on the process-wide client."""
    return default().hold(timeout_s)


def end(step: int | None = None) -> bool:
    """Client.end on the process-wide client."""
    return default().end(step)
