"""Block expansion: FaceNetHelper.appendGraph reproduced by the nn4small2 block, optional inception branches,
a ResNet basic block written once and used several times, and the exact errors of bad block usage."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from graphspec import SpecError, build, load_spec
from graphspec.graph import analyze

NN4 = "specs/nn4small2.yaml"


# --- helpers --------------------------------------------------------------------------------------------------


def line_col(text: str, needle: str, key: str | None = None) -> tuple[int, int]:
    """1-based (line, column) of ``key`` on the only line of ``text`` that contains ``needle``."""
    lines = text.splitlines()
    hits = [i for i, line in enumerate(lines) if needle in line]
    assert len(hits) == 1, f"{needle!r} found on lines {[h + 1 for h in hits]}"
    line = lines[hits[0]]
    return hits[0] + 1, line.index(key if key is not None else needle) + 1


def load_error(text: str, tmp_path, name: str = "spec.yaml") -> tuple[SpecError, str]:
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(SpecError) as ei:
        load_spec(str(path))
    return ei.value, str(path)


def facenet_names(m: str, n_kernel: int, n_reduce: int) -> list[str]:
    """The vertices FaceNetHelper.appendGraph adds, in insertion order (SEMANTICS §7)."""
    names = []
    for i in range(n_kernel):
        names += [f"{m}-cnn1-{i}", f"{m}-batch1-{i}", f"{m}-transfer1-{i}", f"{m}-reduce1-{i}", f"{m}-batch2-{i}",
                  f"{m}-transfer2-{i}"]
    if n_reduce > n_kernel:
        names += [f"{m}-pool1", f"{m}-cnn2", f"{m}-batch3", f"{m}-transfer3"]
    if n_reduce > n_kernel + 1:
        names += [f"{m}-reduce2", f"{m}-batch4", f"{m}-transfer4"]
    return names + [m]


# --- (a) nn4small2: inception-3a/3b/4a are exactly FaceNetHelper.appendGraph ----------------------------------

# SEMANTICS §7 "Tutorial calls": input layer, inputSize, kernel, stride, out, reduce, pooling, pNorm
TUTORIAL_CALLS = {
    "inception-3a": ("inception-2-pool1", 192, [3, 5], [1, 1], [128, 32], [96, 16, 32, 64], "max", 0),
    "inception-3b": ("inception-3a", 256, [3, 5], [1, 1], [128, 64], [96, 32, 64, 64], "pnorm", 2),
    "inception-4a": ("inception-3c", 640, [3, 5], [1, 1], [192, 64], [96, 32, 128, 256], "pnorm", 2),
}


@pytest.fixture(scope="module")
def nn4():
    return build(NN4, seed=1)


@pytest.mark.parametrize("m", sorted(TUTORIAL_CALLS))
def test_nn4small2_inception_names_and_order(nn4, m):
    spec = nn4.graphspec.spec
    layer_in, _, kernel, _, _, reduce, _, _ = TUTORIAL_CALLS[m]
    expected = facenet_names(m, len(kernel), len(reduce))
    assert len(expected) == 2 * 6 + 4 + 3 + 1
    names = list(spec.vertices)
    start = names.index(expected[0])
    assert names[start:start + len(expected)] == expected  # contiguous, in appendGraph's insertion order
    assert [n for n, v in spec.vertices.items() if v.group == (m,)] == expected
    # the vertex before the block is not part of it, nor is the one after
    assert spec.vertices[names[start - 1]].group != (m,)
    assert spec.vertices[names[start + len(expected)]].group != (m,)


@pytest.mark.parametrize("m", sorted(TUTORIAL_CALLS))
def test_nn4small2_inception_wiring_and_parameters(nn4, m):
    spec, analysis = nn4.graphspec.spec, nn4.graphspec.analysis
    layer_in, size, kernel, stride, out, reduce, pooling, pnorm = TUTORIAL_CALLS[m]
    k = len(kernel)
    vx = spec.vertices

    def conv(name, inputs, n_in, n_out, ker, st):
        v = vx[name]
        assert (v.type, v.inputs) == ("conv", inputs), name
        inf = analysis.inference[name]
        assert (inf.n_in, inf.n_out) == (n_in, n_out), name
        assert v.cfg.kernel == (ker, ker) and v.cfg.stride == (st, st), name
        assert v.cfg.bias_init == 0.2, name
        assert v.cfg.convolution_mode == "same" and v.cfg.activation == "identity" and v.cfg.weight_init == "relu"
        bias = nn4.get_submodule(name).bias
        assert torch.equal(bias, torch.full((n_out,), 0.2)), name

    def bn_act(bn, act, src, c):
        assert (vx[bn].type, vx[bn].inputs) == ("batchnorm", [src])
        assert analysis.inference[bn].n_in == c
        assert (vx[act].type, vx[act].inputs, vx[act].cfg.activation) == ("activation", [bn], "relu")

    for i in range(k):
        conv(f"{m}-cnn1-{i}", [layer_in], size, reduce[i], 1, 1)
        bn_act(f"{m}-batch1-{i}", f"{m}-transfer1-{i}", f"{m}-cnn1-{i}", reduce[i])
        conv(f"{m}-reduce1-{i}", [f"{m}-transfer1-{i}"], reduce[i], out[i], kernel[i], stride[i])
        bn_act(f"{m}-batch2-{i}", f"{m}-transfer2-{i}", f"{m}-reduce1-{i}", out[i])
    pool = vx[f"{m}-pool1"]
    assert (pool.type, pool.inputs) == ("subsampling", [layer_in])
    assert (pool.cfg.pooling, pool.cfg.kernel, pool.cfg.stride) == (pooling, (3, 3), (1, 1))
    assert pool.cfg.padding == ((1, 1) if pooling == "max" else (0, 0))
    if pooling == "pnorm":
        assert pool.cfg.pnorm == pnorm
    conv(f"{m}-cnn2", [f"{m}-pool1"], size, reduce[k], 1, 1)
    bn_act(f"{m}-batch3", f"{m}-transfer3", f"{m}-cnn2", reduce[k])
    conv(f"{m}-reduce2", [layer_in], size, reduce[k + 1], 1, 1)
    bn_act(f"{m}-batch4", f"{m}-transfer4", f"{m}-reduce2", reduce[k + 1])
    merge = vx[m]
    assert merge.type == "merge"
    assert merge.inputs == [f"{m}-transfer2-0", f"{m}-transfer2-1", f"{m}-transfer3", f"{m}-transfer4"]
    assert analysis.shapes[m][0] == sum(out) + reduce[k] + reduce[k + 1]


def test_nn4small2_merge_channel_totals(nn4):
    shapes = nn4.graphspec.analysis.shapes
    # SEMANTICS §7 / Appendix C item 8
    assert [shapes[n] for n in ("inception-3a", "inception-3b", "inception-3c", "inception-4a", "inception-4e",
                                "inception-5a", "inception-5b")] == \
        [(256, 12, 12), (320, 12, 12), (640, 6, 6), (640, 6, 6), (1024, 3, 3), (736, 3, 3), (736, 3, 3)]
    assert len(nn4.graphspec.spec.vertices) == 133


def test_nn4small2_conv_bias_init_only_in_facenet_blocks(nn4):
    spec = nn4.graphspec.spec
    for name, v in spec.vertices.items():
        if v.type != "conv":
            continue
        in_facenet = v.group and v.group[0] in TUTORIAL_CALLS
        assert v.cfg.bias_init == (0.2 if in_facenet else 0.0), name
    assert sum(1 for v in spec.vertices.values() if v.type == "conv" and v.cfg.bias_init == 0.2) == 3 * 6


def test_nn4small2_conv_bn_block_alias(nn4):
    spec = nn4.graphspec.spec
    # the conv_bn block's output is `$act`: using the instance name refers to that vertex
    assert spec.vertices["3c-3x3"].inputs == ["3c-transfer1"]
    assert spec.vertices["3c-1x1"].group == ("3c-1x1",)
    assert spec.vertices["3c-transfer1"].group == ("3c-1x1",)
    assert spec.vertices["inception-3c"].group == ()
    assert spec.vertices["inception-3c"].inputs == ["3c-transfer2", "3c-2-transfer4", "3c-pool"]


# --- (b) the optional branches of the facenet block ------------------------------------------------------------

# Copied from specs/nn4small2.yaml (indented to sit under `blocks:`).
FACENET_BLOCK = """\
  facenet_inception:
    params: {kernel: required, stride: required, out: required, reduce: required,
             pool: max, pnorm: 0, pool_size: 3, pool_stride: 1, transfer: relu, in: null}
    require:
      - if: (len(kernel), len(reduce)) in [(1, 3), (2, 2), (2, 3), (2, 4)]
        message: Only kernel of shape 1 or 2 and a reduce shape between 2 and 4 is supported.
      - if: len(stride) == len(kernel) and len(out) == len(kernel)
        message: kernel, stride and out must have the same length
    vertices:
      for i in range(len(kernel)):
        $name-cnn1-$i: {type: conv, inputs: [$input], in: $in, kernel: 1, out: "${reduce[i]}", bias_init: 0.2}
        $name-batch1-$i: {type: batchnorm, inputs: [$name-cnn1-$i]}
        $name-transfer1-$i: {type: activation, inputs: [$name-batch1-$i], activation: $transfer}
        $name-reduce1-$i: {type: conv, inputs: [$name-transfer1-$i], kernel: "${kernel[i]}",
                           stride: "${stride[i]}", out: "${out[i]}", bias_init: 0.2}
        $name-batch2-$i: {type: batchnorm, inputs: [$name-reduce1-$i]}
        $name-transfer2-$i: {type: activation, inputs: [$name-batch2-$i], activation: $transfer}
      if len(reduce) > len(kernel):
        $name-pool1: {type: subsampling, inputs: [$input], pooling: $pool, kernel: $pool_size,
                      stride: $pool_stride, pnorm: $pnorm, padding: "${1 if pool == 'max' else 0}"}
        $name-cnn2: {type: conv, inputs: [$name-pool1], in: $in, kernel: 1,
                     out: "${reduce[len(kernel)]}", bias_init: 0.2}
        $name-batch3: {type: batchnorm, inputs: [$name-cnn2]}
        $name-transfer3: {type: activation, inputs: [$name-batch3], activation: $transfer}
      if len(reduce) > len(kernel) + 1:
        $name-reduce2: {type: conv, inputs: [$input], in: $in, kernel: 1,
                        out: "${reduce[len(kernel) + 1]}", bias_init: 0.2}
        $name-batch4: {type: batchnorm, inputs: [$name-reduce2]}
        $name-transfer4: {type: activation, inputs: [$name-batch4], activation: $transfer}
      $name:
        type: merge
        inputs:
          - for i in range(len(kernel)): [$name-transfer2-$i]
          - if len(reduce) > len(kernel): [$name-transfer3]
          - if len(reduce) > len(kernel) + 1: [$name-transfer4]
