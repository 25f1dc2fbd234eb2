"""Every README example runs in a test.

The fenced ```bash and ```python blocks of README.md are extracted and run for real, in README order, in one
temporary working directory (``configs/`` and ``examples/`` linked into it, ``results/baselines/`` copied, so
the relative paths of the examples resolve). Each line of a ```bash block is one command, run literally by
bash with a ``samcli`` on PATH that runs this checkout's package (``python -m samcli.cli``); each ```python
block runs unchanged in a fresh interpreter, after a prelude that defines the names it leaves to the reader. Each
example must exit 0 (or the code in EXIT_CODES). Where the README shows an example's output (the plain
fenced block introduced by "prints", and the default study's tables), the output must have the same shape:
the same lines, rows, columns and labels, with every number free to differ and the timings not compared.

Examples that cannot run literally are in SKIPS, each with its reason; those skipped only for their time
(SLOW: the default study) run with SAMCLI_README_SLOW=1. The README's inline prerequisites (the run that
`samcli sharpness results/runs/sam-example` measures) are in NEEDS. Outputs the README shows in an older
shape are in OUTPUT_DRIFT (strict xfail: delete the entry when the README is regenerated). The whole file
took 2 min 35 s to 3 min 5 s on this project's 2-core machine (the Python API block, which trains and checks
the CI study, 75-88 s of it; the CLI's `samcli compare configs/ci.yaml` then reuses those runs: 9 s). Those
times predate the factorial CI study (16 runs, 123 s of CPU in one run) and were not measured again.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
TIMEOUT = 600          # seconds per example: a guard, not an expectation

# ---- the examples -------------------------------------------------------------------------------------


@dataclass
class Example:
    """One runnable unit: a line of a ```bash block or a whole ```python block."""
    lang: str                      # "bash" or "python"
    line: int                      # README line number of the command (bash) or of the fence (python)
    code: str
    output: str | None = None      # the README's output for it (a following plain fenced block), if any

    @property
    def id(self) -> str:
        head = self.code.strip().splitlines()[0]
        return f"L{self.line}-" + re.sub(r"[^A-Za-z0-9.]+", "-", head)[:50].strip("-")


@dataclass
class Block:
    lang: str
    line: int                      # line number of the opening fence (1-based)
    text: str
    intro: str = ""                # the prose between the previous block and this one


def readme_blocks(text: str) -> list[Block]:
    """The fenced code blocks of the README, with the prose that introduces each one."""
    blocks, lines, i, prose = [], text.splitlines(), 0, []
    while i < len(lines):
        match = re.match(r"^```(\w*)\s*$", lines[i])
        if not match:
            prose.append(lines[i])
            i += 1
            continue
        start, body = i, []
        i += 1
        while i < len(lines) and lines[i].rstrip() != "```":
            body.append(lines[i])
            i += 1
        assert i < len(lines), f"README.md:{start + 1}: unclosed code fence"
        blocks.append(Block(match.group(1), start + 1, "\n".join(body), "\n".join(prose)))
        prose = []
        i += 1
    return blocks


def readme_examples(text: str) -> list[Example]:
    examples: list[Example] = []
    for block in readme_blocks(text):
        if block.lang == "bash":
            for offset, line in enumerate(block.text.splitlines(), start=1):
                if line.strip():
                    examples.append(Example("bash", block.line + offset, line.strip()))
        elif block.lang == "python":
            examples.append(Example("python", block.line, block.text))
        elif block.lang == "":
            # a plain block is output: the output of the last command before it, when the prose says so
            assert examples and re.search(r"\bprints\s*$", block.intro.strip()), (
                f"README.md:{block.line}: a plain fenced block that is not introduced as output (\"... prints\")")
            examples[-1].output = block.text
        else:
            raise AssertionError(f"README.md:{block.line}: a ```{block.lang} block; this test runs bash and python")
    return examples


README_TEXT = README.read_text(encoding="utf-8")
EXAMPLES = readme_examples(README_TEXT)

# Lines of the README that do not run here, by their exact text, and why. Keep this list short.
SKIPS = {
    "python3 -m venv .venv && . .venv/bin/activate && pip install -e . && samcli compare":
        "creates a fresh venv and downloads and installs torch and the other dependencies into it (minutes, "
        "gigabytes); its `samcli compare` is the Compare block's first line, listed below",
    'python3 -m venv .venv && . .venv/bin/activate && pip install -e ".[test,ray]" && python -m pytest -q':
        "installs into a fresh venv and runs the whole suite, this file included: .ci/run runs exactly this line",
    "samcli compare STUDY.yaml --jobs 2 | --executor ray [--address ADDR]":
        "a template (STUDY.yaml, alternatives separated by |, an optional [--address ADDR]), not a command",
    # slow: run with SAMCLI_README_SLOW=1
    "samcli compare":
        "slow: the embedded default study (32 runs, 263 s of CPU) took 10 min 41 s on this project's 2-core "
        "machine shared with other jobs (load average 5-10); about 2-3 min on an idle one. With it this file "
        "would take 6-15 min",
    "samcli compare --from results/studies/default":
        "re-renders the default study, which `samcli compare` (slow, skipped) trains; 10 s once it exists",
    "samcli compare variants":
        "slow: the SAM family study (30 runs) took 10 min on this project's 2-core machine shared with other jobs",
}
SLOW = {"samcli compare", "samcli compare --from results/studies/default", "samcli compare variants"}
RUN_SLOW = os.environ.get("SAMCLI_README_SLOW") == "1"

# The README's inline prerequisites: an example runs these commands (in the same directory) first.
SHARPNESS_RUN = re.search(r"on a run trained by `(samcli train [^`]*)`", README_TEXT)
NEEDS = {
    # "(on a run trained by `samcli train --method sam --steps 1000 --out results/runs/sam-example`) prints"
    "samcli sharpness results/runs/sam-example": [SHARPNESS_RUN.group(1) if SHARPNESS_RUN else None],
    # re-renders the default study, which the Compare block's first line runs
    "samcli compare --from results/studies/default": ["samcli compare"],
}

# Exit codes the README documents for an example other than 0 (none today: the CI study's baseline holds).
EXIT_CODES: dict[str, int] = {}

# Names a ```python block leaves to the reader, defined before the block runs (keyed by the block's first line).
PRELUDES = {
    "import samcli": """
