"""Shared pieces of the paper studies: study configs, runs through the engine, verdicts, output files.

Every optimizer run here is `samcli.train.train` on a `Task` (the engine users train with). A
trajectory is recorded by running train() in consecutive segments, each starting from the last
segment's end point: with momentum 0 (as in the paper) the base SGD step carries no state, so for
full-batch methods the chained segments are exactly one run. For stochastic methods each segment
draws its own batch order (a fresh seed per segment), i.e. the same sampling distribution.
"""
from __future__ import annotations

import csv
import dataclasses
import math
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import torch
import yaml
from torch import Tensor

from ..config import ConfigError, SamcliError, build_dataclass, YamlLoader, apply_override
from ..runs import write_json
from ..task import Task
from ..train import train

Log = Callable[[str], None]

# The update rules of the paper as engine optimizer settings (method, batch size).
METHODS = {
    "gd": ("sgd", "full"),           # gradient descent
    "sam-full": ("sam", "full"),     # full-batch SAM (Thm 4.5)
    "sam-1": ("sam", 1),             # 1-SAM (Thm 5.4)
    "ascent-gd": ("ascent-gd", "full"),  # GD on the ascent-direction loss (Figure 1's third algorithm)
}
LABELS = {"gd": "GD", "sam-full": "full-batch SAM", "sam-1": "1-SAM", "ascent-gd": "GD on ascent loss"}
COLORS = {"gd": "tab:gray", "sam-full": "tab:blue", "sam-1": "tab:red", "ascent-gd": "tab:green"}


def optimizer_settings(method: str, lr: float, rho: float, batch_size=None, grad_eps: float = 1e-12) -> dict:
    if method not in METHODS and not method.startswith("sam-b"):
        raise ConfigError(f"method {method!r} is unknown; choose from {', '.join(METHODS)}")
    engine, size = METHODS.get(method, ("sam", batch_size))
    return {"method": engine, "lr": lr, "rho": rho, "batch_size": batch_size if batch_size is not None else size,
            "momentum": 0.0, "weight_decay": 0.0, "grad_eps": grad_eps}


# ---- runs ------------------------------------------------------------------------------------------

@dataclass
class Trajectory:
    """Points recorded along one run: steps, parameters, and whatever `observe` returned there."""
    method: str
    steps: list[int] = field(default_factory=list)
    thetas: list[Tensor] = field(default_factory=list)
    records: list[dict] = field(default_factory=list)
    status: str = "completed"
    seconds: float = 0.0

    @property
    def theta(self) -> Tensor:
        return self.thetas[-1]

    def column(self, key: str) -> list:
        return [r.get(key) for r in self.records]


def record_schedule(steps: int, every: int) -> list[int]:
    """Segment ends: every `every` steps, always ending at `steps`."""
    ends = list(range(every, steps, every)) + [steps]
    return sorted(set(e for e in ends if e > 0))


def run_trajectory(task: Task, optimizer: dict, steps: int, record_at: Sequence[int], *, seed: int = 0,
                   chunk_size: int = 4096, observe: Optional[Callable[[Tensor, dict], dict]] = None,
                   method: str = "", stop: Optional[Callable[[dict], bool]] = None) -> Trajectory:
    """Train `steps` steps with the engine, recording at the given step counts (and at 0).

    `observe(theta, record)` adds numbers to each record (which holds the global step and the engine's
    train/test loss there); `stop(record)` ends the run early.
    """
    started = time.perf_counter()
    points = sorted(set(int(s) for s in record_at if 0 < s <= steps) | {steps})
    theta = task.theta.detach().clone()
    out = Trajectory(method)
    first = {"step": 0}
    if observe:
        first.update(observe(theta, first))
    out.steps.append(0), out.thetas.append(theta), out.records.append(first)
    done = 0
    for segment, end in enumerate(points):
        count = end - done
        cfg = {"seed": seed + 7919 * segment, "device": "cpu", "steps": count, "eval_every": count,
               "chunk_size": chunk_size, "optimizer": optimizer}
        result = train(cfg, task=replace(task, theta=theta), write=False)
        theta, done = result.theta.detach().clone(), end
        record = {"step": end, **{k: v for k, v in result.metrics[-1].items()
                                  if k in ("train_loss", "test_loss", "train_accuracy", "test_accuracy")}}
        if result.status != "completed":
            out.status = result.status
            out.steps.append(end), out.thetas.append(theta), out.records.append(record)
            break
        if observe:
            record.update(observe(theta, record))
        out.steps.append(end), out.thetas.append(theta), out.records.append(record)
        if stop is not None and stop(record):
            break
    out.seconds = time.perf_counter() - started
    return out


# ---- verdicts --------------------------------------------------------------------------------------

@dataclass
class Verdict:
    id: str
    claim: str                 # the prediction, in words
    source: str                # where it comes from in the paper
    criterion: str             # what counts as holding, with its tolerance
    measured: dict             # the numbers behind the verdict
    passed: Optional[bool]     # None: an open question, reported but not judged
    note: str = ""

    @property
    def status(self) -> str:
        return "open" if self.passed is None else ("PASS" if self.passed else "FAIL")


@dataclass
class StudyResult:
    name: str
    out_dir: Path
    verdicts: list[Verdict]
    seconds: float
    quick: bool
    files: list[str] = field(default_factory=list)
    tables: dict[str, list[dict]] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return all(v.passed is not False for v in self.verdicts)

    def verdict(self, vid: str) -> Verdict:
        for v in self.verdicts:
            if v.id == vid:
                return v
        raise KeyError(vid)