"""


def facenet_spec(kernel, reduce, *, out=None, stride=None, pool="max", extra="") -> str:
    out = out if out is not None else [5 + 2 * i for i in range(len(kernel))]
    stride = stride if stride is not None else [1] * len(kernel)
    return f"""\
version: 1
name: facenet-branches
seed: 3
defaults: {{activation: identity, weight_init: relu, convolution_mode: same}}
inputs:
  x: {{type: convolutional, channels: 6, height: 7, width: 7}}
blocks:
{FACENET_BLOCK}
vertices:
  pre: {{type: activation, inputs: [x], activation: relu}}
  inception-t: {{block: facenet_inception, inputs: [pre], kernel: {kernel}, stride: {stride}, out: {out}, reduce: {reduce}, pool: {pool}{extra}}}
  post: {{type: global_pool, inputs: [inception-t], pooling: avg}}
outputs: [post]
"""


# SEMANTICS §7 item 4, verbatim (m = the merge's name)
MERGE_INPUTS = {
    (1, 3): ["m-transfer2-0", "m-transfer3", "m-transfer4"],
    (2, 2): ["m-transfer2-0", "m-transfer2-1"],
    (2, 3): ["m-transfer2-0", "m-transfer2-1", "m-transfer3"],
    (2, 4): ["m-transfer2-0", "m-transfer2-1", "m-transfer3", "m-transfer4"],
}


@pytest.mark.parametrize("nk,nr", sorted(MERGE_INPUTS), ids=lambda v: str(v))
def test_facenet_optional_branches(nk, nr):
    m = "inception-t"
    kernel = [3, 5][:nk]
    reduce = [4, 3, 2, 7][:nr]
    text = facenet_spec(kernel, reduce)
    module = build(text, seed=0)
    spec, analysis = module.graphspec.spec, module.graphspec.analysis
    assert spec.vertices[m].inputs == [s.replace("m-", f"{m}-", 1) for s in MERGE_INPUTS[(nk, nr)]]
    assert [n for n in spec.vertices if n not in ("pre", "post")] == facenet_names(m, nk, nr)
    out = [5 + 2 * i for i in range(nk)]
    channels = sum(out) + sum(reduce[nk:])  # kxk branches, then pool->1x1, then 1x1
    assert analysis.shapes[m] == (channels, 7, 7)
    x = torch.randn(2, 6, 7, 7, generator=torch.Generator().manual_seed(0))
    assert tuple(module(x).shape) == (2, channels)
    assert load_spec(spec.to_yaml()) == spec


def test_facenet_merge_is_concatenation_in_listed_order():
    module = build(facenet_spec([3, 5], [4, 3, 2, 7]), seed=0)
    module.eval()
    x = torch.randn(2, 6, 7, 7, generator=torch.Generator().manual_seed(1))
    m = "inception-t"
    sub = module.get_submodule

    def chain(names, t):
        for n in names:
            t = sub(n)(t)
        return t

    pre = F.relu(x)
    branches = [chain([f"{m}-cnn1-{i}", f"{m}-batch1-{i}", f"{m}-transfer1-{i}", f"{m}-reduce1-{i}",
                       f"{m}-batch2-{i}", f"{m}-transfer2-{i}"], pre) for i in range(2)]
    branches.append(chain([f"{m}-pool1", f"{m}-cnn2", f"{m}-batch3", f"{m}-transfer3"], pre))
    branches.append(chain([f"{m}-reduce2", f"{m}-batch4", f"{m}-transfer4"], pre))
    expected = torch.cat(branches, dim=1).mean(dim=(2, 3))
    with torch.no_grad():
        assert torch.allclose(module(x), expected, atol=1e-6)


@pytest.mark.parametrize("nk,nr", [(2, 1), (1, 2), (1, 4), (2, 5), (3, 4)], ids=lambda v: str(v))
def test_facenet_unsupported_shapes_fail_with_dl4j_message(nk, nr, tmp_path):
    kernel, reduce = [3, 5, 3][:nk], [4, 3, 2, 7, 2][:nr]
    text = facenet_spec(kernel, reduce)
    err, path = load_error(text, tmp_path)
    assert len(err.problems) == 1
    p = err.problems[0]
    line, col = line_col(text, "  inception-t: {block:", "inception-t")
    assert p.vertex == "inception-t"
    assert (p.location.file, p.location.line, p.location.col) == (path, line, col)
    assert str(p) == (f"{path}:{line}:{col}: vertex 'inception-t': "
                      "Only kernel of shape 1 or 2 and a reduce shape between 2 and 4 is supported.")


def test_facenet_length_mismatch(tmp_path):
    text = facenet_spec([3, 5], [4, 3, 2], stride=[1])
    err, path = load_error(text, tmp_path)
    line, col = line_col(text, "  inception-t: {block:", "inception-t")
    assert str(err) == f"{path}:{line}:{col}: vertex 'inception-t': kernel, stride and out must have the same length"


def test_facenet_pool_variants():
    spec = load_spec(facenet_spec([3], [4, 3, 2], pool="pnorm", extra=", pnorm: 2"))
    pool = spec.vertices["inception-t-pool1"].cfg
    assert (pool.pooling, pool.pnorm, pool.padding) == ("pnorm", 2, (0, 0))
    spec = load_spec(facenet_spec([3], [4, 3, 2], pool="avg"))
    assert spec.vertices["inception-t-pool1"].cfg.padding == (0, 0)
    # DL4J: p-norm must be greater than zero
    with pytest.raises(SpecError) as ei:
        load_spec(facenet_spec([3], [4, 3, 2], pool="pnorm"))
    assert ei.value.problems[0].vertex == "inception-t-pool1"
    assert "pooling 'pnorm' needs 'pnorm' > 0" in ei.value.problems[0].message


# --- (c) a ResNet basic block written once and used three times ----------------------------------------------

RESNET = """\
version: 1
name: resnet-mini
seed: 7
defaults: {activation: identity, weight_init: relu, convolution_mode: same}
inputs:
  image: {type: convolutional, channels: 3, height: 8, width: 8}
