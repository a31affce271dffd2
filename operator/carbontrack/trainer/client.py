"""Trainer-side client: tell the carbontrack sidecar where step boundaries are.

Standard library only, so it fits any training image (copy this one file if the package is not
installed). Every call sends one UDP datagram to the sidecar on the pod's loopback and returns:
it never blocks, never raises into the training loop, and does nothing when no sidecar is
configured (CARBONTRACK_SIDECAR_ADDR unset), so the same script runs anywhere.

    from carbontrack.trainer import client
    client.step(global_step)                  # once per optimizer step, after it completes

Datagram (JSON): v (version), c (client id, new per process), q (sequence number, so the sidecar
counts losses), t (CLOCK_MONOTONIC in integer nanoseconds, shared by all processes of the node), k (kind:
hello | step | eval | dp | end | gpus | sample | ckpt | poll), s (global step), and per kind m (metrics),
dp (DP-SGD params), g (the GPUs: an inventory, or one counter sample per GPU), u (a checkpoint's URI).

Halts that checkpoint: while the operator halts the job, the sidecar answers each datagram from this
client with a control datagram `{"v":1,"k":"ctl","stop":true}` on the same loopback socket.
`should_stop()` reads them without blocking (and polls the sidecar at most once a second), so a
training loop checks it every step for the cost of a non-blocking recv:

    if client.should_stop():
        save(path); client.report_checkpoint(step, path); client.hold()

The job's totals: the trainer's pod cannot read its CarbonTrackedJob, so the operator's answers to the
sidecar carry the job's running totals (emissions, energy, grid zone, GPU models), and the control
datagrams add them as `"job":{...}` (a client that does not know the key ignores it). `job_totals()`
polls the sidecar and returns them: what the Hugging Face callback writes into the model card.

Energy is read here, in the process that holds the GPUs: a container that requests no GPU often
cannot see any (CDI-based GPU Operator >= v25.10, GKE, Bottlerocket), while the process using a GPU can
always read its own devices' energy without privileges. NvmlSampler runs in a daemon thread when
libnvidia-ml.so.1 loads (ctypes; no pynvml in the training image), identifies devices by NVML UUID
(never by NVIDIA_VISIBLE_DEVICES, which reads `void` under CDI and `all` on GKE), and sends timestamped
raw counter samples at CARBONTRACK_SAMPLE_HZ and within one poll (10 ms) after each step marker. step()
never calls NVML: the sampler notices a new marker by reading the client's sequence number.
"""

from __future__ import annotations

import ctypes
import json
import os
import select
import socket
import threading
import time
import uuid
from typing import Any, TypedDict

VERSION = 1
ENV_ADDR = "CARBONTRACK_SIDECAR_ADDR"
ENV_NVML = "CARBONTRACK_NVML"
"""`off` disables the trainer-side NVML sampler (the sidecar then measures, or reports `unavailable`)."""
ENV_NVML_LIBRARY = "CARBONTRACK_NVML_LIBRARY"
"""Explicit path of the NVML library; default `libnvidia-ml.so.1`, found by the dynamic loader."""
ENV_SAMPLE_HZ = "CARBONTRACK_SAMPLE_HZ"
ENV_RESUME_FROM = "CARBONTRACK_RESUME_FROM"
"""`<step> <uri>`: the checkpoint a resumed job starts from (the operator writes it; empty when fresh)."""
POLL_INTERVAL_S = 1.0
_monotonic_ns = time.monotonic_ns
MAX_DATAGRAM = 60_000  # stay under the 64 KiB UDP limit; larger messages are dropped, not split