def fmt(value: Any, digits: int = 4) -> str:
    if isinstance(value, float):
        if math.isnan(value) or math.isinf(value):
            return str(value)
        if value != 0 and (abs(value) < 1e-3 or abs(value) >= 1e5):
            return f"{value:.{digits}e}"
        return f"{value:.{digits}g}"
    if isinstance(value, (list, tuple)):
        return "(" + ", ".join(fmt(v, digits) for v in value) + ")"
    return str(value)


def verdicts_markdown(result: StudyResult) -> str:
    lines = [f"# `samcli reproduce {result.name}`{' (quick mode)' if result.quick else ''}", "",
             f"{sum(v.passed is True for v in result.verdicts)} pass, "
             f"{sum(v.passed is False for v in result.verdicts)} fail, "
             f"{sum(v.passed is None for v in result.verdicts)} open; {result.seconds:.1f} s.", "",
             "| verdict | prediction | source | criterion | measured |", "|---|---|---|---|---|"]
    for v in result.verdicts:
        measured = "; ".join(f"{k} = {fmt(x)}" for k, x in v.measured.items())
        claim = v.claim + (f" ({v.note})" if v.note else "")
        lines.append(f"| **{v.status}** | {claim} | {v.source} | {v.criterion} | {measured} |")
    return "\n".join(lines) + "\n"


def table_markdown(rows: list[dict], digits: int = 4) -> str:
    if not rows:
        return ""
    keys = list(rows[0])
    for r in rows[1:]:
        keys += [k for k in r if k not in keys]
    lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    for r in rows:
        lines.append("| " + " | ".join(fmt(r.get(k, ""), digits) for k in keys) + " |")
    return "\n".join(lines) + "\n"


def write_table(out_dir: Path, name: str, rows: list[dict], digits: int = 4) -> list[str]:
    """rows as CSV (full precision) and markdown (rounded)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    keys = list(rows[0]) if rows else []
    for r in rows[1:]:
        keys += [k for k in r if k not in keys]
    with open(out_dir / f"{name}.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=keys)
        writer.writeheader()
        for r in rows:
            writer.writerow({k: (repr(v) if isinstance(v, float) else v) for k, v in r.items()})
    (out_dir / f"{name}.md").write_text(table_markdown(rows, digits))
    return [f"{name}.csv", f"{name}.md"]


def finish(result: StudyResult, config: Any, extra: dict) -> StudyResult:
    """Write verdicts.md and results.json (config, verdicts, tables, extra data) into the study dir."""
    out = result.out_dir
    (out / "verdicts.md").write_text(verdicts_markdown(result))
    payload = {"study": result.name, "quick": result.quick, "seconds": round(result.seconds, 3),
               "passed": result.ok, "config": dataclasses.asdict(config),
               "verdicts": [{**dataclasses.asdict(v), "status": v.status} for v in result.verdicts],
               "tables": result.tables, **extra,
               "versions": {"torch": torch.__version__}}
    write_json(out / "results.json", _jsonable(payload))
    result.files = sorted({*result.files, "verdicts.md", "results.json", "config.yaml"})
    return result


def _jsonable(value):
    if isinstance(value, Tensor):
        return value.tolist()
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value


# ---- study configs ---------------------------------------------------------------------------------

def configs_dir() -> Path:
    """configs/paper/ of the source tree (the package's editable install sits beside it)."""
    return Path(__file__).resolve().parents[2] / "configs" / "paper"


def _merge(base: dict, extra: dict) -> dict:
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def load_study_config(cls, name: str, path: Optional[Path] = None, quick: bool = False,
                      overrides: Sequence[str] = ()):
    """The study's config: dataclass defaults <- YAML (configs/paper/NAME.yaml or `path`) <- its
    `quick:` section (with --quick) <- --set overrides."""
    path = Path(path) if path is not None else configs_dir() / f"{name}.yaml"
    raw: dict = {}
    if path.is_file():
        try:
            raw = yaml.load(path.read_text(), Loader=YamlLoader) or {}
        except yaml.YAMLError:
            raise ConfigError(f"study config {path} is not valid YAML; fix the syntax") from None
        if not isinstance(raw, dict):
            raise ConfigError(f"study config {path} must hold a mapping of keys")
    elif path != configs_dir() / f"{name}.yaml":
        raise ConfigError(f"study config {path} does not exist; pass the path of a YAML file")
    quick_part = raw.pop("quick", None) or {}
    if not isinstance(quick_part, dict):
        raise ConfigError(f"the quick: section of {path} must be a mapping of keys")
    if quick:
        raw = _merge(raw, quick_part)
    for item in overrides:
        apply_override(raw, item)
    cfg = build_dataclass(cls, raw, prefix="")
    if hasattr(cfg, "validate"):
        cfg.validate()
    return cfg


def dump_config(cfg, out_dir: Path) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "config.yaml").write_text(yaml.safe_dump(dataclasses.asdict(cfg), sort_keys=False))


def require(ok: bool, message: str) -> None:
    if not ok:
        raise ConfigError(message)


def with_threads(study):
    """Run a study with `cfg.threads` torch threads (0: leave torch's setting), restoring the old count after."""
    import functools

    @functools.wraps(study)
    def wrapper(cfg, *args, **kwargs):
        before = torch.get_num_threads()
        if getattr(cfg, "threads", 0) > 0:
            torch.set_num_threads(cfg.threads)
        try:
            return study(cfg, *args, **kwargs)
        finally:
            torch.set_num_threads(before)
    return wrapper


__all__ = ["METHODS", "LABELS", "COLORS", "optimizer_settings", "Trajectory", "record_schedule", "run_trajectory",
           "Verdict", "StudyResult", "finish", "write_table", "load_study_config", "dump_config", "require",
           "configs_dir", "fmt", "Log", "SamcliError", "with_threads"]
