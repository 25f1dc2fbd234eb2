"""The user's own model and data (targets): through `samcli train`, `samcli sharpness RUN`, a study on the
local executor, `--weights`, `samcli.train(cfg)`; the back door (`train(..., task=...)`) closed; torch loss
modules on their names' exact paths; every bad input one line, exit 2, nothing written.

Every number is checked against a reference computed here with plain torch on the same module and data
(the trained parameters against hand-written gradient descent, a measured loss against torch's loss)."""
from __future__ import annotations

import json
import runpy
import uuid
from pathlib import Path

import pytest
import torch
import yaml
from torch import nn
from typer.testing import CliRunner

import samcli
from samcli.cli import app
from samcli.config import TrainConfig, config_hash
from samcli.curvature.dense import dense_hessian
from samcli.errors import ConfigError, SamcliError
from samcli.objective import Batch, Objective, cross_entropy, mean_squared_error
from samcli.task import Task, expected_data_fingerprint

DT = torch.float64
NETS = """
import torch
from torch import nn


def build(input_shape, num_outputs, width=4):
    features = 1
    for s in input_shape:
        features *= s
    return nn.Sequential(nn.Flatten(), nn.Linear(features, width), nn.Tanh(), nn.Linear(width, num_outputs))


def batchnormed(input_shape, num_outputs):
    return nn.Sequential(nn.Flatten(), nn.Linear(input_shape[0], 4), nn.BatchNorm1d(4), nn.ReLU(),
                         nn.Linear(4, num_outputs))


def raises(width=3):
    raise ValueError(f"width {width} must be even")


def not_a_module(input_shape, num_outputs):
    return [nn.Linear(2, 2)]


def two_outputs(input_shape):
    return nn.Sequential(nn.Flatten(), nn.Linear(input_shape[0], 2))

WIDTH = 4
"""
DATA = """
import torch
from torch.utils.data import TensorDataset


def load(n=24, dim=3, classes=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(2 * n, dim, generator=g)
    y = torch.remainder((x[:, 0] > 0).long() + 2 * (x[:, 1] > 0).long(), classes)
    return (x[:n], y[:n]), TensorDataset(x[n:], y[n:])


def three():
    x = torch.randn(4, 3)
    return (x, x), (x, x), (x, x)


def a_dict():
    return {"train": 1}


def mismatched():
    return (torch.randn(4, 3), torch.zeros(3, dtype=torch.long)), (torch.randn(4, 3), torch.zeros(4, dtype=torch.long))


def integer_inputs():
    x = torch.ones(4, 3, dtype=torch.long)
    return (x, x[:, 0]), (x, x[:, 0])


def regression(n=16):
    x = torch.randn(2 * n, 3, generator=torch.Generator().manual_seed(1))
    return (x[:n], x[:n, :2].sum(1, keepdim=True)), (x[n:], x[n:, :2].sum(1, keepdim=True))
"""
TRAIN = ["--steps", "3", "--dtype", "float64", "--batch-size", "full", "--lr", "0.1", "--quiet", "--device", "cpu"]
FAST = ["--notions", "worst", "--set", "lanczos_iters=6", "--set", "ascent_restarts=1", "--set", "ascent_iters=2"]


@pytest.fixture()
def code(tmp_path, monkeypatch):
    """nets.py and data.py in a fresh working directory (the test's), also importable as modules."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "nets.py").write_text(NETS)
    (tmp_path / "data.py").write_text(DATA)
    tag = uuid.uuid4().hex[:8]       # a module name of its own: sys.modules keeps what other tests imported
    (tmp_path / f"nets_{tag}.py").write_text(NETS)
    (tmp_path / f"data_{tag}.py").write_text(DATA)
    monkeypatch.syspath_prepend(str(tmp_path))
    return tmp_path, tag


def invoke(args):
    return CliRunner().invoke(app, [str(a) for a in args])


def refused(result, *fragments):
    """Exit 2, one line on stderr holding every fragment, no traceback."""
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


def reference_data(n=24, dim=3, classes=3, seed=0):
    """data.py's load, written again: the split the run must have trained on."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(2 * n, dim, generator=g)
    y = torch.remainder((x[:, 0] > 0).long() + 2 * (x[:, 1] > 0).long(), classes)
    return x[:n].to(DT), y[:n]