class JobTotals(TypedDict):
    """The job's totals as the operator last answered the sidecar (all pods, not this one's)."""

    emissions_g: float
    """CO2e in grams, PUE included, each interval at the grid intensity then in force."""
    energy_j: float
    """GPU energy measured, before PUE."""
    zone: str
    """The grid zone whose intensity applies."""
    gpus: dict[str, int]
    """GPU model name -> GPUs of it seen ("" where a model was not reported)."""


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _job_totals(raw: Any) -> JobTotals | None:
    """The `job` object of a control datagram, or None when it is not one (never raises)."""
    if not isinstance(raw, dict):
        return None
    emissions, energy, zone, gpus = (raw.get(k) for k in ("emissionsGrams", "energyJoules", "zone", "gpus"))
    e_g, e_j = _number(emissions), _number(energy)
    if e_g is None or e_j is None or not isinstance(zone, str) or not isinstance(gpus, dict):
        return None
    counts = {k: v for k, v in gpus.items() if isinstance(k, str) and type(v) is int and v >= 0}
    return JobTotals(emissions_g=e_g, energy_j=e_j, zone=zone, gpus=counts)


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
        if nvml is None:
            nvml = os.environ.get(ENV_NVML, "").lower() not in ("off", "false", "0")
        nvml_error = "disabled (CARBONTRACK_NVML=off)"
        if nvml is not False:
            library = (
                nvml if isinstance(nvml, str) else os.environ.get(ENV_NVML_LIBRARY, "")
            ) or NVML_LIBRARY
            try:
                hz = float(os.environ.get(ENV_SAMPLE_HZ, "") or 10.0)
                self.sampler = NvmlSampler(self, ctypes.CDLL(library), library, sample_hz=hz)
                nvml_error = ""
            except (OSError, ValueError) as exc:  # no driver library in this image: say so, once
                nvml_error = f"{library}: {exc}"[:300]
        self._send(self._message("hello", 0, **_identity(), **({"err": nvml_error} if nvml_error else {})))
        if self.sampler is not None:
            self.sampler.start()

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
        this one's), or None while unknown (no sidecar, no answer yet, an operator older than this).
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
            try:
                msg = json.loads(data)
            except ValueError:
                continue
            if isinstance(msg, dict) and msg.get("k") == "ctl" and isinstance(msg.get("stop"), bool):
                got = True
                self._stop = msg["stop"]
                if (job := _job_totals(msg.get("job"))) is not None:
                    self._job = job
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
        body = {
            "v": VERSION,
            "c": self._id,
            "k": kind,
            "q": self._seq,
            "t": time.monotonic_ns(),
            "s": step,
            **fields,
        }
        try:
            return json.dumps(body, separators=(",", ":"), allow_nan=False).encode()
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


NVML_LIBRARY = "libnvidia-ml.so.1"
NVML_SUCCESS, NVML_NOT_SUPPORTED, NVML_NOT_FOUND, NVML_INSUFFICIENT_SIZE, NVML_GPU_IS_LOST = 0, 3, 6, 7, 15
MAX_GPUS = 64
READ_WINDOW_NS = 50_000


class NvmlError(Exception):
    def __init__(self, code: int, text: str) -> None:
        super().__init__(f"NVML error {code}: {text}")
        self.code = code


class _ProcessInfo(ctypes.Structure):
    """nvmlProcessInfo_t as nvmlDeviceGetComputeRunningProcesses_v3 fills it (pynvml's layout)."""

    _fields_ = [
        ("pid", ctypes.c_uint),
        ("usedGpuMemory", ctypes.c_ulonglong),
        ("gpuInstanceId", ctypes.c_uint),
        ("computeInstanceId", ctypes.c_uint),
    ]


