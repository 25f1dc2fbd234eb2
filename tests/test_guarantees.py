"""README "What samcli guarantees": the promises no other test held to (issue #17). One test per promise,
named for it, each through the real CLI or the Python API on tiny float64 configs."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

sys.path.insert(0, str(Path(__file__).parent / "study"))
from study_helpers import REPO, samcli_cmd, tiny_study, write_study  # noqa: E402

import samcli
from samcli import runs
from samcli.cli import app
from samcli.runs import CHECKPOINT, file_sha256
from samcli.train import train

runner = CliRunner()
TINY = ["--dataset", "synthetic", "--device", "cpu", "--dtype", "float64", "--set", "data.n_train=16",
        "--set", "data.n_test=8", "--set", "data.dim=3", "--set", "data.classes=2", "--set", "model.widths=[4]",
        "--batch-size", "4"]
ENV = dict(os.environ, PYTHONWARNINGS="ignore", OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
PATIENCE = 300


def tiny_cfg(**top) -> dict:
    raw = {"seed": 0, "device": "cpu", "dtype": "float64", "steps": 2, "eval_every": 1, "chunk_size": 64,
           "data": {"name": "synthetic", "n_train": 16, "n_test": 8, "dim": 3, "classes": 2},
           "model": {"name": "mlp", "widths": [4], "activation": "tanh"},
           "optimizer": {"method": "sgd", "lr": 0.1, "batch_size": 4}}
    raw.update(top)
    return raw


def one_line_error(result) -> str:
    assert result.exit_code == 2, (result.exit_code, result.output)
    assert result.stdout == "" and "Traceback" not in result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


# ---- Validated when ------------------------------------------------------------------------------------

def test_measure_seed_below_zero_is_refused(tmp_path):
    """`seed` and `measure.seed` outside [0, 2**63 - 1]: the negative side of measure.seed."""
    out = tmp_path / "run"
    line = one_line_error(runner.invoke(app, ["train", *TINY, "--steps", "2", "--set", "measure.seed=-1",
                                              "--out", str(out), "--quiet"]))
    assert "measure.seed" in line
    assert not out.exists()


def test_compare_prints_its_table_on_stdout_and_the_rest_on_stderr(tmp_path):
    path = write_study(tmp_path / "s.yaml", tiny_study(seeds=[0]))
    result = runner.invoke(app, ["compare", str(path), "--out", str(tmp_path / "out"), "--jobs", "1"])
    assert result.exit_code == 0, result.output
    assert "Kendall tau-b" in result.stdout and "GD" in result.stdout
    assert "written:" in result.stderr and "written:" not in result.stdout


# ---- Never replaced silently -----------------------------------------------------------------------------

def test_python_train_overwrite_true_removes_the_old_run_and_its_sharpness_report(tmp_path):
    out = tmp_path / "run"
    train(tiny_cfg(), out)
    assert runner.invoke(app, ["sharpness", str(out), "--notions", "ascent"]).exit_code == 0
    assert (out / "sharpness.json").is_file()
    with pytest.raises(samcli.SamcliError, match="already holds a run"):
        train(tiny_cfg(steps=3), out)
    assert (out / "sharpness.json").is_file()                                    # refused: untouched
    train(tiny_cfg(steps=3), out, overwrite=True)
    assert {p.name for p in out.iterdir()} == {"config.yaml", "metrics.jsonl", "summary.json", "checkpoint.pt"}
    assert json.loads((out / "summary.json").read_text())["steps_done"] == 3


# ---- What survives a kill --------------------------------------------------------------------------------

def test_a_write_that_dies_before_its_rename_leaves_the_old_file_and_no_temporary(tmp_path, monkeypatch):
    """Written whole under a temporary name and renamed: dying mid-write leaves the old file."""
    target = tmp_path / "summary.json"
    runs.write_json(target, {"status": "completed"})
    old = target.read_bytes()

    def killed(src, dst):
        raise KeyboardInterrupt                     # the process is stopped between write and rename
    monkeypatch.setattr(runs.os, "replace", killed)
    with pytest.raises(KeyboardInterrupt):
        runs.write_json(target, {"status": "running", "pad": "x" * 100_000})
    assert target.read_bytes() == old
    assert [p.name for p in tmp_path.iterdir()] == ["summary.json"]


def test_kill_9_of_a_training_leaves_it_running_with_whole_metrics_records(tmp_path):
    """`kill -9` leaves the summary `running`; metrics.jsonl is appended and flushed one record at a time."""
    out = tmp_path / "run"
    proc = subprocess.Popen(samcli_cmd("train", *TINY, "--steps", "10000000", "--set", "eval_every=5", "--quiet",
                                       "--out", str(out)), cwd=REPO, env=ENV, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    metrics = out / "metrics.jsonl"
    try:
        deadline = time.time() + PATIENCE
        while not (metrics.is_file() and len(metrics.read_text().splitlines()) >= 3):
            assert proc.poll() is None, proc.stderr.read()
            assert time.time() < deadline, "no 3 evaluations"
            time.sleep(0.05)
        # flushed record by record: what another process reads mid-run is whole lines
        text = metrics.read_text()
        assert text.endswith("\n")
        assert all(json.loads(line)["step"] >= 0 for line in text.splitlines())
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=PATIENCE)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == -signal.SIGKILL
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "running" and "final" not in summary
    text = metrics.read_text()
    assert text.endswith("\n")
    steps = [json.loads(line)["step"] for line in text.splitlines()]
    assert steps == sorted(steps) and len(steps) >= 3
    assert not [p.name for p in out.iterdir() if p.name.startswith(".")]      # no temporary file left


def _finished_study(tmp_path):
    raw = tiny_study(seeds=[0])
    raw["variants"] = raw["variants"][:1]
    result = samcli.compare(raw, out=tmp_path / "s", jobs=1)
    return raw, result.study_dir / "runs" / result.runs.iloc[0]["hash"]


@pytest.mark.parametrize("tamper, note", [
    (lambda theta: theta[:-1].clone(), "checkpoint.pt does not hold this run's parameters"),
    (lambda theta: torch.full_like(theta, float("nan")), "checkpoint.pt of a completed run holds non-finite weights"),
])
def test_a_reused_checkpoint_must_hold_the_right_parameter_count_and_finite_weights(tmp_path, tamper, note):
    """The rerun reuses a run only if the checkpoint loads with the right parameter count (finite for a completed
    run), even when the summary's sha256 was made to match."""
    raw, run_dir = _finished_study(tmp_path)
    state = torch.load(run_dir / CHECKPOINT, weights_only=True)
    state["theta"] = tamper(state["theta"])
    torch.save(state, run_dir / CHECKPOINT)
    summary = json.loads((run_dir / "summary.json").read_text())
    summary["checkpoint_sha256"] = file_sha256(run_dir / CHECKPOINT)          # only the content can tell
    (run_dir / "summary.json").write_text(json.dumps(summary))
    events = []
    samcli.compare(raw, out=tmp_path / "s", jobs=1, progress=events.append)
    notes = [e.message for e in events if e.kind == "note"]
    assert sum(note in n for n in notes) == 1, notes
    assert run_dir.with_name(run_dir.name + ".stale-1").is_dir()
    theta = torch.load(run_dir / CHECKPOINT, weights_only=True)["theta"]
    assert theta.numel() == summary["parameters"] and torch.isfinite(theta).all()


