"""Nothing stale: a stored run or report is reused only when everything that made it is the same
(train config, measurement spec, data, samcli version, the checkpoint itself); otherwise it is redone,
and the note says which run and why."""
from __future__ import annotations

import json
import shutil

import pytest
import torch

import samcli
import samcli._version
import samcli.task
from samcli.runs import CHECKPOINT, SHARPNESS, file_sha256, read_summary

from study_helpers import tiny_study


def two_variants(**sharpness) -> dict:
    raw = tiny_study(seeds=[0])
    raw["variants"] = raw["variants"][:2]                   # GD and full-batch SAM, one seed
    raw["sharpness"].update(sharpness)
    return raw


def run_dirs(result) -> dict:
    return {row.label: result.study_dir / "runs" / row.hash for row in result.runs.itertuples()}


def reports(result) -> dict:
    return {label: json.loads((run_dir / SHARPNESS).read_text()) for label, run_dir in run_dirs(result).items()}


def compare(raw, out, notes=None):
    events = []
    result = samcli.compare(raw, out=out, jobs=1, progress=events.append)
    if notes is not None:
        notes.extend(e.message for e in events if e.kind == "note")
    return result


def summaries(result) -> dict:
    return {label: read_summary(run_dir) for label, run_dir in run_dirs(result).items()}


def test_a_changed_sharpness_section_remeasures_every_report_and_the_caption_says_what_was_measured(tmp_path):
    first = compare(two_variants(samples=24, directions=4), tmp_path / "s")
    assert {label: (r["examples"], r["spec"]["directions"]) for label, r in reports(first).items()} == \
        {"GD": (24, 4), "SAM": (24, 4)}
    trained = summaries(first)
    notes = []
    second = compare(two_variants(samples=8, directions=32), tmp_path / "s", notes)
    again = reports(second)
    assert {label: (r["examples"], r["spec"]["samples"], r["spec"]["directions"]) for label, r in again.items()} == \
        {"GD": (8, 8, 32), "SAM": (8, 8, 32)}
    assert all(r["spec_hash"] == samcli.MeasureSpec.build(two_variants(samples=8, directions=32)["sharpness"]).hash()
               for r in again.values())
    assert summaries(second) == trained                     # measured again, not trained again
    assert "at most 8 training examples (8 measured)" in second.caption
    assert sum("measured with other sharpness settings (samples 24 -> 8, directions 4 -> 32)" in n
               for n in notes) == 2, notes
    assert second.table.loc["GD", "r_avg_mean"] != first.table.loc["GD", "r_avg_mean"]


def test_the_same_study_reuses_everything(tmp_path):
    raw = two_variants()
    first = compare(raw, tmp_path / "s")
    events = []
    samcli.compare(raw, out=tmp_path / "s", jobs=1, progress=events.append)
    assert [e.message for e in events if e.kind == "plan"] == ["2 of 2 runs already done"]
    assert not [e for e in events if e.kind == "note"]
    assert first.table.equals(samcli.compare(raw, out=tmp_path / "s", jobs=1).table)


def test_a_changed_variant_trains_only_that_variant(tmp_path):
    raw = two_variants()
    first = compare(raw, tmp_path / "s")
    raw["variants"][1]["optimizer.rho"] = 0.05
    events = []
    second = samcli.compare(raw, out=tmp_path / "s", jobs=1, progress=events.append)
    assert [e.message for e in events if e.kind == "plan"] == ["1 of 2 runs already done"]
    assert summaries(second)["GD"] == summaries(first)["GD"]
    assert summaries(second)["SAM"]["config_hash"] != summaries(first)["SAM"]["config_hash"]


def test_another_samcli_version_trains_and_measures_again(tmp_path, monkeypatch):
    raw = two_variants()
    compare(raw, tmp_path / "s")
    monkeypatch.setattr(samcli._version, "__version__", "9.9.9")
    notes = []
    second = compare(raw, tmp_path / "s", notes)
    assert {s["versions"]["samcli"] for s in summaries(second).values()} == {"9.9.9"}
    assert {r["version"] for r in reports(second).values()} == {"9.9.9"}
    assert sum("trained by samcli" in n and "not this samcli 9.9.9" in n for n in notes) == 2, notes
    assert len(list((tmp_path / "s" / "runs").glob("*.stale-1"))) == 2        # kept aside, never deleted


