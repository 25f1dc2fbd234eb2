"""The torch-free method spec (samcli/spec): config validation loads no torch, the spec and the
directions name the same methods, and a method registered from a test alone (a spec entry and a
direction) is validated and trained with like the built-ins."""
from __future__ import annotations

import ast
import dataclasses
import os
import subprocess
import sys
import typing
from pathlib import Path

import pytest
import torch

from conftest import DT, assert_close, descent_direction, linreg_grad, linreg_loss, linreg_task
from samcli import methods
from samcli.config import ConfigError, OptimizerConfig, TrainConfig
from samcli.methods import StepResult
from samcli.objective import LOSSES
from samcli.spec import methods as spec
from samcli.spec.losses import LOSS_NAMES, resolve_loss
from samcli.spec.methods import MethodSpec, validate_optimizer

SPEC = Path(spec.__file__).parent


def _fresh_interpreter(code: str) -> None:
    env_path = str(Path(spec.__file__).parents[2])
    env = {**os.environ, "PYTHONPATH": env_path, "OMP_NUM_THREADS": "1"}
    subprocess.run([sys.executable, "-c", code], check=True, env=env, timeout=120)


def test_validating_a_config_imports_no_torch():
    _fresh_interpreter("import sys, samcli.config as c\n"
                       "c.TrainConfig.from_dict({'loss': 'CrossEntropyLoss', 'optimizer': {'method': 'msam', 'm': 2,"
                       " 'batch_size': 4}})\n"
                       "assert 'torch' not in sys.modules, 'samcli.config imported torch'")


def test_the_package_still_offers_the_engine_by_name():
    """samcli/__init__ loads the engine on first use: the names work, and samcli.train stays the function
    even after someone imports the submodule of the same name."""
    _fresh_interpreter("import sys, samcli\nassert 'torch' not in sys.modules\n"
                       "from samcli.train import BatchSampler\n"
                       "assert samcli.train is sys.modules['samcli.train'].train and callable(samcli.train)\n"
                       "assert samcli.measure_sharpness.__module__.startswith('samcli.sharpness')\n"
                       "assert samcli.compare.__module__.startswith('samcli.study') and samcli.RunResult\n"
                       "assert set(samcli.__all__) <= set(dir(samcli))\n"
                       "assert samcli.objective.Objective and samcli.study.grid.Study")
    import samcli
    with pytest.raises(AttributeError, match="no attribute 'nothing'"):
        samcli.nothing  # noqa: B018


def test_the_spec_package_imports_only_errors_of_samcli_and_no_torch():
    for path in SPEC.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([node.module or ""] if isinstance(node, ast.ImportFrom) else
                     [a.name for a in node.names] if isinstance(node, ast.Import) else [])
            level = getattr(node, "level", 0)
            for name in names:
                assert not name.startswith("torch"), f"{path.name} imports {name}"
                if level == 2 or name.startswith("samcli"):
                    assert name.split(".")[-1] == "errors", f"{path.name} imports samcli's {name}"


def test_every_method_has_a_spec_and_a_direction():
    assert set(methods.DIRECTIONS) == set(spec.METHODS)
    assert spec.method_names() == ("sgd", "sam", "usam", "msam", "ascent-gd", "asam", "gsam", "looksam", "fsam", "wsam",
                                   "momentum-sam", "esam", "rwp")


def test_the_parameters_are_the_configs_fields_with_their_defaults():
    fields = {f.name: f.default for f in dataclasses.fields(OptimizerConfig)}
    for name, parameter in spec.PARAMETERS.items():
        assert fields[name] == parameter.default, name
    assert {p for s in spec.METHODS.values() for p in s.parameters} == set(spec.PARAMETERS)


def test_the_loss_names_are_the_objectives_and_the_configs():
    assert tuple(LOSSES) == LOSS_NAMES
    assert typing.get_args(typing.get_type_hints(TrainConfig)["loss"]) == LOSS_NAMES
    assert resolve_loss("CrossEntropyLoss") == "cross-entropy" and resolve_loss("MSELoss") == "mse"
    with pytest.raises(ConfigError, match=r"^loss='hinge' is unknown; choose one of cross-entropy, mse$"):
        resolve_loss("hinge")


@pytest.mark.parametrize("optimizer,message", [
    ({"method": "sam", "rho": -0.1}, "optimizer.rho=-0.1 must be >= 0"),
    ({"method": "sgd", "rho": -1.0}, "optimizer.rho=-1.0 must be >= 0"),
    ({"grad_eps": -1e-3}, "optimizer.grad_eps=-0.001 must be >= 0"),
    ({"method": "msam", "m": 0, "batch_size": 8}, "optimizer.m=0 must be >= 1"),
    ({"method": "usam", "m": 2}, "optimizer.m=2 only applies to method msam; remove it or set method: msam"),
])
def test_the_parameter_ranges_refuse_in_one_line(optimizer, message):
    with pytest.raises(ConfigError) as info:
        TrainConfig.from_dict({"optimizer": {"method": "sam", **optimizer}})
    assert str(info.value) == message


