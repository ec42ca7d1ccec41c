"""Training steps against formulas written out here from SEMANTICS.md §5-6 (not by calling the code under test):
the center update ΔC and its gradient-check variant, the embedding gradient λ(x − c_y), DL4J 0.9.x's score, DL4J's
Adam (Appendix C 5), RenormalizeL2PerLayer including ΔC and the whole per-layer update pipeline (Appendix C 7), l2
only on weights, frozen layers, and the `pytorch` step (mean losses, weight decay on weights only, paper's center
rule)."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import graphspec
from graphspec.spec.model import Updater
from graphspec.train.steps import DL4JStep, TorchStep, center_delta, fused_if_possible, normalise, param_groups
from graphspec.train.updaters import DL4JUpdater
from specs_tiny import tiny_conv

pytestmark = pytest.mark.usefixtures("one_thread")

K, D = 5, 6  # classes, embedding size

ADAM = "{type: adam, lr: 0.1, beta1: 0.9, beta2: 0.999, eps: 0.01}"


def head_only(*, l2=0.01, lam=0.1, alpha=0.9, norm="renormalize_l2_per_layer", updater=ADAM, loss="squared_loss",
              gradient_check=False, seed=3) -> str:
    """The network input *is* the embedding: the trunk returns x itself, so every quantity is known exactly."""
    return f"""
version: 1
name: head-only
seed: {seed}
defaults:
  activation: identity
  weight_init: relu
  l2: {l2}
  updater: {updater}
inputs:
  x: {{type: feed_forward, size: {D}}}
vertices:
  head:
    type: center_loss_output
    inputs: [x]
    out: {K}
    loss: {loss}
    activation: softmax
    lambda: {lam}
    alpha: {alpha}
    gradient_check: {str(gradient_check).lower()}
    gradient_normalization: {norm}
outputs: [head]
"""


def dense_bn_head(*, l2=0.01, lam=0.1, alpha=0.9, norm="renormalize_l2_per_layer", updater=ADAM,
                  loss="squared_loss") -> str:
    return f"""
version: 1
name: dense-bn-head
seed: 11
defaults:
  activation: identity
  weight_init: relu
  l2: {l2}
  updater: {updater}
inputs:
  x: {{type: feed_forward, size: 4}}
vertices:
  dense: {{type: dense, inputs: [x], out: {D}, bias_init: 0.1}}
  bn: {{type: batchnorm, inputs: [dense]}}
  head:
    type: center_loss_output
    inputs: [bn]
    out: {K}
    loss: {loss}
    activation: softmax
    lambda: {lam}
    alpha: {alpha}
    gradient_normalization: {norm}
outputs: [head]
"""


CONV = tiny_conv(0.1)


def batch(n=7, seed=0, labels=(0, 1, 1, 3, 0, 0, 1)):
    """Class 2 and 4 are absent from the default labels."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, D, generator=g)
    return x, torch.tensor(labels[:n])


def random_centers(model, seed=1):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        model.head.centers.copy_(0.5 * torch.randn(model.head.centers.shape, generator=g))
    return model.head.centers.detach().double().numpy().copy()


def np64(t: torch.Tensor) -> np.ndarray:
    return t.detach().double().numpy().copy()


# --- independent numpy formulas (SEMANTICS §5-6) -------------------------------------------------------------


