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
    assert {"lambda_1", "trace", "r_max", "r_asc", "r_avg"} <= set(corr["notion"])
    assert set(corr["target"]) == {"test_accuracy", "loss_gap", "error_gap"}
    assert (corr["runs"] == 6).all() and (corr["low"] <= corr["tau"] + 1e-12).all()
    assert result.eligibility == "2 of 8 runs excluded from the correlations: 2 diverged"
    assert result.granulated is not None and "overall" in set(result.granulated["axis"])


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
    assert [f.name for f in result.files] == ["table.csv", "table.md", "findings.md", "study.json",
                                              "accuracy_vs_sharpness.png", "accuracy_vs_sharpness.pdf",
                                              "gap_vs_sharpness.png", "gap_vs_sharpness.pdf", "training_curves.png",
                                              "training_curves.pdf"]
    assert (out / "findings.md").read_text() == result.findings and result.findings.startswith("# What study")
    for name in ("study.yaml", "table.csv", "table.md", "findings.md", "study.json", "accuracy_vs_sharpness.png",
                 "gap_vs_sharpness.png", "training_curves.png"):
        assert (out / name).is_file(), name
    assert (out / "accuracy_vs_sharpness.png").read_bytes()[:4] == b"\x89PNG"
    assert (out / "accuracy_vs_sharpness.pdf").read_bytes()[:5] == b"%PDF-"
    csv = pd.read_csv(out / "table.csv", index_col="label")
    assert list(csv.index) == ["GD", "SAM", "1-SAM", "blow-up"]
    assert csv.loc["SAM", "lambda_1_mean"] == pytest.approx(table.loc["SAM", "lambda_1_mean"])
    data = json.loads((out / "study.json").read_text())
    assert len(data["runs"]) == 8
    run = data["runs"][0]
    assert {"config", "final", "sharpness", "sharpness_summary", "hash", "seed", "label", "history"} <= set(run)
    assert run["config"]["seed"] == run["seed"] and run["sharpness"]["rho"] == 0.05
    assert (out / run["run_dir"] / "checkpoint.pt").is_file()
    assert any("sharp_lambda_1" in h and "epoch" in h for h in run["history"])
    assert [c["step"] for c in run["curve"]] == [0, 10, 20] and {"epoch", "train_loss", "test_accuracy"} <= set(
        run["curve"][-1])
    assert {"kendall", "granulated", "eligibility", "confound_warning", "coupled_pairs", "mutual_information",
            "warnings"} <= set(data["correlations"])
    assert run["test_examples"] == 16                       # the tiny study's n_test: an accuracy's se
    assert {"p", "p_method"} <= set(data["correlations"]["granulated"][0])
    assert any("fewer than 4 seeds" in w for w in data["correlations"]["warnings"])


def test_from_rerenders_without_training(diverging, tmp_path, monkeypatch):
    raw, out, result = diverging
    table = result.table
    import shutil
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    for name in ("table.csv", "table.md", "findings.md", "study.json", "accuracy_vs_sharpness.png"):
        (copy / name).unlink()
    monkeypatch.setattr(sys.modules["samcli.train"], "train",
                        lambda *a, **k: (_ for _ in ()).throw(AssertionError("trained")))
    again = render_from(copy)
    cols = [c for c in table.columns if c not in ("seconds_mean", "seconds_std")]
    pd.testing.assert_frame_equal(again.table[cols], table[cols])
    assert again.notes == () and again.caption == result.caption
    assert (copy / "table.md").is_file() and (copy / "accuracy_vs_sharpness.png").is_file()
    assert (copy / "findings.md").read_text() == result.findings == again.findings
    assert "## lambda_1 against the stability threshold\n\n- GD: lambda_1 above its stability threshold 2/eta " \
           "(Cohen et al. 2021) at" in (copy / "table.md").read_text()       # measured during training

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
                 "Kendall tau-b", "test - train loss", "Granulated Kendall", "all 3 runs used", "written:"):
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


@pytest.fixture(scope="module")
def targeted(tmp_path_factory):
    """Trained to train loss 0.6: GD and two SAM radii get there in 10 steps; GD at lr 0.001 cannot (cap 20)."""
    raw = tiny_study(seeds=[0, 1], confound_tolerance=0.5)
    raw["base"]["stop"] = {"train_loss": 0.6}
    raw["variants"] = [{"label": "GD", "optimizer.method": "sgd", "optimizer.batch_size": "full"},
                       {"label": "SAM", "optimizer.method": "sam", "optimizer.batch_size": "full"},
                       {"label": "SAM rho=0.3", "optimizer.method": "sam", "optimizer.batch_size": "full",
                        "optimizer.rho": 0.3},
                       {"label": "slow GD", "optimizer.method": "sgd", "optimizer.batch_size": "full",
                        "optimizer.lr": 0.001}]
    out = tmp_path_factory.mktemp("targeted") / "study"
    return out, samcli.compare(raw, out=out)


def test_runs_trained_to_a_target_count_reached_and_epochs(targeted):
    out, result = targeted
    table = result.table
    assert list(table["reached"]) == [2, 2, 2, 0]
    assert table.loc["GD", "epochs_mean"] == pytest.approx(10.0) and table.loc["GD", "steps_mean"] == 10
    assert table.loc["slow GD", "epochs_mean"] == pytest.approx(20.0)    # the cap, not a target
    assert (table.loc["slow GD", "train_loss_mean"] > 0.6) and table.loc["slow GD", "completed"] == 2
    runs = result.runs.set_index(["label", "seed"])
    assert list(runs["reached"]) == [1.0] * 6 + [0.0] * 2
    assert result.eligibility == "2 of 8 runs excluded from the correlations: 2 missed the stop target"
    assert (result.correlations["runs"] == 6).all()
    md = (out / "table.md").read_text()
    assert "| slow GD | 2 | 0/2 |" in md and "| GD | 2 | 2/2 |" in md
    assert "2 missed the stop target" in md and "train loss <= 0.6" in md
    assert "confound check passed" in md and "<= confound_tolerance 0.5" in md