blocks:
  basic:
    doc: conv-bn-relu-conv-bn plus a shortcut (identity, or a 1x1 projection when the shape changes), add, relu
    params: {out: required, in_ch: required, stride: 1}
    output: $name-out
    vertices:
      $name-conv1: {type: conv, inputs: [$input], kernel: 3, stride: $stride, out: $out, bias: false}
      $name-bn1: {type: batchnorm, inputs: [$name-conv1]}
      $name-relu1: {type: activation, inputs: [$name-bn1], activation: relu}
      $name-conv2: {type: conv, inputs: [$name-relu1], kernel: 3, out: $out, bias: false}
      $name-bn2: {type: batchnorm, inputs: [$name-conv2]}
      if stride != 1 or in_ch != out:
        $name-proj: {type: conv, inputs: [$input], kernel: 1, stride: $stride, out: $out, bias: false}
        $name-proj-bn: {type: batchnorm, inputs: [$name-proj]}
      $name-add:
        type: elementwise
        op: add
        inputs:
          - $name-bn2
          - if stride != 1 or in_ch != out: [$name-proj-bn]
          - if stride == 1 and in_ch == out: [$input]
      $name-out: {type: activation, inputs: [$name-add], activation: relu}
vertices:
  stem: {type: conv, inputs: [image], kernel: 3, out: 4}
  res1: {block: basic, inputs: [stem], in_ch: 4, out: 4}
  res2: {block: basic, inputs: [res1], in_ch: 4, out: 8, stride: 2}
  res3: {block: basic, inputs: [res2], in_ch: 8, out: 8}
  head: {type: global_pool, inputs: [res3], pooling: avg}
