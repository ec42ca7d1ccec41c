"""OpenMP's idle threads: a short spin before they sleep (libgomp's ``GOMP_SPINCOUNT``), set before torch loads.

torch runs its CPU operators on libgomp's thread pool. After a parallel region an idle pool thread spins —
300,000 rounds by default, ~8–10 ms of a core here — so that the next operator finds it awake. That suits a
process that does nothing but torch. ``graphspec embed`` on the CPU takes turns: the network on every core, then
Pillow decoding the next batch on every core (Python threads). After each network pass the pool thread's spin
held one of the two cores the decoding needed: waiting for the decoding took 0.25–0.34 s per 512 photos instead
of 0.21–0.23 s with 10,000 rounds (~0.1–3 ms), and embed ran ~6% faster; the network alone and the training step
were unchanged within the machine's spread (BENCHMARKS.md). 10,000 rounds still bridge the gaps between the
operators of a forward pass or a training step.

libgomp reads the variable once, when torch loads it: ``import graphspec`` sets it first thing, which takes effect
when graphspec is imported before torch (the command line always is; a Python program that imports torch first
keeps libgomp's default). A value already set, and ``OMP_WAIT_POLICY``, are left as they are
(``GOMP_SPINCOUNT=300000`` restores libgomp's default); other OpenMP runtimes do not read it. Child processes
(distributed training's workers) inherit it. This module must not import torch.
"""
from __future__ import annotations

import os
import sys

SPIN_ROUNDS = 10_000


def shorten_idle_spin() -> bool:
    """Set ``GOMP_SPINCOUNT`` to :data:`SPIN_ROUNDS` unless torch is loaded already (libgomp has read the
    environment) or the spin was chosen (``GOMP_SPINCOUNT`` or ``OMP_WAIT_POLICY`` set); True when it set it."""
    if "torch" in sys.modules or "GOMP_SPINCOUNT" in os.environ or "OMP_WAIT_POLICY" in os.environ:
        return False
    os.environ["GOMP_SPINCOUNT"] = str(SPIN_ROUNDS)
    return True
