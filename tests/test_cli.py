"""The command line (samcli.cli): bad input gives exit code 2 and one line naming the key, no
traceback; `samcli train` writes a complete run directory; --json, YAML files and --set."""
from __future__ import annotations

import json
import os

import pytest
import torch
import yaml
from typer.testing import CliRunner

from samcli.cli import app
from samcli.config import TrainConfig

runner = CliRunner()

# a 16-example, 3-dim, 2-class synthetic task with a 3-4-2 MLP: each run takes milliseconds
TINY = ["--dataset", "synthetic", "--device", "cpu", "--dtype", "float64", "--set", "data.n_train=16",
        "--set", "data.n_test=8", "--set", "data.dim=3", "--set", "data.classes=2", "--set", "model.widths=[4]",
        "--batch-size", "4"]


def invoke(args):
    return runner.invoke(app, [str(a) for a in args])


def assert_one_line_error(result, *fragments):
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    for fragment in fragments:
        assert fragment in lines[0]
    assert result.stdout == ""


def test_help_lists_train():
    result = invoke(["--help"])
    assert result.exit_code == 0
    assert "train" in result.output
    sub = invoke(["train", "--help"])
    assert sub.exit_code == 0 and "--set" in sub.output and "--json" in sub.output


@pytest.mark.parametrize("args,fragments", [
    (["--set", "stpes=5"], ["unknown config key stpes"]),
    (["--set", "optimizer.rh=0.1"], ["unknown config key optimizer.rh"]),
    (["--set", "data.nope=1"], ["unknown config key data.nope"]),
    (["--set", "steps=ten"], ["steps='ten'", "integer"]),
    (["--set", "optimizer.lr=fast"], ["optimizer.lr='fast'", "number"]),
    (["--set", "model.widths=4"], ["model.widths=4", "list"]),
    (["--set", "optimizer.rho"], ["--set", "key.sub=value"]),
    (["--set", "steps.x=1", "--steps", "3"], ["steps"]),
    (["--rho", "-0.1"], ["optimizer.rho=-0.1"]),
    (["--method", "msam", "--m", "3"], ["optimizer.m=3", "optimizer.batch_size=4"]),
    (["--method", "msam"], ["optimizer.m is required"]),
    (["--method", "sam", "--m", "2"], ["optimizer.m=2 only applies to method msam"]),
    (["--batch-size", "17"], ["optimizer.batch_size=17", "16 training examples"]),
    (["--batch-size", "abc"], ["--batch-size='abc'"]),
    (["--method", "adam"], ["optimizer.method='adam' is unknown"]),
    (["--model", "vit"], ["model.name='vit' is unknown"]),
    (["--dataset", "imagenet"], ["data.name='imagenet' is unknown"]),
    (["--dtype", "float16"], ["dtype='float16'"]),
    (["--loss", "hinge"], ["loss='hinge'"]),
    (["--set", "x[/b]=1"], ["unknown config key x[/b]"]),           # not read as rich markup
    (["--set", "[bold]y=1"], ["unknown config key [bold]y"]),
])
def test_bad_input_is_one_line_exit_2(tmp_path, args, fragments):
    out = tmp_path / "run"
    result = invoke(["train", *TINY, "--steps", "2", "--out", out, "--quiet", *args])
    assert_one_line_error(result, *fragments)
    assert not out.exists()                  # refused before anything is written


@pytest.mark.parametrize("text,fragments", [
    ("optimizer:\n  rho: -1\n", ["optimizer.rho=-1.0"]),
    ("optimizer:\n  colour: red\n", ["unknown config key optimizer.colour"]),
    ("steps: [1, 2\n", ["not valid YAML at line"]),
    ("- a\n", ["must hold a mapping"]),
])
def test_bad_config_file_is_one_line_exit_2(tmp_path, text, fragments):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    assert_one_line_error(invoke(["train", path, "--out", tmp_path / "run", "--quiet"]), *fragments)


def test_missing_config_file(tmp_path):
    assert_one_line_error(invoke(["train", tmp_path / "nope.yaml", "--quiet"]), "does not exist")


def test_train_writes_the_run_directory(tmp_path):
    out = tmp_path / "run"
    result = invoke(["train", *TINY, "--method", "sam", "--rho", "0.1", "--steps", "5", "--out", out, "--quiet"])
    assert result.exit_code == 0, result.output
    assert result.output == ""
    assert {p.name for p in out.iterdir()} == {"config.yaml", "metrics.jsonl", "summary.json", "checkpoint.pt"}
    cfg = TrainConfig.from_dict(yaml.safe_load((out / "config.yaml").read_text()))
    assert (cfg.optimizer.method, cfg.optimizer.rho, cfg.steps, cfg.data.n_train) == ("sam", 0.1, 5, 16)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["steps_done"] == 5
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert records[0]["step"] == 0 and records[-1]["step"] == 5
    checkpoint = torch.load(out / "checkpoint.pt", weights_only=True)
    assert checkpoint["theta"].shape == (3 * 4 + 4 + 4 * 2 + 2,) and checkpoint["theta"].dtype == torch.float64
    assert TrainConfig.from_dict(checkpoint["config"]) == cfg


