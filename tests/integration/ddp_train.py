"""A tiny data-parallel trainer for test_torch_ddp: real torch.distributed (gloo, CPU), started by
torchrun with the env the operator injected. Usage: torchrun ... ddp_train.py WORKDIR FINAL_WORLD STEPS.

It trains a linear model on a synthetic regression set it makes (seeded, so every rank has the same
data; each takes its own shard), saves a checkpoint every 5 steps (rank 0, atomically) and reports it,
and reports every step to the carbontrack sidecar of its pod (rank 0). Whenever torchrun starts it
(first rendezvous, or again after a scale-up re-rendezvous) it continues from the newest checkpoint.
It stops after STEPS steps at FINAL_WORLD workers and writes its parameters for the test to compare.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import torch
import torch.distributed as dist

from carbontrack.trainer import client

CHECKPOINT_EVERY = 5


def main(workdir: Path, final_world: int, steps_at_final: int) -> None:
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    torch.manual_seed(0)
    model = torch.nn.Linear(8, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    ckpt, step = workdir / "checkpoint.pt", 0
    if ckpt.exists():
        saved = torch.load(ckpt)
        model.load_state_dict(saved["model"])
        opt.load_state_dict(saved["opt"])
        step = int(saved["step"])
    ddp = torch.nn.parallel.DistributedDataParallel(model)
    data = torch.Generator().manual_seed(1234)
    x = torch.randn(512, 8, generator=data)
    y = x @ (torch.arange(8.0) / 8) + 0.1
    xs, ys = x[rank::world], y[rank::world]
    reporter = client.Client() if rank == 0 else None
    log = (workdir / f"log-{os.environ['TEST_NODE']}.jsonl").open("a")
    log.write(json.dumps({"event": "start", "rank": rank, "world": world, "step": step}) + "\n")
    log.flush()
    start = step
    while world < final_world or step - start < steps_at_final:
        i = (step * 16) % len(xs)
        loss = ((ddp(xs[i : i + 16]).squeeze(-1) - ys[i : i + 16]) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        step += 1
        if reporter is not None:
            reporter.step(step)
            if step % CHECKPOINT_EVERY == 0:
                tmp = workdir / "checkpoint.tmp"
                torch.save({"model": model.state_dict(), "opt": opt.state_dict(), "step": step}, tmp)
                tmp.replace(ckpt)
                reporter.report_checkpoint(step, str(ckpt))
        log.write(json.dumps({"event": "step", "rank": rank, "world": world, "step": step}) + "\n")
        log.flush()
        if world < final_world:
            time.sleep(0.2)  # the canary paces itself while the operator judges it
    params = torch.cat([p.detach().flatten() for p in model.parameters()])
    torch.save({"params": params, "step": step, "world": world}, workdir / f"params-rank{rank}.pt")
    log.write(json.dumps({"event": "done", "rank": rank, "world": world, "step": step}) + "\n")
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main(Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]))
