"""What every paper study shares: its prologue and epilogue, its tables, and the index of `reproduce all`.

A study is a config dataclass and a body `(cfg, out, log, **kwargs) -> Findings`; `run_study` wraps
the body: it makes OUT/NAME/, writes config.yaml, pins torch's thread count, times the body, and writes
verdicts.md and results.json from what the body found.
"""
from __future__ import annotations

import csv
import dataclasses
import io
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import yaml
from torch import Tensor

from ..runs import write_json, write_text
from .verdicts import MARKDOWN_HEADER, Verdict, count_text, fmt

Log = Callable[[str], None]


def quiet(_: str) -> None:
    """The default log: says nothing."""


@dataclass(frozen=True)
class Findings:
    """What a study body returns: its verdicts, the tables results.json keeps, the files it wrote
    (tables and plots) and any further results.json keys."""
    verdicts: list[Verdict]
    tables: dict[str, list[dict]] = field(default_factory=dict)
    files: list[str] = field(default_factory=list)
    extra: dict = field(default_factory=dict)


@dataclass(frozen=True)
class PaperStudy:
    """One of the paper's studies (`samcli reproduce NAME`); not samcli.study.Study, a `compare` grid."""
    name: str
    summary: str                 # one line for `reproduce --list`
    config: type                 # its config dataclass (packaged YAML: configs/NAME.yaml)
    body: Callable[..., Findings]


@dataclass(frozen=True)
class StudyResult:
    """A finished paper study: its directory, verdicts, time, mode, the files it wrote and its tables."""

    name: str
    out_dir: Path
    verdicts: list[Verdict]
    seconds: float
    quick: bool
    files: list[str] = field(default_factory=list)
    tables: dict[str, list[dict]] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """Whether no claim FAILed and no negative control PASSed (open verdicts do not count against it)."""
        return not any(v.failed for v in self.verdicts)

    def verdict(self, vid: str) -> Verdict:
        """The verdict with id `vid`; KeyError if the study has none."""
        for v in self.verdicts:
            if v.id == vid:
                return v
        raise KeyError(vid)

    def summary(self) -> dict:
        """The study in brief: the `reproduce all` index and the CLI's --json."""
        return {"study": self.name, "dir": str(self.out_dir), "quick": self.quick, "seconds": round(self.seconds, 3),
                "verdicts": [v.to_dict(brief=True) for v in self.verdicts]}


def run_study(study: PaperStudy, cfg: Any, out: Path, *, quick: bool, log: Log = quiet, **kwargs) -> StudyResult:
    """Run a study's body in OUT (config.yaml, pinned threads, timing) and write verdicts.md and results.json."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    write_text(out / "config.yaml", yaml.safe_dump(dataclasses.asdict(cfg), sort_keys=False))
    started = time.perf_counter()
    threads_before = torch.get_num_threads()
    if getattr(cfg, "threads", 0) > 0:      # a study without the key leaves torch's setting; 1 is fastest here
        torch.set_num_threads(cfg.threads)
    try:
        found = study.body(cfg, out, log, **kwargs)
    finally:
        torch.set_num_threads(threads_before)
    result = StudyResult(study.name, out, found.verdicts, time.perf_counter() - started, quick,
                         sorted({*found.files, "verdicts.md", "results.json", "config.yaml"}), found.tables)
    write_text(out / "verdicts.md", _verdicts_markdown(result))
    payload = {"study": result.name, "quick": quick, "seconds": round(result.seconds, 3), "passed": result.ok,
               "config": dataclasses.asdict(cfg), "verdicts": [v.to_dict() for v in result.verdicts],
               "tables": result.tables, **found.extra, "versions": {"torch": torch.__version__}}
    write_json(out / "results.json", _jsonable(payload))
    return result


def _verdicts_markdown(result: StudyResult) -> str:
    lines = [f"# `samcli reproduce {result.name}`{' (quick mode)' if result.quick else ''}", "",
             f"{count_text(result.verdicts)}; {result.seconds:.1f} s.", "",
             MARKDOWN_HEADER]
    lines += [v.markdown_row() for v in result.verdicts]
    return "\n".join(lines) + "\n"


def write_index(results: Sequence[StudyResult], out: Path) -> None:
    """OUT/summary.md and OUT/summary.json: one line per study and per verdict (for `reproduce all`)."""
    lines = ["# `samcli reproduce all`", "", "| study | verdicts | seconds |", "|---|---|---|"]
    for r in results:
        lines.append(f"| [{r.name}]({r.name}/verdicts.md) | {count_text(r.verdicts)} | {r.seconds:.1f} |")
    lines += ["", "| study | verdict | prediction | theorem | regime | measured |", "|---|---|---|---|---|---|"]
    lines += [f"| {r.name} | **{v.label}** | {v.claim} | {v.theorem} | {v.regime_text or '-'} | {v.measured_text()} |"
              for r in results for v in r.verdicts]
    out.mkdir(parents=True, exist_ok=True)
    write_text(out / "summary.md", "\n".join(lines) + "\n")
    write_json(out / "summary.json", [r.summary() for r in results])


# ---- tables ------------------------------------------------------------------------------------------

def write_table(out_dir: Path, name: str, rows: list[dict], digits: int = 4) -> list[str]:
    """rows as NAME.csv (full precision) and NAME.md (rounded to `digits`)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    keys = _columns(rows)
    handle = io.StringIO(newline="")
    writer = csv.DictWriter(handle, fieldnames=keys)
    writer.writeheader()
    for r in rows:
        writer.writerow({k: (repr(v) if isinstance(v, float) else v) for k, v in r.items()})
    write_text(out_dir / f"{name}.csv", handle.getvalue())       # whole, or not at all (a full disk)
    write_text(out_dir / f"{name}.md", table_markdown(rows, digits))
    return [f"{name}.csv", f"{name}.md"]


def table_markdown(rows: list[dict], digits: int = 4) -> str:
    """rows as a markdown table, numbers rounded to `digits`; empty for no rows."""
    if not rows:
        return ""
    keys = _columns(rows)
    lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    lines += ["| " + " | ".join(fmt(r.get(k, ""), digits) for k in keys) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def _columns(rows: list[dict]) -> list[str]:
    """Every key of every row, in order of first appearance."""
    keys: list[str] = []
    for r in rows:
        keys += [k for k in r if k not in keys]
    return keys


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