def test_json_prints_a_parseable_summary(tmp_path):
    out = tmp_path / "run"
    result = invoke(["train", *TINY, "--steps", "3", "--out", out, "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["status"] == "completed" and data["steps_done"] == 3
    assert data["run_dir"] == str(out)
    assert data == {"run_dir": str(out), **json.loads((out / "summary.json").read_text())}


def test_yaml_config_with_set_override(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({
        "device": "cpu", "dtype": "float64", "steps": 4, "eval_every": 2,
        "data": {"name": "synthetic", "n_train": 12, "n_test": 4, "dim": 3, "classes": 3},
        "model": {"widths": [5]},
        "optimizer": {"method": "msam", "m": 2, "batch_size": 6, "rho": 0.1, "weight_decay": 5e-4},
    }))
    out = tmp_path / "run"
    result = invoke(["train", path, "--set", "optimizer.rho=0.3", "--set", "steps=6", "--lr", "0.00001",
                     "--out", out, "--quiet"])
    assert result.exit_code == 0, result.output
    cfg = TrainConfig.from_dict(yaml.safe_load((out / "config.yaml").read_text()))
    assert cfg.optimizer.rho == 0.3 and cfg.steps == 6                     # overridden
    assert cfg.optimizer.lr == 1e-5                                         # flag (json 1e-05) parsed as float
    assert (cfg.optimizer.method, cfg.optimizer.m, cfg.data.n_train, cfg.model.widths) == ("msam", 2, 12, [5])
    assert cfg.optimizer.weight_decay == 5e-4
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [0, 2, 4, 6] and records[-1]["epoch"] == 6 * 6 / 12


def test_divergence_exits_1_with_a_diverged_summary(tmp_path):
    out = tmp_path / "run"
    result = invoke(["train", *TINY, "--set", "data.task=regression", "--loss", "mse", "--batch-size", "full",
                     "--lr", "1e30", "--steps", "50", "--out", out, "--json"])
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    assert json.loads(result.stdout)["status"] == "diverged"
    assert json.loads((out / "summary.json").read_text())["status"] == "diverged"


def test_keyboard_interrupt_exits_130(tmp_path, monkeypatch):
    import importlib
    train_module = importlib.import_module("samcli.train")    # the module (samcli.train is also a function)

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt
    monkeypatch.setattr(train_module, "train", interrupted)
    result = invoke(["train", *TINY, "--steps", "2", "--out", tmp_path / "run", "--quiet"])
    assert result.exit_code == 130
    assert "Traceback" not in result.output and "interrupted" in result.stderr


def test_console_script_entry_point():
    """`samcli` is installed as a console script pointing at samcli.cli:main."""
    from importlib.metadata import entry_points
    (ep,) = [e for e in entry_points(group="console_scripts") if e.name == "samcli"]
    assert ep.value == "samcli.cli:main"


def test_default_output_is_one_status_line(tmp_path):
    out = tmp_path / "a[/b]"          # brackets in the path must not be read as rich markup
    result = invoke(["train", *TINY, "--steps", "2", "--out", out])
    assert result.exit_code == 0, result.output
    text = "".join(result.stderr.splitlines())     # rich may wrap the long run path
    assert text.startswith("completed: train loss ") and str(out) in text
    assert result.stdout == ""



TINY_STUDY = {"name": "tiny", "seeds": [0],
              "base": {"device": "cpu", "dtype": "float64", "steps": 2,
                       "data": {"name": "synthetic", "n_train": 16, "n_test": 8, "dim": 3, "classes": 2},
                       "model": {"name": "mlp", "widths": [4]}},
              "variants": [{"label": "GD", "optimizer.method": "sgd", "optimizer.batch_size": "full"}]}


@pytest.mark.parametrize("quiet", [["--quiet"], []])
@pytest.mark.parametrize("args,fragments", [
    (["--executor", "slurm"], ["--executor 'slurm' is unknown; choose local or ray"]),
    (["--jobs", "0"], ["--jobs 0 must be >= 1"]),
    (["--from", "elsewhere"], ["give a study file or --from STUDY_DIR, not both"]),
    (["--baseline", "nope.json"], ["baseline nope.json does not exist"]),
])
def test_compare_bad_input_is_one_line_exit_2(tmp_path, monkeypatch, quiet, args, fragments):
    monkeypatch.chdir(tmp_path)
    study = tmp_path / "tiny.yaml"
    study.write_text(yaml.safe_dump(TINY_STUDY))
    out = tmp_path / "out"
    assert_one_line_error(invoke(["compare", study, "--out", out, *quiet, *args]), *fragments)
    assert not out.exists()                  # refused before anything is written


def test_compare_from_a_directory_without_a_study(tmp_path):
    assert_one_line_error(invoke(["compare", "--from", tmp_path]), "holds no study.yaml")


# ---- run directories are never replaced silently; halted runs say so ------------------------------

def test_train_refuses_an_existing_run_unless_overwrite(tmp_path):
    out = tmp_path / "run"
    assert invoke(["train", *TINY, "--steps", "2", "--out", out, "--quiet"]).exit_code == 0
    assert invoke(["sharpness", out, "--notions", "ascent"]).exit_code == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    refused = invoke(["train", *TINY, "--steps", "3", "--out", out, "--quiet"])
    assert_one_line_error(refused, "already holds a run", "--overwrite")
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before         # nothing touched
    replaced = invoke(["train", *TINY, "--steps", "3", "--out", out, "--quiet", "--overwrite"])
    assert replaced.exit_code == 0, replaced.output
    assert {p.name for p in out.iterdir()} == {"config.yaml", "metrics.jsonl", "summary.json", "checkpoint.pt"}
    assert json.loads((out / "summary.json").read_text())["steps_done"] == 3     # the stale sharpness.json is gone


def test_a_diverged_train_warns_in_one_line_even_quiet(tmp_path):
    out = tmp_path / "run"
    result = invoke(["train", *TINY, "--set", "data.task=regression", "--loss", "mse", "--batch-size", "full",
                     "--lr", "1e30", "--steps", "50", "--out", out, "--quiet"])
    assert result.exit_code == 1 and result.stdout == ""
    summary = json.loads((out / "summary.json").read_text())
    assert "final" not in summary and summary["diverged_at"] == summary["steps_done"]
    assert summary["last_finite"]["step"] == 0
    lines = result.stderr.strip().splitlines()
    assert lines == [f"warning: run diverged at step {summary['diverged_at']}; last finite evaluation at step 0: "
                     f"train_loss {summary['last_finite']['train_loss']:.4g}, "
                     f"test_loss {summary['last_finite']['test_loss']:.4g}"]


def test_sharpness_refuses_a_diverged_run_and_keeps_a_finite_report(tmp_path, monkeypatch):
    import dataclasses
    import samcli.sharpness
    diverged = tmp_path / "diverged"
    invoke(["train", *TINY, "--set", "data.task=regression", "--loss", "mse", "--batch-size", "full",
            "--lr", "1e30", "--steps", "50", "--out", diverged, "--quiet"])
    assert_one_line_error(invoke(["sharpness", diverged]), "diverged run (at step", "non-finite weights")
    assert not (diverged / "sharpness.json").exists()

    out = tmp_path / "run"
    invoke(["train", *TINY, "--steps", "2", "--out", out, "--quiet"])
    assert invoke(["sharpness", out, "--notions", "ascent"]).exit_code == 0
    good = (out / "sharpness.json").read_bytes()
    real = samcli.sharpness.measure_run
    monkeypatch.setattr(samcli.sharpness, "measure_run",
                        lambda *a, **k: dataclasses.replace(real(*a, **k), loss=float("nan")))
    assert_one_line_error(invoke(["sharpness", out, "--notions", "ascent"]), "non-finite loss", "is kept")
    assert (out / "sharpness.json").read_bytes() == good


def test_sharpness_settings_from_the_command_line_reach_the_report(tmp_path):
    out = tmp_path / "run"
    assert invoke(["train", *TINY, "--steps", "2", "--out", out, "--quiet"]).exit_code == 0
    result = invoke(["sharpness", out, "--notions", "worst", "--json", "--set", "ascent_restarts=2",
                     "--set", "ascent_iters=3", "--set", "stochastic_examples=0"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["worst"]["finite_restarts"] == 2 and report["worst"]["finite_iterations"] <= 2 * 4
    assert len(report["worst"]["restart_values"]) == 2 and max(report["worst"]["restart_values"]) == report["worst"]["finite"]
    assert "per-example" not in report and report["spec"]["stochastic_examples"] == 0
    from samcli.sharpness import SharpnessReport
    assert SharpnessReport.from_dict(report).worst.restart_values == tuple(report["worst"]["restart_values"])
    from rich.console import Console
    from samcli.render import sharpness_table
    wide = Console(width=400, record=True, file=open(os.devnull, "w"))
    wide.print(sharpness_table(SharpnessReport.from_dict(report)))
    values = report["worst"]["restart_values"]
    assert f"(from v_1 {values[0]:.4g}; from random starts {values[1]:.4g})" in wide.export_text()