def softmax(z):
    e = np.exp(z - z.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


def onehot(y, k=K):
    out = np.zeros((len(y), k))
    out[np.arange(len(y)), y] = 1.0
    return out


def delta_c(C, x, y, alpha, check=False, lam=None):
    """ΔC_j = α Σ_{i:y_i=j}(c_j − x_i)/(1+n_j); gradient-check mode: λ·α·Σ(c_j − x_i); absent rows 0."""
    out = np.zeros_like(C)
    for j in range(C.shape[0]):
        rows = x[y == j]
        if len(rows):
            s = (C[j] - rows).sum(0)
            out[j] = lam * alpha * s if check else alpha * s / (1 + len(rows))
    return out


def mse_softmax_backward(W, b, x, y):
    """LossMSE (mean over K) through softmax: g = 2(p − y)/K, δ = p ⊙ (g − Σ_k p_k g_k)."""
    p = softmax(x @ W.T + b)
    g = 2 * (p - onehot(y, W.shape[0])) / W.shape[0]
    return p, p * (g - (p * g).sum(1, keepdims=True))


def dl4j_adam(g, m, v, t, lr=0.1, b1=0.9, b2=0.999, eps=0.01):
    m = b1 * m + (1 - b1) * g
    v = b2 * v + (1 - b2) * g * g
    a = lr * math.sqrt(1 - b2 ** t) / (1 - b1 ** t)
    return a * m / (np.sqrt(v) + eps), m, v


# --- center update ------------------------------------------------------------------------------------------


def test_center_delta_formula_and_absent_rows_are_zero():
    g = torch.Generator().manual_seed(5)
    C = torch.randn(K, D, generator=g, dtype=torch.float64)
    x = torch.randn(9, D, generator=g, dtype=torch.float64)
    y = torch.tensor([0, 3, 3, 1, 0, 3, 1, 1, 1])  # n = [2, 4, 0, 3, 0]
    got = center_delta(C, x, y)
    want = delta_c(C.numpy(), x.numpy(), y.numpy(), alpha=1.0)
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-12, atol=1e-12)
    # hand value for one row: class 3 has 3 examples -> divide by 4
    np.testing.assert_allclose(got[3].numpy(), (3 * C[3] - x[1] - x[2] - x[5]).numpy() / 4, rtol=1e-12)
    for absent in (2, 4):
        assert torch.count_nonzero(got[absent]) == 0


def test_dl4j_center_step_uses_alpha_and_one_plus_n_and_leaves_absent_classes():
    """NoOp updater and no normalisation isolate the centre rule: C ← C − α Σ(c_j − x_i)/((1+n_j)·N)."""
    model = graphspec.build(head_only(norm="none", updater="{type: noop}", alpha=0.9, l2=0.0))
    C = random_centers(model)
    x, y = batch()
    DL4JStep(model)(x, y)
    want = C - delta_c(C, np64(x), y.numpy(), alpha=0.9) / len(y)
    np.testing.assert_allclose(np64(model.head.centers), want, rtol=1e-5, atol=1e-6)
    for absent in (2, 4):
        assert np.array_equal(np64(model.head.centers)[absent], C[absent])


def test_gradient_check_mode_center_update_is_lambda_alpha_sum_without_one_plus_n():
    model = graphspec.build(head_only(norm="none", updater="{type: noop}", alpha=0.7, lam=0.3, l2=0.0,
                                      gradient_check=True))
    C = random_centers(model)
    x, y = batch()
    DL4JStep(model)(x, y)
    dc = delta_c(C, np64(x), y.numpy(), alpha=0.7, check=True, lam=0.3)
    np.testing.assert_allclose(np64(model.head.centers), C - dc / len(y), rtol=1e-5, atol=1e-6)
    # and it is not the normal rule
    normal = C - delta_c(C, np64(x), y.numpy(), alpha=0.7) / len(y)
    assert np.abs(np64(model.head.centers) - normal).max() > 1e-3


# --- embedding gradient ---------------------------------------------------------------------------------------


def _input_grad(lam):
    model = graphspec.build(head_only(lam=lam))
    C = random_centers(model)
    x, y = batch()
    x = x.clone().requires_grad_(True)
    W, b = np64(model.head.weight), np64(model.head.bias)
    DL4JStep(model)(x, y)
    return np64(x.grad), np64(x), y.numpy(), C, W, b


def test_embedding_gradient_gains_lambda_times_x_minus_center():
    lam = 0.3
    g_lam, x, y, C, W, b = _input_grad(lam)
    g_zero, x0, _, C0, W0, _ = _input_grad(0.0)
    assert np.array_equal(x, x0) and np.array_equal(C, C0) and np.array_equal(W, W0)  # same seed, same everything
    np.testing.assert_allclose(g_lam - g_zero, lam * (x - C[y]), rtol=1e-5, atol=1e-7)
    # and the whole ε sent down: δ Wᵀ (torch layout: δ W) + λ(x − c_y), on raw sums (nothing divided by N)
    _, delta = mse_softmax_backward(W, b, x, y)
    np.testing.assert_allclose(g_lam, delta @ W + lam * (x - C[y]), rtol=1e-5, atol=1e-7)


