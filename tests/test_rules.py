"""The SAM family's shared mechanism (samcli/rules.py): rho = 0 is SGD bit for bit, a rule registered
from outside trains like the built-ins, its memory lives as long as the run, and a method's own
defaults fill what the user did not set."""
from __future__ import annotations

import pytest
import torch

import samcli
from samcli import methods, rules
from samcli.config import ConfigError, TrainConfig
from samcli.spec.methods import METHODS, MethodSpec, with_method_defaults

TINY = {"data": {"name": "synthetic", "n_train": 64, "n_test": 16, "dim": 6, "classes": 3},
        "model": {"name": "mlp", "widths": [8]}, "steps": 12, "eval_every": 4, "dtype": "float64"}


def run(**optimizer):
    return samcli.train({**TINY, "optimizer": {"lr": 0.1, "batch_size": 16, **optimizer}}, write=False)


@pytest.mark.parametrize("extra", [{"method": "sam"}, {"method": "usam"}, {"method": "ascent-gd"},
                                   {"method": "msam", "m": 4}, {"method": "asam"}, {"method": "gsam"},
                                   {"method": "looksam"}, {"method": "fsam"}, {"method": "wsam"},
                                   {"method": "esam"}, {"method": "rwp", "rwp_sigma": 0.0}])
@pytest.mark.parametrize("base", [{}, {"momentum": 0.9, "weight_decay": 1e-3}])
def test_rho_zero_is_sgd_bit_for_bit(extra, base):
    sgd = run(method="sgd", **base)
    null = run(**({} if extra["method"] == "rwp" else {"rho": 0.0}), **extra, **base)
    assert torch.equal(null.theta, sgd.theta)
    assert [r["train_loss"] for r in null.metrics] == [r["train_loss"] for r in sgd.metrics]


def test_momentum_sam_at_rho_zero_is_sgd_with_momentum_bit_for_bit():
    base = {"momentum": 0.9, "weight_decay": 1e-3}
    assert torch.equal(run(method="momentum-sam", rho=0.0, **base).theta, run(method="sgd", **base).theta)


def test_rho_zero_is_refused_for_a_method_with_no_null():
    spec = MethodSpec("nonull", "a method that rho = 0 does not turn into SGD", frozenset({"rho"}), null="")
    methods.register(spec, rules.SAM)
    try:
        with pytest.raises(ConfigError, match=r"^optimizer.rho=0.0 does not make method nonull plain SGD; "
                                              r"use method sgd, or a rho > 0$"):
            TrainConfig.from_dict({"optimizer": {"method": "nonull", "rho": 0.0}})
        TrainConfig.from_dict({"optimizer": {"method": "nonull", "rho": 0.1}})
    finally:
        methods.unregister("nonull")


def test_a_registered_rule_trains_with_memory_that_lives_as_long_as_the_run():
    """A heavy-ball-like rule written here: d_t = g_t + 0.5 d_{t-1}, kept in ctx.memory. Two runs must
    each start from empty memory (equal results), and the trajectory must equal the same recursion
    written by hand with plain autograd."""
    seen_steps = []

    def combine(ctx, g_p):
        seen_steps.append(ctx.step)
        previous = ctx.memory.get("d")
        d = ctx.g.clone() if previous is None else ctx.g + 0.5 * previous
        ctx.memory["d"] = d.clone()
        return d

    methods.register(MethodSpec("halfball", "g plus half the last direction", null=""),
                     rules.Rule(lambda ctx: None, combine))
    try:
        first, second = run(method="halfball"), run(method="halfball")
    finally:
        methods.unregister("halfball")
    assert torch.equal(first.theta, second.theta)
    assert seen_steps == list(range(1, 13)) * 2

    # the same recursion by hand: same model, data and batches as samcli.train builds
    from samcli.task import build_task
    from samcli.train import BatchSampler
    cfg = TrainConfig.from_dict({**TINY, "optimizer": {"lr": 0.1, "batch_size": 16}})
    task = build_task(cfg)
    sampler = BatchSampler(task.train, 16, cfg.seed)
    x, previous = task.theta.clone(), None
    for _ in range(12):
        g = task.objective.grad(x, sampler.next(), 4096)
        d = g if previous is None else g + 0.5 * previous
        x, previous = x - 0.1 * d, d
    torch.testing.assert_close(first.theta, x, rtol=1e-12, atol=1e-14)


def test_a_method_default_fills_only_what_the_user_left_unset():
    METHODS["bigrho"] = MethodSpec("bigrho", "sam with its own default radius", frozenset({"rho"}),
                                   defaults=(("rho", 0.5),))
    try:
        assert with_method_defaults({"method": "bigrho"}) == {"method": "bigrho", "rho": 0.5}
        assert with_method_defaults({"method": "bigrho", "rho": 0.1}) == {"method": "bigrho", "rho": 0.1}
        assert TrainConfig.from_dict({"optimizer": {"method": "bigrho"}}).optimizer.rho == 0.5
        assert TrainConfig.from_dict({"optimizer": {"method": "sam"}}).optimizer.rho == 0.05
    finally:
        del METHODS["bigrho"]


def test_layout_slices_and_masks_the_flat_vector_by_name():
    layout = rules.Layout.of([("w", torch.zeros(2, 3)), ("b", torch.zeros(3))])
    assert [(n, s.start, s.stop) for n, s, _ in layout.pieces()] == [("w", 0, 6), ("b", 6, 9)]
    mask = layout.mask(lambda name, shape: name == "b", torch.zeros(9))
    assert mask.tolist() == [0.0] * 6 + [1.0] * 3