def reference_gd(width, steps, lr, seed=0):
    """Full-batch gradient descent by hand on nets.build: the initialization train() makes (seed, float32
    then float64), then x <- x - lr grad."""
    x, y = reference_data()
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Flatten(), nn.Linear(3, width), nn.Tanh(), nn.Linear(width, 3)).to(DT)
    for _ in range(steps):
        model.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        with torch.no_grad():
            for p in model.parameters():
                p -= lr * p.grad
    return model, x, y


def flat(model):
    return torch.cat([p.detach().reshape(-1) for p in model.parameters()])


# ---- samcli train, samcli sharpness RUN --------------------------------------------------------------

def test_train_with_file_targets_trains_that_model_and_sharpness_rebuilds_it(code):
    result = invoke(["train", "--model", "nets.py:build", "--dataset", "data.py:load", "--set", "model.args.width=5",
                     *TRAIN, "--out", "run"])
    assert result.exit_code == 0, result.output
    config = yaml.safe_load(Path("run/config.yaml").read_text())
    assert config["model"]["target"] == f"{code[0] / 'nets.py'}:build" and config["model"]["args"] == {"width": 5}
    assert config["model"]["name"] == "target" and config["data"]["target"] == f"{code[0] / 'data.py'}:load"
    state = torch.load("run/checkpoint.pt", weights_only=True)
    model, x, y = reference_gd(width=5, steps=3, lr=0.1)
    assert state["origin"] == "config"
    torch.testing.assert_close(state["theta"], flat(model), rtol=0, atol=1e-12)

    measured = invoke(["sharpness", "run", *FAST, "--json"])
    assert measured.exit_code == 0, measured.output
    report = json.loads(Path("run/sharpness.json").read_text())
    assert report["loss"] == pytest.approx(nn.functional.cross_entropy(model(x), y).item(), abs=1e-12)


def test_set_model_target_and_module_targets_work_and_the_hash_covers_target_and_args(code):
    _, tag = code
    args = ["train", "--set", f"model.target=nets_{tag}:build", "--set", f"data.target=data_{tag}:load",
            "--set", "model.args.width=5", *TRAIN, "--out", "run"]
    assert invoke(args).exit_code == 0
    model, _, _ = reference_gd(width=5, steps=3, lr=0.1)
    torch.testing.assert_close(torch.load("run/checkpoint.pt", weights_only=True)["theta"], flat(model),
                               rtol=0, atol=1e-12)
    base = {"model": {"target": "nets.py:build", "args": {"width": 5}}, "data": {"target": "data.py:load"}}
    same = TrainConfig.from_dict({**base, "model": {"target": str(code[0] / "nets.py") + ":build",
                                                   "args": {"width": 5}}})
    assert config_hash(TrainConfig.from_dict(base)) == config_hash(same)     # relative = its absolute path
    other_args = TrainConfig.from_dict({**base, "model": {"target": "nets.py:build", "args": {"width": 6}}})
    other_target = TrainConfig.from_dict({**base, "model": {"target": "nets.py:other", "args": {"width": 5}}})
    hashes = {config_hash(c) for c in (TrainConfig.from_dict(base), other_args, other_target)}
    assert len(hashes) == 3


def test_a_config_built_in_python_names_its_target(code):
    from samcli.config import DataConfig, ModelConfig
    cfg = TrainConfig(model=ModelConfig(target="nets.py:build", args={"width": 5}),
                      data=DataConfig(target="data.py:load"), steps=3, dtype="float64", device="cpu")
    cfg.optimizer.batch_size, cfg.optimizer.lr = "full", 0.1
    assert cfg.model.name == "target" and cfg.model.target == f"{code[0] / 'nets.py'}:build"
    assert TrainConfig.from_dict(cfg.to_dict()) == cfg
    model, _, _ = reference_gd(width=5, steps=3, lr=0.1)
    torch.testing.assert_close(samcli.train(cfg, write=False).theta, flat(model), rtol=0, atol=1e-12)


