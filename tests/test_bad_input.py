"""Bad input is refused at the door: one line naming the offending key or value, before anything trains.

Each case is (what the user passes, a fragment the one-line message must contain). The same
validation serves the Python API (TrainConfig.from_dict, samcli.train, measure_sharpness, compare:
a SamcliError subclass) and the CLI (`train`, `sharpness`, `compare`, `reproduce`: exit code 2, one
line on stderr, no traceback, nothing on stdout).
"""
from __future__ import annotations

import math
import os
import sys
from pathlib import Path

import pytest
import torch
import yaml
from torch import nn
from typer.testing import CliRunner

from samcli.cli import app
from samcli.config import ConfigError, SamcliError, TrainConfig
from samcli.sharpness import measure_sharpness, measure_run
from samcli.study import compare, load_study
from samcli.study.lock import study_lock
from samcli.train import train

sys.path.insert(0, str(Path(__file__).parent / "study"))
from study_helpers import tiny_study  # noqa: E402

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


# ---- the command line: exit code 2, one line on stderr naming the value ----------------------------

TINY = ["--dataset", "synthetic", "--device", "cpu", "--dtype", "float64", "--set", "data.n_train=16",
        "--set", "data.n_test=8", "--set", "data.dim=3", "--set", "data.classes=2", "--set", "model.widths=[4]",
        "--batch-size", "4", "--steps", "2"]


