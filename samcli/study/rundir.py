"""A study's run directories: what state each is in, and the record of a run read back from it.

Every run lives in `<study>/runs/<config_hash>/`, its files written whole by samcli/runs.py,
summary.json last of the training files and sharpness.json after it. A run is done when its
summary.json says completed or diverged for the expected config hash AND its sharpness.json is a
report measured with the study's rho, seed and notions (or says why a diverged run was skipped).
So killing the process at any moment loses at most the runs in progress:

    missing directory                      -> train
    summary running / interrupted          -> unfinished: train again from scratch
    summary completed, no sharpness.json   -> measure only
    foreign, corrupt or damaged directory  -> reported, moved aside to <hash>.stale-N, trained again

A finished run is only reused when every file holds up: metrics.jsonl parses line by line and its
steps are exactly the evaluation schedule of its config up to the summary's steps_done (a run that
RunWriter wrote, origin "writer", follows its loop's own schedule: its records are checked for form,
steps increasing to steps_done), the checkpoint loads with the summary's parameter count (finite
weights for a completed run), and sharpness.json is a finite report (a non-finite one is measured again).
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import yaml

from .. import _version
from ..config import SamcliError, TrainConfig, config_hash
from ..runs import (
    CHECKPOINT,
    CONFIG,
    METRICS,
    SHARPNESS,
    SUMMARY,
    file_sha256,
    read_metrics,
    read_sharpness,
    read_summary,
    write_sharpness,
    write_sharpness_skipped,
)
from ..spec.measure import MeasureSpec
from .spec import RunSpec

FINISHED = ("completed", "diverged")
DIVERGED_SKIP = "the run diverged: sharpness is undefined at non-finite weights"
CURVE_KEYS = ("step", "epoch", "train_loss", "train_accuracy", "test_loss", "test_accuracy")


@dataclass(frozen=True)
class RunRecord:
    """Everything the table, the plots and study.json need about one run, as read from its directory."""
    label: str
    seed: int
    hash: str
    method: str
    run_dir: str
    status: str                                   # completed | diverged | failed | missing | running | ...
    config: dict = field(default_factory=dict)    # the resolved TrainConfig as a dict
    overrides: dict = field(default_factory=dict)
    final: dict = field(default_factory=dict)     # the last evaluation's metrics
    steps: Optional[int] = None
    seconds: Optional[float] = None               # training wall time
    device: Optional[str] = None
    sharpness: Optional[dict] = None              # sharpness.json as written (a report or {'skipped': why})
    sharpness_summary: dict = field(default_factory=dict)   # SharpnessReport.summary(), flat
    history: list = field(default_factory=list)   # sharpness measured during training, per step
    error: Optional[str] = None                   # first line of the error of a failed run
    halted_at: Optional[int] = None               # the step where a diverged / interrupted / failed run stopped
    last_finite: dict = field(default_factory=dict)   # such a run's last evaluation with finite losses
    reached: Optional[bool] = None                # the stop target was reached (None: the run had no target)
    epochs: Optional[float] = None                # epochs trained: to the target if reached, else to the end
    curve: list = field(default_factory=list)     # every evaluation: step, epoch, train / test loss and accuracy
    test_examples: Optional[int] = None           # the test-set size (summary.json's data.test): an accuracy's se

    @classmethod
    def blank(cls, spec: RunSpec, run_dir: str | Path, status: str = "missing") -> RunRecord:
        """A record with no results (a run that is missing, untrusted or failed before writing anything)."""
        return cls(spec.label, spec.seed, spec.hash, spec.method, str(run_dir), status,
                   spec.config.to_dict(), spec.overrides)

    @classmethod
    def read(cls, run_dir: str | Path, spec: RunSpec) -> RunRecord:
        """The record of a run from the files in its directory (missing files leave fields empty)."""
        run_dir = Path(run_dir)
        summary = read_summary(run_dir) or {}
        sharp = sharpness_file(run_dir)
        flat = {}
        if sharp and "skipped" not in sharp:
            from ..sharpness import SharpnessReport
            report = SharpnessReport.from_dict(sharp)
            flat = {("sharpness_loss" if k == "loss" else k): v for k, v in report.summary().items()}
            flat["measure_seconds"] = report.seconds
        metrics = read_metrics(run_dir)
        history = [{k: _number(v) for k, v in r.items() if k in ("step", "epoch") or k.startswith("sharp_")}
                   for r in metrics if any(k.startswith("sharp_") for k in r)]
        curve = [{k: _number(r[k]) for k in CURVE_KEYS if k in r} for r in metrics]
        final = {k: _number(v) for k, v in (summary.get("final") or {}).items()}
        status = summary.get("status", "missing")
        stored_target = summary.get("target")
        target: dict = stored_target if isinstance(stored_target, dict) else {}
        reached = bool(target["reached"]) if "reached" in target else None
        stored_data = summary.get("data")
        data: dict = stored_data if isinstance(stored_data, dict) else {}
        test_examples = data.get("test") if isinstance(data.get("test"), int) else None
        return dataclasses.replace(
            cls.blank(spec, run_dir, status), final=final,
            steps=summary.get("steps_done"), seconds=summary.get("seconds"), device=summary.get("device"),
            sharpness=sharp, sharpness_summary=flat, history=history, halted_at=summary.get(f"{status}_at"),
            last_finite={k: _number(v) for k, v in (summary.get("last_finite") or {}).items()}, reached=reached,
            epochs=target.get("epoch") if reached else final.get("epoch"), curve=curve, test_examples=test_examples)

    @classmethod
    def failed(cls, spec: RunSpec, run_dir: str | Path, err: BaseException) -> RunRecord:
        """A run whose training or measuring raised: what its directory holds, marked failed."""
        record = cls.read(run_dir, spec) if Path(run_dir).is_dir() else cls.blank(spec, run_dir)
        return dataclasses.replace(record, status="failed",
                                   error=f"{type(err).__name__}: {err}".splitlines()[0][:300])

    def to_dict(self) -> dict[str, Any]:
        """As stored in study.json (`error` only for a failed run)."""
        data = dataclasses.asdict(self)
        if data["error"] is None:
            del data["error"]
        return data


def _number(value):
    if isinstance(value, str):
        try:
            return float(value)          # "nan" / "inf" as written by runs._clean
        except ValueError:
            return value
    return value


# ---- the state of a run directory -----------------------------------------------------------

def sharpness_file(run_dir: str | Path) -> Optional[dict]:
    """sharpness.json if it is a valid report or a skip note ({'skipped': why}); None otherwise."""
    data = read_sharpness(run_dir)
    if data is None or "skipped" in data:
        return data
    from ..sharpness import SharpnessReport
    try:
        SharpnessReport.from_dict(data)
    except Exception:
        return None
    return data


def run_state(run_dir: str | Path, spec: RunSpec, sharpness: dict) -> tuple[str, str]:
    """(action, reason): action is done | measure | train | stale (foreign, corrupt or made by something
    else than this study states: move aside). `sharpness` is the study's MeasureSpec as a dict."""
    run_dir = Path(run_dir)
    if not run_dir.exists():
        return "train", ""
    if not run_dir.is_dir():
        return "stale", f"{run_dir} is not a directory"
    summary = read_summary(run_dir)
    if summary is None or not isinstance(summary, dict):
        if not [p for p in run_dir.iterdir() if not p.name.startswith(".")]:
            return "train", ""          # empty, or only temporary files of a killed write
        if not (run_dir / SUMMARY).exists() and _config_matches(run_dir, spec):
            return "train", "unfinished (killed before its first summary)"
        return "stale", "summary.json is missing or unreadable"
    if summary.get("config_hash") != spec.hash:
        return "stale", f"summary.json belongs to config {summary.get('config_hash')!r}, not {spec.hash}"
    if not _config_matches(run_dir, spec):
        return "stale", "config.yaml is missing, unreadable or not this run's config"
    status = summary.get("status")
    if status in ("running", "interrupted"):
        return "train", f"unfinished (status {status})"
    if status not in FINISHED:
        return "stale", f"summary.json has unknown status {status!r}"
    trained_by = (summary.get("versions") or {}).get("samcli") if isinstance(summary.get("versions"), dict) else None
    if trained_by != _version.__version__:
        return "stale", f"trained by samcli {trained_by}, not this samcli {_version.__version__}"
    damage = (metrics_problem(run_dir, spec.config, summary) or checkpoint_problem(run_dir, summary)
              or data_problem(spec.config, summary))
    if damage:
        return "stale", damage
    sharp = sharpness_file(run_dir)
    if sharp is None:
        reason = "not measured" if not (run_dir / SHARPNESS).exists() else "sharpness.json is unreadable"
        return "measure", reason
    if status == "diverged":
        return ("done", "") if "skipped" in sharp else ("measure", "diverged run with a sharpness report")
    if "skipped" in sharp:
        return "measure", "completed run without a sharpness report"
    stale = report_problem(sharp, summary, sharpness)
    if stale:
        return "measure", stale
    from ..sharpness import SharpnessReport
    bad = nonfinite_keys(SharpnessReport.from_dict(sharp))
    if bad:
        return "measure", f"sharpness.json holds non-finite {', '.join(bad)}"
    return "done", ""