def test_a_relative_file_target_is_found_from_another_working_directory(code, tmp_path, monkeypatch):
    Path("train.yaml").write_text(yaml.safe_dump({
        "model": {"target": "nets.py:build", "args": {"width": 5}}, "data": {"target": "data.py:load"},
        "steps": 3, "dtype": "float64", "device": "cpu", "optimizer": {"lr": 0.1, "batch_size": "full"}}))
    cfg = TrainConfig.load("train.yaml")        # a worker gets this config, resolved where it was loaded
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    model, _, _ = reference_gd(width=5, steps=3, lr=0.1)
    torch.testing.assert_close(samcli.train(cfg, write=False).theta, flat(model), rtol=0, atol=1e-12)


def test_the_data_fingerprint_covers_user_data(code):
    cfg = TrainConfig.from_dict({"data": {"target": "data.py:load"}, "dtype": "float64"})
    changed = TrainConfig.from_dict({"data": {"target": "data.py:load", "args": {"seed": 1}}, "dtype": "float64"})
    x, y = reference_data()
    digest = expected_data_fingerprint(cfg)
    assert digest["train"] == 24 and digest["test"] == 24
    assert expected_data_fingerprint(changed)["sha256"] != digest["sha256"]
    result = samcli.train(cfg.replace(**{"model.target": "nets.py:build", "steps": 1,
                                         "optimizer.batch_size": "full"}), write=False)
    assert result.summary["data"] == digest


def test_python_train_of_a_config_with_targets(code, tmp_path):
    cfg = {"model": {"target": "nets.py:build", "args": {"width": 5}}, "data": {"target": "data.py:load"},
           "steps": 4, "dtype": "float64", "device": "cpu", "optimizer": {"lr": 0.1, "batch_size": "full"}}
    result = samcli.train(cfg, tmp_path / "py-run")
    model, x, y = reference_gd(width=5, steps=4, lr=0.1)
    torch.testing.assert_close(result.theta, flat(model), rtol=0, atol=1e-12)
    assert result.summary["final"]["train_loss"] == pytest.approx(
        nn.functional.cross_entropy(model(x), y).item(), abs=1e-12)
    report = samcli.measure_run(tmp_path / "py-run", notions=("worst",), lanczos_iters=6)
    assert report.loss == pytest.approx(result.summary["final"]["train_loss"], abs=1e-12)


def test_a_checkpoint_whose_factory_changed_is_one_line(code):
    trained = invoke(["train", "--model", "nets.py:build", "--dataset", "data.py:load", *TRAIN, "--out", "run"])
    assert trained.exit_code == 0
    (code[0] / "nets.py").write_text(NETS.replace("width=4", "width=6"))
    refused(invoke(["sharpness", "run", *FAST]), "holds 31 parameters", "has 45", "changed since the run")


# ---- a study on the local executor -----------------------------------------------------------------

def test_compare_a_study_of_targets_on_the_local_executor_and_reuse(code):
    study = {"name": "own", "base": {"device": "cpu", "dtype": "float64", "steps": 3, "eval_every": 3,
                                     "model": {"target": "nets.py:build"}, "data": {"target": "data.py:load"},
                                     "optimizer": {"lr": 0.1, "batch_size": "full", "rho": 0.05}},
             "grid": {"model.args.width": [3, 5]},
             "variants": [{"label": "GD", "optimizer.method": "sgd"}, {"label": "SAM", "optimizer.method": "sam"}],
             "seeds": [0],
             "sharpness": {"notions": ["worst"], "lanczos_iters": 5, "ascent_iters": 2, "ascent_restarts": 1}}
    Path("study.yaml").write_text(yaml.safe_dump(study))
    result = invoke(["compare", "study.yaml", "--out", "st", "--jobs", "1", "--quiet", "--json"])
    assert result.exit_code == 0, result.output
    runs = sorted(Path("st/runs").iterdir())
    assert len(runs) == 4
    widths = set()
    for run in runs:
        config = yaml.safe_load((run / "config.yaml").read_text())
        assert config["model"]["target"] == f"{code[0] / 'nets.py'}:build"
        widths.add(config["model"]["args"]["width"])
        assert (run / "sharpness.json").is_file()
    assert widths == {3, 5}
    gd5 = next(r for r in runs if yaml.safe_load((r / "config.yaml").read_text())["optimizer"]["method"] == "sgd"
               and yaml.safe_load((r / "config.yaml").read_text())["model"]["args"]["width"] == 5)
    model, _, _ = reference_gd(width=5, steps=3, lr=0.1)
    torch.testing.assert_close(torch.load(gd5 / "checkpoint.pt", weights_only=True)["theta"], flat(model),
                               rtol=0, atol=1e-12)
    stamps = {r: (r / "checkpoint.pt").stat().st_mtime_ns for r in runs}
    again = invoke(["compare", "study.yaml", "--out", "st", "--jobs", "1", "--quiet", "--json"])
    assert again.exit_code == 0
    assert {r: (r / "checkpoint.pt").stat().st_mtime_ns for r in runs} == stamps      # reused, not retrained


