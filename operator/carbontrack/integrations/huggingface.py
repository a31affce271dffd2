"""Hugging Face Trainer callback: one line to attach, nothing to change in the training loop.

    from carbontrack.integrations.huggingface import CarbonTrackCallback
    trainer = Trainer(..., callbacks=[CarbonTrackCallback()])

Halts that checkpoint: when the operator halts the job, `should_stop()` turns true on the local main
process; the callback then sets `control.should_save` and `control.should_training_stop` (the Trainer
saves a checkpoint at once and leaves the loop), reports the saved checkpoint from `on_save`, and
holds the process in `on_train_end` until the pod is stopped (exiting 0 would complete the worker's
index). On a resumed job, `resume_checkpoint()` gives the path to pass to
`trainer.train(resume_from_checkpoint=...)`.

Only the local main process reports (one reporter per pod: every rank sees the same global step).
Its client's NVML sampler reads every GPU the container holds, the other local ranks' included:
NVML enumerates the devices of the container, whatever CUDA_VISIBLE_DEVICES a rank was given, so
one sampler covers the pod. (A script that calls carbontrack.client in every rank gets one sampler
per rank; the sidecar de-duplicates their readings by GPU UUID.)
"""

from __future__ import annotations

import os
from typing import Any

try:
    from transformers import TrainerCallback
except ImportError as exc:  # pragma: no cover - exercised only without transformers
    raise ImportError(
        "carbontrack.integrations.huggingface needs `transformers`; use carbontrack.client.step() otherwise"
    ) from exc

from carbontrack import client as _client


class CarbonTrackCallback(TrainerCallback):
    def __init__(self, client: _client.Client | None = None) -> None:
        self._client = client

    @property
    def client(self) -> _client.Client:
        return self._client or _client.default()

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if state.is_local_process_zero:
            self.client.step(int(state.global_step))
            if self.client.should_stop():
                control.should_save = True
                control.should_training_stop = True

    def on_save(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        """The Trainer saves to <output_dir>/checkpoint-<global_step> (transformers' own naming)."""
        if state.is_local_process_zero:
            path = os.path.join(args.output_dir, f"checkpoint-{int(state.global_step)}")
            self.client.report_checkpoint(int(state.global_step), path)

    def on_evaluate(
        self, args: Any, state: Any, control: Any, metrics: dict[str, Any] | None = None, **kwargs: Any
    ) -> None:
        if state.is_local_process_zero and metrics:
            numeric = {k: float(v) for k, v in metrics.items() if isinstance(v, int | float)}
            self.client.report_eval(numeric, step=int(state.global_step))

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if state.is_local_process_zero:
            self.client.end(step=int(state.global_step))
            if self.client.should_stop():
                self.client.hold()


def resume_checkpoint() -> str | None:
    """The checkpoint path a resumed pod starts from (CARBONTRACK_RESUME_FROM), else None."""
    found = _client.resume_from()
    return found[1] if found else None
