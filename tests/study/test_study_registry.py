"""A notion is one registry entry plus its function: registered here, in the test alone, it is measured,
tabulated, correlated and plotted by `samcli compare` with no other file touched."""
from __future__ import annotations

from dataclasses import dataclass

import pytest

import samcli
from samcli.spec.measure import Column, Notion, register_notion, unregister_notion

from study_helpers import tiny_study


@dataclass(frozen=True)
class GradientEnergy:
    """||g||^2 / 2 at the measured point: a toy notion."""
    value: float

    def summary(self) -> dict[str, float]:
        return {"toy_energy": self.value}

    def rows(self):
        return [("toy", "||g||^2 / 2", self.value, "from the shared gradient")]

    def to_dict(self) -> dict:
        return {"value": self.value}

    @classmethod
    def from_dict(cls, data: dict) -> "GradientEnergy":
        return cls(**data)


def gradient_energy(ctx) -> GradientEnergy:
    return GradientEnergy(0.5 * float(ctx.gradient.double().pow(2).sum()))


def broken(ctx):
    raise ZeroDivisionError("the user's own bug")


@pytest.fixture
def toy_notion():
    register_notion(Notion("toy", "half the squared gradient norm", gradient_energy, GradientEnergy,
                           (Column("toy_energy", "toy energy", r"$\|g\|^2/2$", correlate=True),)))
    yield
    unregister_notion("toy")


def test_a_registered_notion_flows_through_a_study(tmp_path, toy_notion):
    raw = tiny_study(seeds=[0, 1])
    raw["sharpness"]["notions"] = ["worst", "toy"]
    result = samcli.compare(raw, out=tmp_path / "s", jobs=1)
    assert (result.table["toy_energy_mean"] > 0).all()
    assert set(result.correlations.loc[result.correlations["notion"] == "toy_energy", "runs"]) == {6}
    md = (tmp_path / "s" / "table.md").read_text()
    assert "| toy energy |" in md and "toy energy" in md.split("| configuration |")[1]
    assert (tmp_path / "s" / "accuracy_vs_sharpness.png").stat().st_size > 0
    # the stored reports hold the notion and are reused as they are
    events = []
    samcli.compare(raw, out=tmp_path / "s", jobs=1, progress=events.append)
    assert [e.message for e in events if e.kind == "plan"] == ["6 of 6 runs already done"]


def test_a_registered_notion_is_computed_from_the_shared_gradient(toy_notion):
    import torch
    model = torch.nn.Linear(3, 2).double()
    x, y = torch.randn(10, 3, dtype=torch.float64), torch.randint(0, 2, (10,))
    report = samcli.measure_sharpness(model, (x, y), notions=["toy"], stochastic_examples=0)
    loss = torch.nn.functional.cross_entropy(model(x), y)
    grads = torch.autograd.grad(loss, list(model.parameters()))
    assert report.results["toy"].value == pytest.approx(0.5 * sum(float(g.pow(2).sum()) for g in grads), rel=1e-12)
    assert report.summary()["toy_energy"] == report.results["toy"].value
    assert set(report.notion_seconds) == {"gradient", "toy"}


def test_a_notion_that_raises_is_reported_as_the_users_own():
    register_notion(Notion("broken", "raises", broken, GradientEnergy))
    try:
        import torch
        model = torch.nn.Linear(3, 2).double()
        data = (torch.randn(4, 3, dtype=torch.float64), torch.randint(0, 2, (4,)))
        with pytest.raises(samcli.SamcliError) as err:
            samcli.measure_sharpness(model, data, notions=["broken"], stochastic_examples=0)
        assert "sharpness notion 'broken'" in str(err.value) and "ZeroDivisionError: the user's own bug" in str(err.value)
    finally:
        unregister_notion("broken")


def test_registering_twice_or_a_taken_summary_key_is_refused(toy_notion):
    with pytest.raises(samcli.ConfigError, match="registered already"):
        register_notion(Notion("toy", "again", gradient_energy, GradientEnergy))
    with pytest.raises(samcli.ConfigError, match="'lambda_1' belongs to another notion"):
        register_notion(Notion("other", "clash", gradient_energy, GradientEnergy, (Column("lambda_1", "x"),)))


def test_every_builtin_summary_key_is_declared_by_its_notion():
    import torch
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Tanh(), torch.nn.Linear(4, 2)).double()
    data = (torch.randn(12, 3, dtype=torch.float64), torch.randint(0, 2, (12,)))
    report = samcli.measure_sharpness(model, data, notions=["worst", "ascent", "average", "adaptive"], exact=True,
                                      stochastic_examples=4, directions=4, ascent_iters=2, lanczos_iters=10)
    from samcli.spec.measure import NOTIONS
    for name, result in report.results.items():
        declared = {c.key for c in NOTIONS[name].columns}
        assert set(result.summary()) <= declared, (name, set(result.summary()) - declared)


def _sign_direction(objective, theta, batch, cfg, chunk_size):
    from samcli.methods import StepResult
    loss, g = objective.value_and_grad(theta, batch, chunk_size)
    return StepResult(g.sign(), float(loss), g.norm())


@pytest.fixture
def sign_sgd():
    from samcli import methods
    from samcli.spec.methods import MethodSpec
    methods.register(MethodSpec("sign-sgd", "the sign of the batch gradient"), _sign_direction)
    yield
    methods.unregister("sign-sgd")


def test_a_registered_method_and_notion_flow_through_a_study_together(tmp_path, toy_notion, sign_sgd):
    raw = tiny_study(seeds=[0, 1])
    raw["variants"].append({"label": "sign", "optimizer.method": "sign-sgd", "optimizer.batch_size": 8,
                            "optimizer.lr": 0.01})
    raw["sharpness"]["notions"] = ["worst", "toy"]
    result = samcli.compare(raw, out=tmp_path / "s", jobs=1)
    assert list(result.table.index) == ["GD", "SAM", "1-SAM", "sign"]
    assert result.table.loc["sign", "method"] == "sign-sgd" and result.table.loc["sign", "completed"] == 2
    assert (result.table["toy_energy_mean"] > 0).all()
    md = (tmp_path / "s" / "table.md").read_text()
    assert "| sign |" in md and "toy energy" in md


def test_registrations_reach_spawned_workers(tmp_path, toy_notion, sign_sgd):
    """With --jobs 2 the runs happen in spawned processes, which import samcli afresh: what this
    process registered must be registered there too, or the study would refuse its own notion."""
    raw = tiny_study(seeds=[0])
    raw["variants"] = [raw["variants"][0], {"label": "sign", "optimizer.method": "sign-sgd",
                                            "optimizer.batch_size": 8, "optimizer.lr": 0.01}]
    raw["sharpness"]["notions"] = ["worst", "toy"]
    result = samcli.compare(raw, out=tmp_path / "s", jobs=2)
    assert result.failed_runs == 0 and list(result.table["completed"]) == [1, 1]
    assert (result.table["toy_energy_mean"] > 0).all()
