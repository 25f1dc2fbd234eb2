"""Runs from any loop: samcli.RunWriter writes a run directory from a user's own loop, and a study tabulates
existing run directories (`runs:`, `samcli compare --runs`) without ever training them.

References are computed here: the checkpoint against the module's own parameters, the measurement
against samcli.measure_sharpness on the module itself, the table's means against the values the loop
logged, the data fingerprint against one computed from the loader's output."""
from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest
import torch
import yaml
from torch import nn
from typer.testing import CliRunner

import samcli
from samcli.cli import app
from samcli.errors import ConfigError, SamcliError
from samcli.runs import file_sha256
from samcli.study import given_study
from samcli.task import expected_data_fingerprint

MODS = """
import torch
from torch import nn


def build(input_shape, num_outputs, width=4):
    return nn.Sequential(nn.Flatten(), nn.Linear(input_shape[0], width), nn.Tanh(), nn.Linear(width, num_outputs))


def load(n=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(2 * n, 3, generator=g)
    y = (x[:, 0] + 0.5 * x[:, 1] > 0).long()
    return (x[:n], y[:n]), (x[n:], y[n:])
"""
FAST = {"notions": ["worst", "average"], "lanczos_iters": 6, "ascent_restarts": 1, "ascent_iters": 2,
        "directions": 4}
FAST_CLI = ["--notions", "worst", "--notions", "average", "--set", "lanczos_iters=6", "--set", "ascent_restarts=1",
            "--set", "ascent_iters=2", "--set", "directions=4"]


@pytest.fixture()
def mods(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "mods.py").write_text(MODS)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 3, generator=g)
    y = (x[:, 0] + 0.5 * x[:, 1] > 0).long()
    return (x[:32].double(), y[:32]), (x[32:].double(), y[32:])      # load(), written again


def config(method="sam", seed=0, width=4, **extra):
    return {"model": {"target": "mods.py:build", "args": {"width": width}}, "data": {"target": "mods.py:load"},
            "dtype": "float64", "device": "cpu", "seed": seed,
            "optimizer": {"method": method, "rho": 0.05, "lr": 0.2, "batch_size": "full"}, **extra}


def model_for(seed=0, width=4):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(3, width), nn.Tanh(), nn.Linear(width, 2)).double()


def write_run(out, data, method="sam", seed=0, steps=6, label=None, raise_at=None):
    """A plain loop: full-batch SGD, or samcli.optim.SAM; logs every 3 steps; returns (model, records)."""
    (x, y), (xt, yt) = data
    model = model_for(seed)
    opt = (samcli.optim.SAM(model.parameters(), torch.optim.SGD, rho=0.05, lr=0.2) if method == "sam"
           else torch.optim.SGD(model.parameters(), lr=0.2))
    logged = []
    with samcli.RunWriter(out, config(method, seed), model, label=label) as run:
        for step in range(1, steps + 1):
            if step == raise_at:
                raise raise_at_error
            def closure():
                loss = nn.functional.cross_entropy(model(x), y)
                loss.backward()
                return loss
            opt.zero_grad()
            closure()
            opt.step(closure) if method == "sam" else opt.step()
            if step % 3 == 0:
                with torch.no_grad():
                    logged.append(run.log(step, epoch=float(step), train_loss=nn.functional.cross_entropy(model(x), y),
                                          test_accuracy=(model(xt).argmax(1) == yt).double().mean()))
    return model, logged


raise_at_error: BaseException = ValueError("boom")


def invoke(args):
    return CliRunner().invoke(app, [str(a) for a in args])


def refused(result, *fragments):
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


# ---- the writer -----------------------------------------------------------------------------------

