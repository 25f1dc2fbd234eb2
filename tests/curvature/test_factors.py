"""The layer-factor table (samcli/curvature/factors.py) entry by entry against dense float64 references
computed here: per-example gradients of tiny Linear/Conv1d/Conv2d layers by torch.func (vmapped grad of
<u, layer(x_k)>, so the output gradient is u), their squared norms and inner products, and the layer
applied with per-group weights by plain F.linear / F.conv*."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, grad, jacrev, vmap

from samcli.curvature import factors
from samcli.curvature.factors import FACTORS, gram_is_cheaper, lookup, rule_for
from samcli.curvature.ggn import per_example_gram
from samcli.objective import Batch, Objective

DT = torch.float64
N, L = 5, 3

# (layer, one example's input shape): stride, padding, dilation, non-square kernels, several positions,
# and one row per example (the rank-one rule) for each type
LAYERS = {
    "linear": (lambda bias: nn.Linear(4, 3, bias=bias), (4,)),
    "linear-3-positions": (lambda bias: nn.Linear(4, 3, bias=bias), (3, 4)),
    "linear-2x3-positions": (lambda bias: nn.Linear(4, 2, bias=bias), (2, 3, 4)),
    "conv1d-stride-padding": (lambda bias: nn.Conv1d(2, 3, 3, stride=2, padding=1, bias=bias), (2, 9)),
    "conv1d-dilation": (lambda bias: nn.Conv1d(2, 3, 2, dilation=2, bias=bias), (2, 7)),
    "conv1d-one-position": (lambda bias: nn.Conv1d(3, 2, 4, bias=bias), (3, 4)),
    "conv2d-stride-padding": (lambda bias: nn.Conv2d(2, 3, (3, 2), stride=(2, 1), padding=(1, 2), bias=bias),
                              (2, 5, 4)),
    "conv2d-dilation": (lambda bias: nn.Conv2d(1, 2, 2, dilation=(2, 1), padding=1, bias=bias), (1, 4, 5)),
    "conv2d-one-position": (lambda bias: nn.Conv2d(2, 3, 3, bias=bias), (2, 3, 3)),
}
CASES = [pytest.param(name, bias, id=f"{name}-{'bias' if bias else 'nobias'}")
         for name in LAYERS for bias in (True, False)]


def layer_and_input(name, bias, n=N, seed=0):
    torch.manual_seed(seed)
    build, shape = LAYERS[name]
    module = build(bias).to(DT)
    x = torch.randn(n, *shape, dtype=DT)
    return module, x


def reference_gradients(module, x, u):
    """Per-example gradients of <u[l, k], module(x_k)>: {name: (L, n, *shape)}, by torch.func."""
    params = {k: v.detach() for k, v in module.named_parameters()}

    def pseudo_loss(p, xk, uk):
        return (functional_call(module, p, (xk.unsqueeze(0),))[0] * uk).sum()
    over_examples = vmap(grad(pseudo_loss), in_dims=(None, 0, 0))
    return vmap(over_examples, in_dims=(None, None, 0))(params, x, u)


def flat(grads):
    """(L, n, D): every parameter's per-example gradient in one vector."""
    return torch.cat([g.flatten(2) for g in grads.values()], dim=2)


def factors_of(module, x, u):
    """The table's (a, delta rows (L, n, P, Cout), bias) for output gradients u (L, n, *out)."""
    rule = rule_for(module)
    return rule.patches(module, x), rule.rows(module, u, lead=1), float(module.bias is not None)


def output_gradients(module, x, lead=(L,), seed=1):
    out = module(x)
    return torch.randn(*lead, *out.shape, generator=torch.Generator().manual_seed(seed), dtype=DT)


@pytest.mark.parametrize("name,bias", CASES)
def test_patches_and_rows_reproduce_the_layer(name, bias):
    """z_p = W a_p + b at every position: patches and rows are the factorization the rules assume,
    and as_output inverts rows."""
    module, x = layer_and_input(name, bias)
    rule = rule_for(module)
    out = module(x)
    a, z = rule.patches(module, x), rule.rows(module, out)
    assert a.shape[:2] == z.shape[:2] and a.shape[2] == module.weight[0].numel()
    expected = a @ module.weight.reshape(module.weight.shape[0], -1).T
    if bias:
        expected = expected + module.bias
    torch.testing.assert_close(z, expected, rtol=1e-12, atol=1e-12)
    assert torch.equal(rule.as_output(module, z, out), out)


