"""Baselines that cannot pass vacuously: a baseline names every configuration of the study (a new one
fails unless --allow-new, a missing one always fails); every tolerance is a finite number >= 0, refused
when the study loads; a baseline is refused up front, before anything trains, for a study that states
no checks; and every field of a baseline file is type-checked. Each bad input: exit code 2, one line
on stderr, no finished file changed."""
from __future__ import annotations

import copy
import json
import sys

import pytest
from typer.testing import CliRunner

import samcli
from samcli.cli import app
from samcli.config import SamcliError
from samcli.study import load_study, render_from
from samcli.study.baseline import check_baseline, make_baseline
from study_helpers import assert_refused, tiny_study, tree_states, write_study

CHECKS = {"tolerances": {"test_accuracy": {"abs": 0.05}, "lambda_1": {"rel": 0.1}}}


@pytest.fixture(scope="module")
def done(tmp_path_factory):
    """A finished study (three configurations, one seed) and its baseline, written by --update-baseline."""
    root = tmp_path_factory.mktemp("strict")
    raw = tiny_study(seeds=[0], baseline=CHECKS)
    path = write_study(root / "tiny.yaml", raw)
    out = root / "study"
    baseline = root / "baseline.json"
    result = invoke(path, "--out", out, "--jobs", 1, "--update-baseline", "--baseline", baseline)
    assert result.exit_code == 0, result.output
    return root, raw, path, out, baseline, json.loads(baseline.read_text())


def invoke(*args):
    return CliRunner().invoke(app, ["compare", *map(str, args)])


@pytest.fixture
def untouched(done):
    """Asserts, after the test, that no file of the finished study or its baseline changed."""
    root, raw, path, out, baseline, stored = done
    before = tree_states(out), baseline.read_bytes()
    yield
    assert (tree_states(out), baseline.read_bytes()) == before


@pytest.fixture
def no_training(monkeypatch):
    monkeypatch.setattr(sys.modules["samcli.train"], "train",
                        lambda *a, **k: (_ for _ in ()).throw(AssertionError("trained")))


def edited(stored: dict, edit) -> dict:
    data = copy.deepcopy(stored)
    edit(data)
    return data


def _set(path: str, value):
    def edit(data):
        *keys, last = path.split(".")
        for key in keys:
            data = data[key]
        data[last] = value
    return edit


BAD_FILES = [
    ("no configurations", _set("configurations", {}), "has an empty 'configurations'"),
    ("configurations a list", _set("configurations", []), "holds no 'configurations'"),
    ("mean a string", _set("configurations.GD.metrics.test_accuracy.mean", "0.5"),
     "configurations.GD.metrics.test_accuracy.mean='0.5' must be a finite number or null"),
    ("std a list", _set("configurations.SAM.metrics.lambda_1.std", [1]),
     "configurations.SAM.metrics.lambda_1.std=[1] must be a finite number or null"),
    ("diverged a string", _set("configurations.GD.diverged", "none"),
     "configurations.GD.diverged='none' must be a whole number >= 0"),
    ("failed a bool", _set("configurations.GD.failed", True), "configurations.GD.failed=True must be a whole number"),
    ("runs negative", _set("configurations.GD.runs", -1), "configurations.GD.runs=-1 must be a whole number"),
    ("runs a float", _set("configurations.GD.runs", 1.5), "configurations.GD.runs=1.5 must be a whole number"),
    ("reached a string", _set("configurations.GD.reached", "1"), "configurations.GD.reached='1'"),
    ("metrics a list", _set("configurations.GD.metrics", []), "configurations.GD.metrics must be a mapping"),
    ("a metric a number", _set("configurations.GD.metrics.trace", 3.0), "configurations.GD.metrics.trace=3.0"),
    ("a metric with another key", _set("configurations.GD.metrics.trace", {"mean": 1.0, "median": 1.0}),
     "must be a mapping with mean and std"),
    ("no metrics", lambda d: d["configurations"]["GD"].pop("metrics"), "configurations.GD has no 'metrics'"),
    ("no diverged", lambda d: d["configurations"]["GD"].pop("diverged"), "configurations.GD has no 'diverged'"),
    ("a typo'd count", _set("configurations.GD.diverge", 0), "configurations.GD has unknown key 'diverge'"),
    ("a configuration a number", _set("configurations.GD", 1), "configurations.GD must be a mapping"),
    ("an unknown top key", _set("tolerances", {}), "unknown key 'tolerances'"),
    ("study a number", _set("study", 3), "study=3 must be a string"),
    ("not a mapping", lambda d: d.clear(), "holds no 'configurations'"),
]


