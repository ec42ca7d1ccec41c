"""The static memory check (graphspec.budget) and the shape bound (graph.MAX_VALUES).

Every model over its budget is refused before a tensor is allocated: proven in-process by making allocation
itself fail (the refusal comes first) and in a subprocess whose address space is limited to 2 GiB (a 12 GiB layer
is refused with the budget's message, not an allocation failure). The expected byte counts are computed by hand
from the layer formulas, never read back from the estimate.
"""
from __future__ import annotations

import json
import os
import struct
import subprocess
import sys

import pytest

import graphspec
from graphspec import budget
from graphspec.budget import MemoryBudgetError
from graphspec.errors import GraphspecError
from graphspec.graph import MAX_VALUES

from conftest import REPO

GIB = 2 ** 30

# x [10] -> d: dense 10->5 (55 parameters) -> e: dense 5->2 (12 parameters)
SMALL = """\
version: 1
name: small
inputs:
  x: {type: feed_forward, size: 10}
vertices:
  d: {type: dense, inputs: [x], out: 5}
  e: {type: dense, inputs: [d], out: 2}
outputs: [e]
"""
PARAMS = (10 * 5 + 5) + (5 * 2 + 2)  # 67 values
ACTIVATIONS_PER_EXAMPLE = 10 + 5 + 2  # x, d, e



def one_dense(name: str, size: int, out: int) -> str:
    """x [size] -> d: dense size -> out (its weight on line 6, column 3)."""
    return (f"version: 1\nname: {name}\ninputs:\n  x: {{type: feed_forward, size: {size}}}\nvertices:\n"
            f"  d: {{type: dense, inputs: [x], out: {out}}}\noutputs: [d]\n")


# 65536 -> 49152: a weight of 3,221,225,472 float32 values, 12.0 GiB
LAYER_12_GIB = one_dense("g12", 65536, 49152)
# 1e8 -> 1e8: 1e16 values, 4e16 bytes (the issue's case): over MAX_VALUES, refused when the spec is validated
LAYER_4E16_BYTES = one_dense("huge", 100000000, 100000000)
# three 10^6-fold upsamplings: [3, 1e3, 1e3] -> [3, 1e9, 1e9] (3e18 values, past MAX_VALUES) -> 1e15 per side
UPSAMPLED = """\
version: 1
name: upsampled
inputs:
  x: {type: convolutional, channels: 3, height: 1000, width: 1000}
vertices:
  u1: {type: upsampling2d, inputs: [x], size: 1000000}
  u2: {type: upsampling2d, inputs: [u1], size: 1000000}
  u3: {type: upsampling2d, inputs: [u2], size: 1000000}
outputs: [u3]
"""
HOW_TO_RAISE = ("raise it with --memory-limit SIZE (e.g. --memory-limit 64G, or 'none' for no check), in Python "
                "with memory_limit= (graphspec.build) or graphspec.budget.memory_limit(SIZE)")
LARGEST_SMALL = ("Largest vertices: 'd' (dense, output [5], parameters weight [5, 10], bias [5]): 220 B; "
                 "'e' (dense, output [2], parameters weight [2, 5], bias [2]): 48 B")
OVER_LIMIT = (f"more than the limit of 2**48 ({MAX_VALUES:,}) for one tensor: no machine could hold it, and its "
              "sizes would overflow torch's 64-bit integers")


def write(tmp_path, name: str, text: str):
    path = tmp_path / name
    path.write_text(text)
    return path


# --- sizes ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("text, size", [("8G", 8 * GIB), ("512M", 512 * 2 ** 20), ("1.5GiB", 3 * GIB // 2),
                                        ("100000", 100_000), ("2t", 2 * 2 ** 40), ("64 KB", 64 * 1024),
                                        ("none", None), ("None", None), (None, None), (4096, 4096)])
def test_sizes_are_read_in_binary_units(text, size):
    assert budget.parse_size(text) == size


@pytest.mark.parametrize("text", ["", "0", "0.1", "12X", "-5G", "G", "1e9", "lots"])
def test_a_size_that_is_not_one_is_refused(text):
    with pytest.raises(GraphspecError) as e:
        budget.parse_size(text)
    assert str(e.value) == ("expected a memory size such as 8G, 512M, 1.5GiB or a number of bytes, or 'none' for "
                            f"no limit; received {text!r}")