@pytest.mark.parametrize("name,bias", CASES)
def test_materialized_gradients_equal_per_example_gradients(name, bias):
    module, x = layer_and_input(name, bias)
    u = output_gradients(module, x)
    reference = reference_gradients(module, x, u)
    a, delta, b = factors_of(module, x, u)
    weight, bias_grad = factors.gradients(a, delta, b)                       # (L, n, Cout, K), (L, n, Cout)
    torch.testing.assert_close(weight.reshape(reference["weight"].shape), reference["weight"], rtol=1e-12,
                               atol=1e-12)
    if bias:
        torch.testing.assert_close(bias_grad, reference["bias"], rtol=1e-12, atol=1e-12)
    else:
        assert not bias_grad.any()


@pytest.mark.parametrize("gram", [True, False], ids=["patch-gram", "materialized"])
@pytest.mark.parametrize("name,bias", CASES)
def test_squared_norms_both_paths(name, bias, gram):
    module, x = layer_and_input(name, bias)
    u = output_gradients(module, x)
    expected = flat(reference_gradients(module, x, u)).pow(2).sum(2)          # (L, n)
    assert expected.min() > 1e-3
    a, delta, b = factors_of(module, x, u)
    torch.testing.assert_close(factors.squared_norms(a, delta, b, gram), expected, rtol=1e-12, atol=0)
    # without leading dimensions (one gradient per example, as m-SAM uses them)
    torch.testing.assert_close(factors.squared_norms(a, delta[0], b, gram), expected[0], rtol=1e-12, atol=0)


@pytest.mark.parametrize("gram", [True, False], ids=["patch-gram", "materialized"])
@pytest.mark.parametrize("name,bias", CASES)
def test_squared_norms_of_groups_are_the_norms_of_summed_gradients(name, bias, gram):
    """m-SAM's g_j: a group's rows stacked into one 'example' give ||sum_{k in group} grad_k||^2."""
    m, groups = 2, 3
    module, x = layer_and_input(name, bias, n=m * groups)
    u = output_gradients(module, x, lead=(1,))
    per_example = flat(reference_gradients(module, x, u))[0]                  # (n, D)
    expected = per_example.reshape(groups, m, -1).sum(1).pow(2).sum(1)
    a, delta, b = factors_of(module, x, u)
    A, D = a.reshape(groups, -1, a.shape[-1]), delta[0].reshape(groups, -1, delta.shape[-1])
    torch.testing.assert_close(factors.squared_norms(A, D, b, gram), expected, rtol=1e-12, atol=0)
    torch.testing.assert_close(factors.norms(*factors.gradients(A, D, b)), expected, rtol=1e-12, atol=0)


@pytest.mark.parametrize("name,bias", CASES)
def test_gram_matrix_holds_the_inner_products_of_an_examples_gradients(name, bias):
    module, x = layer_and_input(name, bias)
    u = output_gradients(module, x)
    g = flat(reference_gradients(module, x, u))                               # (L, n, D)
    expected = torch.einsum("lnd,mnd->nlm", g, g)
    got = factors.gram_matrix(*factors_of(module, x, u))
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(torch.diagonal(got, dim1=1, dim2=2).T,
                               factors.squared_norms(*factors_of(module, x, u), gram=True), rtol=1e-12, atol=0)


def per_group_layer(module, x, weight, bias):
    """The layer with weight[j], bias[j] on group j's examples, by plain F.linear / F.conv*."""
    groups = weight.shape[0]
    outputs = []
    for j, xs in enumerate(x.chunk(groups)):
        w = weight[j].reshape(module.weight.shape)
        if isinstance(module, nn.Linear):
            outputs.append(F.linear(xs, w, bias[j]))
        else:
            conv = F.conv1d if isinstance(module, nn.Conv1d) else F.conv2d
            outputs.append(conv(xs, w, bias[j], module.stride, module.padding, module.dilation))
    return torch.cat(outputs)


