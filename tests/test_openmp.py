"""graphspec.openmp: ``import graphspec`` shortens libgomp's idle spin (GOMP_SPINCOUNT) when it comes before torch,
and leaves the environment alone when torch is already loaded or the user chose a spin. Each case runs in a fresh
interpreter: what matters is the order of imports in a new process, as the command line starts one."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from graphspec.openmp import SPIN_ROUNDS

ROOT = Path(__file__).resolve().parents[1]
VARIABLES = ("GOMP_SPINCOUNT", "OMP_WAIT_POLICY")


def _fresh_environment(**env: str) -> dict:
    """This process's environment without the OpenMP variables (so the test's own do not leak in), plus ``env``."""
    return {**{k: v for k, v in os.environ.items() if k not in VARIABLES}, **env}


def _environment_after(code: str, **env: str) -> dict:
    """The OpenMP variables of a fresh interpreter after ``code``, started with ``env``."""
    probe = code + f"\nimport json, os\nprint(json.dumps({{k: os.environ.get(k) for k in {VARIABLES!r}}}))"
    out = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, env=_fresh_environment(**env, PYTHONPATH=str(ROOT)),
                         capture_output=True, text=True, check=True).stdout
    return json.loads(out.splitlines()[-1])


def test_importing_graphspec_first_sets_a_short_spin_before_torch_loads():
    seen = _environment_after("import graphspec, sys\nassert 'torch' in sys.modules")
    assert seen == {"GOMP_SPINCOUNT": str(SPIN_ROUNDS), "OMP_WAIT_POLICY": None}


def test_torch_loaded_first_keeps_libgomps_default():
    # libgomp has read its environment when torch loaded: setting the variable then would only mislead
    assert _environment_after("import torch\nimport graphspec")["GOMP_SPINCOUNT"] is None


@pytest.mark.parametrize("env, expected", [
    ({"GOMP_SPINCOUNT": "300000"}, {"GOMP_SPINCOUNT": "300000", "OMP_WAIT_POLICY": None}),
    ({"OMP_WAIT_POLICY": "PASSIVE"}, {"GOMP_SPINCOUNT": None, "OMP_WAIT_POLICY": "PASSIVE"}),
])
def test_a_spin_the_user_chose_is_left_as_it_is(env, expected):
    assert _environment_after("import graphspec", **env) == expected


def test_the_module_itself_does_not_load_torch():
    # graphspec/__init__.py calls it before anything imports torch; importing it must not import torch itself
    out = subprocess.run([sys.executable, "-c", "import importlib.util, sys\n"
                          "spec = importlib.util.spec_from_file_location('openmp', 'graphspec/openmp.py')\n"
                          "m = importlib.util.module_from_spec(spec); spec.loader.exec_module(m)\n"
                          "print(m.shorten_idle_spin(), 'torch' in sys.modules)"],
                         cwd=ROOT, capture_output=True, text=True, check=True, env=_fresh_environment())
    assert out.stdout.split() == ["True", "False"]
