"""Faults a run or a study must survive, injected for real: SIGKILL of a study with worker processes,
SIGINT and SIGTERM of a training, damaged run files in a study, two studies on one directory, a diverged run in a
study. Each uses tiny float64 configs, so the whole file takes seconds of compute."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

sys.path.insert(0, str(Path(__file__).parent / "study"))
from study_helpers import REPO, file_states, samcli_cmd, tiny_study, write_study  # noqa: E402

from samcli.cli import app
from samcli.study import StudyBusyError, compare, load_study
from samcli.study.lock import study_lock
from samcli.study.rundir import run_state

NON_TIMING = ["runs", "completed", "diverged", "failed", "test_accuracy_mean", "test_loss_mean", "train_loss_mean",
              "lambda_1_mean", "trace_mean", "r_asc_mean", "r_max_mean", "r_avg_mean", "steps_mean"]
ENV = dict(os.environ, PYTHONWARNINGS="ignore", OMP_NUM_THREADS="1")
PATIENCE = 300        # seconds a step of a test may wait for a subprocess before it gives up (never a timing check)


def wait_for(condition, proc=None, what="the condition"):
    deadline = time.time() + PATIENCE
    while not condition():
        if proc is not None and proc.poll() is not None:
            pytest.fail(f"the process ended (exit {proc.returncode}) before {what}: {proc.stderr.read()}")
        if time.time() > deadline:
            pytest.fail(f"gave up waiting for {what}")
        time.sleep(0.05)


def children(pid: int) -> list[int]:
    """Pids whose parent is `pid` (Linux /proc)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")          # a zombie has exited; only its parent's reaping is left


def start(*args: str) -> subprocess.Popen:
    return subprocess.Popen(samcli_cmd(*args), cwd=REPO, env=ENV, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)


def finished_runs(out: Path, study) -> list[str]:
    return [s.hash for s in study.runs if run_state(out / "runs" / s.hash, s, study.sharpness)[0] == "done"]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc to find the worker processes")
def test_sigkill_of_a_study_loses_no_run_and_leaves_no_process(tmp_path):
    raw = tiny_study(steps=300, seeds=[0, 1, 2])
    study = load_study(raw)
    path = write_study(tmp_path / "tiny.yaml", raw)
    out = tmp_path / "study"
    proc = start("compare", str(path), "--out", str(out), "--jobs", "2", "--quiet")
    try:
        measured = [out / "runs" / s.hash / "sharpness.json" for s in study.runs]
        wait_for(lambda: any(p.exists() for p in measured) and len(children(proc.pid)) >= 2, proc, "a finished run")
        workers = children(proc.pid)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=PATIENCE)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    wait_for(lambda: not any(alive(pid) for pid in workers), what="the workers to die with their parent")
    finished = finished_runs(out, study)
    assert 1 <= len(finished) < len(study.runs)
    before = {h: file_states(out / "runs" / h) for h in finished}

    table = compare(raw, out=out).table

    for h in finished:
        assert file_states(out / "runs" / h) == before[h]        # reused, not rewritten
    reference = compare(raw, out=tmp_path / "uninterrupted").table
    pd.testing.assert_frame_equal(table[NON_TIMING], reference[NON_TIMING])


@pytest.mark.parametrize("sent", [signal.SIGINT, signal.SIGTERM])     # Ctrl-C; a scheduler's time limit, kill
def test_a_signal_to_a_training_leaves_an_honest_interrupted_run(tmp_path, sent):
    out = tmp_path / "run"
    proc = start("train", "--dataset", "synthetic", "--device", "cpu", "--dtype", "float64", "--set",
                 "data.n_train=16", "--set", "data.dim=3", "--set", "data.classes=2", "--set", "model.widths=[4]",
                 "--batch-size", "4", "--steps", "10000000", "--set", "eval_every=5", "--quiet", "--out", str(out))
    try:
        metrics = out / "metrics.jsonl"
        wait_for(lambda: metrics.is_file() and len(metrics.read_text().splitlines()) >= 3, proc, "3 evaluations")
        proc.send_signal(sent)
        proc.wait(timeout=PATIENCE)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130
    stderr = [line for line in proc.stderr.read().splitlines() if line.strip()]
    assert len(stderr) == 1 and stderr[0].startswith("warning: interrupted"), stderr
    summary = json.loads((out / "summary.json").read_text())
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert summary["status"] == "interrupted" and "final" not in summary
    assert summary["interrupted_at"] == summary["steps_done"] >= records[-1]["step"] >= 10
    assert summary["last_finite"]["step"] == records[-1]["step"]
    assert (out / "checkpoint.pt").is_file()

    runner = CliRunner()
    measured = runner.invoke(app, ["sharpness", str(out), "--notions", "ascent", "--samples", "8"])
    assert measured.exit_code == 0, measured.output
    assert f"did not finish (status interrupted, stopped at step {summary['interrupted_at']})" in measured.stderr
    again = runner.invoke(app, ["train", "--dataset", "synthetic", "--steps", "2", "--out", str(out), "--quiet"])
    assert again.exit_code == 2 and "already holds a run" in again.stderr
    assert (out / "sharpness.json").is_file()            # refused: nothing touched


@pytest.fixture(scope="module")
def finished_study(tmp_path_factory):
    out = tmp_path_factory.mktemp("finished") / "study"
    raw = tiny_study(seeds=[0, 1])
    return raw, out, compare(raw, out=out).table


