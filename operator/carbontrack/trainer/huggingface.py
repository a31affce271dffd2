"""Hugging Face Trainer callback: one line to attach, nothing to change in the training loop.

    from carbontrack.trainer.huggingface import CarbonTrackCallback
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
one sampler covers the pod. (A script that calls carbontrack.trainer.client in every rank gets one sampler
per rank; the sidecar de-duplicates their readings by GPU UUID.)

The model card: at each save and at the end of training the world's main process writes the
`co2_eq_emissions` block (api.model_card, the shape `carbontrack report --format model-card` prints)
next to the model, in `output_dir`: into README.md's YAML front matter when it has one (that key
replaced, the rest kept), else into `co2_eq_emissions.yaml`. Its figures are the job's totals as the
operator last answered the sidecar (`client.job_totals()`); nothing is written while they are unknown.
"""

from __future__ import annotations

import logging
import os
import re
import tempfile
from pathlib import Path
from typing import Any

import yaml  # a dependency of transformers

try:
    from transformers import TrainerCallback
except ImportError as exc:  # pragma: no cover - exercised only without transformers
    raise ImportError(
        "carbontrack.trainer.huggingface needs `transformers`; "
        "use carbontrack.trainer.client.step() otherwise"
    ) from exc

from carbontrack.api.model_card import TRAINING_TYPES, TrainingType, co2_eq_emissions
from carbontrack.trainer import client as _client

log = logging.getLogger("carbontrack.huggingface")

CARD = "README.md"
CARD_SIDE_FILE = "co2_eq_emissions.yaml"
_FRONT_MATTER = re.compile(r"\A\ufeff?---[ \t]*\r?\n(.*?)^---[ \t]*(?:\r?\n|\Z)", re.S | re.M)


def model_card_block(totals: _client.JobTotals, training_type: TrainingType) -> dict[str, Any]:
    """The `co2_eq_emissions` value for the job's totals."""
    return co2_eq_emissions(totals["emissions_g"], totals["zone"], totals["gpus"], training_type)


def _replace(path: Path, text: str) -> None:
    """Write whole or not at all: a pod stopped mid-write leaves the previous file."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_model_card(output_dir: str | os.PathLike[str], block: dict[str, Any]) -> Path:
    """Put `co2_eq_emissions: block` next to the model in `output_dir`: into README.md's front matter when
    it has a mapping there (that key set, the other keys and the card's text kept), else into
    co2_eq_emissions.yaml. Returns the file written."""
    folder = Path(output_dir)
    folder.mkdir(parents=True, exist_ok=True)
    card = folder / CARD
    text = card.read_text(encoding="utf-8") if card.is_file() else ""
    if (match := _FRONT_MATTER.match(text)) is not None:
        try:
            meta = yaml.safe_load(match.group(1)) or {}
        except yaml.YAMLError:
            meta = None  # a card the Hub would not read either: leave it as it is
        if isinstance(meta, dict):
            meta["co2_eq_emissions"] = block
            dumped = yaml.safe_dump(meta, sort_keys=False, allow_unicode=True)
            _replace(card, f"---\n{dumped}---\n{text[match.end() :]}")
            return card
    side = folder / CARD_SIDE_FILE
    _replace(side, yaml.safe_dump({"co2_eq_emissions": block}, sort_keys=False, allow_unicode=True))
    return side


class CarbonTrackCallback(TrainerCallback):
    """Marks steps, evaluations, checkpoints and the end of training on the sidecar; halts on its word."""

    def __init__(
        self,
        client: _client.Client | None = None,
        write_model_card: bool = True,
        training_type: TrainingType = "fine-tuning",
    ) -> None:
        """`write_model_card`: write the `co2_eq_emissions` block into output_dir at each save and at the
        end; `training_type`: the block's `pre-training` or `fine-tuning`."""
        if training_type not in TRAINING_TYPES:
            raise ValueError(
                f"training_type must be one of {', '.join(TRAINING_TYPES)}, not {training_type!r}"
            )
        self._client = client
        self.write_model_card = write_model_card
        self.training_type: TrainingType = training_type
        self.card_path: Path | None = None
        """The file the block was last written to."""

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
        self._write_card(args, state)

    def on_evaluate(
        self, args: Any, state: Any, control: Any, metrics: dict[str, Any] | None = None, **kwargs: Any
    ) -> None:
        if state.is_local_process_zero and metrics:
            numeric = {k: float(v) for k, v in metrics.items() if isinstance(v, int | float)}
            self.client.report_eval(numeric, step=int(state.global_step))

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if state.is_local_process_zero:
            self.client.end(step=int(state.global_step))
        self._write_card(args, state)
        if state.is_local_process_zero and self.client.should_stop():
            self.client.hold()

    def _write_card(self, args: Any, state: Any) -> None:
        """The model card's block from the job's totals (one writer: the world's main process); never
        raises into training."""
        if not self.write_model_card or not state.is_world_process_zero:
            return
        totals = self.client.job_totals()
        if totals is None:
            log.debug("no job totals from the sidecar yet: model card not written")
            return
        try:
            self.card_path = write_model_card(args.output_dir, model_card_block(totals, self.training_type))
        except (OSError, yaml.YAMLError) as exc:
            log.warning("could not write the model card's co2_eq_emissions: %s", exc)


def resume_checkpoint() -> str | None:
    """The checkpoint path a resumed pod starts from (CARBONTRACK_RESUME_FROM), else None."""
    found = _client.resume_from()
    return found[1] if found else None
