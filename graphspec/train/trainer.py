"""The training loop behind ``graphspec train``, usable from Python:

>>> trainer = Trainer(model, recipe, train_data, eval_data, run_dir="runs/x")   # doctest: +SKIP
>>> trainer.fit()                                                                 # doctest: +SKIP

The trainer consumes batches: the data layer's pipeline (:class:`graphspec.data.Batches`) reads, augments and
scales them from (seed, epoch, batch) alone, and the RNG state is checkpointed, so a run interrupted at any
iteration and resumed ends bit-identical to an uninterrupted one.
"""
from __future__ import annotations

import contextlib
import json
import math
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from ..devices import to
from ..errors import GraphspecError, Location
from ..log import logger
from ..text import printable_lines
from .checkpoint import (CheckpointError, checkpoints, load_checkpoint, os_error_of, remove_partial,
                         save_checkpoint)
from .evaluation import head_metrics, verification_metrics
from .listeners import Listener, MetricLogger
from .recipe import Recipe
from .steps import DL4JStep, TorchStep, fused_if_possible, param_groups

UNREADABLE = ".unreadable"  # suffix of a checkpoint a resume could not read, kept aside for inspection


class TrainingError(GraphspecError):
    exit_code = 1


class RunWriteError(TrainingError):
    """A write into the run folder failed (a full disk, a folder made read-only): the run stopped, and its last good
    checkpoint is intact (checkpoints are written atomically)."""


class Interrupted(GraphspecError):
    """Ctrl-C: the run stopped after an iteration and saved a checkpoint; not an error."""

    exit_code = 130
    label = "interrupted"


@dataclass
class _Clock:
    start: float = field(default_factory=time.perf_counter)
    images: int = 0


def java_double(x: float) -> str:
    """Java's ``Double.toString``: plain decimals for 1e-3 <= |x| < 1e7, else ``d.dddE-n`` (DL4J's score lines)."""
    import numpy as np
    if x != x or x in (float("inf"), float("-inf")):
        return {True: "NaN"}.get(x != x, "Infinity" if x > 0 else "-Infinity")
    if x == 0 or 1e-3 <= abs(x) < 1e7:
        text = repr(float(x))
        return text if "e" not in text else np.format_float_positional(x, unique=True, trim="0")
    mantissa, exponent = np.format_float_scientific(x, unique=True, trim="0").split("e")
    if "." not in mantissa:
        mantissa += ".0"
    return f"{mantissa}E{int(exponent)}"