import torch
from torch import nn
torch.manual_seed(0)
model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 3))   # any nn.Module
x, y = torch.randn(64, 8), torch.randint(0, 3, (64,))                    # inputs and integer labels
""",
    "from samcli.paper import reproduce_study": """
def F1(x1, x2):                     # torch callables of x1, x2; F1 - F2 = (x1 + 1)^2 + x2^2 + 0.5 > 0
    return 3.0 + 2 * x1 ** 2 + 2 * x2 ** 2

def F2(x1, x2):
    return 0.5 + (x1 - 1) ** 2 + x2 ** 2
""",
}

# What the README says each ```python block yields, checked after it (the block itself runs unchanged).
EPILOGUES = {
    "import samcli": """
assert type(result).__name__ == "RunResult" and type(report).__name__ == "SharpnessReport", (result, report)
assert report.spec_hash == spec.hash(), (report.spec_hash, spec.hash())
assert study.baseline_ok is True, study.baseline_ok
print("table rows:", len(study.table), "baseline_ok:", study.baseline_ok)
""",
}


def _key(example: Example) -> str:
    return command(example.code.strip().splitlines()[0])


def command(line: str) -> str:
    """A line without its trailing comment."""
    return re.sub(r"\s+#.*$", "", line.strip())


def needs_of(line: str) -> list:
    return [need for key, needs in NEEDS.items() if command(line).startswith(key) for need in needs]


# ---- running them -------------------------------------------------------------------------------------


@dataclass
class Outcome:
    rc: int
    stdout: str
    stderr: str
    seconds: float


class Workdir:
    """The examples' shared working directory; runs each command once, its prerequisites first."""

    def __init__(self, path: Path):
        self.path = path
        path.mkdir()
        (path / "configs").symlink_to(ROOT / "configs", target_is_directory=True)
        (path / "examples").symlink_to(ROOT / "examples", target_is_directory=True)
        shutil.copytree(ROOT / "results" / "baselines", path / "results" / "baselines")
        bin_dir = path.parent / "bin"
        bin_dir.mkdir()
        shim = bin_dir / "samcli"
        shim.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m samcli.cli "$@"\n')
        shim.chmod(0o755)
        self.env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "COLUMNS": "120",
                    "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}", "TERM": "dumb"}
        self.env.pop("NO_COLOR", None)
        self.done: dict[str, Outcome] = {}

    def _run(self, argv: list[str]) -> Outcome:
        start = time.perf_counter()
        proc = subprocess.run(argv, cwd=self.path, env=self.env, capture_output=True, text=True, timeout=TIMEOUT)
        return Outcome(proc.returncode, proc.stdout, proc.stderr, time.perf_counter() - start)

    def bash(self, line: str, expect: int = 0) -> Outcome:
        key = command(line)
        if key not in self.done:
            for need in needs_of(line):
                assert need, f"the README no longer names the prerequisite of {line!r}"
                self.bash(need)
            self.done[key] = self._run(["bash", "-c", line])
        outcome = self.done[key]
        assert outcome.rc == expect, (f"{line!r} exited {outcome.rc} (expected {expect}) after {outcome.seconds:.0f} s"
                                      f"\n--- stdout\n{outcome.stdout[-4000:]}\n--- stderr\n{outcome.stderr[-4000:]}")
        return outcome

    def python(self, example: Example) -> Outcome:
        key = _key(example)
        if key not in self.done:
            script = self.path.parent / f"readme_L{example.line}.py"
            script.write_text(PRELUDES.get(key, "") + "\n# ---- the README block, unchanged\n" + example.code
                              + "\n# ---- what the README says it yields\n" + EPILOGUES.get(key, "") + "\n")
            self.done[key] = self._run([sys.executable, str(script)])
        outcome = self.done[key]
        assert outcome.rc == 0, (f"README.md:{example.line}: the python block exited {outcome.rc}"
                                 f"\n--- stdout\n{outcome.stdout[-4000:]}\n--- stderr\n{outcome.stderr[-4000:]}")
        return outcome


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Workdir:
    return Workdir(tmp_path_factory.mktemp("readme") / "work")