def test_granulated_kendall_is_rendered_per_axis(targeted):
    from samcli.study.stats import group_tau
    out, result = targeted
    g = result.granulated.set_index(["notion", "target", "axis"])
    # rho: the two SAM radii are the one group. method: GD does not use rho, so it matches either
    # radius and forms a group with each (this test asserted 0 groups when GD's missing rho was a
    # value of its own). lr varied only through slow GD, which missed the target: among the
    # eligible runs it is no axis at all
    assert g.loc[("lambda_1", "test_accuracy", "rho"), "groups"] == 1
    assert g.loc[("lambda_1", "test_accuracy", "method"), "groups"] == 2
    assert ("lambda_1", "test_accuracy", "lr") not in g.index
    means = result.table[["lambda_1_mean", "test_accuracy_mean"]]

    def tau(*labels):
        return group_tau(means.loc[list(labels), "lambda_1_mean"], means.loc[list(labels), "test_accuracy_mean"])
    rho_tau = g.loc[("lambda_1", "test_accuracy", "rho"), "tau"]
    method_tau = g.loc[("lambda_1", "test_accuracy", "method"), "tau"]
    assert rho_tau == pytest.approx(tau("SAM", "SAM rho=0.3")) and rho_tau in (-1.0, 0.0, 1.0)
    assert method_tau == pytest.approx((tau("GD", "SAM") + tau("GD", "SAM rho=0.3")) / 2)
    assert g.loc[("lambda_1", "test_accuracy", "overall"), "tau"] == pytest.approx((rho_tau + method_tau) / 2)
    # a group of two orders its pair one way or the other with probability 1/2 (sharper-is-worse: tau <= observed)
    assert g.loc[("lambda_1", "test_accuracy", "rho"), "p"] == (0.5 if rho_tau < 0 else 1.0)
    md = (out / "table.md").read_text()
    assert "## Granulated Kendall (Jiang et al. 2019) with test accuracy" in md
    assert "| sharpness notion | method [2] | rho [1] | overall |" in md
    for heading in ("## Coupled pairs (Dziugaite et al. 2020) with test - train loss",
                    "## Conditional mutual information (Jiang et al. 2019)", "## What this design cannot support",
                    "fewer than 4 seeds"):
        assert heading in md, heading
    printed = CliRunner().invoke(app, ["compare", "--from", str(out)])
    assert printed.exit_code == 0, printed.output
    for text in ("Granulated Kendall", "rho [1]", "2 missed the stop target", "reached", "0/2", "confound check",
                 "Coupled pairs", "Conditional mutual information", "fewer than 4 seeds"):
        assert text in printed.output, text


def test_a_single_configuration_says_granulated_kendall_does_not_apply(tmp_path):
    raw = tiny_study(seeds=[0, 1])
    raw["variants"] = raw["variants"][:1]
    result = samcli.compare(raw, out=tmp_path / "one")
    assert result.granulated["reason"].dropna().str.contains("single configuration").any()
    md = (tmp_path / "one" / "table.md").read_text()
    assert "not applicable: a single configuration: nothing to rank" in md
    assert "| overall |" not in md
    printed = CliRunner().invoke(app, ["compare", "--from", str(tmp_path / "one")])
    assert "not applicable: a single configuration" in printed.output


@pytest.mark.parametrize("value", [-0.1, "0.01", True, float("nan"), float("inf"), [0.01]])
def test_a_bad_confound_tolerance_is_refused(tmp_path, value):
    from samcli.study import StudyError
    with pytest.raises(StudyError, match="confound_tolerance=.* must be a finite number >= 0") as err:
        load_study(tiny_study(confound_tolerance=value))
    assert "\n" not in str(err.value)
    assert load_study(tiny_study(confound_tolerance=0)).confound_tolerance == 0.0
    assert load_study(tiny_study()).confound_tolerance is None
    path = write_study(tmp_path / "bad.yaml", tiny_study(confound_tolerance=-1))
    printed = CliRunner().invoke(app, ["compare", str(path), "--out", str(tmp_path / "out")])
    assert printed.exit_code == 2 and "confound_tolerance=-1 must be a finite number >= 0" in printed.output
    assert not (tmp_path / "out" / "runs").exists()


def test_adaptive_sharpness_joins_the_table_and_the_correlations_and_is_reused(tmp_path):
    raw = tiny_study(seeds=[0, 1])
    raw["sharpness"]["notions"] = ["worst", "ascent", "average", "adaptive"]
    result = samcli.compare(raw, out=tmp_path / "ada")
    for key in ("ada_lambda_1", "ada_trace", "ada_r_max", "ada_r_avg"):
        assert (result.table[f"{key}_mean"] > 0).all(), key
        assert set(result.correlations.loc[result.correlations["notion"] == key, "runs"]) == {6}
    md = (tmp_path / "ada" / "table.md").read_text()
    assert "| adaptive lambda_1 | adaptive Tr | adaptive R^Max_rho | adaptive R^Avg_rho |" in md
    assert "| adaptive Tr |" in md
    events = []
    again = samcli.compare(raw, out=tmp_path / "ada", progress=events.append)
    assert [e.message for e in events if e.kind == "plan"] == ["6 of 6 runs already done"]
    pd.testing.assert_frame_equal(again.runs, result.runs)