class Nvml:
    """The few NVML calls the sampler makes, through ctypes. Raises NvmlError or OSError."""

    def __init__(self, lib: ctypes.CDLL) -> None:
        self.lib = lib
        self.lib.nvmlErrorString.restype = ctypes.c_char_p
        self._check(self.lib.nvmlInit_v2())
        try:
            self._procs = self.lib.nvmlDeviceGetComputeRunningProcesses_v3
        except AttributeError:  # drivers before 510
            self._procs = self.lib.nvmlDeviceGetComputeRunningProcesses

    def _check(self, code: int) -> None:
        if code != NVML_SUCCESS:
            raise NvmlError(code, (self.lib.nvmlErrorString(code) or b"").decode(errors="replace"))

    def handles(self) -> list[ctypes.c_void_p]:
        count = ctypes.c_uint()
        self._check(self.lib.nvmlDeviceGetCount_v2(ctypes.byref(count)))
        out = []
        for i in range(min(count.value, MAX_GPUS)):
            h = ctypes.c_void_p()
            self._check(self.lib.nvmlDeviceGetHandleByIndex_v2(ctypes.c_uint(i), ctypes.byref(h)))
            out.append(h)
        return out

    def _text(self, fn: Any, handle: ctypes.c_void_p) -> str:
        buf = ctypes.create_string_buffer(96)
        self._check(fn(handle, buf, ctypes.c_uint(96)))
        return buf.value.decode(errors="replace")

    def uuid(self, handle: ctypes.c_void_p) -> str:
        return self._text(self.lib.nvmlDeviceGetUUID, handle)

    def name(self, handle: ctypes.c_void_p) -> str:
        return self._text(self.lib.nvmlDeviceGetName, handle)

    def energy_mj(self, handle: ctypes.c_void_p) -> int:
        value = ctypes.c_ulonglong()
        self._check(self.lib.nvmlDeviceGetTotalEnergyConsumption(handle, ctypes.byref(value)))
        return value.value

    def power_mw(self, handle: ctypes.c_void_p) -> int:
        value = ctypes.c_uint()
        self._check(self.lib.nvmlDeviceGetPowerUsage(handle, ctypes.byref(value)))
        return value.value

    def mig_devices(self, handle: ctypes.c_void_p) -> list[str] | None:
        """UUIDs of the MIG instances this process sees on the GPU; None when MIG is off."""
        current, pending = ctypes.c_uint(), ctypes.c_uint()
        code = self.lib.nvmlDeviceGetMigMode(handle, ctypes.byref(current), ctypes.byref(pending))
        if code == NVML_NOT_SUPPORTED or (code == NVML_SUCCESS and current.value != 1):
            return None
        self._check(code)
        count, out = ctypes.c_uint(), []
        if self.lib.nvmlDeviceGetMaxMigDeviceCount(handle, ctypes.byref(count)) == NVML_SUCCESS:
            for i in range(min(count.value, 8)):
                mig = ctypes.c_void_p()
                if (
                    self.lib.nvmlDeviceGetMigDeviceHandleByIndex(handle, ctypes.c_uint(i), ctypes.byref(mig))
                    == 0
                ):
                    out.append(self.uuid(mig))
        return out

    def pids(self, handle: ctypes.c_void_p) -> list[int]:
        count = ctypes.c_uint(0)
        code = self._procs(handle, ctypes.byref(count), None)
        while code == NVML_INSUFFICIENT_SIZE:
            n = count.value + 4
            infos = (_ProcessInfo * n)()
            count = ctypes.c_uint(n)
            code = self._procs(handle, ctypes.byref(count), infos)
            if code == NVML_SUCCESS:
                return [infos[i].pid for i in range(count.value)]
        self._check(code)
        return []

    def shutdown(self) -> None:
        self.lib.nvmlShutdown()


def _own_pid(pid: int) -> bool:
    """A process of this container: the driver names it by a PID of our namespace (drivers that do
    not translate PIDs name host PIDs, which do not exist here: see README on shared GPUs)."""
    return pid == os.getpid() or os.path.exists(f"/proc/{pid}")


