"""ascent_step's elementwise scale, e = rho T^2 g/||T g|| with T = diag(scale), against a 3-vector
worked by hand, and without a scale the old rule bit for bit.

g = (1, 2, 2), scale = (2, 1, 1/2): T g = (2, 2, 1), ||T g|| = 3, T^2 g = (4, 2, 1/2), so with
rho = 0.3 the step is (0.4, 0.2, 0.05), and unnormalized rho T^2 g = (1.2, 0.6, 0.15).
"""
from __future__ import annotations

import pytest
import torch

from conftest import DT, assert_close
from samcli.ascent import ascent_step

G = torch.tensor([1.0, 2.0, 2.0], dtype=DT)
SCALE = torch.tensor([2.0, 1.0, 0.5], dtype=DT)
STEP = torch.tensor([0.4, 0.2, 0.05], dtype=DT)


def _named(v: torch.Tensor) -> dict:
    return {"w": v[:2].clone(), "b": v[2:].clone()}


def test_the_scaled_step_is_the_hand_computed_one():
    assert_close(ascent_step(G, 0.3, 0.0, scale=SCALE), STEP, rtol=1e-15, atol=0)
    assert_close(ascent_step(G, 0.3, 0.0, normalized=False, scale=SCALE),
                 torch.tensor([1.2, 0.6, 0.15], dtype=DT), rtol=1e-15, atol=0)
    assert_close(ascent_step(G, 0.3, 1.0, scale=SCALE), STEP * 3 / 4, rtol=1e-15, atol=0)   # eps = 1: / (3 + 1)
    given = ascent_step(G, 0.3, 0.0, norm=torch.tensor(3.0, dtype=DT), scale=SCALE)       # ||T g|| handed in
    assert_close(given, STEP, rtol=1e-15, atol=0)


def test_the_scaled_step_is_the_best_ascent_in_its_ellipsoid():
    """e maximizes g.e over ||T^-1 e|| <= rho: on the boundary, where g.e = rho ||T g|| = 0.9."""
    e = ascent_step(G, 0.3, 0.0, scale=SCALE)
    assert (e / SCALE).norm().item() == pytest.approx(0.3, rel=1e-15)
    assert (G @ e).item() == pytest.approx(0.9, rel=1e-15)


def test_named_tensors_take_the_same_step_split_by_name():
    named = ascent_step(_named(G), 0.3, 0.0, scale=_named(SCALE))
    assert named.keys() == {"w", "b"}
    assert_close(torch.cat([named["w"], named["b"]]), STEP, rtol=1e-15, atol=0)
    plain = ascent_step(_named(G), 0.3, 0.0, normalized=False, scale=_named(SCALE))
    assert_close(torch.cat([plain["w"], plain["b"]]), torch.tensor([1.2, 0.6, 0.15], dtype=DT), rtol=1e-15, atol=0)


def test_a_unit_scale_is_the_plain_step_and_no_scale_is_the_old_rule_bit_for_bit():
    g = torch.randn(7, generator=torch.Generator().manual_seed(0), dtype=DT)
    assert_close(ascent_step(g, 0.2, 1e-12, scale=torch.ones_like(g)), ascent_step(g, 0.2, 1e-12))
    assert torch.equal(ascent_step(g, 0.2, 1e-12), 0.2 * g / (g.norm() + 1e-12))
    named = ascent_step(_named(G), 0.3, 1e-3)
    factor = 0.3 / (torch.sqrt(sum(v.pow(2).sum() for v in _named(G).values())) + 1e-3)
    assert all(torch.equal(named[k], factor * v) for k, v in _named(G).items())


def test_a_scale_that_does_not_match_the_gradient_is_refused():
    with pytest.raises(TypeError, match="flat gradient takes a flat scale"):
        ascent_step(G, 0.3, 0.0, scale=_named(SCALE))
    with pytest.raises(TypeError, match="same names"):
        ascent_step(_named(G), 0.3, 0.0, scale={"w": SCALE[:2]})