outputs: [head, res3]
"""

BASIC = ["conv1", "bn1", "relu1", "conv2", "bn2"]


def test_resnet_block_expansion():
    spec = load_spec(RESNET)
    expected = ["stem"]
    for r, proj in (("res1", False), ("res2", True), ("res3", False)):
        expected += [f"{r}-{s}" for s in BASIC] + ([f"{r}-proj", f"{r}-proj-bn"] if proj else []) + \
                    [f"{r}-add", f"{r}-out"]
    expected.append("head")
    assert list(spec.vertices) == expected
    # `group` records the instance each vertex came from; hand-written vertices have none
    for name, v in spec.vertices.items():
        assert v.group == ((name.split("-")[0],) if name.startswith("res") else ()), name
        assert spec.to_dict()["vertices"][name].get("group") == (name.split("-")[0] if v.group else None)
    # the instance name stands for the block's output vertex ($name-out), in inputs and outputs
    assert spec.vertices["res2-conv1"].inputs == ["res1-out"]
    assert spec.vertices["res2-proj"].inputs == ["res1-out"]
    assert spec.vertices["head"].inputs == ["res3-out"]
    assert spec.outputs == ["head", "res3-out"]
    assert spec.vertices["res1-add"].inputs == ["res1-bn2", "stem"]
    assert spec.vertices["res2-add"].inputs == ["res2-bn2", "res2-proj-bn"]
    assert spec.vertices["res3-add"].inputs == ["res3-bn2", "res2-out"]
    assert spec.vertices["res2-conv1"].cfg.stride == (2, 2)
    assert spec.vertices["res1-conv1"].cfg.stride == (1, 1)
    shapes = analyze(spec).shapes
    assert shapes["res1-out"] == (4, 8, 8)
    assert shapes["res2-out"] == (8, 4, 4)
    assert shapes["res3-out"] == (8, 4, 4)
    assert shapes["head"] == (8,)
    # flat document round trip keeps the groups
    again = load_spec(spec.to_yaml())
    assert again == spec
    assert again.vertices["res2-proj"].group == ("res2",)


def test_resnet_block_forward():
    module = build(RESNET)
    assert set(dict(module.named_children())) == set(module.graphspec.spec.vertices)
    x = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    sub = module.get_submodule

    def reference(x):
        t = sub("stem")(x)
        for r, proj in (("res1", False), ("res2", True), ("res3", False)):
            y = t
            for s in BASIC:
                y = sub(f"{r}-{s}")(y)
            shortcut = sub(f"{r}-proj-bn")(sub(f"{r}-proj")(t)) if proj else t
            t = F.relu(y + shortcut)
        return t

    module.eval()
    with torch.no_grad():
        out = module(x)
        assert set(out) == {"head", "res3-out"}  # the instance name in `outputs` resolves to $name-out
        res = out["res3-out"]
        assert res.shape == (2, 8, 4, 4)
        ref = reference(x)
        assert torch.allclose(res, ref, atol=1e-5)
        assert torch.allclose(out["head"], ref.mean(dim=(2, 3)), atol=1e-5)
    # train mode also runs and keeps the shapes (batch statistics: differs from eval)
    module.train()
    with torch.no_grad():
        out = module(x)
    assert out["head"].shape == (2, 8)
    assert not torch.allclose(out["head"], ref.mean(dim=(2, 3)), atol=1e-3)


def test_resnet_block_backward():
    module = build(RESNET)
    module.train()
    x = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    module(x)["head"].sum().backward()
    assert module.get_submodule("res1-conv1").weight.grad is not None
    assert module.get_submodule("res2-proj").weight.grad is not None


NESTED = """\
version: 1
name: nested
inputs:
  x: {type: convolutional, channels: 2, height: 4, width: 4}
