"""Baselines: --update-baseline writes one, --baseline checks tolerances and orderings (exit 0 when all
hold, 1 on a regression, 2 on bad input)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

import samcli
from samcli.cli import app
from samcli.config import SamcliError
from samcli.study import load_study, render_from
from samcli.study.baseline import check_baseline, make_baseline
from study_helpers import REPO, tiny_study, write_study

BASELINE = {"tolerances": {"test_accuracy": {"abs": 0.05}, "lambda_1": {"rel": 0.1}, "trace": {"rel": 0.1, "abs": 0.01}},
            "orderings": ["SAM lambda_1 <= GD lambda_1"]}


@pytest.fixture(scope="module")
def study_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("baseline")
    raw = tiny_study(seeds=[0, 1], baseline=BASELINE)
    path = write_study(root / "tiny.yaml", raw)
    out = root / "study"
    table = samcli.compare(raw, out=out).table
    return root, path, out, raw, table


def invoke(*args):
    return CliRunner().invoke(app, ["compare", *map(str, args)])


def test_update_then_check_passes(study_dir, tmp_path):
    root, path, out, raw, table = study_dir
    assert table.loc["SAM", "lambda_1_mean"] <= table.loc["GD", "lambda_1_mean"]   # the ordering holds here
    baseline = tmp_path / "base.json"
    result = invoke(path, "--out", out, "--jobs", 1, "--update-baseline", "--baseline", baseline)
    assert result.exit_code == 0, result.output
    stored = json.loads(baseline.read_text())
    assert stored["study"] == "tiny" and set(stored["configurations"]) == {"GD", "SAM", "1-SAM"}
    assert stored["configurations"]["GD"]["metrics"]["lambda_1"]["mean"] == pytest.approx(table.loc["GD", "lambda_1_mean"])

    result = invoke(path, "--out", out, "--jobs", 1, "--baseline", baseline)     # reuses every run
    assert result.exit_code == 0, result.output
    assert "all checks hold" in result.output and "REGRESSION" not in result.output
    result = invoke("--from", out, "--baseline", baseline)
    assert result.exit_code == 0, result.output


def test_regressions_exit_1(study_dir, tmp_path):
    root, path, out, raw, table = study_dir
    study = load_study(raw)
    stored = make_baseline(study, table)
    stored["configurations"]["SAM"]["metrics"]["lambda_1"]["mean"] *= 1.5        # beyond rel 0.1
    stored["configurations"]["GD"]["metrics"]["test_accuracy"]["mean"] += 0.04   # within abs 0.05
    baseline = tmp_path / "drifted.json"
    baseline.write_text(json.dumps(stored))
    result = invoke("--from", out, "--baseline", baseline)
    assert result.exit_code == 1, result.output
    assert "REGRESSION" in result.output and "baseline: REGRESSION" in result.output

    diff, ok = check_baseline(study, table, stored)
    assert not ok
    bad = diff[~diff["ok"]]
    assert list(zip(bad["configuration"], bad["metric"])) == [("SAM", "lambda_1")]
    gd_acc = diff[(diff["configuration"] == "GD") & (diff["metric"] == "test_accuracy")].iloc[0]
    assert gd_acc["ok"] and gd_acc["allowed"] == pytest.approx(0.05)
    sam_trace = diff[(diff["configuration"] == "SAM") & (diff["metric"] == "trace")].iloc[0]
    assert sam_trace["allowed"] == pytest.approx(0.01 + 0.1 * abs(sam_trace["baseline"]))


def test_failed_ordering_and_more_diverged_runs_are_regressions(study_dir):
    root, path, out, raw, table = study_dir
    flipped = dict(raw, baseline={"tolerances": {}, "orderings": ["GD lambda_1 < SAM lambda_1"]})
    study = load_study(flipped)
    diff, ok = check_baseline(study, table, make_baseline(study, table))
    assert not ok and "does not hold" in diff.iloc[-1]["detail"]

    study = load_study(raw)
    stored = make_baseline(study, table)
    changed = table.copy()
    changed.loc["GD", "diverged"] = 1
    diff, ok = check_baseline(study, changed, stored)
    assert not ok and "1 more diverged" in " ".join(diff["detail"])
    del stored["configurations"]["1-SAM"]
    stored["configurations"]["gone"] = stored["configurations"]["GD"]
    diff, ok = check_baseline(study, table, stored)
    assert not ok and "missing from the new table" in " ".join(diff["detail"])


def test_bad_baselines_exit_2(study_dir, tmp_path):
    root, path, out, raw, table = study_dir
    missing = invoke("--from", out, "--baseline", tmp_path / "nope.json")
    assert missing.exit_code == 2 and "does not exist" in missing.output
    broken = tmp_path / "broken.json"
    broken.write_text("{")
    result = invoke("--from", out, "--baseline", broken)
    assert result.exit_code == 2 and "not valid JSON" in result.output
    other = tmp_path / "other.json"
    other.write_text(json.dumps({**make_baseline(load_study(raw), table), "study": "elsewhere"}))
    result = invoke("--from", out, "--baseline", other)
    assert result.exit_code == 2 and "written for study 'elsewhere'" in result.output
    no_tolerances = write_study(tmp_path / "plain.yaml", tiny_study(seeds=[0, 1]))
    good = tmp_path / "good.json"
    good.write_text(json.dumps(make_baseline(load_study(raw), table)))
    result = invoke(no_tolerances, "--out", out, "--jobs", 1, "--baseline", good)
    assert result.exit_code == 2 and "states no baseline tolerances" in result.output


def test_shipped_ci_baseline_matches_its_study():
    study = load_study(REPO / "configs" / "ci.yaml")
    stored = json.loads((REPO / "results" / "baselines" / "ci.json").read_text())
    assert stored["study"] == "ci" and set(stored["configurations"]) == set(study.labels)
    assert study.tolerances and study.orderings


def test_compare_writes_then_checks_a_baseline(study_dir, tmp_path, monkeypatch):
    """The lifecycle in the engine: the default path for an update, a check after the table, both from
    a fresh study run and from --from."""
    root, path, out, raw, table = study_dir
    monkeypatch.chdir(tmp_path)
    written = samcli.compare(raw, out=out, update_baseline=True)
    assert written.baseline_written == Path("results/baselines/tiny.json")
    assert written.baseline_ok is None and written.baseline_diff is None
    stored = json.loads((tmp_path / "results" / "baselines" / "tiny.json").read_text())
    assert stored["configurations"]["SAM"]["runs"] == 2

    checked = render_from(out, baseline=written.baseline_written)
    assert checked.baseline_ok is True and checked.baseline_written is None
    assert set(checked.baseline_diff["check"]) == {"tolerance", "ordering"} and checked.baseline_diff["ok"].all()
    stored["configurations"]["GD"]["metrics"]["test_accuracy"]["mean"] += 0.5
    drifted = tmp_path / "drifted.json"
    drifted.write_text(json.dumps(stored))
    assert samcli.compare(raw, out=out, baseline=drifted).baseline_ok is False


def test_bad_baseline_is_refused_before_anything_trains(tmp_path, monkeypatch):
    import sys
    monkeypatch.setattr(sys.modules["samcli.train"], "train",
                        lambda *a, **k: (_ for _ in ()).throw(AssertionError("trained")))
    raw = tiny_study(seeds=[0], baseline=BASELINE)
    with pytest.raises(SamcliError, match="does not exist; write one with --update-baseline"):
        samcli.compare(raw, out=tmp_path / "study", baseline=tmp_path / "nope.json")
    assert not (tmp_path / "study").exists()


def test_fewer_runs_reaching_the_target_is_a_regression(study_dir):
    """A study that trains to a target stores how many runs reached it; fewer now fails the check
    (those minima are no longer compared at equal train loss), the same count or more passes."""
    root, path, out, raw, table = study_dir
    study = load_study(raw)
    targeted = table.copy()
    targeted["reached"] = targeted["runs"]           # as if every run reached a stop target
    stored = make_baseline(study, targeted)
    assert stored["configurations"]["GD"]["reached"] == int(targeted.loc["GD", "runs"])
    assert check_baseline(study, targeted, stored)[1]
    fewer = targeted.copy()
    fewer.loc["GD", "reached"] = fewer.loc["GD", "runs"] - 1
    diff, ok = check_baseline(study, fewer, stored)
    assert not ok and "reached the target in the baseline" in " ".join(diff["detail"])
    assert "reached" not in make_baseline(study, table)["configurations"]["GD"]    # no target, no count