def report_problem(sharp: dict, summary: dict, sharpness: dict) -> str:
    """Why a stored report is not this study's measurement of this checkpoint ('' when it is): it must
    carry the study's spec hash, this samcli's version and the sha256 of the run's checkpoint."""
    wanted = MeasureSpec.build(sharpness)
    if sharp.get("checkpoint") != summary.get("checkpoint_sha256"):
        return "sharpness.json measured another checkpoint (copied from another run, or the run was redone)"
    if sharp.get("spec_hash") != wanted.hash():
        stored_spec = sharp.get("spec")
        stored: dict = stored_spec if isinstance(stored_spec, dict) else {}
        changed = [f"{k} {stored.get(k)!r} -> {v!r}" for k, v in wanted.to_dict().items()
                   if k in stored and stored.get(k) != v and not (k == "notions" and sorted(stored[k]) == sorted(v))]
        return ("measured with other sharpness settings" + (f" ({', '.join(changed)})" if changed else
                                                            " (no measurement spec stored)"))
    if sharp.get("version") != _version.__version__:
        return f"measured by samcli {sharp.get('version')}, not this samcli {_version.__version__}"
    return ""


def data_problem(cfg: TrainConfig, summary: dict) -> str:
    """Why the run's data are not the data its config gives now ('' when they are, or cannot be loaded
    here: a data.root only the workers see is checked where the run trains)."""
    stored = summary.get("data")
    if not isinstance(stored, dict):
        return "summary.json records no data fingerprint (written by an older samcli)"
    from ..task import expected_data_fingerprint
    try:
        now = expected_data_fingerprint(cfg)
    except (SamcliError, OSError):
        return ""
    if stored != now:
        return (f"trained on other data ({stored.get('train')}/{stored.get('test')} examples, fingerprint "
                f"{stored.get('sha256')}) than the config gives now ({now['train']}/{now['test']}, {now['sha256']})")
    return ""


