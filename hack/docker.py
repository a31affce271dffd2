"""A Docker engine for the image build and the kind tests: use the running one, or start dockerd.

When no engine answers and this is a root shell with Debian's `dockerd` installed (`make setup`
installs it), `start` runs dockerd with a runc wrapper as its default runtime (hack/runc-wrapper:
drops the capabilities the machine's bounding set lacks, which `--privileged` kind
nodes otherwise fail on) and records its pid; `stop` ends only a dockerd this module started.

    python hack/docker.py start    # prints nothing when an engine already answers
    python hack/docker.py stop     # stops the dockerd `start` started, if any
    python hack/docker.py status
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
CACHE = Path(os.environ.get("CARBONTRACK_CACHE", "~/.cache/carbontrack")).expanduser()
STATE = Path(os.environ.get("CARBONTRACK_DOCKER_STATE", "/var/lib/carbontrack-docker"))
"""dockerd's pid file, config, log and the wrapper copy (not under CARBONTRACK_CACHE: one engine per
machine, whatever cache a run uses)."""
PIDFILE = STATE / "dockerd.pid"
RUNTIME = "carbontrack-runc"


def log(msg: str) -> None:
    print(f"[docker {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def engine_up() -> bool:
    if not shutil.which("docker"):
        return False
    r = subprocess.run(["docker", "info", "--format", "{{.ServerVersion}}"], capture_output=True, timeout=30)
    return r.returncode == 0


def why_unavailable() -> str | None:
    """None when an engine answers or can be started here; else the reason (for pytest.skip)."""
    if engine_up():
        return None
    if not shutil.which("docker"):
        return "no docker CLI (make setup installs Debian's docker.io when run as root)"
    if not shutil.which("dockerd"):
        return "no Docker engine answers and dockerd is not installed (make setup installs it as root)"
    if os.geteuid() != 0:
        return "no Docker engine answers and starting dockerd needs root"
    return None


def started_pid() -> int | None:
    """The pid of the dockerd `start` started, if it still runs."""
    try:
        pid = int(PIDFILE.read_text())
        os.kill(pid, 0)
    except (OSError, ValueError):
        return None
    return pid


def start(timeout: float = 60.0) -> int | None:
    """Make sure an engine answers; returns the pid of the dockerd started here, None if one already ran."""
    if engine_up():
        return None
    reason = why_unavailable()
    if reason:
        raise RuntimeError(reason)
    STATE.mkdir(parents=True, exist_ok=True)
    wrapper = STATE / "runc-wrapper"
    shutil.copyfile(HERE / "runc-wrapper", wrapper)
    wrapper.chmod(0o755)
    config = STATE / "daemon.json"
    config.write_text(
        json.dumps({"runtimes": {RUNTIME: {"path": str(wrapper)}}, "default-runtime": RUNTIME}, indent=2)
    )
    logfile = (STATE / "dockerd.log").open("ab")
    proc = subprocess.Popen(
        ["dockerd", "--config-file", str(config), "--pidfile", str(STATE / "dockerd.own.pid")],
        stdout=logfile,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )
    PIDFILE.write_text(str(proc.pid))
    log(f"started dockerd (pid {proc.pid}, log {STATE / 'dockerd.log'})")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"dockerd exited with {proc.returncode}; see {STATE / 'dockerd.log'}")
        if engine_up():
            return proc.pid
        time.sleep(0.5)
    raise RuntimeError(f"dockerd did not answer within {timeout:.0f} s; see {STATE / 'dockerd.log'}")


def stop(timeout: float = 60.0) -> bool:
    """Stop the dockerd `start` started (by its pid); True if one was stopped."""
    pid = started_pid()
    if pid is None:
        PIDFILE.unlink(missing_ok=True)
        return False
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except OSError:
            break
        time.sleep(0.2)
    else:
        os.kill(pid, signal.SIGKILL)
    PIDFILE.unlink(missing_ok=True)
    log(f"stopped dockerd (pid {pid})")
    return True


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("action", choices=["start", "stop", "status"])
    args = parser.parse_args()
    if args.action == "start":
        try:
            start()
        except RuntimeError as exc:
            log(str(exc))
            return 1
        return 0
    if args.action == "stop":
        stop()
        return 0
    reason = why_unavailable()
    pid = started_pid()
    print("engine: " + ("up" if engine_up() else f"down ({reason or 'can be started'})"))
    print(f"started here: pid {pid}" if pid else "started here: no")
    return 0


if __name__ == "__main__":
    sys.exit(main())