# ---- Exit codes --------------------------------------------------------------------------------------------

def test_compare_exits_1_when_a_run_failed(tmp_path, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("CUDA out of memory")
    monkeypatch.setattr(sys.modules["samcli.train"], "train", broken)          # every run of the study fails
    path = write_study(tmp_path / "s.yaml", tiny_study(seeds=[0]))
    result = runner.invoke(app, ["compare", str(path), "--out", str(tmp_path / "out"), "--jobs", "1", "--quiet"])
    assert result.exit_code == 1, (result.exit_code, result.output)
    assert "Traceback" not in result.output and "GD seed 0 failed: RuntimeError: CUDA out of memory" in result.stderr


def test_reproduce_exits_1_when_a_prediction_fails(tmp_path):
    """Thm 4.8's radius after 20 steps instead of hundreds: a real FAIL, exit 1, the verdicts still on stdout."""
    proc = subprocess.run(samcli_cmd("reproduce", "quadratic", "--quick", "--set", "steps=20", "--set",
                                     "record_every=10", "--json", "--out", str(tmp_path)),
                          cwd=REPO, env=ENV, capture_output=True, text=True, timeout=PATIENCE)
    assert proc.returncode == 1, proc.stderr
    verdicts = [v for study in json.loads(proc.stdout) for v in study["verdicts"]]
    assert "FAIL" in {v["status"] for v in verdicts}


# ---- found by the review of issues #16 / #17 ----------------------------------------------------------

def test_an_empty_out_is_refused_by_compare_and_reproduce_too(tmp_path, monkeypatch):
    """`--out ''` (an unset shell variable) must not write a study or the paper's results into the current
    directory, from any command."""
    import yaml
    from study_helpers import tiny_study
    monkeypatch.chdir(tmp_path)
    (tmp_path / "notes.txt").write_text("the user's own file\n")
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(tiny_study(seeds=[0])))
    for args in (["compare", "s.yaml", "--out", "", "--quiet"], ["reproduce", "quadratic", "--quick", "--out", ""]):
        result = CliRunner().invoke(app, args)
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        assert result.exit_code == 2 and len(lines) == 1 and "empty or the current directory" in lines[0], result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt", "s.yaml"]