def test_the_flag_refuses_a_bad_size_before_anything_runs(tmp_path, capsys):
    from graphspec.cli import main
    with pytest.raises(SystemExit) as e:
        main(["forward", str(write(tmp_path, "s.yaml", SMALL)), "--memory-limit", "12X"])
    assert e.value.code == 2
    assert ("argument --memory-limit: expected a memory size such as 8G, 512M, 1.5GiB or a number of bytes, or "
            "'none' for no limit; received '12X'") in capsys.readouterr().err


def test_the_default_is_half_of_physical_memory(monkeypatch):
    monkeypatch.setattr(budget, "physical_memory", lambda: 16 * GIB)
    chosen = budget.budget()
    assert (chosen.bytes, chosen.source) == (8 * GIB, "the default of 50% of this machine's 16.0 GiB")
    monkeypatch.setattr(budget, "physical_memory", lambda: None)
    assert budget.budget().bytes is None  # a system that does not say: no default limit


def test_memory_limit_scopes_the_budget():
    with budget.memory_limit("1K"):
        assert budget.budget().bytes == 1024
        with budget.memory_limit("none"):
            assert budget.budget().bytes is None
        assert budget.budget(5000).bytes == 5000  # an explicit limit wins over the enclosing one
    assert budget.budget().source.startswith("the default of 50%")


# --- the estimate ----------------------------------------------------------------------------------------------


def test_estimates_by_hand():
    spec = graphspec.load_spec(SMALL)
    assert budget.estimate(spec).total == PARAMS * 4
    assert budget.estimate(spec, batch_size=3).total == PARAMS * 4 + ACTIVATIONS_PER_EXAMPLE * 3 * 4
    # training: weight, gradient and Adam's two moments per trainable value; activations and their gradients
    assert budget.estimate(spec, batch_size=3, training=True).total == (
        PARAMS * 4 * budget.TRAINING_PARAMETER_COPIES
        + ACTIVATIONS_PER_EXAMPLE * 3 * 4 * budget.TRAINING_ACTIVATION_COPIES)
    # a frozen vertex keeps its weights only
    assert budget.estimate(spec, batch_size=3, training=True, frozen={"d"}).total == (
        55 * 4 + 12 * 4 * budget.TRAINING_PARAMETER_COPIES
        + ACTIVATIONS_PER_EXAMPLE * 3 * 4 * budget.TRAINING_ACTIVATION_COPIES)


# --- build ----------------------------------------------------------------------------------------------------


def test_build_refuses_one_byte_over_and_builds_at_the_budget():
    with pytest.raises(MemoryBudgetError) as e:
        graphspec.build(SMALL, memory_limit=PARAMS * 4 - 1)
    assert str(e.value) == (
        f"<string>:6:3: building the model needs about 268 B (parameters, float32), more than the budget of 267 B "
        f"(set with --memory-limit or memory_limit=); {HOW_TO_RAISE}. {LARGEST_SMALL}")
    assert e.value.exit_code == 2
    net = graphspec.build(SMALL, memory_limit=PARAMS * 4)  # just under (at) the budget: built
    assert sum(p.numel() for p in net.parameters()) == PARAMS
    assert graphspec.build(SMALL, memory_limit=None) is not None


def test_a_refused_build_allocates_nothing(monkeypatch):
    """The check comes before the first module is made: allocation is made to fail, and is never reached."""
    def no_allocation(spec, vertex):
        raise AssertionError(f"allocation of '{vertex}' started")
    monkeypatch.setattr(budget, "allocating", no_allocation)
    monkeypatch.setattr(budget, "physical_memory", lambda: 16 * GIB)
    with pytest.raises(MemoryBudgetError, match=r"^<string>:6:3: building the model needs about 12\.0 GiB "
                                                 r"\(parameters, float32\), more than the budget of 8\.0 GiB \(the "
                                                 r"default of 50% of this machine's 16\.0 GiB\)"):
        graphspec.build(LAYER_12_GIB)
    with budget.memory_limit("100"), pytest.raises(MemoryBudgetError):
        graphspec.open(SMALL)  # open builds under the enclosing limit


def test_running_out_of_memory_anyway_is_a_located_error(monkeypatch):
    """With the check turned off, an allocation that fails names the vertex (exit 2), not an internal error."""
    import torch
    real = torch.empty

    def failing(*args, **kwargs):
        raise RuntimeError("[enforce fail at alloc_cpu.cpp:127] DefaultCPUAllocator: can't allocate memory: you "
                           "tried to allocate 220 bytes.")
    monkeypatch.setattr(torch, "empty", failing)
    with pytest.raises(MemoryBudgetError) as e:
        graphspec.build(SMALL, memory_limit="none")
    monkeypatch.setattr(torch, "empty", real)
    assert str(e.value) == ("<string>:6:3: vertex 'd': out of memory while allocating its parameters: RuntimeError: "
                            "[enforce fail at alloc_cpu.cpp:127] DefaultCPUAllocator: can't allocate memory: you "
                            "tried to allocate 220 bytes.; free memory, or use a smaller model")