# --- score ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("loss", ["squared_loss", "mcxent"])
def test_dl4j_score_formula_one_step(loss):
    """score = (Σ ℓ_i + λ/2 Σ‖h − c_y‖² + Σ_layers ½·l2‖W‖²) / N, before the update; BN γ, biases,
    centers carry no l2 term."""
    l2, lam = 0.01, 0.2
    model = graphspec.build(dense_bn_head(l2=l2, lam=lam, loss=loss))
    C = random_centers(model)
    g = torch.Generator().manual_seed(9)
    x = torch.randn(7, 4, generator=g)
    y = torch.tensor([0, 1, 1, 3, 0, 0, 1])
    W1, b1 = np64(model.dense.weight), np64(model.dense.bias)
    gamma, beta = np64(model.bn.weight), np64(model.bn.bias)
    W2, b2 = np64(model.head.weight), np64(model.head.bias)
    e = np64(x) @ W1.T + b1
    h = (e - e.mean(0)) / np.sqrt(e.var(0) + 1e-5) * gamma + beta  # training mode: batch stats, biased variance
    p = softmax(h @ W2.T + b2)
    Y = onehot(y.numpy())
    per_example = ((Y - p) ** 2).mean(1) if loss == "squared_loss" else -np.log((Y * p).sum(1))
    intra = lam / 2 * ((h - C[y.numpy()]) ** 2).sum()
    reg = 0.5 * l2 * ((W1 ** 2).sum() + (W2 ** 2).sum())
    want = (per_example.sum() + intra + reg) / len(y)
    score = DL4JStep(model)(x, y)
    assert score == pytest.approx(want, rel=1e-6)
    # the terms that must not be there are large enough to be seen
    assert 0.5 * l2 * (gamma ** 2).sum() / len(y) > 1e-3 * want


# --- DL4J Adam ---------------------------------------------------------------------------------------------------