def test_a_study_naming_a_missing_target_is_refused_before_anything_trains(code):
    study = {"name": "bad", "base": {"model": {"target": "nets.py:build"}, "data": {"target": "data.py:load"},
                                     "optimizer": {"batch_size": "full"}},
             "variants": [{"label": "GD", "optimizer.method": "sgd"},
                          {"label": "typo", "optimizer.method": "sgd", "model.target": "nets.py:biuld"}]}
    Path("study.yaml").write_text(yaml.safe_dump(study))
    refused(invoke(["compare", "study.yaml", "--out", "st", "--quiet"]), "configuration 'typo'",
            "has no attribute 'biuld' (did you mean build?)")
    assert not Path("st").exists()
    study["variants"][1]["model.target"] = "nets.py:raises"       # imports, but its factory raises
    Path("study.yaml").write_text(yaml.safe_dump(study))
    refused(invoke(["compare", "study.yaml", "--out", "st", "--quiet"]), "configuration 'typo'",
            "nets.py:raises raised ValueError: width 3 must be even")
    study["variants"][1]["model.target"] = "nets.py:two_outputs"  # builds, but 2 outputs for 3 classes
    Path("study.yaml").write_text(yaml.safe_dump(study))
    refused(invoke(["compare", "study.yaml", "--out", "st", "--quiet"]), "has the label 2", "has 2 outputs")
    assert not Path("st").exists()


def test_the_ray_executor_imports_the_targets_on_its_workers(code):
    ray = pytest.importorskip("ray")
    study = {"name": "own-ray", "base": {"device": "cpu", "dtype": "float64", "steps": 3, "eval_every": 3,
                                         "model": {"target": "nets.py:build", "args": {"width": 5}},
                                         "data": {"target": "data.py:load"},
                                         "optimizer": {"lr": 0.1, "batch_size": "full", "method": "sgd"}},
             "variants": [{"label": "GD"}], "seeds": [0],
             "sharpness": {"notions": ["worst"], "lanczos_iters": 5, "ascent_iters": 2, "ascent_restarts": 1}}
    ray.init(num_cpus=1, include_dashboard=False, _node_ip_address="127.0.0.1", log_to_driver=False,
             configure_logging=False)
    try:
        result = samcli.compare(study, out="st-ray", executor="ray")
    finally:
        ray.shutdown()
    assert not result.failed_runs
    (run,) = Path("st-ray/runs").iterdir()
    model, _, _ = reference_gd(width=5, steps=3, lr=0.1)
    torch.testing.assert_close(torch.load(run / "checkpoint.pt", weights_only=True)["theta"], flat(model),
                               rtol=0, atol=1e-12)


# ---- --weights: a checkpoint samcli did not write -----------------------------------------------------

def test_sharpness_of_a_state_dict_on_the_cli_and_in_python(code):
    torch.manual_seed(3)
    model = nn.Sequential(nn.Flatten(), nn.Linear(3, 5), nn.Tanh(), nn.Linear(5, 3))
    torch.save(model.state_dict(), "model.pt")
    result = invoke(["sharpness", "--model", "nets.py:build", "--data", "data.py:load", "--weights", "model.pt",
                     "--set", "model.args.width=5", "--set", "dtype=float64", *FAST, "--out", "measured"])
    assert result.exit_code == 0, result.output
    report = json.loads(Path("measured/sharpness.json").read_text())
    x, y = reference_data()
    expected = nn.functional.cross_entropy(model.to(DT)(x), y).item()
    assert report["loss"] == pytest.approx(expected, abs=1e-12)
    knobs = dict(notions=("worst",), lanczos_iters=6, ascent_restarts=1, ascent_iters=2, dtype="float64")
    python = samcli.measure_sharpness({"target": "nets.py:build", "args": {"width": 5}}, "data.py:load",
                                      weights="model.pt", **knobs)
    own = samcli.measure_sharpness(model, (x, y), **knobs)       # the module itself, on the same split
    assert python.loss == pytest.approx(expected, abs=1e-12)
    assert python.summary() == pytest.approx(own.summary(), rel=1e-10)
    assert report["checkpoint"] == python.checkpoint is not None