# --- the commands -----------------------------------------------------------------------------------------------


def test_forward_running_out_of_memory_is_an_error_not_an_internal_error(cli, tmp_path, monkeypatch):
    """The estimate passed (or was turned off) and the pass itself ran out: exit 2, saying what ran out."""
    import torch.nn.functional as F

    def failing(*args, **kwargs):
        raise RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 9 bytes.")
    monkeypatch.setattr(F, "linear", failing)
    path = write(tmp_path, "small.yaml", SMALL)
    rc, out, err = cli("forward", path, "--batch-size", "3", "--memory-limit", "none")
    assert (rc, out) == (2, "")
    assert err == ("error: out of memory during the forward pass of a batch of 3: RuntimeError: DefaultCPUAllocator: "
                   "can't allocate memory: you tried to allocate 9 bytes.; use a smaller batch, free memory, or use "
                   "a smaller model\n")


def test_a_memory_error_anywhere_in_a_command_is_an_error_not_an_internal_error(cli, tmp_path, monkeypatch):
    from graphspec import summary

    def failing(*args, **kwargs):
        raise MemoryError()
    monkeypatch.setattr(summary, "summarize", failing)
    rc, out, err = cli("summary", write(tmp_path, "small.yaml", SMALL))
    assert (rc, err) == (2, "error: out of memory during 'graphspec summary': MemoryError; use a smaller batch, "
                            "free memory, or use a smaller model\n")


def test_forward_checks_its_batch(cli, tmp_path):
    path = write(tmp_path, "small.yaml", SMALL)
    total = PARAMS * 4 + ACTIVATIONS_PER_EXAMPLE * 3 * 4  # 472 bytes at batch 3
    rc, out, err = cli("forward", path, "--batch-size", 3, "--memory-limit", total - 1, "--device", "cpu")
    assert rc == 2 and out == ""
    assert err == (f"error: {path}:6:3: a forward pass at batch 3 needs about 472 B (parameters 268 B + "
                   f"activations 204 B, float32), more than the budget of 471 B (set with --memory-limit or "
                   f"memory_limit=); {HOW_TO_RAISE}. Largest vertices: 'd' (dense, output [5], parameters weight "
                   f"[5, 10], bias [5]): 280 B; 'x' (input [10]): 120 B; 'e' (dense, output [2], parameters weight "
                   f"[2, 5], bias [2]): 72 B\n")
    rc, out, _ = cli("forward", path, "--batch-size", 3, "--memory-limit", total, "--device", "cpu")
    assert rc == 0 and out.startswith("e: [3, 2] ok\n")
    rc, out, _ = cli("forward", path, "--memory-limit", "none", "--device", "cpu")
    assert rc == 0


def test_init_checks_the_parameters(cli, tmp_path):
    path, model = write(tmp_path, "small.yaml", SMALL), tmp_path / "m.safetensors"
    rc, _, err = cli("init", path, "-o", model, "--memory-limit", "267")
    assert rc == 2 and err.startswith(f"error: {path}:6:3: building the model needs about 268 B")
    assert not model.exists()
    assert cli("init", path, "-o", model, "--memory-limit", "268")[0] == 0 and model.exists()


def test_train_checks_what_training_keeps(cli, tmp_path):
    path = write(tmp_path, "small.yaml", SMALL)
    rc, _, err = cli("train", path, "--data", "synthetic", "--out", tmp_path / "run", "--batch-size", 3,
                     "--memory-limit", "1K", "-q")
    assert rc == 2
    assert err.startswith(f"error: {path}:6:3: training at batch 3 needs about 1.4 KiB (parameters with gradients "
                          f"and Adam state 1.0 KiB + activations and their gradients 408 B, float32), more than the "
                          f"budget of 1.0 KiB (set with --memory-limit or memory_limit=)")


