"""A simulated trainer process: the real client (and its NVML sampler) marking steps, as a training
loop would. Prints one JSON line at the end: the sampler's state and the instants of its markers.

    python -m tests.fakenvml.trainer STEPS STEP_SECONDS
"""

from __future__ import annotations

import json
import sys
import time

from carbontrack.trainer import client


def main() -> None:
    steps, step_s = int(sys.argv[1]), float(sys.argv[2])
    c = client.default()
    time.sleep(0.3)  # the sampler opens NVML and sends its inventory and first reading
    before = after = 0
    for step in range(1, steps + 1):
        time.sleep(step_s)
        before = time.monotonic_ns()
        c.step(step)
        after = time.monotonic_ns()
    c.end()
    s = c.sampler
    print(
        json.dumps(
            {
                "enabled": c.enabled,
                "sampler": s is not None,
                "uuids": s.uuids if s else [],
                "samples": s.samples if s else 0,
                "first_ns": s.first_ns if s else 0,
                "last_ns": s.last_ns if s else 0,
                "last_step_ns": [before, after],  # the last marker's timestamp lies between
                "error": s.error if s else "",
                "sent": c.sent,
                "errors": c.errors,
            }
        )
    )


if __name__ == "__main__":
    main()