def test_dl4j_adam_first_steps_appendix_c5_and_differs_from_torch():
    grads = [0.05, -0.02, 0.03]
    upd = DL4JUpdater(Updater(type="adam", lr=0.1, beta1=0.9, beta2=0.999, eps=0.01))
    got = [float(upd.update(torch.tensor([g], dtype=torch.float64), i)) for i, g in enumerate(grads)]
    assert got == pytest.approx([0.01365, 0.00503, 0.00888], abs=5e-6)
    m = v = 0.0
    for t, (g, u) in enumerate(zip(grads, got), start=1):
        want, m, v = dl4j_adam(g, m, v, t)
        assert u == pytest.approx(want, rel=1e-12)
    # torch.optim.Adam adds ε to sqrt(v̂): first step 0.1·0.05/(0.05 + 0.01) ≈ 0.0833
    p = torch.zeros(1, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.Adam([p], lr=0.1, betas=(0.9, 0.999), eps=0.01)
    steps = []
    for g in grads:
        before = p.detach().clone()
        p.grad = torch.tensor([g], dtype=torch.float64)
        opt.step()
        steps.append(float(before - p.detach()))
    assert steps[0] == pytest.approx(0.1 * 0.05 / (0.05 + 0.01), rel=1e-9)
    assert all(abs(a - b) > 1e-3 for a, b in zip(steps, got))


def test_dl4j_adam_state_persists_across_calls_and_iteration_sets_bias_correction():
    upd = DL4JUpdater(Updater(type="adam", lr=0.1, beta1=0.9, beta2=0.999, eps=0.01))
    g = torch.tensor([0.05, -0.4], dtype=torch.float64)
    upd.update(g, 0)
    late = upd.update(g, 9)  # t = 10: bias correction of step 10 with two steps of moments
    m = 0.1 * g.numpy() + 0.9 * 0.1 * g.numpy()
    v = 0.001 * g.numpy() ** 2 + 0.999 * 0.001 * g.numpy() ** 2
    a = 0.1 * math.sqrt(1 - 0.999 ** 10) / (1 - 0.9 ** 10)
    np.testing.assert_allclose(late.numpy(), a * m / (np.sqrt(v) + 0.01), rtol=1e-12)


# --- gradient normalisation and the whole pipeline (Appendix C 7) ---------------------------------------------


def test_renormalize_l2_per_layer_divides_by_joint_norm_including_center_delta():
    g = torch.Generator().manual_seed(2)
    grads = {"weight": torch.randn(K, D, generator=g, dtype=torch.float64),
             "bias": torch.randn(K, generator=g, dtype=torch.float64),
             "centers": 3 * torch.randn(K, D, generator=g, dtype=torch.float64)}
    joint = math.sqrt(sum(float((t.numpy() ** 2).sum()) for t in grads.values()))
    out = normalise(dict(grads), "renormalize_l2_per_layer", 1.0)
    for k in grads:
        np.testing.assert_allclose(out[k].numpy(), grads[k].numpy() / joint, rtol=1e-12)
    per_type = normalise(dict(grads), "renormalize_l2_per_param_type", 1.0)
    for k in grads:
        np.testing.assert_allclose(per_type[k].numpy(), grads[k].numpy() / np.linalg.norm(grads[k].numpy()),
                                   rtol=1e-12)


def test_full_dl4j_update_of_center_loss_layer_by_hand():
    """Two iterations (N = 7 then N = 4, absent classes) of: summed gradients and ΔC → joint L2 renormalisation
    → Adam on W, b / NoOp on C → + l2·W → / N → θ − update."""
    alpha, l2 = 0.9, 0.01
    model = graphspec.build(head_only(alpha=alpha, l2=l2, lam=0.1))
    C = random_centers(model)
    W, b = np64(model.head.weight), np64(model.head.bias)
    step = DL4JStep(model)
    state = {"W": (0.0, 0.0), "b": (0.0, 0.0)}
    batches = [batch(7, seed=0), batch(4, seed=4, labels=(2, 2, 0, 4))]
    wrong_W = None
    for t, (x, y) in enumerate(batches, start=1):
        xn, yn, n = np64(x), y.numpy(), len(y)
        _, delta = mse_softmax_backward(W, b, xn, yn)
        gW, gb, dC = delta.T @ xn, delta.sum(0), delta_c(C, xn, yn, alpha)
        norm = math.sqrt((gW ** 2).sum() + (gb ** 2).sum() + (dC ** 2).sum())
        if t == 1:  # what the update would be if ΔC were left out of the norm
            norm_without = math.sqrt((gW ** 2).sum() + (gb ** 2).sum())
            u, _, _ = dl4j_adam(gW / norm_without, 0.0, 0.0, 1)
            wrong_W = W - (u + l2 * W) / n
        uW, *state["W"] = dl4j_adam(gW / norm, *state["W"], t)
        ub, *state["b"] = dl4j_adam(gb / norm, *state["b"], t)
        W, b, C = W - (uW + l2 * W) / n, b - ub / n, C - (dC / norm) / n
        step(x, y)
        np.testing.assert_allclose(np64(model.head.weight), W, rtol=2e-5, atol=1e-7)
        np.testing.assert_allclose(np64(model.head.bias), b, rtol=2e-5, atol=1e-7)
        np.testing.assert_allclose(np64(model.head.centers), C, rtol=2e-5, atol=1e-7)
        if t == 1:
            assert np.abs(np64(model.head.weight) - wrong_W).max() > 1e-4
    assert step.iteration == 2


def test_l2_not_applied_to_biases_bn_parameters_or_centers():
    """SGD with lr 0 leaves only the post-updater l2 term: W ← W − l2·W/N on weights, nothing else moves."""
    l2, n = 0.05, 7
    model = graphspec.build(dense_bn_head(l2=l2, alpha=0.0, norm="none", updater="{type: sgd, lr: 0.0}"))
    random_centers(model)
    with torch.no_grad():
        model.bn.weight.fill_(1.5)
        model.bn.bias.fill_(0.25)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    g = torch.Generator().manual_seed(9)
    DL4JStep(model)(torch.randn(n, 4, generator=g), torch.tensor([0, 1, 1, 3, 0, 0, 1]))
    after = model.state_dict()
    for k in ("dense.weight", "head.weight"):
        np.testing.assert_allclose(np64(after[k]), np64(before[k]) * (1 - l2 / n), rtol=1e-6)
        assert not torch.equal(after[k], before[k])
    for k in ("dense.bias", "head.bias", "bn.weight", "bn.bias", "head.centers"):
        assert torch.equal(after[k], before[k]), k


# --- frozen layers ------------------------------------------------------------------------------------------------


def _conv_batch():
    g = torch.Generator().manual_seed(3)
    return torch.rand(6, 3, 12, 12, generator=g) * 255, torch.tensor([0, 1, 2, 0, 1, 4])


@pytest.mark.parametrize("semantics", ["dl4j", "pytorch"])
def test_frozen_layers_unchanged_including_bn_running_stats(semantics):
    frozen = ("conv", "bn")
    model = graphspec.build(CONV, frozen=frozen)
    control = graphspec.build(CONV)
    x, y = _conv_batch()
    for m in (model, control):
        m.head.centers.normal_(generator=torch.Generator().manual_seed(0))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    for m in (model, control):
        if semantics == "dl4j":
            step = DL4JStep(m)
        else:
            step = TorchStep(m, torch.optim.AdamW(param_groups(m, 0.1), lr=0.05))
        for _ in range(2):
            step(x, y)
    after, moved = model.state_dict(), control.state_dict()
    for k in before:
        if k.split(".")[0] in frozen:
            assert torch.equal(after[k], before[k]), k
            if k != "conv.bias":  # a bias right before BN gets a zero gradient, frozen or not
                assert not torch.equal(moved[k], before[k]), f"control: {k} should move when not frozen"
        else:
            assert not torch.equal(after[k], before[k]), k


# --- pytorch semantics --------------------------------------------------------------------------------------------


def test_param_groups_decay_only_weights():
    model = graphspec.build(CONV)
    decay, no_decay = param_groups(model, 0.3)
    names = {id(p): n for n, p in model.named_parameters()}
    assert decay["weight_decay"] == 0.3 and no_decay["weight_decay"] == 0.0
    assert sorted(names[id(p)] for p in decay["params"]) == ["conv.weight", "dense.weight", "head.weight"]
    assert sorted(names[id(p)] for p in no_decay["params"]) == ["bn.bias", "bn.weight", "conv.bias",
                                                                 "dense.bias", "head.bias"]
    assert all(p is not model.head.centers for g in (decay, no_decay) for p in g["params"])


def test_torch_step_mean_losses_weight_decay_on_weights_and_paper_center_rule():
    """SGD(lr) with param_groups(wd): θ ← θ − lr(∇θ + wd·θ) for weights, θ − lr·∇θ otherwise; gradients
    of the mean loss computed here in plain torch; centers c_j ← c_j − α Σ(c_j − h_i)/(1+n_j) (no /N, no
    normalisation)."""
    lr, wd, lam, alpha = 0.5, 0.2, 0.3, 0.6
    spec = dense_bn_head(lam=lam, alpha=alpha).replace("bn: {type: batchnorm, inputs: [dense]}", "") \
        .replace("inputs: [bn]", "inputs: [dense]")
    model = graphspec.build(spec)
    C = random_centers(model)
    g = torch.Generator().manual_seed(9)
    x, y = torch.randn(7, 4, generator=g), torch.tensor([0, 1, 1, 3, 0, 0, 1])
    leaves = {k: p.detach().double().clone().requires_grad_(True) for k, p in model.named_parameters()}
    h = x.double() @ leaves["dense.weight"].T + leaves["dense.bias"]
    p = torch.softmax(h @ leaves["head.weight"].T + leaves["head.bias"], 1)
    Y = torch.from_numpy(onehot(y.numpy()))
    loss = ((Y - p) ** 2).mean(1).mean() + lam / 2 * ((h - torch.from_numpy(C)[y]) ** 2).sum(1).mean()
    loss.backward()
    step = TorchStep(model, torch.optim.SGD(param_groups(model, wd), lr=lr, momentum=0.0))
    score = step(x, y)
    assert score == pytest.approx(float(loss.detach()), rel=1e-6)
    for k, leaf in leaves.items():
        decay = wd * np64(leaf) if k.endswith("weight") else 0.0
        np.testing.assert_allclose(np64(dict(model.named_parameters())[k]),
                                   np64(leaf) - lr * (np64(leaf.grad) + decay), rtol=1e-5, atol=1e-7, err_msg=k)
    want_C = C - delta_c(C, np64(h), y.numpy(), alpha)
    np.testing.assert_allclose(np64(model.head.centers), want_C, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("semantics", ["pytorch", "dl4j"])
def test_bf16_autocast_step_keeps_float32_state_and_tracks_the_float32_step(semantics):
    """precision bf16: the trunk's forward runs in bfloat16 (so the score differs from float32's, slightly), while
    parameters, gradients, optimizer state and centers stay float32, and one step moves every parameter as the
    float32 step does (within bfloat16's ~3 significant digits)."""
    def step(precision):
        model = graphspec.build(tiny_conv(0.01))
        if semantics == "pytorch":
            s = TorchStep(model, torch.optim.SGD(param_groups(model, 0.0), lr=0.5), precision=precision)
        else:
            s = DL4JStep(model, precision=precision)
        g = torch.Generator().manual_seed(4)
        x, y = torch.rand(8, 3, 12, 12, generator=g), torch.tensor([0, 1, 2, 3, 4, 0, 1, 2])
        before = {k: p.detach().clone() for k, p in model.named_parameters()}
        score = s(x, y)
        return model, score, before
    m32, s32, before = step("fp32")
    m16, s16, _ = step("bf16")
    assert s16 != s32 and s16 == pytest.approx(s32, rel=2e-2)
    moves = {k: (p32.detach() - before[k], p16.detach() - before[k])
             for (k, p32), p16 in zip(m32.named_parameters(), m16.parameters())}
    largest = max(float(m32.abs().max()) for m32, _ in moves.values())
    for (k, p16), (moved32, moved16) in zip(m16.named_parameters(), moves.values()):
        assert p16.dtype == torch.float32 and (p16.grad is None or p16.grad.dtype == torch.float32), k
        # (a conv bias before batch norm gets no float32 gradient, and a rounding-sized one in bfloat16)
        np.testing.assert_allclose(moved16, moved32, atol=0.02 * largest, err_msg=k)
    assert m16.head.centers.dtype == torch.float32
    np.testing.assert_allclose(m16.head.centers, m32.head.centers, atol=5e-3)  # embeddings rounded to bf16
    assert not torch.equal(m16.head.centers, graphspec.build(tiny_conv(0.01)).head.centers)


@pytest.mark.parametrize("kind", [torch.optim.Adam, torch.optim.AdamW])
def test_the_fused_optimizer_follows_torchs_default_one(kind):
    """Adam and AdamW run fused on the CPU (one kernel a step): the parameters stay within rounding of the
    default for-each implementation's over 20 steps with weight decay on one group."""
    torch.manual_seed(0)
    ours = [torch.nn.Parameter(torch.randn(300)), torch.nn.Parameter(torch.randn(7, 5))]
    reference = [torch.nn.Parameter(p.detach().clone()) for p in ours]

    def groups(ps):
        return [{"params": ps[:1], "weight_decay": 0.1}, {"params": ps[1:], "weight_decay": 0.0}]
    fused = fused_if_possible(kind, groups(ours), lr=0.01, betas=(0.9, 0.99), eps=1e-6)
    plain = kind(groups(reference), lr=0.01, betas=(0.9, 0.99), eps=1e-6)
    assert fused.defaults["fused"] is True and not plain.defaults.get("fused")
    for _ in range(20):
        for a, b in zip(ours, reference):
            a.grad = torch.randn_like(a)
            b.grad = a.grad.clone()
        fused.step()
        plain.step()
    for a, b in zip(ours, reference):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6)
        assert not torch.equal(a, b.detach() * 0)  # they moved


def test_an_optimizer_without_a_fused_kernel_for_the_parameters_falls_back():
    made = []

    class OnlyDefault(torch.optim.AdamW):
        def __init__(self, params, fused=None, **settings):
            if fused:
                raise RuntimeError("`fused=True` requires all the params to be floating point Tensors of supported "
                                   "devices")
            made.append(settings)
            super().__init__(params, **settings)
    opt = fused_if_possible(OnlyDefault, [{"params": [torch.nn.Parameter(torch.zeros(2))]}], lr=0.5)
    assert made == [{"lr": 0.5}] and not opt.defaults.get("fused")


def test_training_with_pytorch_semantics_uses_the_fused_adamw():
    from graphspec.data import ArrayData
    from graphspec.train.recipe import Recipe
    from graphspec.train.trainer import Trainer
    model = graphspec.build(CONV)
    x, y = _conv_batch()
    recipe = Recipe.model_validate({"semantics": "pytorch", "epochs": 1, "batch_size": 4,
                                    "optimizer": {"type": "adamw", "lr": 0.01}})
    data = ArrayData(x.numpy().astype(np.uint8), y.numpy(), ["a", "b", "c", "d", "e"])
    trainer = Trainer(model, recipe, data, progress=False)
    assert trainer.step.optimizer.defaults["fused"] is True