@pytest.mark.parametrize("example", EXAMPLES, ids=[e.id for e in EXAMPLES])
def test_readme_example(workdir: Workdir, example: Example):
    skip(example)
    run(workdir, example)


def skip(example: Example) -> None:
    key = _key(example)
    if key in SKIPS and not (RUN_SLOW and key in SLOW):
        pytest.skip(SKIPS[key])


def run(workdir: Workdir, example: Example) -> Outcome:
    if example.lang == "bash":
        return workdir.bash(example.code, EXIT_CODES.get(_key(example), 0))
    return workdir.python(example)


# Outputs the README shows that the program no longer prints in the same shape: reported to the lead, who
# regenerates the README's outputs; delete the entry then (strict: a match fails the test until it is deleted).
OUTPUT_DRIFT: dict[str, str] = {}
SHOWN = [e for e in EXAMPLES if e.output is not None]


def _drift(example: Example):
    if _key(example) not in OUTPUT_DRIFT:
        return example
    mark = pytest.mark.xfail(strict=True, raises=AssertionError, reason=OUTPUT_DRIFT[_key(example)])
    return pytest.param(example, marks=mark)


@pytest.mark.parametrize("example", [_drift(e) for e in SHOWN], ids=[e.id for e in SHOWN])
def test_readme_output_shape(workdir: Workdir, example: Example):
    """Where the README shows an example's output, the program's output has the same shape."""
    skip(example)
    outcome = run(workdir, example)
    observed = outcome.stdout + _without_warnings(outcome.stderr)
    assert output_shape(observed) == output_shape(example.output), _shape_diff(observed, example.output)


def test_skips_name_readme_lines():
    """Every entry of the tables above names an example the README still has, and each prerequisite is named."""
    keys = {_key(e) for e in EXAMPLES}
    for table in (SKIPS, PRELUDES, EPILOGUES, EXIT_CODES, OUTPUT_DRIFT):
        assert set(table) <= keys, set(table) - keys
    for line, needs in NEEDS.items():
        assert any(key.startswith(line) for key in keys), line
        assert all(needs), f"the README no longer names the prerequisite of {line!r}"


