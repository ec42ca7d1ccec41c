"""What a training run tells the world and how it decides to stop: DL4J's ``TrainingListener`` and Keras's
``Callback``, as one small class.

    >>> class Print(Listener):
    ...     def on_eval(self, trainer, metrics):
    ...         print(trainer.epoch, metrics.get("accuracy"))

Every listener sees four moments: ``on_iteration`` (after each update, with its score), ``on_eval`` (after the
per-epoch evaluation, with its metrics), ``on_epoch`` (an epoch is complete) and ``on_checkpoint`` (a checkpoint was
written). A listener with state that a resumed run needs (the best value so far, evaluations without improvement)
returns it from ``state_dict`` and gets it back from ``load_state_dict``: the trainer keeps it in its checkpoints.

The run's records (one per logged iteration and one per epoch, as in ``metrics.jsonl``) go to every
:class:`MetricLogger`: :class:`CSVLogger` and :class:`TensorBoardLogger` here.
"""
from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Any

from ..errors import GraphspecError


class Listener:
    """Callbacks of a training run; override what you need."""

    def on_iteration(self, trainer, score: float) -> None: ...

    def on_eval(self, trainer, metrics: dict) -> None: ...

    def on_epoch(self, trainer, metrics: dict) -> None: ...

    def on_checkpoint(self, trainer, path: Path) -> None: ...

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


class MetricLogger(Listener):
    """Receives every record of the run (``type`` "score": epoch, iteration, score, lr, images_per_s; ``type``
    "epoch": epoch, iteration and the evaluation metrics)."""

    def write(self, record: dict) -> None: ...

    def close(self) -> None: ...


class CSVLogger(MetricLogger):
    """``scores.csv`` (one row per logged iteration) and ``epochs.csv`` (one row per epoch, a column per metric) in
    the run directory; a resumed run appends."""

    def __init__(self, run_dir: "str | Path"):
        self.folder = Path(run_dir)
        self._columns: dict[Path, list[str]] = {}  # each file's header, read once (a resumed run appends)

    def write(self, record: dict) -> None:
        kind = record.get("type")
        name = {"score": "scores.csv", "epoch": "epochs.csv"}.get(kind)
        if name is None:
            return
        path = self.folder / name
        row = {k: v for k, v in record.items() if k != "type" and not isinstance(v, (dict, list))}
        if path not in self._columns:
            self._columns[path] = _header(path) or list(row)
        new = not path.exists()
        self.folder.mkdir(parents=True, exist_ok=True)
        with open(path, "a", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=self._columns[path], extrasaction="ignore")
            if new:
                writer.writeheader()
            writer.writerow(row)


def _header(path: Path) -> list[str] | None:
    if not path.exists():
        return None
    with open(path, newline="") as f:
        return next(csv.reader(f), None)


class TensorBoardLogger(MetricLogger):
    """TensorBoard event files in ``RUN_DIR/tensorboard``: ``train/score``, ``train/lr``, ``train/images_per_s``
    per logged iteration and ``eval/METRIC`` per epoch, against the iteration. Needs the ``tensorboard`` extra."""

    def __init__(self, run_dir: "str | Path"):
        self.check()
        from torch.utils.tensorboard import SummaryWriter
        self.writer = SummaryWriter(str(Path(run_dir) / "tensorboard"))

    @staticmethod
    def check() -> None:
        """Refuse now when TensorBoard is not installed."""
        import importlib.util
        if importlib.util.find_spec("tensorboard") is None:
            raise GraphspecError("--log tensorboard needs TensorBoard: pip install 'graphspec[tensorboard]'")

    def write(self, record: dict) -> None:
        step = int(record.get("iteration", 0))
        prefix = {"score": "train", "epoch": "eval"}.get(record.get("type"))
        if prefix is None:
            return
        for key, value in record.items():
            if key not in ("type", "epoch", "iteration") and isinstance(value, (int, float)) \
                    and not isinstance(value, bool):
                self.writer.add_scalar(f"{prefix}/{key}", value, step)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


LOGGERS = {"csv": CSVLogger, "tensorboard": TensorBoardLogger}


# metrics where smaller is better; every other metric (accuracy, precision, recall, f1, auc) is better larger
SMALLER_IS_BETTER = ("loss", "score", "mse", "mae", "eer")


class Monitor(Listener):
    """DL4J's ``EarlyStoppingConfiguration`` in one listener: after each evaluation, the monitored ``metric``
    (an evaluation metric, or ``score``: the epoch's mean training score) is compared with the best so far;
    ``keep_best`` saves the model to ``RUN_DIR/best.safetensors`` whenever it improves (the best-model saver), and
    ``patience`` stops the run after that many evaluations without improvement (the termination condition).
    Its state is in the checkpoints, so a resumed run counts on."""

    def __init__(self, metric: str, *, keep_best: bool = False, patience: int | None = None,
                 min_delta: float = 0.0):
        self.metric, self.keep_best, self.patience, self.min_delta = metric, keep_best, patience, min_delta
        self.smaller = metric.rsplit("/", 1)[-1] in SMALLER_IS_BETTER
        self.best, self.best_epoch, self.waited = math.nan, 0, 0
        self.stopped = False

    def on_eval(self, trainer, metrics: dict) -> None:
        if self.metric not in metrics:
            known = ", ".join(k for k, v in metrics.items() if isinstance(v, float))
            raise GraphspecError(f"cannot monitor '{self.metric}': the evaluation gives {known or 'nothing'}")
        value = float(metrics[self.metric])
        if self._improves(value):
            self.best, self.best_epoch, self.waited = value, trainer.epoch + 1, 0
            if self.keep_best and trainer.run_dir is not None and trainer.ctx.is_main:
                from ..model_io import save
                save(trainer.model, trainer.run_dir / "best.safetensors")
            return
        self.waited += 1
        if self.patience is not None and self.waited >= self.patience:
            self.stopped = True
            trainer.stop(f"early stop: {self.metric} has not improved for {self.waited} evaluations (best "
                         f"{self.best:.6g} at epoch {self.best_epoch})")

    def _improves(self, value: float) -> bool:
        if math.isnan(value):
            return False
        if math.isnan(self.best):
            return True
        return value < self.best - self.min_delta if self.smaller else value > self.best + self.min_delta

    def state_dict(self) -> dict[str, Any]:
        return {"best": self.best, "best_epoch": self.best_epoch, "waited": self.waited}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.best, self.best_epoch = float(state["best"]), int(state["best_epoch"])
        self.waited = int(state["waited"])
