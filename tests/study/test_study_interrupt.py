"""Ctrl-C ends a study at every --jobs, for real: a `samcli compare --jobs 3` subprocess gets SIGINT (to
its process group, as a terminal sends it, or to the parent alone) while two short runs are finished,
two long ones are training and the third worker is idle. It must exit 130 with one line, leave no process behind, keep the
finished runs byte for byte, mark the runs in progress 'interrupted', and a rerun must equal a study
that was never interrupted."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from samcli.study import compare, load_study
from study_helpers import REPO, file_states, samcli_cmd, tiny_study, write_study

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc to find the processes")

ENV = dict(os.environ, PYTHONWARNINGS="ignore", OMP_NUM_THREADS="1")
PATIENCE = 300          # seconds to wait for a subprocess to reach a state (never a timing check)
EXIT_WITHIN = 60        # seconds after SIGINT by which the study must have exited (it hung forever before)
# A long run trains for seconds after its second evaluation (30,000 full-batch steps, ~5 s on one idle core):
# at 3,000 steps (0.5 s) a loaded CI machine starved this test's polling until the runs had finished.
LONG_STEPS = 30000
COLUMNS = ["runs", "completed", "diverged", "failed", "test_accuracy_mean", "train_loss_mean", "lambda_1_mean",
           "trace_mean", "r_max_mean", "steps_mean"]


def two_speed_study() -> dict:
    raw = tiny_study(name="two-speed", steps=20, seeds=[0, 1])
    raw["variants"] = [{"label": "short", "optimizer.method": "sam", "optimizer.batch_size": "full"},
                       {"label": "long", "optimizer.method": "sgd", "optimizer.batch_size": "full",
                        "steps": LONG_STEPS, "eval_every": 200}]
    return raw


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The same study, never interrupted (in this process, one run after the other)."""
    return compare(two_speed_study(), out=tmp_path_factory.mktemp("reference") / "study").table


def descendants(pid: int) -> list[int]:
    """Every process below `pid` (Linux /proc)."""
    parents = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            parents[int(stat.parent.name)] = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
    found, frontier = [], [pid]
    while frontier:
        below = [child for child, parent in parents.items() if parent in frontier]
        found += below
        frontier = below
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")          # a zombie has exited; only its parent's reaping is left


def wait_for(condition, proc, what: str) -> None:
    deadline = time.time() + PATIENCE
    while not condition():
        if proc.poll() is not None:
            pytest.fail(f"the study ended (exit {proc.returncode}) before {what}: {proc.stderr.read()}")
        if time.time() > deadline:
            pytest.fail(f"gave up waiting for {what}")
        time.sleep(0.05)


def records(path: Path) -> int:
    try:
        return len(path.read_text().splitlines())
    except OSError:
        return 0


def interrupted_study(tmp_path: Path, to_group: bool, *executor: str, in_progress: bool = True):
    """Run the study in a subprocess of its own process group; SIGINT it once the short runs are
    measured (and, with `in_progress`, both long runs have trained past their second evaluation).
    Returns (study, out, exit code, stderr lines, the processes that were below it)."""
    raw = two_speed_study()
    study = load_study(raw)
    out = tmp_path / "study"
    proc = subprocess.Popen(samcli_cmd("compare", str(write_study(tmp_path / "s.yaml", raw)), "--out", str(out),
                                       "--quiet", *executor),
                            cwd=REPO, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    runs = {label: [out / "runs" / s.hash for s in study.runs if s.label == label] for label in ("short", "long")}
    try:
        wait_for(lambda: all((d / "sharpness.json").exists() for d in runs["short"]) and (
            not in_progress or all(records(d / "metrics.jsonl") >= 2 for d in runs["long"])), proc,
            "the short runs to finish and the long ones to be training")
        below = descendants(proc.pid)
        if to_group:
            os.killpg(proc.pid, signal.SIGINT)
        else:
            os.kill(proc.pid, signal.SIGINT)
        try:
            proc.wait(timeout=EXIT_WITHIN)
        except subprocess.TimeoutExpired:
            pytest.fail(f"samcli compare {' '.join(executor)} still runs {EXIT_WITHIN} s after SIGINT")
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    stderr = [line for line in proc.stderr.read().splitlines() if line.strip()]
    return study, out, runs, proc.returncode, stderr, below


def assert_nothing_left(below: list[int]) -> None:
    deadline = time.time() + EXIT_WITHIN
    while any(alive(pid) for pid in below) and time.time() < deadline:
        time.sleep(0.1)
    assert not [pid for pid in below if alive(pid)], "a process of the study outlived it"


def assert_resumes(raw_study, out: Path, finished: list[Path], reference: pd.DataFrame) -> None:
    """Finished runs kept byte for byte by the rerun, whose table equals the uninterrupted one."""
    before = {d: file_states(d) for d in finished}
    table = compare(two_speed_study(), out=out).table
    assert {d: file_states(d) for d in finished} == before
    pd.testing.assert_frame_equal(table[COLUMNS], reference[COLUMNS])


@pytest.mark.parametrize("to_group", [True, False], ids=["process-group", "parent-alone"])
def test_sigint_ends_a_pool_study_and_it_resumes(tmp_path, reference, to_group):
    study, out, runs, code, stderr, below = interrupted_study(tmp_path, to_group, "--jobs", "3")
    assert code == 130
    assert len(stderr) == 1 and stderr[0].startswith("warning: interrupted: finished runs are kept"), stderr
    assert len(below) >= 3                  # the three workers (and multiprocessing's resource tracker)
    assert_nothing_left(below)
    for run_dir in runs["long"]:            # the runs in progress stopped as `samcli train` stops
        summary = json.loads((run_dir / "summary.json").read_text())
        assert summary["status"] == "interrupted" and summary["interrupted_at"] < LONG_STEPS
        assert not (run_dir / "sharpness.json").exists()
    assert_resumes(study, out, runs["short"], reference)


def test_sigint_ends_a_one_process_study_too(tmp_path, reference):
    study, out, runs, code, stderr, below = interrupted_study(tmp_path, True, "--jobs", "1")
    assert code == 130 and len(stderr) == 1, stderr
    assert_nothing_left(below)
    # one run after the other: the first long run finished before the second had two evaluations
    statuses = [json.loads((d / "summary.json").read_text())["status"] for d in runs["long"]]
    assert statuses == ["completed", "interrupted"]
    assert_resumes(study, out, runs["short"] + runs["long"][:1], reference)


@pytest.mark.parametrize("to_group", [True, False], ids=["process-group", "parent-alone"])
def test_sigint_ends_a_ray_study(tmp_path, reference, to_group):
    pytest.importorskip("ray")
    # Ray tasks train in scratch directories: only finished runs come back, so none is seen in progress
    study, out, runs, code, stderr, below = interrupted_study(tmp_path, to_group, "--executor", "ray",
                                                              in_progress=False)
    assert code == 130
    assert_nothing_left(below)
    assert_resumes(study, out, runs["short"], reference)