def test_weights_that_do_not_match_the_model_are_one_line(code):
    torch.save(nn.Sequential(nn.Flatten(), nn.Linear(3, 7), nn.Tanh(), nn.Linear(7, 3)).state_dict(), "wide.pt")
    torch.save({"0.weight": torch.zeros(4, 3)}, "partial.pt")
    torch.save({**nn.Sequential(nn.Flatten(), nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 3)).state_dict(),
                "extra": torch.zeros(1)}, "extra.pt")
    torch.save([1, 2], "list.pt")
    base = ["sharpness", "--model", "nets.py:build", "--data", "data.py:load", *FAST]
    refused(invoke([*base, "--weights", "wide.pt"]), "does not match model.target=", "1.weight is (7, 3) there, "
            "(4, 3) in the model")
    refused(invoke([*base, "--weights", "partial.pt"]), "missing keys 1.weight, 1.bias, 3.weight, 3.bias")
    refused(invoke([*base, "--weights", "extra.pt"]), "unexpected keys extra")
    refused(invoke([*base, "--weights", "list.pt"]), "not a state_dict")
    refused(invoke([*base, "--weights", "nothere.pt"]), "--weights nothere.pt does not exist")
    refused(invoke(["sharpness", "--model", "nets.py:build", "--weights", "wide.pt"]), "--model, --data and --weights")
    assert not Path("sharpness.json").exists()


# ---- the back door closed ---------------------------------------------------------------------------

def _user_task(module, loss="cross-entropy"):
    x, y = reference_data()
    objective, theta = Objective.from_module(module, loss)
    return Task(objective, theta, Batch(x, y), Batch(x, y), 3)


def test_train_with_a_task_leaves_the_trained_weights_and_buffers_in_the_users_module(code, tmp_path):
    torch.manual_seed(0)
    module = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.ReLU(), nn.Linear(4, 3)).to(DT)
    cfg = {"steps": 4, "dtype": "float64", "optimizer": {"lr": 0.1, "batch_size": "full"}}
    result = samcli.train(cfg, tmp_path / "task-run", task=_user_task(module))
    assert torch.equal(flat(module), result.theta)
    state = torch.load(tmp_path / "task-run" / "checkpoint.pt", weights_only=True)
    assert torch.equal(module[1].running_mean, state["buffers"]["1.running_mean"])
    assert int(module[1].num_batches_tracked) == 4          # the four training steps' first passes, no others
    x, y = reference_data()
    module.eval()
    accuracy = (module(x).argmax(1) == y).double().mean().item()
    assert accuracy == pytest.approx(result.summary["final"]["train_accuracy"], abs=1e-12)
    assert state["origin"] == "python" and result.summary["origin"] == "python"
    line = refused(invoke(["sharpness", tmp_path / "task-run"]), "came from Python code samcli cannot rebuild",
                   "--weights")
    assert "Traceback" not in line and not (tmp_path / "task-run" / "sharpness.json").exists()


def test_a_python_task_run_is_measured_with_model_and_its_checkpoint(code, tmp_path):
    torch.manual_seed(0)
    module = nn.Sequential(nn.Flatten(), nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 3)).to(DT)
    samcli.train({"steps": 3, "optimizer": {"lr": 0.1, "batch_size": "full"}}, tmp_path / "r", task=_user_task(module))
    result = invoke(["sharpness", "--model", "nets.py:build", "--data", "data.py:load", "--weights",
                     tmp_path / "r" / "checkpoint.pt", "--set", "dtype=float64", *FAST])
    assert result.exit_code == 0, result.output
    x, y = reference_data()
    report = json.loads((tmp_path / "r" / "sharpness.json").read_text())
    assert report["loss"] == pytest.approx(nn.functional.cross_entropy(module(x), y).item(), abs=1e-12)


