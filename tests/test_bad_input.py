"""Bad input is refused at the door: one line naming the offending key or value, before anything trains.

Each case is (what the user passes, a fragment the one-line message must contain). The same
validation serves the Python API (TrainConfig.from_dict, samcli.train) and the CLI (exit code 2).
"""
from __future__ import annotations

import math

import pytest

from samcli.config import ConfigError, TrainConfig

CONFIG_CASES = [
    ({"optimizer": {"lr": math.inf}}, "optimizer.lr"),
    ({"optimizer": {"lr": math.nan}}, "optimizer.lr"),
    ({"optimizer": {"lr": -0.1}}, "optimizer.lr"),
    ({"optimizer": {"lr": 0}}, "optimizer.lr"),
    ({"optimizer": {"rho": math.inf}}, "optimizer.rho"),
    ({"optimizer": {"rho": -1}}, "optimizer.rho"),
    ({"optimizer": {"momentum": 1.0}}, "optimizer.momentum"),
    ({"optimizer": {"momentum": -0.5}}, "optimizer.momentum"),
    ({"optimizer": {"momentum": math.nan}}, "optimizer.momentum"),
    ({"optimizer": {"weight_decay": -1e-4}}, "optimizer.weight_decay"),
    ({"optimizer": {"weight_decay": math.inf}}, "optimizer.weight_decay"),
    ({"optimizer": {"gamma": -1}}, "optimizer.gamma"),
    ({"optimizer": {"gamma": 0}}, "optimizer.gamma"),
    ({"optimizer": {"grad_eps": -1}}, "optimizer.grad_eps"),
    ({"optimizer": {"grad_eps": math.inf}}, "optimizer.grad_eps"),
    ({"optimizer": {"milestones": [0.7, 0.3]}}, "optimizer.milestones"),
    ({"optimizer": {"milestones": [1.5]}}, "optimizer.milestones"),
    ({"optimizer": {"milestones": [math.nan]}}, "optimizer.milestones"),
    ({"optimizer": {"batch_size": 0}}, "optimizer.batch_size"),
    ({"optimizer": {"batch_size": "half"}}, "optimizer.batch_size"),
    ({"optimizer": {"method": "adam"}}, "optimizer.method"),
    ({"optimizer": {"method": "samm"}}, "did you mean sam"),
    ({"optimizer": {"method": "msam"}}, "optimizer.m"),
    ({"optimizer": {"method": "msam", "m": 0}}, "optimizer.m"),
    ({"optimizer": {"method": "msam", "m": 5, "batch_size": 32}}, "optimizer.m"),
    ({"optimizer": {"method": "sam", "m": 4}}, "optimizer.m"),
    ({"optimizer": {"nesterov": True}}, "nesterov"),
    ({"optimizer": {"schedule": "linear"}}, "optimizer.schedule"),
    ({"optimizer": {"sampling": "random"}}, "optimizer.sampling"),
    ({"optimizer": {"lr": "fast"}}, "optimizer.lr"),
    ({"optimizer": {"unknown": 1}}, "optimizer.unknown"),
    ({"measure": {"samples": 0}}, "measure.samples"),
    ({"measure": {"samples": -3}}, "measure.samples"),
    ({"measure": {"lanczos_iters": 0}}, "measure.lanczos_iters"),
    ({"measure": {"trace_probes": 0}}, "measure.trace_probes"),
    ({"measure": {"rho": 0}}, "measure.rho"),
    ({"measure": {"rho": math.inf}}, "measure.rho"),
    ({"measure": {"every": -1}}, "measure.every"),
    ({"measure": {"notions": ["flatness"]}}, "measure.notions"),
    ({"data": {"name": "imagenet"}}, "data.name"),
    ({"data": {"name": "mnist1"}}, "did you mean mnist1d"),
    ({"data": {"classes": 0}}, "data.classes"),
    ({"data": {"classes": 1}}, "data.classes"),
    ({"data": {"n_train": 0}}, "data.n_train"),
    ({"data": {"dim": 0}}, "data.dim"),
    ({"data": {"label_noise": 1.5}}, "data.label_noise"),
    ({"data": {"label_noise": math.nan}}, "data.label_noise"),
    ({"data": {"train_size": 0}}, "data.train_size"),
    ({"data": {"test_size": -5}}, "data.test_size"),
    ({"data": {"task": "ranking"}}, "data.task"),
    ({"model": {"name": "transformer"}}, "model.name"),
    ({"model": {"widths": [0, 16]}}, "model.widths"),
    ({"model": {"channels": [0]}}, "model.channels"),
    ({"model": {"depth": 50}}, "model.depth"),
    ({"model": {"activation": "swish"}}, "model.activation"),
    ({"model": {"norm": "layer"}}, "model.norm"),
    ({"steps": 0}, "steps"),
    ({"steps": 1.5}, "steps"),
    ({"eval_every": 0}, "eval_every"),
    ({"chunk_size": 0}, "chunk_size"),
    ({"seed": "zero"}, "seed"),
    ({"device": "tpu"}, "device"),
    ({"dtype": "float16"}, "dtype"),
    ({"loss": "hinge"}, "loss"),
    ({"stop": {"train_loss": 0}}, "stop.train_loss"),
    ({"stop": {"train_loss": -0.1}}, "stop.train_loss"),
    ({"stop": {"train_loss": math.inf}}, "stop.train_loss"),
    ({"stop": {"train_accuracy": 1.5}}, "stop.train_accuracy"),
    ({"stop": {"train_accuracy": 0}}, "stop.train_accuracy"),
    ({"stop": {"test_accuracy": 0.9}}, "stop.test_accuracy"),
    ({"stop": {"train_los": 0.01}}, "stop.train_los"),
    ({"stop": 0.01}, "stop"),
]


@pytest.mark.parametrize("raw, fragment", CONFIG_CASES, ids=[f"config-{i}" for i in range(len(CONFIG_CASES))])
def test_config_refuses_in_one_line(raw, fragment):
    with pytest.raises(ConfigError) as err:
        TrainConfig.from_dict(raw)
    message = str(err.value)
    assert "\n" not in message
    assert fragment in message