# ---- comparing shapes ---------------------------------------------------------------------------------

NUMBER = re.compile(r"(?<![A-Za-z_])[-+]?(?:\d+\.?\d*|\.\d+)(?:e[-+]?\d+)?")
WARNING = re.compile(r"^\S+:\d+: \w*Warning: |^\s+warnings\.warn\(")


def _numbers(text: str) -> str:
    """Every number as '#', runs of white space as one space."""
    return " ".join(NUMBER.sub("#", text).split())


def _without_warnings(stderr: str) -> str:
    return "".join(line for line in stderr.splitlines(keepends=True) if not WARNING.match(line))


def _is_number(cell: str) -> bool:
    try:
        float(cell)
    except ValueError:
        return False
    return True


def output_shape(text: str) -> list[tuple]:
    """A rich table's header and rows (wrapped cells joined, values only checked to be numbers) and every
    other line with its numbers blanked."""
    shape: list[tuple] = []
    for line in text.splitlines():
        if not line.strip() or line[0] in "┏┡└┌├╭╰━─":
            continue
        if line[0] in "┃│":
            cells = [cell.strip() for cell in line.strip()[1:-1].split(line[0])]
            if line[0] == "┃":
                shape.append(("header", *cells))
            elif shape and shape[-1][0] == "row" and not any(cells[:-1]):
                *head, last = shape[-1]           # a wrapped row: its last cell continues
                shape[-1] = (*head, _numbers(f"{last} {cells[-1]}"))
            else:
                shape.append(("row", *[("<number>" if _is_number(c) else _numbers(c)) for c in cells]))
        else:
            shape.append(("line", _numbers(line)))
    return shape


def _shape_diff(observed: str, expected: str) -> str:
    got, want = output_shape(observed), output_shape(expected)
    lines = [f"the output's shape differs from the README's ({len(got)} vs {len(want)} lines/rows):"]
    for i in range(max(len(got), len(want))):
        a = got[i] if i < len(got) else None
        b = want[i] if i < len(want) else None
        if a != b:
            lines.append(f"  [{i}] program: {a}\n  [{i}] README:  {b}")
    return "\n".join(lines) + f"\n--- program output\n{observed}"


def markdown_shape(text: str) -> list[tuple]:
    """A markdown report's headings (any level), tables (header cells, then each row's first cell and cell
    count; numbers blanked) and prose lines (numbers blanked)."""
    shape: list[tuple] = []
    for line in text.splitlines():
        line = line.strip()
        if not line:
            continue
        if line.startswith("|"):
            cells = [cell.strip() for cell in line.strip("|").split("|")]
            if all(re.fullmatch(r":?-+:?", cell) for cell in cells):
                shape.append(("rule", tuple(cells)))
            elif shape and shape[-1][0] in ("row", "rule"):
                shape.append(("row", len(cells), _numbers(cells[0])))
            else:
                shape.append(("header", *[_numbers(cell) for cell in cells]))
        elif line.startswith("#"):
            shape.append(("heading", line.lstrip("#").strip()))
        else:
            shape.append(("line", _numbers(line)))
    return shape


def test_default_study_table_has_the_readme_shape(workdir: Workdir):
    """The README shows the default study's table.md (tables, notes, correlations): `samcli compare` writes
    one of the same shape."""
    if not RUN_SLOW:
        pytest.skip(SKIPS["samcli compare"])
    start = README_TEXT.index("\n| configuration |")
    end = README_TEXT.index("\n#### What the correlations show", start)
    shown = README_TEXT[start:end]
    workdir.bash("samcli compare")
    written = (workdir.path / "results" / "studies" / "default" / "table.md").read_text(encoding="utf-8")
    written = written[written.index("\n| configuration |"):]
    got, want = markdown_shape(written), markdown_shape(shown)
    diff = [f"  [{i}] program: {a}\n  [{i}] README:  {b}" for i, (a, b) in enumerate(zip(got, want)) if a != b]
    assert got == want, "\n".join([f"{len(got)} vs {len(want)} items", *diff[:20]])