class Trainer:
    def __init__(self, model: torch.nn.Module, recipe: Recipe, train, evaluation=None,
                 *, run_dir: str | Path | None = None, preprocessing: Any = None,
                 listeners: Sequence[Listener] = (), console=None, progress: bool = True, ctx=None,
                 device: str | None = None):
        from ..devices import resolve
        from .distributed import Context
        self.ctx = ctx or Context(device=resolve(device or "cpu"))
        _check_precision(recipe, self.ctx.device)
        model.to(self.ctx.device)  # parameters, batch-norm statistics and centers; optimizer state follows them
        self.model, self.recipe, self.train_data, self.eval_data = model, recipe, train, evaluation
        self.run_dir = Path(run_dir) if run_dir else None
        self.preprocessing = preprocessing or model.graphspec.preprocessing  # None: the data layer's default
        self.listeners, self.console, self.show_progress = list(listeners), console, progress
        self.input_shape = next(iter(model.graphspec.spec.inputs.values())).shape
        self.epoch, self.batch_in_epoch, self.iteration = 0, 0, 0
        self.last_score = float("nan")
        self._stop = self.timed_out = False
        self.stop_reason: str | None = None  # a listener's reason to end the run early (early stopping)
        self._epoch_scores: list[float] = []
        self._minutes_before = 0.0  # training minutes of earlier sessions of this run (resume)
        nhwc = recipe.channels_last if recipe.channels_last is not None else len(self.input_shape) == 3
        self._memory_format = torch.channels_last if nhwc else torch.contiguous_format
        if nhwc:
            model.to(memory_format=torch.channels_last)
        if recipe.sync_batchnorm and self.ctx.active:
            for name, v in model.graphspec.spec.vertices.items():
                if v.entry.batch_statistics:
                    model.get_submodule(v.module).sync = True
        check_training_data(train, recipe)
        self.batches = self._batches(train, recipe.batch_size, recipe.data.shuffle, recipe.data.per_class)
        self.step = self._make_step()
        if recipe.tbptt_length:
            from . import tbptt
            tbptt.check(model, recipe.tbptt_length)
        self._check_targets(train)

    # --- setup ---------------------------------------------------------------------------------------------

    def _make_step(self):
        if self.recipe.semantics == "dl4j":
            return DL4JStep(self.model, self.ctx, self.recipe.precision, self.recipe.losses)
        o = self.recipe.optimizer
        wd = o.weight_decay if o.weight_decay is not None else self._spec_l2()
        groups = param_groups(self.model, wd)
        if o.type == "sgd":
            opt = torch.optim.SGD(groups, lr=o.lr, momentum=o.momentum, nesterov=o.nesterov and o.momentum > 0)
        else:
            kind = torch.optim.Adam if o.type == "adam" else torch.optim.AdamW
            opt = fused_if_possible(kind, groups, lr=o.lr, betas=o.betas, eps=o.eps)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(opt, self._lr_factor)
        return TorchStep(self.model, opt, self.recipe.clip_grad_norm, self.ctx, self.recipe.precision,
                         self.recipe.losses)

    def _spec_l2(self) -> float:
        return float(self.model.graphspec.spec.defaults.l2)

    @property
    def batches_per_epoch(self) -> int:
        return len(self.batches)

    def _lr_factor(self, iteration: int) -> float:
        s, per = self.recipe.schedule, self.batches_per_epoch
        progress = iteration / per  # in epochs
        if s.clock == "time" and self.recipe.max_minutes and hasattr(self, "_started"):
            elapsed = (time.perf_counter() - self._started) / 60 + self._minutes_before
            progress = elapsed / self.recipe.max_minutes * self.recipe.epochs
        if s.warmup_epochs and progress < s.warmup_epochs:
            return (progress + 1 / per) / s.warmup_epochs
        if s.type == "cosine":
            span = max(self.recipe.epochs - s.warmup_epochs, 1e-9)
            t = min(max(progress - s.warmup_epochs, 0) / span, 1.0)
            return s.min_lr_ratio + (1 - s.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * t))
        if s.type == "step":
            return s.gamma ** int(progress // s.step_epochs)
        return 1.0

    # --- data ----------------------------------------------------------------------------------------------

    def _batches(self, data, batch_size: int, shuffle: bool | None = None, per_class: int | None = None):
        """The data layer's pipeline over ``data``: this recipe's order and augmentation, cropping at random to
        the network's input size (evaluation: the centre window)."""
        from ..data.augment import CropError
        from ..data.batches import Batches
        size = tuple(self.input_shape[-2:]) if len(self.input_shape) == 3 else None
        augmentation = self.recipe.augmentation.pipeline(size, self.recipe.seed)
        try:
            return Batches(data, batch_size, shuffle=shuffle, augmentation=augmentation,
                           preprocessing=self.preprocessing, seed=self.recipe.seed, per_class=per_class)
        except CropError as e:
            raise TrainingError(f"{e} (the network's input)") from e
        except ValueError as e:
            raise TrainingError(f"the training data: {e}") from e

    def _check_targets(self, data) -> None:
        """The targets of the whole training set against the outputs, before any work."""
        from ..data.batches import as_targets
        from .steps import check_targets
        targets = getattr(data, "targets", None)  # datasets by name hold them as arrays; labelled data as labels
        y = as_targets(targets if targets is not None else np.asarray(data.labels))
        analysis = self.model.graphspec.analysis
        check_targets(self.step.heads, y, {h.name: analysis.pattern(h.name) for h in self.step.heads})

    def _to_model(self, x):
        """On the model's device, in the layout it runs in (NHWC for images when channels_last); several inputs
        stay a tuple."""
        if isinstance(x, tuple):
            return tuple(self._to_model(t) for t in x)
        if isinstance(x, dict):
            return {k: self._to_model(t) for k, t in x.items()}
        x = x.to(self.ctx.device, non_blocking=True)
        return x.contiguous(memory_format=self._memory_format) if x.dim() == 4 else x

    # --- loop ----------------------------------------------------------------------------------------------

    def fit(self, epochs: int | None = None) -> torch.nn.Module:
        epochs = epochs or self.recipe.epochs
        self._epochs = epochs
        self._started = time.perf_counter()
        with self._sigint(), self._progress(epochs) as bar:
            while self.epoch < epochs:
                self._run_epoch(bar)
                if self._stop and self.timed_out:  # the time budget: a normal end, with a checkpoint
                    if self.run_dir:
                        self.save_checkpoint()
                    break
                if self._stop:
                    path = self.save_checkpoint()
                    raise Interrupted(f"interrupted at epoch {self.epoch + 1}, iteration {self.iteration}; "
                                      f"checkpoint saved to {path}; continue with --resume")
                self._end_epoch()
                if self.stop_reason is not None:  # a listener ended the run (early stopping): a normal end
                    self._print(self.stop_reason)
                    break
        self._close_loggers()
        return self.model

    def _end_epoch(self) -> None:
        """Evaluate, log and tell the listeners; then the next epoch starts from a checkpoint."""
        metrics = self.evaluate()
        if self._epoch_scores:
            metrics = {"score": float(np.mean(self._epoch_scores)), **metrics}
        self._epoch_scores = []
        self._log({"type": "epoch", "epoch": self.epoch + 1, "iteration": self.iteration, **metrics})
        shown = [f"{k[:1].upper() + k[1:]}: {v:.4f}" for k, v in metrics.items() if isinstance(v, float)]
        self._print(f"Epoch {self.epoch + 1} complete" + ("" if not shown else " | " + " | ".join(shown)))
        with self.writing("a listener's file (best model, logs)"):
            for listener in self.listeners:
                listener.on_eval(self, metrics)
            for listener in self.listeners:
                listener.on_epoch(self, metrics)
        self.epoch, self.batch_in_epoch = self.epoch + 1, 0
        if self.run_dir:
            self.save_checkpoint()

    def stop(self, reason: str) -> None:
        """End the run after this epoch as a normal end (what early stopping calls); ``reason`` is printed."""
        self.stop_reason = reason

    def _close_loggers(self) -> None:
        for listener in self.listeners:
            if isinstance(listener, MetricLogger):
                listener.close()

    def _run_epoch(self, bar) -> None:
        order = self.batches.order(self.epoch)
        clock = _Clock()
        for b in range(self.batch_in_epoch, self.batches_per_epoch):
            if self._out_of_time():
                self._print(f"time budget of {self.recipe.max_minutes:g} minutes used up")
                self._stop = self.timed_out = True
                return
            n = len(self.batches.indices(self.epoch, b, order=order))  # the global batch
            x, y = self.batches.batch(self.epoch, b, self.ctx.part(n), order=order)
            lr = self._lr()  # the rate this step uses (the scheduler moves it afterwards)
            score = self._fit_batch(self._to_model(x), to(y, self.ctx.device), n)
            if not math.isfinite(score):
                last = checkpoints(self.run_dir)[-1] if self.run_dir and checkpoints(self.run_dir) else None
                where = f"the last good checkpoint is {last}" if last else "no checkpoint was written yet"
                raise TrainingError(f"the score became {score} at epoch {self.epoch + 1}, iteration "
                                    f"{self.iteration}; stopping ({where}). Lower the learning rate or check the data")
            if self.recipe.semantics == "pytorch":
                self.scheduler.step()
            self.iteration += 1
            self.batch_in_epoch = b + 1
            self.last_score = score
            self._epoch_scores.append(score)
            clock.images += n
            self._after_iteration(score, lr, clock, bar)
            self._stop = self.ctx.any(self._stop)  # every rank stops at the same iteration
            if self._stop:
                return

    def _fit_batch(self, x, y, n: int) -> float:
        """One update on the batch, or with truncated BPTT one per part of it (the score: the parts' mean)."""
        if not self.recipe.tbptt_length:
            return self.step(x, y, n)
        from . import tbptt
        return tbptt.step(self.step, self.model, x, y, n, self.recipe.tbptt_length)

    def _after_iteration(self, score: float, lr: float, clock: _Clock, bar) -> None:
        rate = clock.images / max(time.perf_counter() - clock.start, 1e-9)
        done = self.iteration - 1  # DL4J's ScoreIterationListener: logs its calls 0, n, 2n, ...
        if done % self.recipe.print_every == 0:
            self._print(f"Score at iteration {done} is {java_double(score)}")
            self._log({"type": "score", "epoch": self.epoch + 1, "iteration": done, "score": score,
                       "lr": lr, "images_per_s": round(rate, 2)})
        if bar is not None:
            bar.update(self._task, advance=1, score=score, rate=rate, epoch=f"{self.epoch + 1}/{self._epochs}")
        for listener in self.listeners:
            listener.on_iteration(self, score)

    def _out_of_time(self) -> bool:
        budget = self.recipe.max_minutes
        return budget is not None and (time.perf_counter() - self._started) / 60 + self._minutes_before >= budget

    def _lr(self) -> float:
        if self.recipe.semantics == "pytorch":
            return float(self.step.optimizer.param_groups[0]["lr"])
        return float(self.model.graphspec.spec.defaults.updater.lr)

    @torch.no_grad()
    def evaluate(self, data=None, batch_size: int = 128) -> dict:
        data = data if data is not None else self.eval_data
        if data is None or len(data) == 0 or not self.ctx.is_main:
            return {}
        from ..compiler import call, subgraph
        from .steps import label_mask, target_of
        heads = self.step.heads
        trunk = subgraph(self.model, sorted({h.input for h in heads} | {h.name for h in heads}), with_masks=True)
        was = self.model.training
        self.model.eval()
        seen: dict[str, list] = {h.name: [] for h in heads}
        try:
            for x, y in self._batches(data, batch_size, shuffle=False).evaluation():
                out, reached = call(trunk, self.model.graphspec.spec, self._to_model(x))
                y = to(y, self.ctx.device)
                for h in heads:
                    mask = label_mask(y, h.name, reached[h.input]) if h.entry.per_position else None
                    seen[h.name].append((out[h.name], out[h.input], target_of(y, h.name), mask))
        finally:
            self.model.train(was)
        if self.recipe.data.eval_by == "person":  # unseen identities: compare, not classify
            metrics = {h.name: verification_metrics(_cat([part[1] for part in seen[h.name]]), data.labels,
                                                    seed=self.recipe.seed) for h in heads}
        else:
            metrics = {h.name: head_metrics(h, *(_cat(parts) for parts in zip(*seen[h.name]))) for h in heads}
        if len(heads) == 1:
            return metrics[heads[0].name]
        return {f"{name}/{k}": v for name, m in metrics.items() for k, v in m.items()}

    # --- state ---------------------------------------------------------------------------------------------

    def state(self) -> dict:
        state = {"model": dict(self.model.state_dict()), "step": self.step.state_dict(), "epoch": self.epoch,
                 "batch_in_epoch": self.batch_in_epoch, "iteration": self.iteration,
                 "step_iteration": self.step.iteration, "torch_rng": torch.get_rng_state(),
                 "minutes": self._minutes_before + (time.perf_counter() - self._started) / 60
                 if hasattr(self, "_started") else self._minutes_before,
                 "recipe": self.recipe.model_dump(mode="json"),
                 "epoch_scores": list(self._epoch_scores),
                 "listeners": [listener.state_dict() for listener in self.listeners]}
        if self.recipe.semantics == "pytorch":
            state["scheduler"] = self.scheduler.state_dict()
        return state

    def restore(self, state: dict) -> None:
        with torch.no_grad():
            for k, v in self.model.state_dict().items():
                v.copy_(state["model"][k])
        self.step.load_state_dict(state["step"])
        self.epoch, self.batch_in_epoch = int(state["epoch"]), int(state["batch_in_epoch"])
        self.iteration, self.step.iteration = int(state["iteration"]), int(state["step_iteration"])
        torch.set_rng_state(state["torch_rng"])
        self._minutes_before = float(state.get("minutes", 0.0))
        self._epoch_scores = [float(v) for v in state.get("epoch_scores", [])]
        for listener, saved in zip(self.listeners, state.get("listeners", [])):
            listener.load_state_dict(saved)
        if self.recipe.semantics == "pytorch":
            self.scheduler.load_state_dict(state["scheduler"])

    def save_checkpoint(self) -> Path:
        """Rank 0 writes; every rank returns the path (all ranks hold the same state)."""
        if not self.run_dir:
            raise TrainingError("no run directory: cannot save a checkpoint")
        state = self.state()
        path = self.run_dir / "checkpoints" / f"ckpt-{self.iteration:08d}.safetensors"
        if self.ctx.is_main:
            with self.writing(f"the checkpoint {path.name}"):
                path = save_checkpoint(self.run_dir, self.iteration, state, self.recipe.keep_checkpoints)
        self.ctx.barrier()
        logger.debug(f"checkpoint: {path} (epoch {self.epoch + 1}, iteration {self.iteration})")
        for listener in self.listeners:
            listener.on_checkpoint(self, path)
        return path

    def resume(self) -> bool:
        """Restore the latest readable checkpoint of the run directory (an unreadable latest one is set aside with
        a warning naming both); False if there is none."""
        if self.run_dir:
            remove_partial(self.run_dir)
        found = checkpoints(self.run_dir) if self.run_dir else []
        if not found:
            return False
        path, state = self._latest_readable(found)
        try:
            self.restore(state)
        except (KeyError, RuntimeError, ValueError, TypeError) as e:  # a state of another network or optimizer
            raise CheckpointError(f"the checkpoint does not fit this run's network and recipe ({type(e).__name__}: "
                                  f"{e}); was it copied from another run?", location=Location(str(path))) from e
        return True

    def _latest_readable(self, found: list[Path]) -> tuple[Path, dict]:
        """The state of the newest checkpoint of ``found`` that reads; each newer one that does not is renamed
        ``*.unreadable`` (so it is never taken for the latest again) and named in a warning."""
        unreadable: list[CheckpointError] = []
        for path in reversed(found):
            try:
                state = load_checkpoint(path)
            except CheckpointError as e:
                unreadable.append(e)
                continue
            for e in unreadable:
                logger.warning(f"checkpoint {e.problem.location.file} is unreadable ({e.problem.message}); resuming "
                               f"from the previous good one, {path}")
                with contextlib.suppress(OSError):  # a read-only folder: the warning comes again next time
                    bad = Path(e.problem.location.file)
                    bad.rename(bad.with_name(bad.name + UNREADABLE))
            return path, state
        raise CheckpointError("no readable checkpoint to resume from: " + "; ".join(str(e) for e in unreadable),
                              location=Location(str(found[-1].parent)))

    # --- output --------------------------------------------------------------------------------------------

    def _log(self, record: dict) -> None:
        """One record of the run: to ``metrics.jsonl`` and every :class:`MetricLogger` (rank 0 only)."""
        if not self.ctx.is_main:
            return
        with self.writing("metrics.jsonl and the logs"):
            if self.run_dir:
                self.run_dir.mkdir(parents=True, exist_ok=True)
                with open(self.run_dir / "metrics.jsonl", "a") as f:
                    f.write(json.dumps(record) + "\n")
            for listener in self.listeners:
                if isinstance(listener, MetricLogger):
                    listener.write(record)

    @contextlib.contextmanager
    def writing(self, what: str):
        """A failed write into the run folder (disk full, read-only) ends the run with a :class:`RunWriteError`
        naming the folder and the last good checkpoint, instead of the writer's own error."""
        try:
            yield
        except Exception as e:
            failed = os_error_of(e)
            if failed is None or self.run_dir is None:
                raise
            found = checkpoints(self.run_dir)
            last = (f"the last good checkpoint, {found[-1]}, is intact: make room (or make the folder writable) and "
                    "continue with --resume") if found else "no checkpoint was written yet"
            raise RunWriteError(f"cannot write {what} into the run folder: {failed.strerror or failed}; the run "
                                f"stopped after iteration {self.iteration}; {last}",
                                location=Location(str(self.run_dir))) from e

    def _print(self, line: str) -> None:
        if self.console is not None and self.ctx.is_main:
            # a line may quote names from files: shown as written, never as markup or control sequences
            self.console.print(printable_lines(line), markup=False, highlight=False)

    def _progress(self, epochs: int):
        import contextlib
        if not self.show_progress or self.console is None or not self.ctx.is_main:
            return contextlib.nullcontext(None)
        from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn
        bar = Progress(TextColumn("epoch {task.fields[epoch]}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                       TextColumn("{task.fields[rate]:.1f} img/s"), TimeRemainingColumn(),
                       TextColumn("score {task.fields[score]:.5g}"), console=self.console, transient=False)
        total = epochs * self.batches_per_epoch
        self._task = bar.add_task("train", total=total, completed=self.iteration, epoch=f"{self.epoch + 1}/{epochs}",
                                  score=float("nan"), rate=0.0)
        return bar

    def _sigint(self):
        import contextlib
        if threading.current_thread() is not threading.main_thread():
            return contextlib.nullcontext()

        @contextlib.contextmanager
        def handler():
            def on_sigint(signum, frame):
                if self._stop:  # second Ctrl-C: stop now
                    raise KeyboardInterrupt
                self._stop = True
                self._print("stopping after this iteration (Ctrl-C again to abort without a checkpoint)")
            previous = signal.signal(signal.SIGINT, on_sigint)
            try:
                yield
            finally:
                signal.signal(signal.SIGINT, previous)
        return handler()


def check_training_data(train, recipe: Recipe) -> None:
    """Refuse training data without an example (an evaluation split that takes them all), before any work."""
    if len(train) > 0:
        return
    fraction = recipe.data.eval_fraction
    if fraction > 0:
        raise GraphspecError(f"'data.eval_fraction': {fraction:g} leaves no training example; lower it",
                             location=recipe.where("data.eval_fraction"), path=("data", "eval_fraction"))
    raise GraphspecError("the training data holds no example")


def _check_precision(recipe: Recipe, device: str) -> None:
    if recipe.precision == "fp16" and not device.startswith("cuda"):
        raise TrainingError(f"precision fp16 needs a CUDA device (this run is on {device}); use bf16 on CPUs")
    if recipe.precision == "fp16" and recipe.semantics == "dl4j":
        raise TrainingError("precision fp16 scales the loss, which DL4J's updaters do not: use bf16 or the pytorch "
                            "semantics")


def _cat(parts):
    """The batches' tensors joined (None when none of them has one: a mask that no batch carries)."""
    return None if any(p is None for p in parts) else torch.cat(parts)
