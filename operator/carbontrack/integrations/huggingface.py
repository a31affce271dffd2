"""Hugging Face Trainer callback: one line to attach, nothing to change in the training loop.

    from carbontrack.integrations.huggingface import CarbonTrackCallback
    trainer = Trainer(..., callbacks=[CarbonTrackCallback()])

Only the local main process reports (one reporter per pod: every rank sees the same global step).
Its client's NVML sampler reads every GPU the container holds, the other local ranks' included:
NVML enumerates the devices of the container, whatever CUDA_VISIBLE_DEVICES a rank was given, so
one sampler covers the pod. (A script that calls carbontrack.client in every rank gets one sampler
per rank; the sidecar de-duplicates their readings by GPU UUID.)
"""

from __future__ import annotations

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

    def on_evaluate(
        self, args: Any, state: Any, control: Any, metrics: dict[str, Any] | None = None, **kwargs: Any
    ) -> None:
        if state.is_local_process_zero and metrics:
            numeric = {k: float(v) for k, v in metrics.items() if isinstance(v, int | float)}
            self.client.report_eval(numeric, step=int(state.global_step))

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if state.is_local_process_zero:
            self.client.end(step=int(state.global_step))