def evaluation_steps(cfg: TrainConfig, steps_done: int) -> list[int]:
    """The steps train() evaluates at, up to steps_done: 0, every eval_every, every measure.every, the last."""
    steps = {0, steps_done} if steps_done >= cfg.steps else {0}
    for every in (cfg.eval_every, cfg.measure.every):
        if every:
            steps.update(range(every, steps_done + 1, every))
    return sorted(s for s in steps if s <= steps_done)


def metrics_problem(run_dir: Path, cfg: TrainConfig, summary: dict) -> str:
    """Why metrics.jsonl cannot be the record of this finished run ('' when it can): every line one
    JSON record, their steps the evaluation schedule up to steps_done. A run that diverged between
    evaluations has no record at its last step; a stop target ends it at an evaluation."""
    try:
        records = [json.loads(line) for line in (run_dir / METRICS).read_text().splitlines()]
        steps = [record["step"] for record in records]
    except (OSError, UnicodeDecodeError):
        return "metrics.jsonl is missing or unreadable"
    except (json.JSONDecodeError, KeyError, TypeError):
        return "metrics.jsonl has a torn or foreign line"
    done = summary.get("steps_done")
    if not isinstance(done, int):
        return "summary.json has no steps_done"
    if summary.get("origin") == "writer":       # the user's loop: its own schedule, checked for form only
        return _written_metrics_problem(records, steps, done, summary)
    expected = evaluation_steps(cfg, done)
    if summary.get("stopped_at") == done and done not in expected:
        expected.append(done)                       # stopped at a target: an evaluation ended it
    allowed = [expected]
    if summary.get("status") == "diverged":         # diverged on a batch (no record) or at an evaluation
        allowed = [[s for s in expected if s < done], [s for s in expected if s < done] + [done]]
    if steps not in allowed:
        return (f"metrics.jsonl holds {len(steps)} records (last step {steps[-1] if steps else None}) where the "
                f"schedule up to step {done} has {len(allowed[-1])}")
    final = summary.get("final")
    if summary.get("status") == "completed" and final != {k: v for k, v in records[-1].items()
                                                          if k not in ("step", "batch_loss")}:
        return "metrics.jsonl's last record is not the summary's final evaluation"
    return ""


def _written_metrics_problem(records: list, steps: list, done: int, summary: dict) -> str:
    """metrics_problem for a run written by RunWriter: records are mappings of numbers, their steps
    integers that increase, the last one steps_done and, for a completed run, the summary's final."""
    if not records or not all(isinstance(r, dict) for r in records):
        return "metrics.jsonl holds no records" if not records else "metrics.jsonl has a foreign line"
    if not all(isinstance(s, int) and not isinstance(s, bool) for s in steps) or steps != sorted(set(steps)):
        return "metrics.jsonl's steps are not increasing integers"
    if steps[-1] != done:
        return f"metrics.jsonl's last step {steps[-1]} is not the summary's steps_done {done}"
    final = {k: v for k, v in records[-1].items() if k not in ("step", "batch_loss")}
    if summary.get("status") == "completed" and summary.get("final") != final:
        return "metrics.jsonl's last record is not the summary's final evaluation"
    return ""