blocks:
  unit:
    params: {out: required}
    vertices:
      $name-c: {type: conv, inputs: [$input], kernel: 1, out: $out}
      $name: {type: activation, inputs: [$name-c], activation: relu}
  stage:
    params: {n: 2, out: required}
    vertices:
      for i in range(n):
        $name-u$i: {block: unit, inputs: ["${input if i == 0 else name + '-u' + str(i - 1)}"], out: $out}
      $name: {type: scale, inputs: ["${name + '-u' + str(n - 1)}"], factor: 2}
vertices:
  s1: {block: stage, inputs: [x], n: 3, out: 5}
outputs: [s1]
"""


def test_nested_blocks_record_the_instance_path():
    spec = load_spec(NESTED)
    assert list(spec.vertices) == ["s1-u0-c", "s1-u0", "s1-u1-c", "s1-u1", "s1-u2-c", "s1-u2", "s1"]
    assert spec.vertices["s1-u1-c"].group == ("s1", "s1-u1")
    assert spec.vertices["s1"].group == ("s1",)
    assert spec.vertices["s1-u1-c"].inputs == ["s1-u0"]
    assert spec.vertices["s1-u0-c"].inputs == ["x"]
    assert spec.to_dict()["vertices"]["s1-u2-c"]["group"] == "s1/s1-u2"
    again = load_spec(spec.to_yaml())
    assert again == spec and again.vertices["s1-u2-c"].group == ("s1", "s1-u2")
    assert tuple(build(spec)(torch.zeros(2, 2, 4, 4)).shape) == (2, 5, 4, 4)


# --- (d) errors ----------------------------------------------------------------------------------------------

ERRORS = """\
version: 1
name: errors
inputs:
  x: {type: convolutional, channels: 3, height: 8, width: 8}