def test_a_loop_writes_a_run_that_samcli_sharpness_measures_as_the_module_itself(mods):
    model, logged = write_run("run", mods)
    summary = json.loads(Path("run/summary.json").read_text())
    assert summary["status"] == "completed" and summary["origin"] == "writer" and summary["steps_done"] == 6
    assert summary["final"] == {k: v for k, v in logged[-1].items() if k != "step"}
    assert summary["checkpoint_sha256"] == file_sha256("run/checkpoint.pt")
    assert summary["data"] == expected_data_fingerprint(samcli.TrainConfig.from_dict(config()))
    assert [json.loads(line) for line in Path("run/metrics.jsonl").read_text().splitlines()] == logged
    state = torch.load("run/checkpoint.pt", weights_only=True)
    assert torch.equal(state["theta"], torch.nn.utils.parameters_to_vector(model.parameters()).detach())
    assert yaml.safe_load(Path("run/config.yaml").read_text())["model"]["target"].endswith("mods.py:build")

    result = invoke(["sharpness", "run", *FAST_CLI])
    assert result.exit_code == 0, result.output
    stored = json.loads(Path("run/sharpness.json").read_text())
    direct = samcli.measure_sharpness(model, mods[0], **{k: tuple(v) if k == "notions" else v
                                                         for k, v in FAST.items()})
    assert stored["worst"]["eigenvalues"][0] == pytest.approx(direct.summary()["lambda_1"], rel=1e-12)
    assert stored["loss"] == pytest.approx(direct.loss, rel=1e-12)
    assert samcli.measure_run("run", notions=("worst",), lanczos_iters=6).summary()["lambda_1"] == \
        pytest.approx(direct.summary()["lambda_1"], rel=1e-12)


@pytest.mark.parametrize("error, status", [(ValueError("boom"), "failed"), (KeyboardInterrupt(), "interrupted")])
def test_a_block_that_raises_is_marked_and_the_exception_goes_on(mods, monkeypatch, error, status):
    monkeypatch.setattr(sys.modules[__name__], "raise_at_error", error)
    with pytest.raises(type(error)):
        write_run("run", mods, raise_at=5)
    summary = json.loads(Path("run/summary.json").read_text())
    assert summary["status"] == status and summary[f"{status}_at"] == 3 and summary["origin"] == "writer"
    assert summary["last_finite"]["step"] == 3 and "final" not in summary
    assert ("boom" in summary.get("error", "")) == (status == "failed")
    assert summary["checkpoint_sha256"] == file_sha256("run/checkpoint.pt")


def test_bad_input_to_the_writer_is_one_line_with_nothing_written(mods):
    model = model_for()
    no_model = {k: v for k, v in config().items() if k != "model"}
    torch.manual_seed(123)                            # not the config's seed: a reseeded generator would differ
    state = torch.get_rng_state()
    samcli.RunWriter("unused", config(), model)       # builds the config's model: the loop's generator is kept
    assert torch.equal(torch.get_rng_state(), state) and not Path("unused").exists()
    with pytest.raises(ConfigError, match="no model section"):
        samcli.RunWriter("run", no_model, model)
    with pytest.raises(ConfigError, match=r"parameter '1.weight' has shape \(4, 3\), the model model.target="):
        samcli.RunWriter("run", config(width=5), model)
    with pytest.raises(ConfigError, match=r"has a parameter '3.weight' of shape \(2, 4\) that your module lacks"):
        samcli.RunWriter("run", config(), nn.Sequential(nn.Flatten(), nn.Linear(3, 4)).double())
    with pytest.raises(ConfigError, match="optimizer.lr"):
        samcli.RunWriter("run", config(optimizer={"lr": -1}), model)
    assert not Path("run").exists()
    with samcli.RunWriter("run", config(), model) as run:
        run.log(2, train_loss=1.0)
        with pytest.raises(ConfigError, match="above the last logged step 2"):
            run.log(2, train_loss=1.0)
        with pytest.raises(ConfigError, match="train_loss='x' must be a number"):
            run.log(3, train_loss="x")
    with pytest.raises(SamcliError, match="outside its with block"):
        run.log(4)
    with pytest.raises(SamcliError, match="logged nothing"):
        with samcli.RunWriter("empty", config(), model):
            pass
    assert json.loads(Path("empty/summary.json").read_text())["status"] == "failed"


# ---- given runs in a study --------------------------------------------------------------------------

def four_runs(mods):
    logged = {}
    for method in ("sgd", "sam"):
        for seed in (0, 1):
            model, records = write_run(f"{method}-{seed}", mods, method, seed, label=method.upper())
            logged[(method.upper(), seed)] = (model, records[-1])
    return logged