def scale_checkpoint(runs: dict) -> None:
    state = torch.load(runs["SAM"] / CHECKPOINT, weights_only=True)
    state["theta"] = state["theta"] * 1.5                   # finite, the right size: only its hash can tell
    torch.save(state, runs["SAM"] / CHECKPOINT)


def copy_report(runs: dict) -> None:
    shutil.copy(runs["GD"] / SHARPNESS, runs["SAM"] / SHARPNESS)


def strip_spec(runs: dict) -> None:
    data = json.loads((runs["SAM"] / SHARPNESS).read_text())
    del data["spec"], data["spec_hash"]                     # as an older samcli wrote them
    (runs["SAM"] / SHARPNESS).write_text(json.dumps(data))


@pytest.mark.parametrize("tamper, note", [
    (scale_checkpoint, "checkpoint.pt is not the checkpoint its summary.json records (its sha256 differs"),
    (copy_report, "sharpness.json measured another checkpoint"),
    (strip_spec, "measured with other sharpness settings (no measurement spec stored)"),
])
def test_run_files_that_do_not_vouch_for_each_other_are_redone(tmp_path, tamper, note):
    raw = two_variants()
    first = compare(raw, tmp_path / "s")
    tamper(run_dirs(first))
    notes = []
    second = compare(raw, tmp_path / "s", notes)
    assert sum(note in n for n in notes) == 1, notes
    pd_equal(second, first)                                 # redone, the same table as before


def test_other_data_than_the_run_was_trained_on_make_it_stale(tmp_path, monkeypatch):
    raw = two_variants()
    compare(raw, tmp_path / "s")
    real = samcli.task.load_data

    def shifted(cfg, seed=0):                               # the same data set, one value changed
        splits = real(cfg, seed)
        splits.train.inputs[0, 0] += 1.0
        return splits
    monkeypatch.setattr(samcli.task, "load_data", shifted)
    notes = []
    compare(raw, tmp_path / "s", notes)
    assert sum("trained on other data" in n for n in notes) == 2, notes


def pd_equal(a, b) -> None:
    """Two studies agree in every table cell but the wall-clock ones."""
    timing = [c for c in a.table.columns if "seconds" in c]
    left, right = a.table.drop(columns=timing), b.table.drop(columns=timing)
    assert left.equals(right), (left.compare(right) if left.shape == right.shape else (left, right))


@pytest.mark.parametrize("key, value, fragment", [
    ("samples", 0, "sharpness.samples=0 must be >= 1"),
    ("directions", 2.5, "sharpness.directions=2.5 must be a finite integer"),
    ("exact", "no", "sharpness.exact='no' must be True or False"),
    ("seed", 2 ** 70, "sharpness.seed=1180591620717411303424 is out of range (at most 2**63 - 1)"),
    ("dtype", "float16", "sharpness.dtype='float16' is unknown"),
    ("restarts", 1, "unknown measurement setting sharpness.restarts"),
])
def test_a_bad_sharpness_knob_is_refused_before_anything_trains(tmp_path, key, value, fragment):
    raw = two_variants(**{key: value})
    with pytest.raises(samcli.SamcliError) as err:
        samcli.compare(raw, out=tmp_path / "s", jobs=1)
    assert fragment in str(err.value) and "\n" not in str(err.value), str(err.value)
    assert not (tmp_path / "s" / "runs").exists()


def test_summary_records_the_checkpoint_and_the_data(tmp_path):
    result = compare(two_variants(), tmp_path / "s")
    for run_dir in run_dirs(result).values():
        summary = read_summary(run_dir)
        assert summary["checkpoint_sha256"] == file_sha256(run_dir / CHECKPOINT)
        assert summary["data"]["train"] == 32 and summary["data"]["test"] == 16
        assert json.loads((run_dir / SHARPNESS).read_text())["checkpoint"] == summary["checkpoint_sha256"]