@pytest.mark.parametrize("edit, needle", [case[1:] for case in BAD_FILES], ids=[case[0] for case in BAD_FILES])
def test_every_field_of_a_baseline_file_is_type_checked(done, untouched, no_training, tmp_path, edit, needle):
    root, raw, path, out, baseline, stored = done
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(edited(stored, edit)))
    for args in ((path, "--out", out, "--jobs", 1), ("--from", out)):     # refused before any run is looked at
        assert_refused(invoke(*args, "--baseline", bad), f"baseline {bad}", needle)


def test_nan_in_a_baseline_file_is_refused(done, untouched, tmp_path):
    root, raw, path, out, baseline, stored = done
    bad = tmp_path / "nan.json"
    bad.write_text(baseline.read_text().replace(str(stored["configurations"]["GD"]["metrics"]["lambda_1"]["mean"]),
                                                "NaN", 1))
    assert "NaN" in bad.read_text()
    assert_refused(invoke("--from", out, "--baseline", bad), "holds NaN, which is not JSON")


@pytest.mark.parametrize("value", [".nan", ".inf", "-.inf", "-0.5", "'0.1'", "true"])
def test_a_tolerance_must_be_finite_and_not_negative_before_training(tmp_path, no_training, value):
    text = write_study(tmp_path / "s.yaml", tiny_study(seeds=[0], baseline=CHECKS)).read_text()
    path = tmp_path / "nan.yaml"
    path.write_text(text.replace("abs: 0.05", f"abs: {value}"))
    assert f"abs: {value}" in path.read_text()
    assert_refused(invoke(path, "--out", tmp_path / "study"), "baseline.tolerances.test_accuracy.abs=",
                   "must be a number >= 0, and finite")
    assert not (tmp_path / "study").exists()


@pytest.mark.parametrize("flags", [["--update-baseline"], ["--baseline", "BASELINE"]], ids=["update", "check"])
def test_a_study_without_checks_is_refused_before_training(done, no_training, tmp_path, flags):
    root, raw, path, out, baseline, stored = done
    plain = write_study(tmp_path / "plain.yaml", tiny_study(seeds=[0]))
    flags = [str(baseline) if f == "BASELINE" else f for f in flags]
    target = tmp_path / "written.json"
    extra = ["--baseline", target] if flags == ["--update-baseline"] else []
    assert_refused(invoke(plain, "--out", tmp_path / "study", *flags, *extra), "states no baseline tolerances or "
                   "orderings")
    assert not (tmp_path / "study").exists() and not target.exists()
    with pytest.raises(SamcliError, match="states no baseline tolerances"):
        samcli.compare(tiny_study(seeds=[0]), out=tmp_path / "study", update_baseline=True)
    assert not (tmp_path / "study").exists()


def test_update_from_a_study_directory_without_checks_is_refused(tmp_path):
    out = tmp_path / "study"
    assert samcli.compare(tiny_study(seeds=[0], steps=5), out=out).baseline_written is None
    before = tree_states(out)
    assert_refused(invoke("--from", out, "--update-baseline", "--baseline", tmp_path / "b.json"),
                   "states no baseline tolerances")
    assert tree_states(out) == before and not (tmp_path / "b.json").exists()


def test_an_empty_baseline_does_not_pass(done, tmp_path):
    """The case that used to print 'all checks hold': configurations {} is no baseline (exit 2), and
    check_baseline itself never calls a diff that compared nothing a pass."""
    root, raw, path, out, baseline, stored = done
    empty = tmp_path / "empty.json"
    empty.write_text(json.dumps({"study": "tiny", "configurations": {}}))
    assert_refused(invoke("--from", out, "--baseline", empty), "has an empty 'configurations'")
    study = load_study(raw)
    table = render_from(out).table
    diff, ok = check_baseline(study, table, {"study": "tiny", "configurations": {}})
    assert not ok and set(diff[~diff["ok"]]["configuration"]) == {"GD", "SAM", "1-SAM", ""}
    diff, ok = check_baseline(study, table, {"configurations": {}}, allow_new=True)
    assert not ok and "nothing was compared" in " ".join(diff["detail"])