class NvmlSampler:
    """Reads this process's GPUs in a daemon thread and sends raw samples beside the step markers.

    Never raises into the trainer: a library that does not load or init is reported once to the
    sidecar (inventory with `err`), a GPU that fails is reported lost, an unexpected error stops
    the sampler and is counted in `errors`.
    """

    POLL_S = 0.01
    """How often the thread checks for a new step marker (100 wake-ups a second, no NVML call)."""
    SCAN_S = 5.0
    """How often MIG mode and the GPU's processes are re-read and the inventory re-sent."""

    def __init__(self, client: Client, lib: ctypes.CDLL, library: str, sample_hz: float = 10.0) -> None:
        self.client = client
        self.lib = lib
        self.library = library
        self.period_s = 1.0 / max(sample_hz, 0.1)
        self.nvml: Nvml | None = None
        self.handles: list[ctypes.c_void_p] = []
        self.uuids: list[str] = []
        self.counter: list[bool] = []
        self.lost: list[bool] = []
        self.error = ""
        self.errors = 0
        self.sent = 0
        self.samples = 0
        self.first_ns = self.last_ns = 0
        """CLOCK_MONOTONIC of the first and the newest sample."""
        self._seq = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="carbontrack-nvml", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(2)

    def _open(self) -> bool:
        try:
            self.nvml = Nvml(self.lib)
            self.handles = self.nvml.handles()
            self.uuids = [self.nvml.uuid(h) for h in self.handles]
            for h in self.handles:
                try:
                    self.nvml.energy_mj(h)
                    self.counter.append(True)
                except NvmlError as exc:
                    self.counter.append(exc.code != NVML_NOT_SUPPORTED)
            self.lost = [False] * len(self.handles)
        except (OSError, NvmlError, AttributeError) as exc:
            self.error = f"{self.library}: {exc}"[:300]
            self.nvml = None
            self._send("gpus", g=[], err=self.error)
            return False
        self.scan()
        return True

    def scan(self) -> None:
        """Inventory: UUID, name, counter, MIG instances and foreign processes of every GPU."""
        if self.nvml is None:
            return
        gpus = []
        for i, h in enumerate(self.handles):
            entry: dict[str, Any] = {"u": self.uuids[i], "i": i, "c": self.counter[i]}
            try:
                entry["n"] = self.nvml.name(h)
                mig = self.nvml.mig_devices(h)
                if mig is not None:
                    entry["mig"] = mig
                pids = self.nvml.pids(h)
                entry["f"] = sum(not _own_pid(p) for p in pids)
            except NvmlError as exc:
                if exc.code == NVML_GPU_IS_LOST:
                    self.lost[i] = True
            entry["lost"] = self.lost[i]
            gpus.append(entry)
        self._send("gpus", g=gpus)

    def sample_now(self) -> None:
        """Read every GPU's counter (or power) once and send it with the time of the reading."""
        nvml = self.nvml
        if nvml is None:
            return
        with self._lock:
            g: list[list[Any]] = []
            t = time.monotonic_ns()
            for i, h in enumerate(self.handles):
                if self.lost[i]:
                    g.append([self.uuids[i], None, None, 1, 0])
                    continue
                try:
                    value, at = self._read(nvml, i, h)
                    pair = [value, None] if self.counter[i] else [None, value]
                    g.append([self.uuids[i], *pair, 0, at - t])
                except NvmlError as exc:
                    self.lost[i] = exc.code == NVML_GPU_IS_LOST
                    g.append([self.uuids[i], None, None, int(self.lost[i]), 0])
            self.samples += 1
            self.first_ns, self.last_ns = self.first_ns or t, t
            self._send("sample", t=t, g=g)

    def _read(self, nvml: Nvml, i: int, handle: ctypes.c_void_p) -> tuple[int, int]:
        """One reading and its own instant: the midpoint of a call window of at most READ_WINDOW_NS.

        Another thread may take the GIL between the clock and the call; a window that grew past the
        bound is read again (five tries), so the timestamp belongs to the reading, not to a pause."""
        read = nvml.energy_mj if self.counter[i] else nvml.power_mw
        for _ in range(5):
            before = time.monotonic_ns()
            value = read(handle)
            after = time.monotonic_ns()
            if after - before <= READ_WINDOW_NS:
                break
        return value, (before + after) // 2

    def _send(self, kind: str, t: int | None = None, **fields: Any) -> None:
        """Own sequence numbers and counters: the client's are the training thread's alone."""
        sock = self.client._sock
        if sock is None:
            return
        self._seq += 1
        body = {"v": VERSION, "c": self.client._id, "k": kind, "q": self._seq, "t": t or time.monotonic_ns()}
        try:
            sock.send(json.dumps({**body, "s": 0, **fields}, separators=(",", ":")).encode())
            self.sent += 1
        except (OSError, ValueError, TypeError):
            self.errors += 1

    def _run(self) -> None:
        try:
            if not self._open():
                return
            last_seq, last_sample, last_scan = -1, 0.0, time.monotonic()
            while not self._stop.wait(self.POLL_S):
                now = time.monotonic()
                seq = self.client._seq
                if seq != last_seq or now - last_sample >= self.period_s:
                    self.sample_now()
                    last_seq, last_sample = seq, now
                if now - last_scan >= self.SCAN_S:
                    self.scan()
                    last_scan = now
        except Exception as exc:  # never into the trainer: stop sampling, say why
            self.errors += 1
            self.error = f"sampler stopped: {type(exc).__name__}: {exc}"[:300]
        finally:
            with self._lock:
                if self.nvml is not None:
                    self.nvml.shutdown()
                    self.nvml = None


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
    return default().step(step, metrics)


def report_eval(metrics: dict[str, float], step: int | None = None) -> bool:
    return default().report_eval(metrics, step)


def report_dp(
    noise_multiplier: float,
    sample_rate: float,
    delta: float,
    accountant_epsilon: float | None = None,
    step: int | None = None,
) -> bool:
    return default().report_dp(noise_multiplier, sample_rate, delta, accountant_epsilon, step)


def resume_from(env: dict[str, str] | None = None) -> tuple[int, str] | None:
    """(step, uri) of the checkpoint this (resumed) pod starts from, or None on a fresh start."""
    raw = (os.environ if env is None else env).get(ENV_RESUME_FROM, "").strip()
    step, _, uri = raw.partition(" ")
    if not step.isdigit() or not uri:
        return None
    return int(step), uri


def should_stop() -> bool:
    return default().should_stop()


def report_checkpoint(step: int, uri: str) -> bool:
    return default().report_checkpoint(step, uri)


def job_totals(timeout_s: float = 0.5) -> JobTotals | None:
    return default().job_totals(timeout_s)


def hold(timeout_s: float | None = None) -> bool:
    return default().hold(timeout_s)


def end(step: int | None = None) -> bool:
    return default().end(step)