def test_compare_runs_tabulates_given_runs_resumes_and_remeasures_on_a_new_spec(mods):
    logged = four_runs(mods)
    dirs = ["sgd-0", "sgd-1", "sam-0", "sam-1"]
    before = {d: sorted(p.name for p in Path(d).iterdir()) for d in dirs}
    events = []
    result = samcli.compare(given_study(dirs, sharpness=FAST), out="study", progress=events.append)
    table = result.table
    assert list(table.index) == ["SGD", "SAM"] and list(table["runs"]) == [2, 2]
    for label in ("SGD", "SAM"):
        accuracies = [logged[(label, s)][1]["test_accuracy"] for s in (0, 1)]
        assert table.loc[label, "test_accuracy_mean"] == pytest.approx(sum(accuracies) / 2, rel=1e-12)
    study = json.loads(Path("study/study.json").read_text())
    for run in study["runs"]:
        direct = samcli.measure_sharpness(logged[(run["label"], run["seed"])][0], mods[0], notions=("worst",),
                                          lanczos_iters=6)
        assert run["sharpness_summary"]["lambda_1"] == pytest.approx(direct.summary()["lambda_1"], rel=1e-12)
    assert {d: sorted(p.name for p in Path(d).iterdir()) for d in dirs} == before    # the user's untouched
    assert sum(e.kind == "measure" for e in events) == 4 and not any(e.kind == "step" for e in events)

    stamps = {p: p.stat().st_mtime_ns for p in Path("study/runs").glob("*/sharpness.json")}
    events.clear()
    samcli.compare(given_study(dirs, sharpness=FAST), out="study", progress=events.append)
    assert not any(e.kind == "measure" for e in events)
    assert {p: p.stat().st_mtime_ns for p in Path("study/runs").glob("*/sharpness.json")} == stamps

    events.clear()
    again = samcli.compare(given_study(dirs, sharpness={**FAST, "rho": 0.1}), out="study", progress=events.append)
    assert sum(e.kind == "measure" for e in events) == 4
    assert all(json.loads(p.read_text())["spec"]["rho"] == 0.1 for p in Path("study/runs").glob("*/sharpness.json"))
    assert not again.failed_runs


def test_a_given_run_is_never_trained_its_failures_are_notes(mods, monkeypatch):
    four_runs(mods)
    trained = []
    monkeypatch.setattr(sys.modules["samcli.train"], "train", lambda *a, **k: trained.append(a))
    study = {"name": "given", "runs": ["sgd-0", "sgd-1", "sam-0", "sam-1"], "sharpness": FAST}
    samcli.compare(study, out="study")
    # broken in the user's directory: its checkpoint is no longer the one its summary records
    state = torch.load("sgd-0/checkpoint.pt", weights_only=True)
    state["theta"] = state["theta"] + 1
    torch.save(state, "sgd-0/checkpoint.pt")
    # the measurement fails: the factory changed since the run (another width, so other parameters)
    Path("mods.py").write_text(MODS.replace("nn.Linear(input_shape[0], width)", "nn.Linear(input_shape[0], 7)")
                               .replace("nn.Linear(width, num_outputs)", "nn.Linear(7, num_outputs)"))
    shutil.rmtree(next(d for d in Path("study/runs").iterdir() if json.loads((d / "summary.json").read_text())
                       ["label"] == "SAM"))      # so that one SAM run is copied and measured afresh
    result = samcli.compare(study, out="study")
    assert trained == []
    notes = [n for n in result.notes if "failed" in n]
    assert any("SGD seed 0 failed" in n and "sha256" in n and "never trains" in n for n in notes), result.notes
    assert any(n.startswith("SAM seed") and "parameters" in n for n in notes), result.notes
    assert result.failed_runs == 2


def test_a_given_run_that_did_not_complete_is_reported_failed(mods, monkeypatch):
    monkeypatch.setattr(sys.modules[__name__], "raise_at_error", KeyboardInterrupt())
    with pytest.raises(KeyboardInterrupt):
        write_run("cut", mods, raise_at=5)
    write_run("whole", mods, seed=1)
    result = samcli.compare({"name": "cut", "runs": ["cut", "whole"], "sharpness": FAST}, out="study")
    assert any("did not complete (status interrupted)" in n for n in result.notes), result.notes
    assert result.failed_runs == 1


def test_the_cli_runs_a_study_of_given_runs_and_refuses_bad_ones(mods):
    four_runs(mods)
    Path("given.yaml").write_text(yaml.safe_dump({"name": "given", "runs": ["sgd-0", "sam-0"], "sharpness": FAST}))
    result = invoke(["compare", "given.yaml", "--out", "study", "--quiet", "--jobs", "1"])
    assert result.exit_code == 0, result.output
    assert "SGD" in result.output and "SAM" in result.output

    Path("empty").mkdir()
    refused(invoke(["compare", "--runs", "sgd-0", "empty", "--out", "new"]), "empty", "no config.yaml")
    refused(invoke(["compare", "--runs", "sgd-0", "nowhere", "--out", "new"]), "nowhere", "not a directory")
    shutil.copytree("sgd-0", "twin")
    refused(invoke(["compare", "--runs", "sgd-0", "twin", "--out", "new"]), "same run", "seed 0")
    shutil.copytree("sgd-1", "old")
    summary = json.loads(Path("old/summary.json").read_text())
    summary["versions"]["samcli"] = "0.0.1"
    Path("old/summary.json").write_text(json.dumps(summary))
    refused(invoke(["compare", "--runs", "old", "--out", "new"]), "written by samcli 0.0.1")
    refused(invoke(["compare", "sgd-0", "sam-0", "--out", "new"]), "--runs")
    assert not Path("new").exists()


