"""`samcli compare` end to end on tiny studies: the Python API, the files, the CLI table, --from,
diverged runs, plots, and the process-pool executor."""
from __future__ import annotations

import json
import sys

import pandas as pd
import pytest
from typer.testing import CliRunner

import samcli
from samcli.cli import app
from samcli.study import load_study, render_from
from study_helpers import tiny_study, write_study

METRIC_COLUMNS = ["test_accuracy", "test_loss", "train_loss", "lambda_1", "trace", "r_asc", "r_max", "r_avg",
                  "alignment", "steps"]


@pytest.fixture(scope="module")
def diverging(tmp_path_factory):
    """GD, SAM, 1-SAM and a configuration that diverges (lr 1e30), 2 seeds, measured during training too."""
    raw = tiny_study(seeds=[0, 1])
    raw["base"]["measure"] = {"every": 10, "lanczos_iters": 5, "trace_probes": 2}
    raw["variants"].append({"label": "blow-up", "optimizer.method": "sgd", "optimizer.batch_size": "full",
                            "optimizer.lr": 1e30, "loss": "mse", "data.task": "regression"})
    out = tmp_path_factory.mktemp("diverging") / "study"
    return raw, out, samcli.compare(raw, out=out)


def test_compare_returns_the_table(diverging):
    raw, out, result = diverging
    table = result.table
    assert isinstance(result, samcli.CompareResult) and isinstance(table, pd.DataFrame)
    assert result.name == "tiny" and result.study_dir == out
    assert result.baseline_diff is None and result.baseline_ok is None and result.baseline_written is None
    assert list(table.index) == ["GD", "SAM", "1-SAM", "blow-up"]
    for metric in METRIC_COLUMNS + ["seconds"]:
        assert f"{metric}_mean" in table and f"{metric}_std" in table
    assert (table.loc[["GD", "SAM", "1-SAM"], "completed"] == 2).all()
    assert table.loc["GD", "test_accuracy_mean"] > 0.5
    assert table.loc["GD", "lambda_1_mean"] > 0
    runs = result.runs
    assert len(runs) == 8 and set(runs["seed"]) == {0, 1}
    corr = result.correlations
    assert {"lambda_1", "trace", "r_max", "r_asc", "r_avg"} <= set(corr.index)
    assert (corr["runs"] == 6).all()


def test_diverged_runs_are_shown_not_dropped(diverging):
    raw, out, result = diverging
    row = result.table.loc["blow-up"]
    assert row["runs"] == 2 and row["diverged"] == 2 and row["completed"] == 0
    assert pd.isna(row["test_accuracy_mean"]) and row["steps_mean"] < 20
    md = (out / "table.md").read_text()
    assert "| blow-up | 2 (2 diverged) | diverged |" in md
    data = json.loads((out / "study.json").read_text())
    statuses = [r["status"] for r in data["runs"] if r["label"] == "blow-up"]
    assert statuses == ["diverged", "diverged"]
    for r in data["runs"]:
        if r["label"] == "blow-up":
            assert "skipped" in r["sharpness"]


def test_study_directory_files(diverging):
    raw, out, result = diverging
    table = result.table
    assert [f.name for f in result.files] == ["table.csv", "table.md", "study.json", "accuracy_vs_sharpness.png",
                                              "sharpness_during_training.png"]
    for name in ("study.yaml", "table.csv", "table.md", "study.json", "accuracy_vs_sharpness.png",
                 "sharpness_during_training.png"):
        assert (out / name).is_file(), name
    assert (out / "accuracy_vs_sharpness.png").read_bytes()[:4] == b"\x89PNG"
    csv = pd.read_csv(out / "table.csv", index_col="label")
    assert list(csv.index) == ["GD", "SAM", "1-SAM", "blow-up"]
    assert csv.loc["SAM", "lambda_1_mean"] == pytest.approx(table.loc["SAM", "lambda_1_mean"])
    data = json.loads((out / "study.json").read_text())
    assert len(data["runs"]) == 8
    run = data["runs"][0]
    assert {"config", "final", "sharpness", "sharpness_summary", "hash", "seed", "label", "history"} <= set(run)
    assert run["config"]["seed"] == run["seed"] and run["sharpness"]["rho"] == 0.05
    assert (out / run["run_dir"] / "checkpoint.pt").is_file()
    assert any("sharp_lambda_1" in h for h in run["history"])


def test_from_rerenders_without_training(diverging, tmp_path, monkeypatch):
    raw, out, result = diverging
    table = result.table
    import shutil
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    for name in ("table.csv", "table.md", "study.json", "accuracy_vs_sharpness.png"):
        (copy / name).unlink()
    monkeypatch.setattr(sys.modules["samcli.train"], "train",
                        lambda *a, **k: (_ for _ in ()).throw(AssertionError("trained")))
    again = render_from(copy)
    cols = [c for c in table.columns if c not in ("seconds_mean", "seconds_std")]
    pd.testing.assert_frame_equal(again.table[cols], table[cols])
    assert again.notes == () and again.caption == result.caption
    assert (copy / "table.md").is_file() and (copy / "accuracy_vs_sharpness.png").is_file()

    result = CliRunner().invoke(app, ["compare", "--from", str(copy)])
    assert result.exit_code == 0, result.output
    assert "1-SAM" in result.output and "Kendall" in result.output

    shutil.rmtree(copy / "runs" / load_study(raw).runs[0].hash)       # a run that is not on disk
    partial = render_from(copy)
    assert partial.table.loc["GD", "missing"] == 1 and partial.table.loc["GD", "completed"] == 1
    assert any("shown as missing" in n for n in partial.notes)


def test_cli_prints_table_and_correlations(tmp_path):
    path = write_study(tmp_path / "s.yaml", tiny_study(seeds=[0]))
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["compare", str(path), "--out", str(out), "--jobs", "1", "--quiet"])
    assert result.exit_code == 0, result.output
    for text in ("configuration", "test acc", "lambda_1", "R^Asc_rho", "R^Max_rho", "R^Avg_rho", "GD", "1-SAM",
                 "Kendall tau-b", "written:"):
        assert text in result.output, text
    result = CliRunner().invoke(app, ["compare", str(path), "--out", str(out), "--json"])
    assert result.exit_code == 0
    data = json.loads(result.stdout)
    assert [r["label"] for r in data["table"]] == ["GD", "SAM", "1-SAM"]


def test_process_pool_gives_the_same_results(tmp_path):
    raw = tiny_study(seeds=[0, 1])
    one = samcli.compare(raw, out=tmp_path / "one", jobs=1)
    events = []
    two = samcli.compare(raw, out=tmp_path / "two", jobs=2, progress=events.append)
    a, b = one.runs, two.runs
    pd.testing.assert_frame_equal(a[["label", "seed", "hash", "status"] + METRIC_COLUMNS],
                                  b[["label", "seed", "hash", "status"] + METRIC_COLUMNS])
    kinds = {e.kind for e in events}
    assert {"plan", "start", "step", "measure", "done"} <= kinds
    assert sum(e.kind == "done" for e in events) == 6