@pytest.mark.parametrize("loss, name", [(nn.CrossEntropyLoss(), "cross-entropy"),
                                        (nn.CrossEntropyLoss(reduction="none"), "cross-entropy")])
def test_a_cross_entropy_module_takes_the_names_exact_path(loss, name):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 3)).to(DT)
    x, y = reference_data()
    by_module = samcli.measure_sharpness(model, (x, y), loss=loss, notions=("average",))
    by_name = samcli.measure_sharpness(model, (x, y), loss=name, notions=("average",))
    assert Objective.from_module(model, loss)[0].output_loss is cross_entropy
    assert by_module.average.trace_method == by_name.average.trace_method
    assert by_module.average.trace_method.startswith("exact Tr(G)")
    assert by_module.average.trace == by_name.average.trace


def test_an_mse_module_keeps_torchs_scale_and_the_exact_path():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2)).to(DT)
    x = torch.randn(10, 3, dtype=DT, generator=torch.Generator().manual_seed(2))
    y = torch.randn(10, 2, dtype=DT, generator=torch.Generator().manual_seed(3))
    objective, theta = Objective.from_module(model, nn.MSELoss())
    assert objective.output_loss is mean_squared_error
    assert objective.loss(theta, Batch(x, y)).item() == pytest.approx(nn.MSELoss()(model(x), y).item(), abs=1e-14)
    report = samcli.measure_sharpness(model, (x, y), loss=nn.MSELoss(), notions=("average",))

    def torch_loss(t):               # the dense reference: torch's own MSELoss of the flat parameters
        params = dict(zip([n for n, _ in model.named_parameters()],
                          t.split([p.numel() for p in model.parameters()])))
        params = {n: v.view(p.shape) for (n, p), v in zip(model.named_parameters(), params.values())}
        return nn.MSELoss()(torch.func.functional_call(model, params, (x,)), y)
    dense = torch.autograd.functional.hessian(torch_loss, flat(model))
    assert report.average.trace_method.startswith("exact Tr(G)")
    assert report.average.trace == pytest.approx(torch.trace(dense).item(), rel=1e-10)
    assert torch.trace(dense_hessian(objective, theta, Batch(x, y))).item() == pytest.approx(
        torch.trace(dense).item(), rel=1e-10)


def test_other_torch_loss_modules_say_which_path_and_why():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 3)).to(DT)
    x, y = reference_data()
    with pytest.raises(SamcliError, match=r"reduces over the batch \(reduction='mean'\).*reduction='none'"):
        samcli.measure_sharpness(model, (x, y), loss=nn.CrossEntropyLoss(label_smoothing=0.1))
    report = samcli.measure_sharpness(model, (x, y), loss=nn.CrossEntropyLoss(label_smoothing=0.1, reduction="none"),
                                      notions=("average",), trace_probes=4)
    assert report.average.trace_method.startswith(
        "hutch++: the loss nn.CrossEntropyLoss(label_smoothing=0.1, reduction='none') is not")
    assert "is not a cross-entropy or squared error of a module's outputs that samcli knows" in \
        report.average.trace_method


# ---- bad input: one line naming the target, exit 2, nothing written ----------------------------------

BAD = [
    (["--model", "nosuchmodule_xyz:build"],
     ["model.target=nosuchmodule_xyz:build", "no module named 'nosuchmodule_xyz'"]),
    (["--model", "nets.py:biuld"], ["nets.py has no attribute 'biuld' (did you mean build?)"]),
    (["--model", "missing/nets.py:build"], ["missing/nets.py does not exist"]),
    (["--model", "broken.py:build"], ["broken.py line 3 has a syntax error"]),
    (["--model", "nets.py:raises"], ["model.target=", "nets.py:raises raised ValueError: width 3 must be even"]),
    (["--model", "nets.py:not_a_module"], ["nets.py:not_a_module returned a list, not a torch.nn.Module"]),
    (["--model", "nets.py:WIDTH"], ["nets.py:WIDTH is a int, not a function or class"]),
    (["--model", "nets.py:build", "--set", "model.args.widht=3"],
     ["model.args.widht is not one of its parameters (did you mean width?)"]),
    (["--model", "nets.py:two_outputs"], ["has the label 2, but model.target=", "has 2 outputs"]),
    (["--dataset", "data.py:three"], ["data.py:three returned a 3-tuple; return (train, test)"]),
    (["--dataset", "data.py:a_dict"], ["data.py:a_dict returned a dict; return (train, test)"]),
    (["--model", "bad name:build"], ["'bad name' is neither a module name"]),
    (["--set", "model.name=cnn", "--set", "model.target=nets.py:build"], ["both set", "drop model.name"]),
    (["--dataset", "data.py:regression"], ["loss=cross-entropy needs class labels"]),
    (["--dataset", "data.py:mismatched"], ["the train split of data.target=", "give one target per input"]),
    (["--dataset", "data.py:integer_inputs"], ["has inputs of dtype torch.int64; give floating-point inputs"]),
]