def test_damaged_run_files_in_a_study_are_rerun_and_named(finished_study, tmp_path):
    raw, source, table = finished_study
    out = tmp_path / "study"
    shutil.copytree(source, out)
    study = load_study(raw)
    runs = out / "runs"
    a, b, c, d, e = study.runs[:5]
    metrics = (runs / a.hash / "metrics.jsonl").read_text().splitlines(keepends=True)
    (runs / a.hash / "metrics.jsonl").write_text("".join(metrics[:-1]))                   # last record lost
    (runs / b.hash / "metrics.jsonl").write_text("")                                      # emptied
    (runs / c.hash / "checkpoint.pt").write_bytes((runs / c.hash / "checkpoint.pt").read_bytes()[:200])
    (runs / d.hash / "summary.json").write_text((runs / d.hash / "summary.json").read_text()[:40])
    sharp = json.loads((runs / e.hash / "sharpness.json").read_text())
    sharp["worst"]["eigenvalues"][0] = float("nan")
    (runs / e.hash / "sharpness.json").write_text(json.dumps(sharp))
    untouched = file_states(runs / study.runs[5].hash)

    events = []
    result = compare(raw, out=out, progress=events.append)

    said = " ".join(result.notes) + " ".join(ev.message for ev in events if ev.kind == "note")
    for spec, why in [(a, "metrics.jsonl holds"), (b, "metrics.jsonl holds 0 records"),
                      (c, "checkpoint.pt cannot be loaded"), (d, "summary.json is missing or unreadable"),
                      (e, "sharpness.json holds non-finite lambda_1")]:
        assert f"{spec.name}" in said and why in said, (spec.name, why, said)
        assert run_state(runs / spec.hash, spec, study.sharpness)[0] == "done"
    for spec in (a, b, c, d):
        assert (runs / f"{spec.hash}.stale-1").is_dir()       # kept for inspection, rerun from scratch
    assert file_states(runs / study.runs[5].hash) == untouched
    pd.testing.assert_frame_equal(result.table[NON_TIMING], table[NON_TIMING])


@pytest.mark.skipif(not Path("/proc/locks").exists(), reason="needs Linux /proc/locks to see a waiting process")
def test_two_studies_on_one_directory(finished_study, tmp_path):
    raw, source, table = finished_study
    out = tmp_path / "study"
    shutil.copytree(source, out)
    path = write_study(tmp_path / "tiny.yaml", raw)
    with study_lock(out):
        with pytest.raises(StudyBusyError, match=f"in use by pid {os.getpid()} on host"):
            compare(raw, out=out)
        refused = subprocess.run(samcli_cmd("compare", str(path), "--out", str(out), "--quiet"), cwd=REPO, env=ENV,
                                 capture_output=True, text=True, timeout=PATIENCE)
        assert refused.returncode == 2 and f"is in use by pid {os.getpid()}" in refused.stderr
        assert len(refused.stderr.strip().splitlines()) == 1
        waiting = start("compare", str(path), "--out", str(out), "--quiet", "--wait")
        try:
            wait_for(lambda: f" {waiting.pid} " in " ".join(line for line in Path("/proc/locks").read_text()
                                                            .splitlines() if "->" in line),
                     waiting, "the second study to wait on the lock")
        except BaseException:
            waiting.kill()
            raise
    assert waiting.wait(timeout=PATIENCE) == 0, waiting.stderr.read()

    # a holder killed with SIGKILL leaves no stale lock: the kernel drops it with the process
    holder = start("compare", str(path), "--out", str(out), "--quiet")
    wait_for(lambda: f'"pid": {holder.pid}' in (out / ".lock").read_text(), holder, "the holder to take the lock")
    os.kill(holder.pid, signal.SIGKILL)
    holder.wait(timeout=PATIENCE)
    with study_lock(out):
        pass


def test_a_diverged_run_inside_a_study(tmp_path):
    raw = tiny_study(seeds=[0])
    raw["variants"].append({"label": "blow-up", "optimizer.method": "sgd", "optimizer.batch_size": "full",
                            "optimizer.lr": 1e30, "loss": "mse", "data.task": "regression"})
    path = write_study(tmp_path / "tiny.yaml", raw)
    result = CliRunner().invoke(app, ["compare", str(path), "--out", str(tmp_path / "study"), "--quiet"])
    assert result.exit_code == 0, result.output            # a diverged run is a result, not a failure
    warnings = [line for line in result.stderr.splitlines() if line.startswith("warning:")]
    assert warnings == ["warning: 1 run(s) diverged; the table counts them and the notes say where"]
    data = json.loads((tmp_path / "study" / "study.json").read_text())
    blown = [r for r in data["runs"] if r["label"] == "blow-up"]
    assert len(blown) == 1 and blown[0]["status"] == "diverged"
    assert blown[0]["final"] == {} and blown[0]["last_finite"]["step"] == 0
    assert 1 <= blown[0]["halted_at"] <= 20
    assert f"blow-up seed 0 diverged at step {blown[0]['halted_at']}" in result.stderr


def test_every_atomic_write_has_its_own_temporary_name(tmp_path, monkeypatch):
    """pid plus a random suffix: two writers of one file (two processes, or two threads) never share one."""
    from samcli import runs
    seen = []
    real = os.replace
    monkeypatch.setattr(runs.os, "replace", lambda src, dst: (seen.append(Path(src).name), real(src, dst)))
    for _ in range(3):
        runs.write_json(tmp_path / "table.json", {"a": 1})
        runs.write_text(tmp_path / "table.csv", "a\n")
    assert len(set(seen)) == 6
    assert all(name.startswith((".table.json.", ".table.csv.")) and f".{os.getpid()}." in name for name in seen)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["table.csv", "table.json"]    # no temporary left
