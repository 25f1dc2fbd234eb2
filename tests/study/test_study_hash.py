"""config_hash, the key of every run directory of a study: stable across processes and spellings,
and sensitive to every field of the resolved config."""
from __future__ import annotations

import json
import subprocess
import sys

from samcli.config import TrainConfig, config_hash
from samcli.spec.methods import METHODS, PARAMETERS

RAW = {"seed": 3, "device": "cpu", "steps": 50, "data": {"name": "synthetic", "n_train": 64},
       "optimizer": {"method": "msam", "m": 4, "batch_size": 16, "lr": 0.05, "rho": 0.1}}


def leaves(tree: dict, prefix: str = ""):
    for key, value in tree.items():
        if isinstance(value, dict):
            yield from leaves(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", value


def changed(key: str, value):
    """A different valid value for every field (by its kind)."""
    special = {"device": "cuda", "dtype": "float64", "loss": "mse", "data.name": "digits", "data.task": "regression",
               "model.name": "cnn", "model.activation": "tanh", "model.norm": "group", "model.depth": 20,
               "optimizer.method": "sam", "optimizer.batch_size": 32, "optimizer.m": 8, "optimizer.schedule": "cosine",
               "optimizer.milestones": [0.3, 0.6], "optimizer.momentum": 0.5, "data.label_noise": 0.25,
               "measure.notions": ["worst"], "data.root": "/elsewhere", "data.train_size": 10, "data.test_size": 10,
               "measure.samples": 100, "measure.dtype": "float64", "optimizer.nesterov": True, "model.channels": [8], "optimizer.sampling": "iid",
               "stop.train_loss": 0.01, "stop.train_accuracy": 0.9, "data.target": "data.py:load",
               "model.target": "pkg.nets:build"}
    if key in special:
        return special[key]
    if value is None and key.split(".")[-1] in PARAMETERS:     # a method parameter msam does not read
        return {"asam_biases": True, "wsam_decouple": False, "k": 3}.get(key.split(".")[-1], 0.25)   # not its default
    if isinstance(value, bool):
        return not value
    if isinstance(value, float):
        return value * 0.5 if value else 0.125
    if isinstance(value, int):
        return value + 1
    if isinstance(value, list):
        return value + value[-1:]
    raise AssertionError(f"no change defined for {key}={value!r}")


def test_hash_is_sensitive_to_every_field():
    base = TrainConfig.from_dict(RAW)
    reference = config_hash(base)
    fields = list(leaves(base.to_dict()))
    assert len(fields) > 40
    for key, value in fields:
        new = changed(key, value)
        raw = base.to_dict()
        node = raw
        *parents, leaf = key.split(".")
        for part in parents:
            node = node[part]
        node[leaf] = new
        if key == "optimizer.method":
            raw["optimizer"]["m"] = None
        if value is None and key.startswith("optimizer.") and leaf in PARAMETERS:
            # a parameter msam does not read: set it, with a method that reads it, against that method's run
            reader = next(n for n, s in METHODS.items() if leaf in s.parameters)
            raw["optimizer"] = {k: v for k, v in raw["optimizer"].items() if v is not None and k != "m"}
            raw["optimizer"].update(method=reader, momentum=0.5, **{leaf: new})
            twin = {**raw, "optimizer": {k: v for k, v in raw["optimizer"].items() if k != leaf}}   # its default
            assert config_hash(TrainConfig.from_dict(raw)) != config_hash(TrainConfig.from_dict(twin)), key
            continue
        if key == "optimizer.nesterov":
            raw["optimizer"]["momentum"] = 0.5
        if key.endswith(".target"):     # a target replaces the built-in's name (the args are test_targets')
            node["name"] = "target"
        if key == "data.test_with_unused":
            raw["data"]["train_size"] = 32          # the option needs a subset; compare against the same subset
            reference_here = config_hash(TrainConfig.from_dict({**raw, "data": {**raw["data"], leaf: value}}))
            assert config_hash(TrainConfig.from_dict(raw)) != reference_here, key
            continue
        other = TrainConfig.from_dict(raw)
        assert config_hash(other) != reference, f"changing {key} to {new!r} keeps the hash"


def test_hash_ignores_spelling_and_key_order():
    a = TrainConfig.from_dict(RAW)
    shuffled = {"optimizer": {"rho": 0.1, "lr": 0.05, "batch_size": 16, "m": 4, "method": "msam"},
                "data": {"n_train": 64, "name": "synthetic"}, "steps": 50, "device": "cpu", "seed": 3}
    b = TrainConfig.from_dict(shuffled)
    assert config_hash(a) == config_hash(b)
    c = TrainConfig.from_dict({**RAW, "optimizer": {**RAW["optimizer"], "rho": 1e-1}})
    assert config_hash(a) == config_hash(c)
    d = TrainConfig.from_dict({**RAW, "data": {**RAW["data"], "n_train": 64}, "optimizer": {**RAW["optimizer"], "lr": 0.05}})
    assert config_hash(a) == config_hash(d)
    assert len(config_hash(a)) == 16


def test_hash_is_stable_across_processes():
    here = config_hash(TrainConfig.from_dict(RAW))
    code = ("import json, sys; from samcli.config import TrainConfig, config_hash; "
            "print(config_hash(TrainConfig.from_dict(json.loads(sys.argv[1]))))")
    for seed in ("0", "12345"):      # different hash randomization of the interpreter
        out = subprocess.run([sys.executable, "-c", code, json.dumps(RAW)], capture_output=True, text=True,
                             env={"PYTHONHASHSEED": seed, "PATH": ""}, check=True)
        assert out.stdout.strip() == here