# ---- examples/own_loop ---------------------------------------------------------------------------------

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def test_the_own_loop_example_runs(tmp_path, monkeypatch):
    import runpy
    monkeypatch.chdir(tmp_path)
    Path("examples").symlink_to(EXAMPLES, target_is_directory=True)
    text = (EXAMPLES / "own_loop" / "README.md").read_text()
    blocks = [b.split("\n", 1)[1].split("```")[0] for b in text.split("```bash")[1:]]
    lines = [line.strip() for b in blocks for line in b.splitlines() if line.strip()]
    assert [line.split()[:2] for line in lines] == [["python", "examples/own_loop/loop.py"], ["samcli", "compare"]]
    out = lines[0].split()[2]
    written = runpy.run_path("examples/own_loop/loop.py", run_name="own_loop")["main"](out, steps=4)   # shorter
    assert sorted(str(p) for p in written) == sorted(a for a in lines[1].split() if a.startswith(out))
    result = invoke([*lines[1].split()[1:], "--quiet", "--json"])
    assert result.exit_code == 0, result.output
    table = {row["label"]: row for row in json.loads(result.stdout)["table"]}
    assert set(table) == {"SGD", "SAM"} and all(row["runs"] == 2 and row["failed"] == 0 for row in table.values())


def test_given_runs_on_ray_equal_the_local_executor_and_only_the_measurement_comes_back(mods):
    ray = pytest.importorskip("ray")
    four_runs(mods)
    dirs = ["sgd-0", "sam-1"]
    local = samcli.compare(given_study(dirs, sharpness=FAST), out="local")
    ray.init(num_cpus=2, include_dashboard=False, _node_ip_address="127.0.0.1", log_to_driver=False,
             configure_logging=False)
    try:
        remote = samcli.compare(given_study(dirs, sharpness=FAST), out="ray", executor="ray")
    finally:
        ray.shutdown()
    columns = ["label", "seed", "hash", "status", "test_accuracy", "lambda_1", "r_max", "r_avg"]
    assert remote.runs[columns].equals(local.runs[columns]) and not remote.failed_runs
    for source in dirs:
        copy = Path("ray/runs") / json.loads(Path(source, "summary.json").read_text())["config_hash"]
        assert (copy / "sharpness.json").is_file()
        for name in ("config.yaml", "metrics.jsonl", "summary.json", "checkpoint.pt"):
            assert (copy / name).read_bytes() == Path(source, name).read_bytes(), name


def test_a_run_samcli_trained_is_a_given_run_too_labelled_by_method_and_hash(mods):
    from samcli.config import TrainConfig, config_hash
    trained = {**config("sgd"), "steps": 3, "eval_every": 2}
    samcli.train(trained, "trained")
    write_run("written", mods, "sgd", seed=1)        # no label=
    result = samcli.compare(given_study(["trained", "written"], sharpness=FAST), out="study")
    assert not result.failed_runs and list(result.table["runs"]) == [1, 1]
    expected = [f"sgd {config_hash(TrainConfig.from_dict({**raw, 'seed': 0}))[:6]}"
                for raw in (trained, config("sgd", seed=1))]
    assert list(result.table.index) == expected


def test_a_symlinked_copy_is_replaced_and_the_users_directory_never_written(mods):
    write_run("mine", mods)
    samcli.compare(given_study(["mine"], sharpness=FAST), out="study")
    (copy,) = [d for d in Path("study/runs").iterdir()]
    shutil.rmtree(copy)
    copy.symlink_to(Path("mine").absolute(), target_is_directory=True)
    result = samcli.compare(given_study(["mine"], sharpness=FAST), out="study")
    assert not result.failed_runs and copy.is_dir() and not copy.is_symlink()
    assert (copy / "sharpness.json").is_file() and not Path("mine/sharpness.json").exists()
