"""``--device`` / ``device=``: names resolved or refused with the reason, the plumbing on the CPU device (what a GPU
run does with another device string), fp16's requirements; GPU runs themselves are measured in BENCHMARKS.md."""
from __future__ import annotations

import pytest
import torch

import graphspec
from graphspec.devices import resolve, to
from graphspec.errors import GraphspecError
from graphspec.train.distributed import Context, processes_for

CPU_ONLY = not torch.cuda.is_available()
cpu_only = pytest.mark.skipif(not CPU_ONLY, reason="this machine has a CUDA GPU")


@cpu_only
def test_auto_is_the_cpu_on_a_machine_without_a_gpu():
    mps = getattr(torch.backends, "mps", None)
    assert resolve("auto") == ("mps" if mps is not None and mps.is_available() else "cpu")
    assert resolve(None) == resolve("auto") and resolve(" CPU ") == "cpu"
    assert processes_for("auto") == 1 and processes_for("cpu") == 1


@cpu_only
@pytest.mark.parametrize("name", ["cuda", "cuda:1"])
def test_cuda_without_a_gpu_is_refused_saying_why(name):
    why = "this torch is a CPU-only build" if torch.version.cuda is None else "torch sees no CUDA GPU"
    with pytest.raises(GraphspecError) as e:
        resolve(name)
    assert e.value.problem.message == f"--device {name}: {why}; use --device cpu (or auto)"


def test_an_unknown_device_is_refused_naming_the_choices():
    with pytest.raises(GraphspecError) as e:
        resolve("tpu")
    assert e.value.problem.message == "unknown device 'tpu'; expected auto, cpu, cuda, cuda:N or mps"


def test_to_moves_tensors_inside_tuples_lists_and_dicts_and_leaves_the_rest():
    x = {"a": torch.ones(2), "b": (torch.zeros(1), [torch.ones(1)]), "c": 3}
    moved = to(x, "cpu")
    assert moved["c"] == 3 and isinstance(moved["b"], tuple) and isinstance(moved["b"][1], list)
    assert torch.equal(moved["a"], x["a"])


def test_fp16_is_refused_off_cuda_and_with_dl4j_semantics():
    from graphspec.train.recipe import Recipe
    from graphspec.train.trainer import Trainer, TrainingError
    from test_trainer import CONV, PRE, TRAIN
    with pytest.raises(TrainingError) as e:
        Trainer(graphspec.build(CONV), Recipe(precision="fp16", semantics="pytorch"), TRAIN, preprocessing=PRE)
    assert e.value.problem.message == "precision fp16 needs a CUDA device (this run is on cpu); use bf16 on CPUs"
    from graphspec.execution import Execution
    with pytest.raises(GraphspecError, match=r"precision fp16 needs a CUDA device \(this run is on cpu\)"):
        Execution(precision="fp16")


def test_a_trainer_on_the_named_device_trains_exactly_as_the_default(tmp_path):
    from test_trainer import CONV, EVAL, PRE, TRAIN, assert_same_state, recipe
    from graphspec.train.trainer import Trainer
    runs = [Trainer(graphspec.build(CONV), recipe(epochs=1), TRAIN, EVAL, preprocessing=PRE, progress=False,
                    **kw) for kw in ({}, {"device": "cpu"}, {"ctx": Context(device="cpu")})]
    for t in runs:
        t.fit()
    assert_same_state(runs[0].model, runs[1].model)
    assert_same_state(runs[0].model, runs[2].model)


def test_dl4j_updater_state_restored_from_a_checkpoint_lands_on_the_parameters_device():
    from graphspec.train.steps import DL4JStep
    from test_trainer import CONV, PRE, TRAIN, recipe
    from graphspec.train.trainer import Trainer
    t = Trainer(graphspec.build(CONV), recipe(epochs=1), TRAIN, preprocessing=PRE, progress=False)
    t.fit()
    saved = {k: v.clone() for k, v in t.step.state_dict().items()}
    fresh = DL4JStep(t.model)
    fresh.load_state_dict(saved)
    for layer in fresh.layers:
        for k, u in layer.updaters.items():
            for v in u.state.values():
                assert v.device == layer.params[k].device
    assert fresh.state_dict().keys() == saved.keys()


@cpu_only
def test_the_command_line_refuses_a_missing_gpu_before_any_work(cli, tmp_path):
    rc, _, err = cli("train", "specs/nn4small2.yaml", "--data", "synthetic", "--device", "cuda",
                     "--out", str(tmp_path / "run"))
    assert rc == 2 and "--device cuda: " in err and "use --device cpu (or auto)" in err
    assert not (tmp_path / "run").exists()
    rc, _, err = cli("forward", "specs/nn4small2.yaml", "--device", "cuda:0")
    assert rc == 2 and "--device cuda:0: " in err


@cpu_only
def test_export_refuses_a_missing_gpu_before_reading_the_model_and_traces_on_the_cpu(cli, tmp_path):
    rc, _, err = cli("export", "no-such-model.safetensors", "--device", "cuda", "-o", str(tmp_path / "x.pt"))
    assert rc == 2 and "--device cuda: " in err and "no-such-model" not in err
    rc, out, err = cli("export", "specs/nn4small2.yaml", "--format", "torchscript", "--device", "cpu",
                       "-o", str(tmp_path / "x.pt"))
    assert rc == 0, err
    assert "max abs difference" in out
