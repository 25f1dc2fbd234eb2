"""A full disk, a quota or a file-size limit while `samcli train` writes its run (issue #17, part 4).

The faults are real: a file-size limit (RLIMIT_FSIZE, SIGXFSZ ignored so write() fails with EFBIG instead
of killing the process) set in the child process, and a real full file system (a 16 KB tmpfs in a private
mount namespace, where the kernel lets one have it). Each ends in one line naming the file, exit code 2,
the run marked failed in its summary when the summary can still be written (and said so when it cannot),
and no half-written file: metrics.jsonl holds whole records only, no temporary file is left behind.
"""
from __future__ import annotations

import json
import os
import resource
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

sys.path.insert(0, str(Path(__file__).parent / "study"))
from study_helpers import REPO, file_states, samcli_cmd  # noqa: E402

ENV = dict(os.environ, PYTHONWARNINGS="ignore", OMP_NUM_THREADS="1")
TRAIN = ["train", "--dataset", "synthetic", "--quiet"]


def limited(max_bytes: int):
    def preexec() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (max_bytes, max_bytes))
    return preexec


def train_under_limit(max_bytes: int, out: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(samcli_cmd(*TRAIN, *args, "--out", str(out)), cwd=REPO, env=ENV, capture_output=True,
                          text=True, timeout=300, preexec_fn=limited(max_bytes))


def the_line(proc: subprocess.CompletedProcess) -> str:
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    assert "Traceback" not in proc.stderr and proc.stdout == ""
    return " ".join(lines[0].split())


def assert_whole(run: Path) -> list[dict]:
    """No temporary file left; metrics.jsonl (if any) is whole lines that parse; returns its records."""
    assert not [p.name for p in run.iterdir() if p.name.startswith(".")], list(run.iterdir())
    if not (run / "metrics.jsonl").exists():
        return []
    text = (run / "metrics.jsonl").read_text()
    assert text == "" or text.endswith("\n"), text[-80:]
    return [json.loads(line) for line in text.splitlines()]


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    """A finished run beside the failing ones: nothing a fault does may touch it."""
    run = tmp_path_factory.mktemp("disk") / "finished"
    subprocess.run(samcli_cmd(*TRAIN, "--steps", "2", "--out", str(run)), cwd=REPO, env=ENV, check=True, timeout=300)
    return run


def test_metrics_jsonl_over_the_limit(tmp_path, finished):
    before = file_states(finished)
    run = tmp_path / "run"
    line = the_line(train_under_limit(4096, run, "--steps", "50", "--set", "eval_every=1"))
    assert f"cannot write {run / 'metrics.jsonl'}: File too large" in line, line
    assert "marked failed at step" in line and str(run / "summary.json") in line, line
    summary = json.loads((run / "summary.json").read_text())
    records = assert_whole(run)
    assert summary["status"] == "failed" and "final" not in summary
    assert summary["failed_at"] == records[-1]["step"] + 1 == summary["last_finite"]["step"] + 1
    assert "metrics.jsonl" in summary["error"]
    assert yaml.safe_load((run / "config.yaml").read_text())["steps"] == 50       # written before the fault
    assert file_states(finished) == before


def test_checkpoint_over_the_limit(tmp_path, finished):
    before = file_states(finished)
    run = tmp_path / "run"
    line = the_line(train_under_limit(4096, run, "--steps", "5"))      # the mlp's checkpoint is ~300 KB
    assert f"cannot write {run / 'checkpoint.pt'}" in line, line
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "failed" and summary["failed_at"] == 5, summary
    assert not (run / "checkpoint.pt").exists()
    assert [r["step"] for r in assert_whole(run)] == [0, 5]
    assert file_states(finished) == before


def test_the_python_api_raises_run_file_error(tmp_path):
    run = tmp_path / "run"
    code = ("import json, sys, samcli\n"
            "from samcli.runs import RunFileError\n"
            "try:\n"
            "    samcli.train({'data': {'name': 'synthetic'}, 'steps': 5}, sys.argv[1])\n"
            "except RunFileError as err:\n"
            "    print(json.dumps({'path': str(err.path), 'line': str(err)}))\n")
    proc = subprocess.run([sys.executable, "-c", code, str(run)], cwd=REPO, env=ENV, capture_output=True, text=True,
                          timeout=300, preexec_fn=limited(4096))
    caught = json.loads(proc.stdout)
    assert caught["path"] == str(run / "checkpoint.pt") and "\n" not in caught["line"], caught
    assert json.loads((run / "summary.json").read_text())["status"] == "failed"


def test_config_over_the_limit_trains_nothing(tmp_path):
    run = tmp_path / "run"
    line = the_line(train_under_limit(300, run, "--steps", "5"))       # config.yaml is ~800 bytes
    assert f"cannot write {run / 'config.yaml'}" in line, line
    assert not (run / "metrics.jsonl").exists() and not (run / "summary.json").exists()
    assert_whole(run)


def _private_tmpfs_works() -> bool:
    if not shutil.which("unshare"):
        return False
    probe = subprocess.run(["unshare", "-Urm", "sh", "-c", "mount -t tmpfs -o size=16k tmpfs /mnt"],
                           capture_output=True, timeout=60)
    return probe.returncode == 0


@pytest.mark.skipif(not _private_tmpfs_works(), reason="no private mount namespace to hold a tiny tmpfs")
def test_a_full_disk_where_not_even_the_summary_fits(tmp_path):
    """16 KB of tmpfs: config.yaml and the first summary take a page each, metrics.jsonl fills the rest;
    then neither the checkpoint nor the failed summary fits. The line says the summary still reads
    'running'. The tmpfs lives in the namespace, so the files are inspected there."""
    mount = tmp_path / "disk"
    mount.mkdir()
    run = mount / "run"
    inspect = ("import json, pathlib, sys; r = pathlib.Path(sys.argv[1]); "
               "print(json.dumps({p.name: p.read_text() for p in r.iterdir() if p.suffix != '.pt'}))")
    script = (f"mount -t tmpfs -o size=16k tmpfs {mount} && "
              f"{' '.join(samcli_cmd(*TRAIN))} --steps 200 --set eval_every=1 --out {run} 2>{tmp_path / 'err'}; "
              f"echo $? > {tmp_path / 'rc'}; {sys.executable} -c \"{inspect}\" {run}")
    proc = subprocess.run(["unshare", "-Urm", "sh", "-c", script], cwd=REPO, env=ENV, capture_output=True,
                          text=True, timeout=300)
    files = json.loads(proc.stdout)
    line = the_line(subprocess.CompletedProcess([], int((tmp_path / "rc").read_text()), "",
                                                (tmp_path / "err").read_text()))
    assert f"cannot write {run / 'metrics.jsonl'}: No space left on device" in line, line
    assert "could not be marked failed either (it still says 'running')" in line, line
    assert json.loads(files["summary.json"])["status"] == "running"
    assert not [name for name in files if name.startswith(".")], list(files)
    text = files["metrics.jsonl"]
    assert text.endswith("\n") and all(json.loads(r) for r in text.splitlines())
