"""The hyperparameter axes a study's correlations are granulated over: what each configuration overrides,
resolved, with bookkeeping keys left out and None where the method does not use the parameter."""
from __future__ import annotations

from samcli.study import load_study
from samcli.study.report import axis_values
from study_helpers import tiny_study


def test_axes_are_the_overridden_hyperparameters_resolved():
    raw = tiny_study(seeds=[0])
    raw["variants"][2].update({"steps": 40, "eval_every": 20})           # 1-SAM: a longer cap
    values = axis_values(load_study(raw))
    assert set(values) == {"GD", "SAM", "1-SAM"}
    # steps is a hyperparameter when runs train for a budget; eval_every never is
    assert values["GD"] == {"optimizer.method": "sgd", "optimizer.batch_size": "full", "optimizer.lr": 0.2,
                            "steps": 20}
    assert values["1-SAM"] == {"optimizer.method": "sam", "optimizer.batch_size": 1, "optimizer.lr": 0.05,
                               "steps": 40}


def test_a_parameter_the_method_does_not_use_is_none_and_a_step_cap_is_no_axis():
    raw = tiny_study(seeds=[0])
    raw["base"]["stop"] = {"train_loss": 0.1}
    raw["variants"][1]["optimizer.rho"] = 0.3
    raw["variants"][2].update({"steps": 40, "stop.train_loss": 0.2})
    values = axis_values(load_study(raw))
    assert values["GD"]["optimizer.rho"] is None                        # sgd has no radius
    assert values["SAM"]["optimizer.rho"] == 0.3 and values["1-SAM"]["optimizer.rho"] == 0.1   # the base's
    assert not any(k == "steps" or k.startswith("stop.") for v in values.values() for k in v)