def test_the_issues_cases_are_refused_at_once(cli, tmp_path, monkeypatch):
    """4e16 bytes: refused when the spec is validated (over MAX_VALUES); 12 GiB: refused by the default budget of a
    16 GiB machine, before anything is allocated."""
    monkeypatch.setattr(budget, "allocating", lambda spec, vertex: pytest.fail("allocation started"))
    monkeypatch.setattr(budget, "physical_memory", lambda: 16 * GIB)
    huge, big = write(tmp_path, "huge.yaml", LAYER_4E16_BYTES), write(tmp_path, "g12.yaml", LAYER_12_GIB)
    for command in (["forward", huge], ["init", huge, "-o", tmp_path / "h.safetensors"], ["validate", huge]):
        rc, out, err = cli(*command)
        assert (rc, out) == (2, "")
        assert err == (f"error: {huge}:6:3: vertex 'd': its parameter 'weight' [100000000, 100000000] holds "
                       f"10,000,000,000,000,000 values, {OVER_LIMIT}\n")
    for command in (["forward", big], ["init", big, "-o", tmp_path / "g.safetensors"]):
        rc, _, err = cli(*command)
        assert rc == 2
        what = "a forward pass at batch 2" if command[0] == "forward" else "building the model"
        parts = "parameters 12.0 GiB + activations 896.0 KiB, float32" if command[0] == "forward" else \
            "parameters, float32"
        largest = "12.0 GiB" if command[0] == "forward" else "12.0 GiB"
        assert err == (f"error: {big}:6:3: {what} needs about 12.0 GiB ({parts}), more than the budget of 8.0 GiB "
                       f"(the default of 50% of this machine's 16.0 GiB); {HOW_TO_RAISE}. Largest vertices: 'd' "
                       f"(dense, output [49152], parameters weight [49152, 65536], bias [49152]): {largest}"
                       + ("; 'x' (input [65536]): 512.0 KiB\n" if command[0] == "forward" else "\n"))


# --- shapes bounded ---------------------------------------------------------------------------------------------


def test_a_shape_past_the_bound_is_refused_where_it_starts(cli, tmp_path):
    path = write(tmp_path, "up.yaml", UPSAMPLED)
    rc, out, err = cli("validate", path)
    assert (rc, out) == (2, "")
    # u2 and u3 follow from u1: only u1 is reported
    assert err == (f"error: {path}:6:3: vertex 'u1': its output shape [3, 1000000000, 1000000000] (per example) "
                   f"holds 3,000,000,000,000,000,000 values, {OVER_LIMIT}\n")
    assert cli("forward", path)[0] == 2


def test_the_bound_is_inclusive(tmp_path):
    at = """\
version: 1
name: at-the-bound
inputs:
  x: {type: convolutional, channels: 65536, height: 65536, width: WIDTH}
vertices:
  a: {type: activation, inputs: [x], activation: relu}
outputs: [a]
"""
    assert graphspec.load_spec(at.replace("WIDTH", "65536")).analysis.shapes["a"] == (65536,) * 3  # 2**48 values
    with pytest.raises(GraphspecError) as e:
        graphspec.load_spec(at.replace("WIDTH", "65537"))
    assert str(e.value) == (f"<string>:4:3: vertex 'x': its shape [65536, 65536, 65537] (per example) holds "
                            f"{65536 * 65536 * 65537:,} values, {OVER_LIMIT}")


def test_a_dimension_of_2_to_the_62_is_refused_by_the_spec_language(cli, tmp_path):
    path = write(tmp_path, "d.yaml", SMALL.replace("out: 5", f"out: {2 ** 62}"))
    rc, _, err = cli("validate", path)
    assert rc == 2 and "'out': input should be less than or equal to 100000000; received 4611686018427387904" in err


# --- summary never allocates, a refusal in a process that cannot allocate ---------------------------------------


def _model_file_with_spec(tmp_path, spec_text: str):
    """A valid model file (small weights) whose embedded spec is ``spec_text`` (its hash updated)."""
    from graphspec.model_io import spec_hash
    path = tmp_path / "small.safetensors"
    graphspec.save(graphspec.build(SMALL), path)
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + n])
    header["__metadata__"].update(spec=spec_text, spec_sha256=spec_hash(spec_text))
    out = tmp_path / "embedded.safetensors"
    head = json.dumps(header).encode()
    out.write_bytes(struct.pack("<Q", len(head)) + head + raw[8 + n:])
    return out


ADDRESS_SPACE = 2 * GIB  # importing torch fits; a 12 GiB tensor cannot


