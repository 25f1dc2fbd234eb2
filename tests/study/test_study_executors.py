"""Executors: chosen by name from one registry with one check of jobs; one result collector turns a
run that raises into a failed record and reports every run done exactly once."""
from __future__ import annotations

from pathlib import Path

import pytest

from samcli.config import SamcliError
from samcli.study import compare, load_study
from samcli.study.executors import (EXECUTORS, Event, LocalExecutor, RayExecutor, auto_jobs, collect,
                                    make_executor)
from samcli.study.rundir import RunRecord
from study_helpers import tiny_study


def test_registry_builds_each_executor():
    assert set(EXECUTORS) == {"local", "ray"}
    assert make_executor("local", 3) == LocalExecutor(3)
    assert make_executor("ray", 1, "10.0.0.1:6379") == RayExecutor("10.0.0.1:6379")
    assert make_executor("local", None) == LocalExecutor(auto_jobs())
    assert 1 <= auto_jobs() <= 4


@pytest.mark.parametrize("name,jobs,message", [
    ("slurm", 1, "--executor 'slurm' is unknown; choose local or ray"),
    ("local", 0, "--jobs 0 must be >= 1"),
    ("ray", -2, "--jobs -2 must be >= 1"),
])
def test_bad_executor_or_jobs_is_refused(name, jobs, message):
    with pytest.raises(SamcliError) as err:
        make_executor(name, jobs)
    assert str(err.value) == message


def test_compare_checks_the_executor_before_writing(tmp_path):
    with pytest.raises(SamcliError, match="unknown; choose local or ray"):
        compare(tiny_study(), out=tmp_path / "study", executor="slurm")
    assert not (tmp_path / "study").exists()


def test_collector_records_failures_and_reports_each_run_once(tmp_path):
    specs = load_study(tiny_study(seeds=[0])).runs
    handles = {i: (spec, tmp_path / spec.hash) for i, spec in enumerate(specs)}

    def outcome(i):
        if i == 1:
            raise RuntimeError("boom\ntraceback noise")
        return RunRecord.blank(specs[i], tmp_path, status="completed")
    waits, events = [], []

    def wait_some(pending):                      # hands back the last pending handle first
        waits.append(list(pending))
        return pending[-1:], pending[:-1]
    records = collect(handles, wait_some, outcome, events.append)
    assert waits == [[0, 1, 2], [0, 1], [0]]
    assert [records[s.hash].status for s in specs] == ["completed", "failed", "completed"]
    assert records[specs[1].hash].error == "RuntimeError: boom"
    assert [(e.kind, e.run, e.status) for e in events] == [("done", specs[2].hash, "completed"),
                                                          ("done", specs[1].hash, "failed"),
                                                          ("done", specs[0].hash, "completed")]
    assert events[1].message == "RuntimeError: boom" and events[0] == Event("done", specs[2].hash, specs[2].label,
                                                                            0, status="completed")
    with pytest.raises(KeyError):                # an error outside `catch` is a bug: it propagates
        collect(handles, wait_some, lambda i: {}[i], events.append, catch=(RuntimeError,))


def test_local_executor_reports_a_failing_run(tmp_path, monkeypatch):
    import sys
    study = load_study(tiny_study(seeds=[0]))

    def broken(*args, **kwargs):
        raise RuntimeError("CUDA out of memory")
    monkeypatch.setattr(sys.modules["samcli.train"], "train", broken)
    todo = [(spec, Path(tmp_path / spec.hash), "train") for spec in study.runs[:2]]
    events = []
    records = LocalExecutor(1).run(todo, study.sharpness, events.append)
    assert [r.status for r in records] == ["failed", "failed"]
    assert [e.kind for e in events] == ["start", "done", "start", "done"]
    assert events[1].message == "RuntimeError: CUDA out of memory"