def tiny_cfg(**top) -> dict:
    raw = {"seed": 0, "device": "cpu", "dtype": "float64", "steps": 2, "eval_every": 1, "chunk_size": 64,
           "data": {"name": "synthetic", "n_train": 16, "n_test": 8, "dim": 3, "classes": 2},
           "model": {"name": "mlp", "widths": [4], "activation": "tanh"},
           "optimizer": {"method": "sgd", "lr": 0.1, "batch_size": 4}}
    raw.update(top)
    return raw


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Paths the cases refer to by name: a finished run, a diverged run, broken files, a study."""
    root = tmp_path_factory.mktemp("bad-input")
    train(tiny_cfg(), root / "run")
    from samcli.study.rundir import measure_and_record
    measure_and_record(root / "run", stochastic_examples=2, directions=4)   # a good report a refusal must keep
    train(tiny_cfg(**{"data": {"name": "synthetic", "n_train": 16, "n_test": 8, "dim": 3, "classes": 2,
                               "task": "regression"}, "loss": "mse", "steps": 50,
                      "optimizer": {"method": "sgd", "lr": 1e30, "batch_size": "full"}}), root / "diverged")
    (root / "torn").mkdir()
    for name in ("config.yaml", "summary.json"):
        (root / "torn" / name).write_bytes((root / "run" / name).read_bytes())
    (root / "torn" / "checkpoint.pt").write_bytes((root / "run" / "checkpoint.pt").read_bytes()[:100])
    (root / "a-file").write_text("not a directory\n")
    (root / "latin1.yaml").write_bytes("name: caf\xe9\nsteps: 2\n".encode("latin-1"))
    (root / "list.yaml").write_text("- 1\n- 2\n")
    (root / "broken.yaml").write_text("steps: [1, 2\n")
    (root / "empty-dir").mkdir()
    (root / "locked").mkdir()          # held by the test while each case runs

    def study(name: str, **changes) -> None:
        raw = tiny_study(name=name.replace(".yaml", ""), seeds=[0])
        for key, value in changes.items():
            node = raw
            *parents, leaf = key.split("/")
            for part in parents:
                node = node[part]
            node[leaf] = value
        (root / name).write_text(yaml.safe_dump(raw))
    study("study.yaml")
    study("study-samples0.yaml", **{"base/measure": {"samples": 0}})
    study("study-lr-inf.yaml", **{"variants": [{"label": "GD", "optimizer.method": "sgd",
                                                "optimizer.batch_size": "full"},
                                               {"label": "hot", "optimizer.method": "sgd", "optimizer.lr": math.inf,
                                                "optimizer.batch_size": "full"}]})
    study("study-classes.yaml", **{"grid": {"data.classes": [2, 0]}})
    study("study-rho-nan.yaml", **{"sharpness/rho": math.nan})
    study("study-lanczos0.yaml", **{"sharpness/lanczos_iters": 0})
    study("study-sharp-key.yaml", **{"sharpness/lanczos_iter": 5})
    study("study-seeds.yaml", **{"seeds": []})
    study("study-gamma.yaml", **{"base/optimizer/gamma": -1})
    study("study-loss.yaml", **{"base/loss": "hinge"})
    return root


def at(name: str) -> str:
    return "{" + name + "}"


CLI_CASES = [
    # train
    (["train", "/nonexistent/config.yaml"], "does not exist"),
    (["train", at("latin1.yaml")], "not UTF-8"),
    (["train", at("list.yaml")], "mapping"),
    (["train", at("broken.yaml")], "not valid YAML"),
    (["train", *TINY, "--out", at("a-file")], "existing file"),
    (["train", *TINY, "--out", at("run")], "already holds a run"),
    (["train", *TINY, "--out", at("a-file") + "/run"], "a-file"),
    (["train", *TINY, "--set", "optimizer.lr=.inf"], "optimizer.lr"),
    (["train", *TINY, "--rho", "nan", "--method", "sam"], "optimizer.rho"),
    (["train", *TINY, "--set", "measure.samples=0"], "measure.samples"),
    (["train", *TINY, "--set", "measure.samples=-3"], "measure.samples"),
    (["train", *TINY, "--set", "measure.lanczos_iters=0"], "measure.lanczos_iters"),
    (["train", *TINY, "--set", "data.classes=0"], "data.classes"),
    (["train", *TINY, "--set", "optimizer.gamma=-1"], "optimizer.gamma"),
    (["train", *TINY, "--loss", "hinge"], "loss='hinge'"),
    (["train", *TINY, "--loss", "cross_entropi"], "did you mean cross-entropy"),
    (["train", *TINY, "--batch-size", "half"], "--batch-size='half'"),
    (["train", *TINY, "--method", "adam"], "optimizer.method"),
    (["train", *TINY, "--dtype", "float16"], "dtype"),
    (["train", *TINY, "--device", "tpu"], "device"),
    (["train", *TINY, "--steps", "0"], "steps"),
    (["train", *TINY, "--lr", "-1"], "optimizer.lr"),
    (["train", *TINY, "--momentum", "1"], "optimizer.momentum"),
    (["train", *TINY, "--set", "seed=zero"], "seed"),
    (["train", *TINY, "--dataset", "imagenet"], "data.name"),
    (["train", *TINY, "--model", "transformer"], "model.name"),
    # sharpness
    (["sharpness", "/nonexistent/run"], "holds no checkpoint.pt"),
    (["sharpness", at("empty-dir")], "holds no checkpoint.pt"),
    # one trained run, measured with each bad option
    *[(["sharpness", at("run"), *args], fragment) for args, fragment in [
        (("--rho", "nan"), "rho=nan"),
        (("--rho", "inf"), "rho=inf"),
        (("--rho", "0"), "rho=0"),
        (("--rho", "-1"), "rho=-1"),
        (("--samples", "0"), "samples=0"),
        (("--samples", "-3"), "samples=-3"),
        (("--samples", "many"), "--samples='many'"),
        (("--notions", "flatness"), "unknown sharpness notion 'flatness'"),
        (("--set", "ascent_restrts=1"), "did you mean --set ascent_restarts"),
        (("--set", "ascent_restarts"), "needs the form"),
        (("--set", "directions=0"), "--set directions=0 must be >= 1"),
        (("--set", "finite=maybe"), "--set finite='maybe' must be True or False"),
        (("--set", "rho=0.1"), "--set rho=... sets a knob that has its own option; pass --rho 0.1 instead"),
        (("--set", "samples=10"), "pass --samples 10 instead"),
        (("--set", "k=900"), "k=900 eigenvalues asked of a model with"),
        (("--rho", "0"), "--rho=0.0 must be > 0"),
        (("--set", "ascent_tol=-1"), "ascent_tol=-1 must be >= 0"),
    ]],
    (["sharpness", at("diverged")], "diverged run"),
    (["sharpness", at("torn")], "cannot be read"),
    # compare
    (["compare", "/nonexistent/study.yaml"], "does not exist"),
    (["compare", at("latin1.yaml")], "not UTF-8"),
    (["compare", at("study-samples0.yaml"), "--out", at("s1")], "measure.samples"),
    (["compare", at("study-lr-inf.yaml"), "--out", at("s2")], "optimizer.lr"),
    (["compare", at("study-classes.yaml"), "--out", at("s3")], "data.classes"),
    (["compare", at("study-rho-nan.yaml"), "--out", at("s4")], "rho=nan"),
    (["compare", at("study-lanczos0.yaml"), "--out", at("s5")], "lanczos_iters=0"),
    (["compare", at("study-sharp-key.yaml"), "--out", at("s6")], "sharpness.lanczos_iter"),
    (["compare", at("study-seeds.yaml"), "--out", at("s7")], "seeds"),
    (["compare", at("study-gamma.yaml"), "--out", at("s8")], "optimizer.gamma"),
    (["compare", at("study-loss.yaml"), "--out", at("s9")], "loss='hinge'"),
    (["compare", at("study.yaml"), "--out", at("a-file")], "existing file"),
    (["compare", at("study.yaml"), "--out", at("a-file") + "/study"], "a-file"),
    (["compare", at("study.yaml"), "--jobs", "0"], "--jobs 0"),
    (["compare", at("study.yaml"), "--executor", "slurm"], "--executor 'slurm'"),
    (["compare", at("study.yaml"), "--from", at("run")], "not both"),
    (["compare", "--from", at("empty-dir")], "holds no study.yaml"),
    (["compare", at("study.yaml"), "--out", at("locked")], "is in use by pid"),
    # reproduce
    (["reproduce", "nosuch"], "unknown study 'nosuch'"),
    (["reproduce", "figure1", "--quick", "--set", "nosuchkey=1"], "nosuchkey"),
    (["reproduce", "all", "--set", "rho=0.1"], "one study"),
    (["reproduce", "figure1", "--config", "/nonexistent.yaml"], "does not exist"),
    (["reproduce", "figure1", "--config", at("latin1.yaml")], "not UTF-8"),
    (["reproduce", "figure1", "--quick", "--set", "seed=x"], "seed='x'"),
    (["reproduce", "figure1", "--quick", "--out", at("a-file")], "a-file"),
]


@pytest.mark.parametrize("args, fragment", CLI_CASES, ids=[f"cli-{a[0]}-{i}" for i, (a, _) in enumerate(CLI_CASES)])
def test_cli_refuses_in_one_line(files, args, fragment, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)            # anything a case would write by default lands here
    names = {p.name: str(p) for p in files.iterdir()} | {f"s{i}": str(tmp_path / f"s{i}") for i in range(1, 10)}

    def resolve(arg: str) -> str:
        for name, path in names.items():
            arg = arg.replace(at(name), path)
        return arg
    args = [resolve(a) for a in args]
    before = finished_files(files)
    with study_lock(files / "locked"):
        result = CliRunner().invoke(app, args)
    assert finished_files(files) == before          # a refusal changes no finished file (a report included)
    assert result.exit_code == 2, (result.exit_code, result.output)
    assert result.exception is None or isinstance(result.exception, SystemExit)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert fragment in lines[0], lines[0]
    assert "Traceback" not in result.output and result.stdout == ""
    assert not list(tmp_path.glob("s*/runs/*/summary.json"))      # nothing trained


def finished_files(root: Path) -> dict:
    """path -> bytes of every file below `root` but the study lock (rewritten by each holder)."""
    return {p: p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file() and p.name != ".lock"}


# ---- the Python API: a SamcliError subclass with one line ---------------------------------------------

def mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2)).double()


X = torch.randn(8, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
Y = torch.tensor([0, 1, 1, 0, 1, 0, 0, 1])


def sharp(data=(X, Y), model=None, **kwargs):
    return lambda files: measure_sharpness(model or mlp(), data, **kwargs)


API_CASES = [
    (sharp(loss="nll"), "loss='nll'"),
    (sharp(loss="cross-entropi"), "did you mean cross-entropy"),
    (sharp(loss=3), "loss=3"),
    (sharp(data=(torch.randn(8, 5, dtype=torch.float64), Y)), "inputs of shape (5,)"),
    (sharp(data=(X[:0], Y[:0])), "no examples"),
    (sharp(data=(X, Y[:5])), "one target per input"),
    (sharp(data=(X, torch.tensor([0, 1, 5, 0, 1, 0, 0, 1]))), "label 5 is out of range"),
    (sharp(data=(X, torch.tensor([0, -1, 1, 0, 1, 0, 0, 1]))), "label -1 is out of range"),
    (sharp(data=(X, Y.double())), "integer class labels"),
    (sharp(data=(X, torch.randn(8, 3, dtype=torch.float64)), loss="mse"), "3 values per example"),
    (sharp(data=(X.long(), Y)), "floating-point inputs"),
    (sharp(data=(X.clone().fill_(math.nan), Y)), "NaN or inf"),
    (sharp(data="abc"), "pair of tensors"),
    (sharp(model=nn.ReLU()), "no parameters"),
    (lambda files: measure_sharpness("model", (X, Y)), "torch.nn.Module"),
    (sharp(lanczos_iter=5), "did you mean lanczos_iters"),
    (sharp(rho=math.nan), "rho=nan"),
    (sharp(rho=0), "rho=0"),
    (sharp(samples=0), "samples=0"),
    (sharp(notions=["averge"]), "unknown sharpness notion 'averge' (did you mean average?)"),
    (sharp(lanczos_iters=0), "lanczos_iters=0"),
    (sharp(trace_probes=-1), "trace_probes=-1"),
    (sharp(directions=2.5), "directions=2.5"),
    (sharp(ascent_tol=-1e-4), "ascent_tol=-0.0001 must be >= 0"),
    (sharp(ascent_tol=math.nan), "ascent_tol=nan must be a finite number"),
    (sharp(seed="x"), "seed='x'"),
    (lambda files: measure_run(files / "run", rho=math.inf), "rho=inf"),
    (lambda files: measure_run(files / "empty-dir"), "holds no checkpoint.pt"),
    (lambda files: train(tiny_cfg(), files / "run"), "already holds a run"),
    (lambda files: train(tiny_cfg(), files / "a-file"), "existing file"),
    (lambda files: train(tiny_cfg(loss="nll")), "loss='nll'"),
    (lambda files: compare(tiny_study(), out=files / "a-file"), "existing file"),
    (lambda files: compare(tiny_study(), jobs=0, out=files / "s"), "--jobs 0"),
    (lambda files: compare(files / "study-lanczos0.yaml", out=files / "s"), "lanczos_iters=0"),
    (lambda files: load_study(files / "latin1.yaml"), "not UTF-8"),
    (lambda files: load_study({"name": "x", "base": {}, "grid": {"optimizer.rho": [0.1, math.nan]}}),
     "optimizer.rho"),
]


@pytest.mark.parametrize("call, fragment", API_CASES, ids=[f"api-{i}" for i in range(len(API_CASES))])
def test_api_refuses_in_one_line(files, call, fragment):
    with pytest.raises(SamcliError) as err:
        call(files)
    message = str(err.value)
    assert "\n" not in message and fragment in message, message


@pytest.mark.parametrize("spelling", ["cross_entropy", "CrossEntropy", "CrossEntropyLoss", "cross entropy"])
def test_loss_spellings_of_cross_entropy_are_accepted(spelling):
    reference = measure_sharpness(mlp(), (X, Y), notions=["ascent"], stochastic_examples=0)
    aliased = measure_sharpness(mlp(), (X, Y), loss=spelling, notions=["ascent"], stochastic_examples=0)
    assert aliased.loss == reference.loss and aliased.ascent == reference.ascent
    assert TrainConfig.from_dict({"loss": spelling}).loss == "cross-entropy"


def test_every_case_table_is_large_enough():
    assert len(CONFIG_CASES) + len(CLI_CASES) + len(API_CASES) >= 100