blocks:
  conv_unit:
    params: {out: required, k: 1}
    vertices:
      $name: {type: conv, inputs: [$input], out: $out, kernel: $k}
  loop:
    vertices:
      $name-inner: {block: loop, inputs: [$input]}
  ping:
    vertices:
      $name-pong: {block: pong, inputs: [$input]}
  pong:
    vertices:
      $name-ping: {block: ping, inputs: [$input]}
  evil:
    vertices:
      $name: {type: conv, inputs: [$input], out: "${__import__('os')}"}
  typo:
    params: {width: 4}
    vertices:
      $name: {type: conv, inputs: [$input], out: $widht, kernel: 1}
vertices:
  USE
outputs: [c]
"""

BLOCKS = "conv_unit, loop, ping, pong, evil, typo"


def errors_spec(use: str) -> str:
    return ERRORS.replace("USE", use)


def test_unknown_block(tmp_path):
    text = errors_spec("c: {block: conv_unt, inputs: [x], out: 2}")
    err, path = load_error(text, tmp_path)
    line, col = line_col(text, "c: {block: conv_unt", "block")
    assert [str(p) for p in err.problems] == [
        f"{path}:{line}:{col}: vertex 'c': unknown block 'conv_unt' (did you mean 'conv_unit'?); "
        f"defined blocks: {BLOCKS}"]


def test_unknown_block_parameter(tmp_path):
    text = errors_spec("c: {block: conv_unit, inputs: [x], out: 2, kk: 3}")
    err, path = load_error(text, tmp_path)
    line, col = line_col(text, "c: {block: conv_unit", "kk")
    assert [str(p) for p in err.problems] == [
        f"{path}:{line}:{col}: vertex 'c': block 'conv_unit' has no parameter 'kk' (did you mean 'k'?); "
        "its parameters: out, k"]


def test_missing_required_parameter(tmp_path):
    text = errors_spec("c: {block: conv_unit, inputs: [x], k: 3}")
    err, path = load_error(text, tmp_path)
    line, col = line_col(text, "c: {block: conv_unit", "c:")
    assert [str(p) for p in err.problems] == [f"{path}:{line}:{col}: vertex 'c': block 'conv_unit' needs parameter(s) 'out'"]


def test_directly_recursive_block(tmp_path):
    text = errors_spec("c: {block: loop, inputs: [x]}")
    err, path = load_error(text, tmp_path)
    line, col = line_col(text, "$name-inner: {block: loop", "block")
    assert [str(p) for p in err.problems] == [
        f"{path}:{line}:{col}: vertex 'c-inner': block 'loop' uses itself (blocks nest: loop:c); "
        "blocks must not be recursive"]


def test_mutually_recursive_blocks(tmp_path):
    text = errors_spec("c: {block: ping, inputs: [x]}")
    err, path = load_error(text, tmp_path)
    line, col = line_col(text, "$name-ping: {block: ping", "block")
    assert [str(p) for p in err.problems] == [
        f"{path}:{line}:{col}: vertex 'c-pong-ping': block 'ping' uses itself (blocks nest: ping:c -> pong:c-pong); "
        "blocks must not be recursive"]


def test_disallowed_template_expression(tmp_path):
    text = errors_spec("c: {block: evil, inputs: [x]}")
    err, path = load_error(text, tmp_path)
    line, col = line_col(text, "__import__", "out:")
    assert [str(p) for p in err.problems] == [
        f"{path}:{line}:{col}: vertex 'c': '__import__('os')' is not allowed in a template expression (only "
        "literals, names, arithmetic, comparisons, indexing and len, range, min, max, sum, int, str, abs, float, list)"]


@pytest.mark.parametrize("expr", ["x.__class__", "[a for a in range(3)]", "open('f')", "(lambda: 1)()"])
def test_other_disallowed_expressions(expr, tmp_path):
    text = errors_spec("c: {block: conv_unit, inputs: [x], out: 2}").replace(
        "out: $out, kernel: $k", 'out: "${' + expr + '}", kernel: $k')
    err, _ = load_error(text, tmp_path)
    assert len(err.problems) == 1
    assert "is not allowed in a template expression" in err.problems[0].message


def test_unknown_name_in_template(tmp_path):
    text = errors_spec("c: {block: typo, inputs: [x]}")
    err, path = load_error(text, tmp_path)
    line, col = line_col(text, "$widht", "out:")
    assert [str(p) for p in err.problems] == [
        f"{path}:{line}:{col}: vertex 'c': unknown name 'widht' (did you mean 'width'?); "
        "known: input, inputs, name, width"]


def test_unknown_name_in_expression(tmp_path):
    text = errors_spec("c: {block: typo, inputs: [x]}").replace("$widht", '"${widht * 2}"')
    err, path = load_error(text, tmp_path)
    line, col = line_col(text, "widht * 2", "out:")
    assert [str(p) for p in err.problems] == [
        f"{path}:{line}:{col}: vertex 'c': unknown name 'widht' (did you mean 'width'?); "
        "known: input, inputs, name, width"]


def test_errors_inside_expanded_vertices_name_the_block_use(tmp_path):
    # a per-vertex error in an expanded vertex points at the template line and names the use site
    text = errors_spec("c: {block: conv_unit, inputs: [x], out: 2, k: 20}")
    err, path = load_error(text, tmp_path)
    assert len(err.problems) == 1
    p = err.problems[0]
    use_line, use_col = line_col(text, "c: {block: conv_unit", "c:")
    tline, tcol = line_col(text, "$name: {type: conv, inputs: [$input], out: $out, kernel: $k}", "kernel")
    assert (p.vertex, p.location.line, p.location.col) == ("c", tline, tcol)
    assert p.message.endswith(f"(from block 'conv_unit' used at {path}:{use_line}:{use_col})")
    assert p.message.startswith("kernel 20 is larger than the input 8 plus padding 0")


def test_block_expansion_is_equivalent_to_writing_it_out():
    used = load_spec(errors_spec("c: {block: conv_unit, inputs: [x], out: 2, k: 3}"))
    flat = load_spec("""\