def checkpoint_problem(run_dir: Path, summary: dict) -> str:
    """Why checkpoint.pt cannot be this finished run's ('' when it can): it loads, holds the summary's
    parameter count, and a completed run's weights are finite."""
    import torch
    try:
        theta = torch.load(run_dir / CHECKPOINT, map_location="cpu", weights_only=True)["theta"]
    except FileNotFoundError:
        return "checkpoint.pt is missing"
    except Exception as err:
        return f"checkpoint.pt cannot be loaded ({type(err).__name__})"
    if not isinstance(theta, torch.Tensor) or theta.numel() != summary.get("parameters", theta.numel()):
        return "checkpoint.pt does not hold this run's parameters"
    if summary.get("status") == "completed" and not torch.isfinite(theta).all():
        return "checkpoint.pt of a completed run holds non-finite weights"
    if summary.get("checkpoint_sha256") != file_sha256(run_dir / CHECKPOINT):
        return "checkpoint.pt is not the checkpoint its summary.json records (its sha256 differs: altered or swapped)"
    return ""


def nonfinite_keys(report) -> list[str]:
    """The summary numbers of a SharpnessReport that are NaN or inf, less R^Asc at a stationary point
    (infinite there by definition, its Rayleigh quotient undefined)."""
    stationary = report.ascent is not None and report.ascent.grad_norm == 0.0
    return [k for k, v in report.summary().items()
            if not math.isfinite(v) and not (stationary and k in ("r_asc", "rayleigh"))]


def _config_matches(run_dir: Path, spec: RunSpec) -> bool:
    try:
        return config_hash(TrainConfig.from_dict(yaml.safe_load((run_dir / CONFIG).read_text()))) == spec.hash
    except Exception:
        return False


def move_aside(run_dir: str | Path) -> Path:
    """Rename an untrusted run directory to <hash>.stale-N (kept for inspection, never deleted)."""
    run_dir = Path(run_dir)
    for i in range(1, 10_000):
        target = run_dir.with_name(f"{run_dir.name}.stale-{i}")
        if not target.exists():
            os.replace(run_dir, target)
            return target
    raise SamcliError(f"cannot move {run_dir} aside; remove the {run_dir.name}.stale-* directories")


# ---- measuring a run in place ------------------------------------------------------------------

class KeptReportError(SamcliError):
    """A measurement came out non-finite and a finite sharpness.json was kept instead."""


def measure_and_record(run_dir: str | Path, **settings) -> tuple[object, Optional[Path], Optional[str]]:
    """Measure a trained run (`measure_run` keyword arguments) and write its sharpness.json:
    (SharpnessReport, path written or None, a warning or None).

    A diverged run is refused (its weights are not finite); an interrupted one is measured with a
    warning that it is not a finished model; a report with NaN or inf values never replaces a finite
    one (the error says so), and is written, with a warning, only where there was none."""
    from ..sharpness import SharpnessReport, measure_run
    run_dir = Path(run_dir)
    summary = read_summary(run_dir) or {}
    status = summary.get("status")
    if status == "diverged":
        raise SamcliError(f"{run_dir} is a diverged run (at step {summary.get('diverged_at', '?')}): sharpness is "
                          "undefined at non-finite weights; measure a completed run")
    warning = None
    if status in ("interrupted", "failed", "running"):
        step = summary.get(f"{status}_at", summary.get("steps_done", "?"))
        warning = (f"{run_dir} did not finish (status {status}, stopped at step {step}): measuring its last "
                   "checkpoint, not a finished model")
    report = measure_run(run_dir, **settings)
    bad = nonfinite_keys(report)
    if bad:
        old = sharpness_file(run_dir)
        if old and "skipped" not in old and not nonfinite_keys(SharpnessReport.from_dict(old)):
            raise KeptReportError(f"the measurement gave non-finite {', '.join(bad)}; the finite report in "
                              f"{run_dir / SHARPNESS} is kept (try another --rho or more --samples)")
        warning = "; ".join(filter(None, [warning, f"the measurement gave non-finite {', '.join(bad)}"]))
    return report, write_sharpness(run_dir, report), warning


def record_diverged(run_dir: str | Path) -> Path:
    """sharpness.json of a diverged run: why it holds no report."""
    return write_sharpness_skipped(run_dir, DIVERGED_SKIP)