def test_registration_refuses_a_taken_name_and_an_unknown_parameter():
    with pytest.raises(ConfigError, match=r"^method 'sam' has a direction already; pick another name"):
        methods.register(MethodSpec("sam", "again"), methods.DIRECTIONS["sgd"])
    with pytest.raises(ConfigError, match=r"^method 'lion' reads optimizer.beta, which is no parameter; use rho, "
                                          r"grad_eps, m, eta, .+ or add it to samcli.spec.methods.PARAMETERS$"):
        methods.register(MethodSpec("lion", "sign of a momentum", frozenset({"beta"})), methods.DIRECTIONS["sgd"])
    assert "lion" not in spec.METHODS and "lion" not in methods.DIRECTIONS


def test_a_spec_without_a_direction_is_refused_when_stepping(monkeypatch, linreg):
    objective, data, x = linreg
    monkeypatch.setitem(spec.METHODS, "half", MethodSpec("half", "a spec alone"))
    with pytest.raises(ConfigError, match=r"^optimizer.method=half has a spec but no direction; add it with "
                                          r"samcli.methods.register\(spec, direction\)$"):
        descent_direction(objective, x, data, OptimizerConfig(method="half"), chunk_size=8)


# ---- a toy method from the test alone: sign-SGD, d = sign(grad L_B(x)) -----------------------------

def _sign_direction(objective, theta, batch, cfg, chunk_size):
    loss, g = objective.value_and_grad(theta, batch, chunk_size)
    return StepResult(torch.sign(g), loss.item(), torch.linalg.vector_norm(g))


def _no_full_batch(o, name, train_size):
    return f"optimizer.method={name} needs mini-batches; set optimizer.batch_size" if o.batch_size == "full" else None


@pytest.fixture
def sign_sgd():
    methods.register(MethodSpec("sign-sgd", "the sign of the batch gradient", batchnorm=False,
                                batchnorm_reason="a toy", rules=(_no_full_batch,)), _sign_direction)
    yield
    methods.unregister("sign-sgd")
    assert "sign-sgd" not in spec.METHODS and "sign-sgd" not in methods.DIRECTIONS


def _linreg_data():
    gen = torch.Generator().manual_seed(3)
    return torch.randn(6, 3, generator=gen, dtype=DT), torch.randn(6, generator=gen, dtype=DT)


def test_a_registered_toy_method_trains_as_its_hand_written_update(sign_sgd):
    """x <- x - lr sign(A_B^T (A_B x - y_B)/|B|) on least squares, batches of 3 in the loop's epoch
    order (read back from a seeded sampler of the same data), every number in float64."""
    import samcli
    from samcli.train import BatchSampler
    A, y = _linreg_data()
    x0 = torch.tensor([0.5, -1.0, 2.0], dtype=DT)
    lr, steps = 0.05, 8
    raw = {"device": "cpu", "dtype": "float64", "steps": steps, "eval_every": 4, "seed": 7,
           "data": {"name": "synthetic"}, "optimizer": {"method": "sign-sgd", "lr": lr, "batch_size": 3}}
    result = samcli.train(raw, task=linreg_task(A, y, x0), write=False)
    order = BatchSampler(linreg_task(A, y, x0).train, 3, seed=7)
    x = x0.clone()
    for _ in range(steps):
        batch = order.next()
        x = x - lr * torch.sign(linreg_grad(batch.inputs, batch.targets, x))
    assert result.status == "completed"
    assert_close(result.theta, x, rtol=0, atol=1e-15)
    assert result.metrics[-1]["train_loss"] == pytest.approx(linreg_loss(A, y, x).item(), rel=1e-12)


def test_a_registered_toy_method_is_validated_by_its_own_spec(sign_sgd):
    assert "sign-sgd" in spec.method_names() and spec.unused_parameters("sign-sgd") == set(spec.PARAMETERS)
    with pytest.raises(ConfigError, match=r"^optimizer.method=sign-sgd needs mini-batches; set optimizer.batch_size$"):
        TrainConfig.from_dict({"optimizer": {"method": "sign-sgd", "batch_size": "full"}})
    with pytest.raises(ConfigError, match=r"^optimizer.method=sign-sgd cannot update BatchNorm statistics \(a toy\); "
                                          r"use model.norm: group or none, or one of sgd, sam, usam, ascent-gd, asam, gsam, looksam, fsam, wsam, esam, rwp$"):
        validate_optimizer(OptimizerConfig(method="sign-sgd"), has_batchnorm=True)
    with pytest.raises(ConfigError, match=r"^method 'sign-sgd' is registered already"):
        spec.register(MethodSpec("sign-sgd", "twice"))