@pytest.mark.parametrize("name,bias", CASES)
def test_grouped_forward_and_factored_forward_apply_per_group_weights(name, bias):
    m, groups = 2, 3
    module, x = layer_and_input(name, bias, n=m * groups)
    rule = rule_for(module)
    gen = torch.Generator().manual_seed(5)
    cout, k = module.weight.shape[0], module.weight[0].numel()
    weight, shift = torch.randn(groups, cout, k, generator=gen, dtype=DT), torch.randn(groups, cout, generator=gen,
                                                                                         dtype=DT)
    scale = torch.rand(groups, generator=gen, dtype=DT) + 0.5
    expected = per_group_layer(module, x, weight * scale[:, None, None], shift * scale[:, None])
    torch.testing.assert_close(rule.grouped_forward(module, x, weight, shift, scale), expected, rtol=1e-12,
                               atol=1e-12)
    # factored_forward: the group's gradient g = sum_r delta_r a_r^T (+ bias) applied to new patches,
    # without forming g; against g formed densely from the same factors and applied by F.linear / F.conv
    u = output_gradients(module, x, lead=(1,))
    a, delta, b = factors_of(module, x, u)
    A, D = a.reshape(groups, -1, k), delta[0].reshape(groups, -1, cout)
    x_new = x.flip(0) + 0.1
    patches = rule.patches(module, x_new)
    z = factors.factored_forward(A, D, b, patches.reshape(groups, -1, k))
    g_weight, g_bias = factors.gradients(A, D, b)
    expected = per_group_layer(module, x_new, g_weight, g_bias)
    torch.testing.assert_close(rule.as_output(module, z.reshape(patches.shape[0], -1, cout), expected), expected,
                               rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("module,covered", [
    (nn.Linear(3, 2), True), (nn.Conv1d(2, 2, 3), True), (nn.Conv2d(2, 4, 3, padding=1), True),
    (nn.Conv2d(2, 4, 2, groups=2), False), (nn.Conv1d(2, 2, 3, padding="same"), False),
    (nn.Conv2d(2, 2, 3, padding=1, padding_mode="reflect"), False), (nn.LayerNorm(3), None),
    (nn.Conv3d(1, 1, 2), None)])
def test_the_table_covers_exactly_what_its_rules_handle(module, covered):
    entry, rule = lookup(module), rule_for(module)
    assert (entry is not None) == (covered is not None)
    assert (rule is not None) == bool(covered)
    assert set(FACTORS) == {nn.Linear, nn.Conv1d, nn.Conv2d}


def test_subclasses_use_their_base_entry():
    class Scaled(nn.Linear):
        pass
    assert rule_for(Scaled(3, 2)) is FACTORS[nn.Linear]


def test_cost_rule():
    # materialized: L P K Cout; Grams: (K + L (Cout + 1)) P^2
    assert gram_is_cheaper(rows=16, features=576, channels=64, gradients=10)       # 4x4 map, deep layer
    assert not gram_is_cheaper(rows=1024, features=9, channels=16, gradients=10)  # 32x32 map, first layer
    assert gram_is_cheaper(rows=2, features=256, channels=256)                    # a few rows of a wide Linear
    assert not gram_is_cheaper(rows=512, features=256, channels=256)


def test_per_example_gram_on_a_cnn_equals_dense_jacobians():
    """ggn.per_example_gram, now through the table: Conv1d, a Linear over positions, a Linear head."""
    torch.manual_seed(0)
    classes = 3
    model = nn.Sequential(nn.Conv1d(2, 3, 3, stride=2, padding=1), nn.Tanh(), nn.Conv1d(3, 4, 2, bias=False),
                          nn.Tanh(), nn.Linear(4, 2), nn.Flatten(), nn.Linear(8, classes)).to(DT)
    gen = torch.Generator().manual_seed(1)
    data = Batch(torch.randn(N, 2, 9, generator=gen, dtype=DT), torch.randint(0, classes, (N,), generator=gen))
    objective, theta = Objective.from_module(model, "cross-entropy")
    params = {k: v.detach() for k, v in model.named_parameters()}
    J = vmap(jacrev(lambda p, xk: functional_call(model, p, (xk.unsqueeze(0),))[0]), in_dims=(None, 0))(
        params, data.inputs)
    J = torch.cat([j.flatten(2) for j in J.values()], dim=2)                 # (n, C, D)
    p = model(data.inputs).softmax(-1).detach()
    root = torch.diag_embed(p.sqrt()) - p.unsqueeze(2) * p.sqrt().unsqueeze(1)  # A_k A_k^T = diag(p) - p p^T
    AJ = root.transpose(1, 2) @ J
    torch.testing.assert_close(per_example_gram(objective, theta, data), AJ @ AJ.transpose(1, 2), rtol=1e-10,
                               atol=1e-12)
    grouped = nn.Sequential(nn.Conv1d(2, 4, 3, groups=2), nn.Flatten(), nn.Linear(28, classes)).to(DT)
    with pytest.raises(ValueError, match="Linear and Conv1d/Conv2d layers only"):
        per_example_gram(*Objective.from_module(grouped, "cross-entropy"), data)