@pytest.mark.parametrize("args, fragments", BAD, ids=[" ".join(a) for a, _ in BAD])
def test_bad_targets_are_one_line_and_nothing_is_written(code, args, fragments):
    (code[0] / "broken.py").write_text("import torch\n\ndef build(:\n    pass\n")
    full = ["train", *args]
    if "--model" not in args and not any("model." in a for a in args):
        full += ["--model", "nets.py:build"]
    if "--dataset" not in args:
        full += ["--dataset", "data.py:load"]
    refused(invoke([*full, *TRAIN, "--out", "run"]), *fragments)
    assert not Path("run").exists()


def test_bad_targets_in_python_are_config_errors(code):
    with pytest.raises(ConfigError, match="raised ValueError: width 3 must be even"):
        samcli.train({"model": {"target": "nets.py:raises"}, "data": {"target": "data.py:load"},
                      "optimizer": {"batch_size": "full"}}, write=False)
    with pytest.raises(ConfigError, match="did you mean build"):
        samcli.measure_sharpness("nets.py:buil", "data.py:load")


# ---- examples/own_model ------------------------------------------------------------------------------

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "own_model"


def example_commands() -> list[str]:
    text = (EXAMPLE / "README.md").read_text()
    blocks = [b.split("\n", 1)[1] for b in text.split("```bash")[1:]]
    return [line.strip() for b in blocks for line in b.split("```")[0].splitlines() if line.strip()]


def test_the_own_model_example_runs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "examples").mkdir()
    (tmp_path / "examples" / "own_model").symlink_to(EXAMPLE, target_is_directory=True)
    commands = example_commands()
    assert [c.split()[1] for c in commands] == ["train", "sharpness", "compare", "examples/own_model/plain_loop.py",
                                                "sharpness"], commands
    for line in commands:
        args = line.split()[1:]
        if line.startswith("python "):      # the plain loop, shorter
            runpy.run_path(args[0], run_name="plain_loop")["main"](args[1], steps=5)
            assert Path(args[1]).is_file()
            continue
        if args[0] == "compare":      # the study as written, smaller: fewer steps, one seed
            study = yaml.safe_load((EXAMPLE / "study.yaml").read_text())
            study["base"]["steps"], study["seeds"] = 10, [0]
            study["sharpness"] = {"notions": ["worst", "average"], "lanczos_iters": 6, "ascent_restarts": 1,
                                  "ascent_iters": 2}
            Path("small.yaml").write_text(yaml.safe_dump(study))
            args[1] = "small.yaml"
            args += ["--jobs", "1", "--quiet"]      # in this process: a pool's start costs more than the runs
        if args[0] == "train":
            args = [a if a != "150" else "10" for a in args]
        if args[0] == "sharpness":
            args += FAST
        result = invoke(args)
        assert result.exit_code == 0, (line, result.output)
    assert Path("results/runs/own-cnn/sharpness.json").is_file()
    assert len(list(Path("results/studies/own-model/runs").iterdir())) == 2
    text = (EXAMPLE / "README.md").read_text()
    (python,) = [b.split("```")[0] for b in text.split("```python\n")[1:]]
    scope: dict = {}
    exec(compile(python, "examples/own_model/README.md", "exec"), scope)    # the Python door, on the same file
    cli = json.loads(Path("sharpness.json").read_text())
    assert scope["report"].loss == pytest.approx(cli["loss"], rel=1e-6)