version: 1
name: errors
inputs:
  x: {type: convolutional, channels: 3, height: 8, width: 8}
vertices:
  c: {type: conv, inputs: [x], out: 2, kernel: 3, group: c}
outputs: [c]
""")
    assert used == flat
    assert torch.equal(build(used, seed=1).state_dict()["c.weight"], build(flat, seed=1).state_dict()["c.weight"])


# --- regressions of fixed bugs ---------------------------------------------------------------------------------


def test_tuple_valued_template_round_trips():
    text = errors_spec("c: {block: conv_unit, inputs: [x], out: 2, k: 3}").replace("kernel: $k", 'kernel: "${(k, k)}"')
    spec = load_spec(text)
    assert spec.vertices["c"].cfg.kernel == (3, 3)
    assert load_spec(spec.to_yaml()) == spec


def test_recursion_detected_for_block_names_with_colon(tmp_path):
    text = errors_spec("c: {block: 'a:b', inputs: [x]}").replace(
        "  loop:\n", "  'a:b':\n").replace("$name-inner: {block: loop", "$name-inner: {block: 'a:b'")
    err, _ = load_error(text, tmp_path)
    assert err.problems[0].vertex == "c-inner"


def test_blocks_nested_too_deep_are_refused_as_too_deep_not_as_recursive(tmp_path):
    """17 distinct blocks, each using the next: not recursive, but deeper than MAX_BLOCK_DEPTH (16)."""
    blocks = "".join(f"  b{i}:\n    vertices:\n      $name-in: {{block: b{i + 1}, inputs: [$input]}}\n"
                     for i in range(17))
    blocks += "  b17:\n    vertices:\n      $name: {type: dense, inputs: [$input], out: 2}\n"
    text = ("version: 1\nname: deep\ninputs:\n  x: {type: feed_forward, size: 4}\nblocks:\n" + blocks +
            "vertices:\n  c: {block: b0, inputs: [x]}\noutputs: [c]\n")
    err, path = load_error(text, tmp_path)
    line, col = line_col(text, "$name-in: {block: b16", "block")
    chain = " -> ".join(f"b{i}:c" + "-in" * i for i in range(16))
    assert [str(p) for p in err.problems] == [
        f"{path}:{line}:{col}: vertex 'c{'-in' * 16}': block 'b16' would nest blocks 17 deep ({chain}); blocks nest "
        "at most 16 deep (MAX_BLOCK_DEPTH)"]
