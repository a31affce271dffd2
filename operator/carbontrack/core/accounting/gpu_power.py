"""Board power limits of common data-centre GPUs, by the product name NVML gives, for the pod ceiling.

A pod's sources together may report at most GPU_POWER_MARGIN times its GPUs' board limit since the pod
started (core.accounting.plausibility). The model comes from the batch under judgement, never from
another batch of the pod: an earlier batch that named a small GPU must not make the sidecar's truthful
batches implausible. A name the table does not know, or a batch that names none, gets MAX_W_PER_GPU.

Why twice the board limit: the ceiling is shared by every boot of the pod, so a holder of the pod's token
can fill it to have its sidecar's batches refused as implausible. With the ceiling at twice what the
sidecar's GPUs can draw, doing so takes claiming more than the sidecar would have counted: the pod's
total never falls below its sidecar's energy (tests/unit/test_folding.py states it as a property).
Power spikes above the limit last milliseconds; counters read seconds apart never average near twice it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

MAX_W_PER_GPU = 5000.0
"""No GPU draws more; the ceiling for a model the table does not know."""
GPU_POWER_MARGIN = 2.0
"""Times the board limit a GPU of a known model may report (see the module docstring)."""

# First match wins: variants before their family, and a family's own pattern at its highest variant's
# limit, so that an unlisted variant is never refused. Sources: NVIDIA's datasheets, "Max thermal design
# power" / "Max board power": H100 (SXM up to 700 W, NVL 400 W, PCIe 350 W), H200 (SXM up to 700 W, NVL
# 600 W), H800 (SXM 700 W, PCIe 350 W), GH200 Grace Hopper (module 450-1000 W), A100 (SXM 400 W, 80GB PCIe
# 300 W, 40GB PCIe 250 W), A800 (SXM 400 W, PCIe 300 W), A10 (150 W), A30 (165 W), A40 (300 W), L4 (72 W),
# L40 (300 W), L40S (350 W), T4 (70 W), V100 (SXM2 300 W, PCIe 250 W), V100S (PCIe 250 W), HGX B200
# (1000 W per GPU), B100 (700 W), GB200 NVL72 (1200 W per GPU), RTX 6000 Ada (300 W), RTX A6000 (300 W).
BOARD_POWER_W: tuple[tuple[re.Pattern[str], float], ...] = tuple(
    (re.compile(pattern, re.IGNORECASE), watts)
    for pattern, watts in (
        (r"\bGB200\b",                1200.0),
        (r"\bB200\b",                 1000.0),
        (r"\bB100\b",                  700.0),
        (r"\bGH200\b",                1000.0),
        (r"\bH200\b",                  700.0),
        (r"\bH100\b.*\bPCIe\b",        350.0),
        (r"\bH100 NVL\b",              400.0),
        (r"\bH100\b",                  700.0),
        (r"\bH800\b.*\bPCIe\b",        350.0),
        (r"\bH800\b",                  700.0),
        (r"\bA100-PCIE-40GB\b",        250.0),
        (r"\bA100\b.*\bPCIe\b",        300.0),
        (r"\bA100\b",                  400.0),
        (r"\bA800\b.*\bPCIe\b",        300.0),
        (r"\bA800\b",                  400.0),
        (r"\bA10\b",                   150.0),
        (r"\bA30\b",                   165.0),
        (r"\bA40\b",                   300.0),
        (r"\bL40S\b",                  350.0),
        (r"\bL40\b",                   300.0),
        (r"\bL4\b",                     72.0),
        (r"\bT4\b",                     70.0),
        (r"\bV100-SXM2\b",             300.0),
        (r"\bV100S?-PCIE\b",           250.0),
        (r"\bRTX 6000 Ada\b",          300.0),
        (r"\bRTX A6000\b",             300.0),
    )
)  # fmt: skip


def board_power_w(name: str) -> float | None:
    """The board power limit of the GPU NVML calls `name`, or None for a model the table does not know."""
    for pattern, watts in BOARD_POWER_W:
        if pattern.search(name):
            return watts
    return None


def ceiling_w_per_gpu(names: Iterable[str]) -> float:
    """What one GPU may report, in W: GPU_POWER_MARGIN x the highest board limit among `names`, or
    MAX_W_PER_GPU when any of them is unknown (or empty) or there are none."""
    limits = [board_power_w(name) for name in names]
    known = [w for w in limits if w is not None]
    if not limits or len(known) < len(limits):
        return MAX_W_PER_GPU
    return min(GPU_POWER_MARGIN * max(known), MAX_W_PER_GPU)