def test_a_spec_made_directly_is_checked_like_one_built():
    from samcli import MeasureSpec, SamcliError
    for bad, fragment in [({"directions": "abc"}, "directions='abc' must be a finite integer"),
                          ({"directions": "4"}, "directions='4' must be a finite integer"),
                          ({"exact": "no"}, "exact='no' must be True or False"),
                          ({"notions": ["flat"]}, "unknown sharpness notion 'flat'")]:
        with pytest.raises(SamcliError) as err:
            MeasureSpec(**bad)
        assert fragment in str(err.value) and "\n" not in str(err.value)
    assert MeasureSpec(directions=8.0).hash() == MeasureSpec.build({"directions": 8}).hash()


def test_measure_run_refuses_a_truthy_string_for_exact(tmp_path):
    from samcli import SamcliError, measure_run, train
    train({"data": {"name": "synthetic", "n_train": 16, "n_test": 4, "dim": 3, "classes": 2}, "steps": 2,
           "model": {"name": "mlp", "widths": [4]}, "device": "cpu", "optimizer": {"batch_size": 8}}, tmp_path / "run")
    with pytest.raises(SamcliError, match="exact='no' must be True or False"):
        measure_run(tmp_path / "run", exact="no")


@pytest.mark.parametrize("item, advice", [("exact=true", "pass --exact instead"),
                                          ("exact=false", "leave --exact out instead"),
                                          ("seed=3", "pass --seed 3 instead")])
def test_sharpness_set_of_an_option_knob_gives_advice_that_works(tmp_path, item, advice):
    from samcli import train
    train({"data": {"name": "synthetic", "n_train": 16, "n_test": 4, "dim": 3, "classes": 2}, "steps": 2,
           "model": {"name": "mlp", "widths": [4]}, "device": "cpu", "optimizer": {"batch_size": 8}}, tmp_path / "run")
    result = CliRunner().invoke(app, ["sharpness", str(tmp_path / "run"), "--set", item])
    assert result.exit_code == 2 and advice in result.stderr, result.stderr
    assert not (tmp_path / "run" / "sharpness.json").exists()


@pytest.mark.parametrize("args, hint", [(["reproduce", "Quadratic", "--quick"], "did you mean quadratic?"),
                                        (["compare", "--executor", "Ray"], "did you mean ray?")])
def test_names_in_the_wrong_case_get_a_hint_everywhere(args, hint):
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2 and hint in result.stderr, result.stderr


def test_a_worker_that_ignores_the_stop_is_killed_after_the_patience():
    """stop_workers tells each worker (SIGTERM) and kills one that outlives the patience: a real process
    that ignores SIGTERM."""
    import multiprocessing
    import time
    from samcli.study.workers import stop_workers

    class Pool:
        def shutdown(self, wait, cancel_futures):
            pass
    ctx = multiprocessing.get_context("spawn")
    ready = ctx.Event()
    stubborn = ctx.Process(target=_ignore_sigterm_and_sleep, args=(ready,))
    stubborn.start()
    assert ready.wait(120)                                 # its handler is set
    started = time.monotonic()
    stop_workers(Pool(), [stubborn], drain=lambda: None, patience=1.0)
    assert not stubborn.is_alive() and stubborn.exitcode == -9, stubborn.exitcode
    assert time.monotonic() - started < 10


def _ignore_sigterm_and_sleep(ready) -> None:
    import signal
    import time
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    ready.set()
    time.sleep(60)
