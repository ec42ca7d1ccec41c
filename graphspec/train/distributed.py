"""Distributed training on torch.distributed: DistributedDataParallel, launched by torch's elastic launcher.

``graphspec train ... --nproc-per-node N`` re-runs the same command in N worker processes through
``torch.distributed.launcher`` (what ``torchrun --standalone`` uses); a command started by ``torchrun`` (one or
several nodes, c10d rendezvous) is recognised by its environment (RANK, WORLD_SIZE). The backend follows the
device: gloo on CPU, nccl on CUDA.

Semantics: the global batch is what the user asked for, split across ranks; every rank draws the same batch order
and augmentation (from seed, epoch and batch) and takes its slice, so N processes compute what one process would.
Gradients are all-reduced by DDP; center-loss center updates are all-reduced before they are applied, so centers
stay identical everywhere; batch normalisation is per rank or synchronised (``sync_batchnorm``); only rank 0 logs,
evaluates and writes checkpoints and the final model.
"""
from __future__ import annotations

import os
import sys
import uuid
from dataclasses import dataclass

import torch
import torch.distributed as dist

from ..errors import GraphspecError
from ..log import logger


@dataclass
class Context:
    """Where this process stands; the default is a single process."""

    rank: int = 0
    world: int = 1
    device: str = "cpu"

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world > 1

    def reduce_sum(self, t: torch.Tensor) -> torch.Tensor:
        """Sum over ranks, in place (identity for one process)."""
        if self.active:
            dist.all_reduce(t, op=dist.ReduceOp.SUM)
        return t

    def any(self, flag: bool) -> bool:
        """True on every rank when it is true on one (stop requests must be taken together)."""
        if not self.active:
            return flag
        t = torch.tensor([1.0 if flag else 0.0], device=self.device)  # nccl reduces CUDA tensors only
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return bool(t.item())

    def part(self, n: int) -> slice:
        """This rank's share of a global batch of n examples (contiguous, sizes differ by at most one)."""
        start = self.rank * n // self.world
        return slice(start, (self.rank + 1) * n // self.world)

    def wrap(self, module: torch.nn.Module, find_unused: bool = False) -> torch.nn.Module:
        if not self.active:
            return module
        import warnings

        from torch.nn.parallel import DistributedDataParallel
        with warnings.catch_warnings():  # broadcast_buffers=False is what we mean: BN statistics stay per rank
            warnings.simplefilter("ignore", FutureWarning)
            return DistributedDataParallel(module, find_unused_parameters=find_unused, broadcast_buffers=False)

    def barrier(self) -> None:
        if self.active:
            dist.barrier()


def processes_for(device: str | None) -> int:
    """How many processes ``--device`` asks for on this machine: one per GPU for ``auto`` and ``cuda`` (each
    process then takes the GPU of its ``LOCAL_RANK``), one for a named GPU or the CPU."""
    from ..devices import resolve
    return torch.cuda.device_count() if resolve(device) == "cuda" else 1


def under_launcher() -> bool:
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


def init_from_env(device: str | None = "cpu") -> Context:
    """This process's place: alone on ``device`` (``auto``: a GPU when there is one), or the process group the
    launcher (ours or torchrun) described in the environment, one GPU per process (``LOCAL_RANK``) with nccl when
    the device is CUDA, else the CPU with gloo."""
    from ..devices import resolve
    device = resolve(device)
    if not under_launcher():
        logger.debug(f"device: {device}")
        return Context(device=device)
    world = int(os.environ["WORLD_SIZE"])
    rank = int(os.environ["RANK"])
    cuda = device.startswith("cuda")
    if cuda:
        local = int(os.environ.get("LOCAL_RANK", 0))
        torch.cuda.set_device(local)
        device = f"cuda:{local}"
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if cuda else "gloo")
    logger.debug(f"rank {rank} of {world} on {device} ({'nccl' if cuda else 'gloo'})")
    return Context(rank, world, device)


_left_group = False


def shutdown(ok: bool = True) -> None:
    """Leave the process group; after a successful run all ranks leave together (a rank tearing down while
    another still communicates can abort inside gloo). After a failure there is no barrier: it could hang."""
    global _left_group
    if dist.is_initialized():
        if ok:
            dist.barrier()
        dist.destroy_process_group()
        _left_group = True


def end_process(code: int) -> int:
    """Return ``code``, or, in a worker that has left its process group, end the process with it at once.

    Even after ``destroy_process_group`` a gloo worker can abort in the interpreter's teardown ("terminate called
    without an active exception", SIGABRT, no Python frame: a C++ thread destroyed while still joinable): 5 of 58
    runs of the 2-process test on a 2-core machine. Its work is done and written by then, but the launcher would
    report the run failed; a worker therefore flushes what it printed and logged and skips the teardown."""
    if not _left_group:
        return code
    import logging
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def launch(argv: list[str], nproc: int) -> int:
    """Run ``graphspec <argv>`` in ``nproc`` local workers; a failed worker ends the run with a clear message."""
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch
    config = LaunchConfig(min_nodes=1, max_nodes=1, nproc_per_node=nproc, run_id=str(uuid.uuid4()),
                          rdzv_backend="c10d", rdzv_endpoint="localhost:0", max_restarts=0, monitor_interval=0.5)
    try:
        elastic_launch(config, sys.executable)("-m", "graphspec.cli", *argv)
    except ChildFailedError as e:
        failures = ", ".join(f"rank {rank} (exit {f.exitcode})" for rank, f in sorted(e.failures.items()))
        raise GraphspecError(f"distributed training failed: worker {failures}; the other workers were stopped. "
                             "The last checkpoint in the run directory is intact: continue with --resume") from e
    return 0
