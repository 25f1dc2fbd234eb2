"""Resuming: a study killed with SIGKILL mid-way keeps every finished run untouched and completes on
rerun; corrupt or foreign run directories are reported and rerun, not trusted."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest

from samcli.study import compare, load_study
from samcli.study.rundir import run_state
from study_helpers import REPO, file_states, samcli_cmd, tiny_study, write_study


def test_killed_study_resumes_without_touching_finished_runs(tmp_path):
    raw = tiny_study(steps=400, seeds=[0, 1, 2])
    study = load_study(raw)
    path = write_study(tmp_path / "tiny.yaml", raw)
    out = tmp_path / "study"
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    proc = subprocess.Popen(samcli_cmd("compare", str(path), "--out", str(out), "--jobs", "1", "--quiet"),
                            cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.time() + 300
        while time.time() < deadline:
            if any((out / "runs" / s.hash / "sharpness.json").exists() for s in study.runs):
                break
            assert proc.poll() is None, proc.stderr.read().decode()
            time.sleep(0.01)
        else:
            pytest.fail("no run finished within 300 s")
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == -signal.SIGKILL
    states = {s.hash: run_state(out / "runs" / s.hash, s, study.sharpness)[0] for s in study.runs}
    finished = [h for h, state in states.items() if state == "done"]
    assert 1 <= len(finished) < len(study.runs), states
    before = {h: file_states(out / "runs" / h) for h in finished}

    table = compare(raw, out=out).table

    for h in finished:                          # byte for byte, and not rewritten (same mtimes)
        assert file_states(out / "runs" / h) == before[h]
    assert (table["completed"] == 3).all() and (table["runs"] == 3).all()
    assert all(run_state(out / "runs" / s.hash, s, study.sharpness)[0] == "done" for s in study.runs)
    data = json.loads((out / "study.json").read_text())
    assert len(data["runs"]) == 9 and {r["status"] for r in data["runs"]} == {"completed"}
    assert not list((out / "runs").glob("*.stale-*"))   # an unfinished run of our own is simply redone


@pytest.fixture(scope="module")
def finished_study(tmp_path_factory):
    out = tmp_path_factory.mktemp("finished") / "study"
    raw = tiny_study(seeds=[0, 1])
    compare(raw, out=out)
    return raw, out


def copy_study(finished_study, tmp_path):
    raw, out = finished_study
    target = tmp_path / "study"
    shutil.copytree(out, target)
    return raw, target, load_study(raw)


def test_rerun_reuses_everything(finished_study, tmp_path, monkeypatch):
    raw, out, study = copy_study(finished_study, tmp_path)
    before = {s.hash: file_states(out / "runs" / s.hash) for s in study.runs}

    def no_training(*args, **kwargs):
        raise AssertionError("a finished run was trained again")
    monkeypatch.setattr(sys.modules["samcli.train"], "train", no_training)
    table = compare(raw, out=out).table
    assert (table["completed"] == 2).all()
    assert {s.hash: file_states(out / "runs" / s.hash) for s in study.runs} == before


def test_corrupt_and_foreign_run_directories_are_rerun(finished_study, tmp_path):
    raw, out, study = copy_study(finished_study, tmp_path)
    runs = out / "runs"
    a, b, c, d = study.runs[0], study.runs[1], study.runs[2], study.runs[3]
    (runs / a.hash / "summary.json").write_text("{ torn")                     # corrupt summary
    shutil.rmtree(runs / b.hash)                                               # foreign: another run's files
    shutil.copytree(runs / c.hash, runs / b.hash)
    (runs / d.hash / "sharpness.json").write_text("[1, 2")                     # corrupt measurement only
    checkpoint_d = file_states(runs / d.hash)["checkpoint.pt"]
    untouched = file_states(runs / c.hash)

    events = []
    result = compare(raw, out=out, progress=events.append)

    notes = " ".join(result.notes)
    assert f"{a.label} seed {a.seed}" in notes and "summary.json is missing or unreadable" in notes
    assert f"{b.label} seed {b.seed}" in notes and "belongs to config" in notes
    assert any(e.kind == "note" and "sharpness.json is unreadable" in e.message for e in events)
    assert (runs / f"{a.hash}.stale-1").is_dir() and (runs / f"{b.hash}.stale-1").is_dir()
    for spec in (a, b, d):
        assert run_state(runs / spec.hash, spec, study.sharpness)[0] == "done"
        assert json.loads((runs / spec.hash / "summary.json").read_text())["config_hash"] == spec.hash
    assert file_states(runs / d.hash)["checkpoint.pt"] == checkpoint_d      # only re-measured
    assert file_states(runs / c.hash) == untouched
    assert (result.table["completed"] == 2).all()


def test_changed_sharpness_settings_remeasure_without_retraining(finished_study, tmp_path, monkeypatch):
    raw, out, study = copy_study(finished_study, tmp_path)
    raw = dict(raw, sharpness=dict(raw["sharpness"], rho=0.1))
    monkeypatch.setattr(sys.modules["samcli.train"], "train",
                        lambda *a, **k: (_ for _ in ()).throw(AssertionError("trained")))
    table = compare(raw, out=out).table
    assert (table["completed"] == 2).all()
    for spec in study.runs:
        assert json.loads((out / "runs" / spec.hash / "sharpness.json").read_text())["rho"] == 0.1


def test_run_state_of_partial_directories(finished_study, tmp_path):
    """Every moment a kill can land on: what the next run does with the directory."""
    raw, out, study = copy_study(finished_study, tmp_path)
    spec, other = study.runs[0], study.runs[1]
    src = out / "runs" / spec.hash
    sharp = study.sharpness

    def state(files: dict) -> str:
        run = tmp_path / "probe" / spec.hash
        shutil.rmtree(run.parent, ignore_errors=True)
        run.mkdir(parents=True)
        for name, data in files.items():
            (run / name).write_bytes(data)
        return run_state(run, spec, sharp)[0]

    files = {p.name: p.read_bytes() for p in src.iterdir()}
    running = json.dumps({"status": "running", "config_hash": spec.hash}).encode()
    assert state({}) == "train"                                                       # just created
    assert state({".summary.json.123.tmp": b"{"}) == "train"                         # torn temporary file
    assert state({"config.yaml": files["config.yaml"]}) == "train"                   # before the first summary
    assert state({"config.yaml": files["config.yaml"], "summary.json": running}) == "train"   # training
    finished = {k: v for k, v in files.items() if k != "sharpness.json"}
    assert state(finished) == "measure"                                               # trained, not measured
    assert state({**finished, "sharpness.json": b"{\"rho\": "}) == "measure"          # torn measurement
    assert state(files) == "done"
    foreign = {p.name: p.read_bytes() for p in (out / "runs" / other.hash).iterdir()}
    assert state(foreign) == "stale"                                                  # another run's files
    assert state({"config.yaml": foreign["config.yaml"]}) == "stale"
    assert state({"notes.txt": b"hello"}) == "stale"                                  # something else entirely


def test_every_schedule_is_reused_and_a_shifted_record_is_not(tmp_path):
    """Evaluation schedules a finished run can have (eval_every not dividing steps, measure.every, a stop
    target reached early, divergence between evaluations) all read back as done; a record whose step
    is off the schedule, or a final that is not the last record, makes the run stale."""
    raw = tiny_study(steps=20, seeds=[0])
    raw["base"]["eval_every"] = 7
    raw["variants"] = [
        {"label": "GD", "optimizer.method": "sgd", "optimizer.batch_size": "full", "measure.every": 5,
         "measure.lanczos_iters": 3, "measure.trace_probes": 1},
        {"label": "target", "optimizer.method": "sgd", "optimizer.batch_size": "full", "stop.train_accuracy": 0.01},
        {"label": "blow-up", "optimizer.method": "sgd", "optimizer.batch_size": "full", "optimizer.lr": 1e30,
         "loss": "mse", "data.task": "regression", "eval_every": 100},
    ]
    out = tmp_path / "study"
    result = compare(raw, out=out)
    study = load_study(raw)
    gd, target, blown = study.runs
    assert list(result.table["completed"]) == [1, 1, 0] and result.table.loc["blow-up", "diverged"] == 1
    steps = {s.label: [json.loads(line)["step"] for line in (out / "runs" / s.hash / "metrics.jsonl").open()]
             for s in study.runs}
    assert steps["GD"] == [0, 5, 7, 10, 14, 15, 20] and steps["target"] == [0] and steps["blow-up"] == [0]
    for spec in study.runs:
        assert run_state(out / "runs" / spec.hash, spec, study.sharpness) == ("done", "")

    metrics = out / "runs" / gd.hash / "metrics.jsonl"
    records = [json.loads(line) for line in metrics.read_text().splitlines()]
    records[2]["step"] = 8
    metrics.write_text("".join(json.dumps(r) + "\n" for r in records))
    assert run_state(out / "runs" / gd.hash, gd, study.sharpness)[0] == "stale"
    records[2]["step"] = 7
    records[-1]["train_loss"] += 1e-9
    metrics.write_text("".join(json.dumps(r) + "\n" for r in records))
    state, reason = run_state(out / "runs" / gd.hash, gd, study.sharpness)
    assert state == "stale" and "not the summary's final" in reason
