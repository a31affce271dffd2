"""The e2e trainer: a small CPU training loop (linear regression by SGD) that reports through
carbontrack.trainer.client, as a real training script would. Runs in the project image; settings by env:
TRAIN_STEPS (global steps to run), TRAIN_STEP_SECONDS (pace: one optimizer step at least this long).
"""

import os
import random
import time

from carbontrack.trainer import client

steps = int(os.environ.get("TRAIN_STEPS", "300"))
pace = float(os.environ.get("TRAIN_STEP_SECONDS", "0.1"))
rng = random.Random(int(os.environ.get("JOB_COMPLETION_INDEX", "0")))
data = [(x, 3.0 * x + 1.0 + rng.gauss(0, 0.1)) for x in (rng.uniform(-1, 1) for _ in range(256))]
w, b, lr = 0.0, 0.0, 0.2
for step in range(1, steps + 1):
    started = time.monotonic()
    batch = rng.sample(data, 32)
    gw = sum(2 * (w * x + b - y) * x for x, y in batch) / len(batch)
    gb = sum(2 * (w * x + b - y) for x, y in batch) / len(batch)
    w, b = w - lr * gw, b - lr * gb
    client.step(step)
    if step % 10 == 0:
        mse = sum((w * x + b - y) ** 2 for x, y in data) / len(data)
        client.report_eval({"eval_accuracy": 1.0 / (1.0 + mse)}, step=step)
        print(f"step {step} mse {mse:.4f} w {w:.3f} b {b:.3f}", flush=True)
    time.sleep(max(0.0, pace - (time.monotonic() - started)))
client.end(steps)
print(f"done: {steps} steps, w {w:.3f} b {b:.3f}", flush=True)