def test_a_new_configuration_fails_unless_allowed(done, tmp_path):
    root, raw, path, out, baseline, stored = done
    partial = tmp_path / "partial.json"
    partial.write_text(json.dumps(edited(stored, lambda d: d["configurations"].pop("1-SAM"))))
    result = invoke("--from", out, "--baseline", partial)
    assert result.exit_code == 1, result.output
    assert "new: not in the baseline" in result.output and "baseline: REGRESSION" in result.output
    result = invoke("--from", out, "--baseline", partial, "--allow-new")
    assert result.exit_code == 0, result.output
    assert "allowed by --allow-new" in result.output and "all checks hold" in result.output
    checked = samcli.compare(raw, out=out, baseline=partial, allow_new=True)      # reuses every run
    assert checked.baseline_ok is True
    assert samcli.compare(raw, out=out, baseline=partial).baseline_ok is False
    assert render_from(out, baseline=partial, allow_new=True).baseline_ok is True


def test_a_configuration_the_study_lost_fails_even_with_allow_new(done, tmp_path):
    root, raw, path, out, baseline, stored = done
    extra = tmp_path / "extra.json"
    extra.write_text(json.dumps(edited(stored, _set("configurations.gone", stored["configurations"]["GD"]))))
    for flags in ([], ["--allow-new"]):
        result = invoke("--from", out, "--baseline", extra, *flags)
        assert result.exit_code == 1 and "missing from the new table" in result.output, result.output


def test_a_tolerance_on_a_metric_no_configuration_has_checks_nothing(done):
    root, raw, path, out, baseline, stored = done
    study = load_study(dict(raw, baseline={"tolerances": {"ada_lambda_1": {"abs": 1.0}}}))   # adaptive: not measured
    table = render_from(out).table
    diff, ok = check_baseline(study, table, stored)
    assert not ok
    assert "no configuration has ada_lambda_1 in the baseline" in " ".join(diff["detail"])
    assert check_baseline(load_study(raw), table, stored)[1]          # the study's own checks hold


def test_the_written_baseline_checks_and_round_trips(done):
    root, raw, path, out, baseline, stored = done
    assert set(stored["configurations"]) == {"GD", "SAM", "1-SAM"}
    again = json.loads(json.dumps(make_baseline(load_study(raw), render_from(out).table)))
    assert stored == {**again, "created": stored["created"]}
    result = invoke("--from", out, "--baseline", baseline)
    assert result.exit_code == 0 and "all checks hold" in result.output, result.output


@pytest.mark.parametrize("section, needle", [
    ({"tolerances": [0.1]}, "baseline.tolerances must be a mapping"),
    ({"tolerances": {"test_accuracy": 0.1}}, "baseline.tolerances.test_accuracy=0.1 must be {abs: x}"),
    ({"tolerances": {"test_accuracy": {"rel": float("nan")}}}, "baseline.tolerances.test_accuracy.rel=nan"),
    ({"orderings": "SAM lambda_1 < GD lambda_1"}, "baseline.orderings must be a list"),
    ({"orderings": [3]}, "baseline ordering 3 must read 'LABEL METRIC < LABEL METRIC'"),
    ({"orderings": ["SAM lambda_1 < XX lambda_1"]}, "names configuration 'XX'"),
    ({"orderings": ["SAM lambda_9 < GD lambda_1"]}, "names metric 'lambda_9'"),
    ({"limits": {}}, "unknown key baseline.limits"),
])
def test_a_bad_baseline_section_is_refused_when_the_study_loads(tmp_path, no_training, section, needle):
    path = write_study(tmp_path / "s.yaml", tiny_study(seeds=[0], baseline=section))
    assert_refused(invoke(path, "--out", tmp_path / "study"), "study tiny: ", needle)
    assert not (tmp_path / "study").exists()