def _in_a_small_process(commands: list[list[str]]) -> list[tuple[int, str, str]]:
    """(exit status, stderr, stdout) of each command, run by graphspec.cli.main in one process limited to 2 GiB of
    address space, on a machine said to have 16 GiB."""
    script = f"""
import contextlib, io, json, resource, sys
resource.setrlimit(resource.RLIMIT_AS, ({ADDRESS_SPACE}, {ADDRESS_SPACE}))
from graphspec import budget
from graphspec.cli import main
budget.physical_memory = lambda: {16 * GIB}
results = []
for argv in {commands!r}:
    err = io.StringIO()
    out = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
        results.append((main(argv), err.getvalue(), out.getvalue()))
print(json.dumps(results))
"""
    env = dict(os.environ, OMP_NUM_THREADS="1")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300, cwd=REPO,
                          env=env)
    assert done.returncode == 0, done.stderr
    return [tuple(r) for r in json.loads(done.stdout.strip().splitlines()[-1])]


def test_refused_without_allocating_and_summary_is_static(tmp_path):
    big = write(tmp_path, "g12.yaml", LAYER_12_GIB)
    huge = write(tmp_path, "huge.yaml", LAYER_4E16_BYTES)
    model = _model_file_with_spec(tmp_path, LAYER_12_GIB)
    results = _in_a_small_process([
        ["forward", str(big)], ["init", str(big), "-o", str(tmp_path / "g.safetensors")],
        ["forward", str(huge)], ["forward", str(model)], ["summary", str(model), "--format", "json"],
        ["forward", str(big), "--memory-limit", "none"]])
    for rc, err, _ in results[:4]:
        assert rc == 2, err
        assert "internal error" not in err
    for (_, err, _), what in zip(results[:2], ("a forward pass at batch 2", "building the model")):
        assert err.startswith(f"error: {big}:6:3: {what} needs about 12.0 GiB")  # the budget's refusal
    assert "holds 10,000,000,000,000,000 values" in results[2][1]
    assert results[3][1].startswith(f"error: {model}[spec]:6:3: a forward pass at batch 2 needs about 12.0 GiB")
    rc, err, out = results[4]  # the summary of a model file whose spec needs 12 GiB: computed, not built
    assert (rc, err) == (0, "")
    assert json.loads(out)["totals"]["param_bytes"] == (65536 * 49152 + 49152) * 4
    # without the check the allocation itself fails (what the refusals above avoid), named, not internal
    rc, err, _ = results[5]
    assert rc == 2 and err.startswith(f"error: {big}:6:3: vertex 'd': out of memory while allocating its parameters")


def test_a_batch_multiplied_past_the_bound_is_refused():
    """Stack vertices multiply the batch without changing the per-example shape: the bound counts the rows too."""
    fan = 100
    vertices = {"s1": ["x"] * fan, "s2": ["s1"] * fan, "s3": ["s2"] * fan, "s4": ["s3"] * fan}
    text = "version: 1\nname: stacked\ninputs:\n  x: {type: feed_forward, size: 10000000}\nvertices:\n" + "".join(
        f"  {name}: {{type: stack, inputs: [{', '.join(ins)}]}}\n" for name, ins in vertices.items()) + \
        "outputs: [s4]\n"
    spec_3 = graphspec.load_spec(text.replace("s4", "s3").split("  s3: ")[0] + "outputs: [s2]\n")
    assert spec_3.analysis.batch["s2"] == fan ** 2
    with pytest.raises(GraphspecError) as e:
        graphspec.load_spec(text)
    assert str(e.value) == (f"<string>:9:3: vertex 's4': its output shape [10000000] (per example, at "
                            f"100,000,000× the network's batch) holds 1,000,000,000,000,000 values, {OVER_LIMIT}")


@pytest.mark.parametrize("command", ["forward", "init", "train", "export", "embed"])
def test_the_flag_is_documented_in_the_help(command, capsys):
    from graphspec.cli import main
    with pytest.raises(SystemExit) as e:
        main([command, "--help"])
    assert e.value.code == 0
    assert " ".join(capsys.readouterr().out.split()).count(
        "--memory-limit SIZE refuse a model whose estimated memory is over SIZE (e.g. 8G, 512M; 'none': no check; "
        "default 50% of this machine's memory), before allocating it") == 1


@pytest.mark.parametrize("name", ["nn4small2", "resnet18", "mobilenet_v2", "unet", "siamese"])
def test_the_build_check_s_quick_bound_is_never_below_the_estimate(name):
    """Every build checks its parameters against the budget from their shapes alone (no summary); a layer shared
    by several vertices counts once per vertex there, so the bound may only be above the estimate."""
    from specs_tiny import SIAMESE
    spec = graphspec.load_spec(SIAMESE if name == "siamese" else name)
    bound, exact = budget._parameter_bound(spec), budget.estimate(spec).parameter_bytes
    assert bound == exact if name != "siamese" else bound == 2 * exact
