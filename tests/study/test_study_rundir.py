"""Run files and records: sharpness.json through runs.py, copied run files in their honest order, a
RunRecord read back from a run directory, and training-set sizes known without loading data."""
from __future__ import annotations

import json
import os

import pytest

from samcli.config import DataConfig, SamcliError
from samcli.data import load_data, train_set_size
from samcli.runs import (RUN_FILES, SHARPNESS, SUMMARY, read_run_files, read_sharpness, write_run_files,
                         write_sharpness, write_sharpness_skipped)
from samcli.study import load_study
from samcli.study.executors import execute
from samcli.study.rundir import RunRecord, run_state, sharpness_file
from study_helpers import tiny_study


class FakeReport:
    def to_dict(self):
        return {"rho": 0.05, "loss": float("nan")}


def test_sharpness_file_is_written_and_read_by_runs(tmp_path):
    path = write_sharpness(tmp_path, FakeReport())
    assert path == tmp_path / SHARPNESS
    assert read_sharpness(tmp_path) == {"rho": 0.05, "loss": "nan"}        # NaN written as a string
    write_sharpness_skipped(tmp_path, "diverged")
    assert read_sharpness(tmp_path) == {"skipped": "diverged"}
    assert sharpness_file(tmp_path) == {"skipped": "diverged"}
    (tmp_path / SHARPNESS).write_text("[1, 2]")                              # JSON, but not an object
    assert read_sharpness(tmp_path) is None
    (tmp_path / SHARPNESS).write_text("{\"rho\": ")                          # torn
    assert read_sharpness(tmp_path) is None and read_sharpness(tmp_path / "nowhere") is None
    (tmp_path / SHARPNESS).write_text(json.dumps({"rho": 0.05}))             # parses, but no report
    assert read_sharpness(tmp_path) == {"rho": 0.05} and sharpness_file(tmp_path) is None


def test_run_files_are_copied_whole_in_order(tmp_path, monkeypatch):
    files = {name: name.encode() * 3 for name in reversed(RUN_FILES)}
    written = []
    real_replace = os.replace
    monkeypatch.setattr(os, "replace", lambda src, dst: (written.append(os.path.basename(dst)),
                                                         real_replace(src, dst)))
    write_run_files(tmp_path / "run", files)
    assert written == list(RUN_FILES)                     # summary.json, then sharpness.json, last
    assert read_run_files(tmp_path / "run") == {name: files[name] for name in RUN_FILES}
    assert list(read_run_files(tmp_path / "run", (SUMMARY, "absent"))) == [SUMMARY]
    assert not [p for p in (tmp_path / "run").iterdir() if p.name.startswith(".")]
    with pytest.raises(SamcliError, match="'notes.txt' is not a run file"):
        write_run_files(tmp_path / "other", {"notes.txt": b"x"})


@pytest.fixture(scope="module")
def measured_run(tmp_path_factory):
    study = load_study(tiny_study(seeds=[0]))
    spec = study.runs[1]                                     # SAM, full batch
    run_dir = tmp_path_factory.mktemp("run") / spec.hash
    record = execute(spec, run_dir, study.sharpness, "train")
    return study, spec, run_dir, record


def test_record_read_back_from_the_run_directory(measured_run):
    study, spec, run_dir, record = measured_run
    assert run_state(run_dir, spec, study.sharpness) == ("done", "")
    assert record == RunRecord.read(run_dir, spec)
    summary = json.loads((run_dir / SUMMARY).read_text())
    assert (record.label, record.seed, record.hash, record.method) == ("SAM", 0, spec.hash, "sam")
    assert record.status == "completed" and record.steps == summary["steps_done"] == 20
    assert record.final["test_accuracy"] == summary["final"]["test_accuracy"]
    assert record.sharpness == json.loads((run_dir / SHARPNESS).read_text())
    assert record.sharpness_summary["lambda_1"] == record.sharpness["worst"]["eigenvalues"][0]
    data = record.to_dict()
    assert "error" not in data and list(data)[:6] == ["label", "seed", "hash", "method", "run_dir", "status"]


def test_failed_and_blank_records(measured_run, tmp_path):
    study, spec, run_dir, record = measured_run
    failed = RunRecord.failed(spec, run_dir, RuntimeError("out of memory\nsecond line"))
    assert failed.status == "failed" and failed.error == "RuntimeError: out of memory"
    assert failed.final == record.final                     # what the directory holds is kept
    assert failed.to_dict()["error"] == failed.error
    blank = RunRecord.failed(spec, tmp_path / "never", ValueError("bad"))
    assert blank.status == "failed" and blank.final == {} and blank.sharpness is None
    assert RunRecord.blank(spec, tmp_path).status == "missing"


@pytest.mark.parametrize("cfg", [DataConfig(name="digits"), DataConfig(name="mnist1d"),
                                 DataConfig(name="synthetic", n_train=37),
                                 DataConfig(name="digits", train_size=100)])
def test_train_set_size_matches_the_loaded_data(cfg):
    assert train_set_size(cfg) == len(load_data(cfg).train)


def test_train_set_size_unknown_without_loading():
    assert train_set_size(DataConfig(name="cifar10")) is None
    assert train_set_size(DataConfig(name="cifar10", train_size=500)) == 500
