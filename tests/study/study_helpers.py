"""Tiny studies for the `samcli compare` tests: a synthetic 3-dim task and a 3-4-2 tanh MLP in float64,
so every run takes a fraction of a second."""
from __future__ import annotations

import copy
import os
import subprocess
import sys
from pathlib import Path

import yaml

FAST_SHARPNESS = {"rho": 0.05, "lanczos_iters": 10, "ascent_iters": 3, "ascent_restarts": 1, "directions": 4,
                  "stochastic_examples": 4, "trace_probes": 2}

REPO = Path(__file__).resolve().parents[2]


def tiny_study(name: str = "tiny", steps: int = 20, seeds=(0, 1), **top) -> dict:
    study = {
        "name": name,
        "base": {"device": "cpu", "dtype": "float64", "steps": steps, "eval_every": 10, "chunk_size": 64,
                 "data": {"name": "synthetic", "n_train": 32, "n_test": 16, "dim": 3, "classes": 2},
                 "model": {"name": "mlp", "widths": [4], "activation": "tanh"},
                 "optimizer": {"lr": 0.2, "rho": 0.1}},
        "variants": [{"label": "GD", "optimizer.method": "sgd", "optimizer.batch_size": "full"},
                     {"label": "SAM", "optimizer.method": "sam", "optimizer.batch_size": "full"},
                     {"label": "1-SAM", "optimizer.method": "sam", "optimizer.batch_size": 1,
                      "optimizer.lr": 0.05}],
        "seeds": list(seeds),
        "sharpness": dict(FAST_SHARPNESS),
    }
    study.update(copy.deepcopy(top))
    return study


def write_study(path: Path, study: dict) -> Path:
    path = Path(path)
    path.write_text(yaml.safe_dump(study, sort_keys=False))
    return path


def samcli_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "samcli.cli", *args]


def run_cli(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    return subprocess.run(samcli_cmd(*args), capture_output=True, text=True, timeout=timeout, cwd=REPO, env=env)


def file_states(run_dir: Path) -> dict:
    """name -> (mtime_ns, bytes) of every file in a run directory."""
    return {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in sorted(Path(run_dir).iterdir()) if p.is_file()}


def tree_states(root: Path) -> dict:
    """relative path -> (mtime_ns, bytes) of every file under `root` (symlinks not followed), less the
    study lock (it names whoever last held the directory, not work)."""
    root = Path(root)
    return {str(p.relative_to(root)): (p.lstat().st_mtime_ns, p.read_bytes() if not p.is_symlink() else None)
            for p in sorted(root.rglob("*")) if (p.is_file() or p.is_symlink()) and p.name != ".lock"}


def assert_refused(result, *fragments: str) -> str:
    """Bad input at the CLI (a CliRunner result): exit code 2, no traceback, one line on stderr holding
    every fragment, nothing on stdout. Returns the line."""
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    assert result.stdout == ""
    return lines[0]
