"""`samcli reproduce`: --list, one study, bad input."""
from __future__ import annotations

import json

from typer.testing import CliRunner

from samcli.cli import app

runner = CliRunner()


def test_list():
    result = runner.invoke(app, ["reproduce", "--list"])
    assert result.exit_code == 0
    names = [line.split()[0] for line in result.stdout.splitlines() if line.strip()]
    assert names == ["figure1", "bias", "quadratic", "timescale", "network", "corollaries", "batchsize"]


def test_one_study_writes_its_directory(tmp_path):
    result = runner.invoke(app, ["reproduce", "quadratic", "--quick", "--out", str(tmp_path), "--json",
                                 "--set", "steps=300"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    verdicts = data[0]["verdicts"]
    assert data[0]["study"] == "quadratic" and all(v["status"] == "PASS" for v in verdicts if v["kind"] == "claim")
    controls = [v for v in verdicts if v["kind"] == "control"]     # the --json shows each control and its label
    assert len(controls) == 6 and all(v["status"] == "FAIL" and v["label"].startswith("control FAIL") for v in controls)
    assert (tmp_path / "quadratic" / "verdicts.md").is_file()


def test_bad_input_is_one_line_exit_2(tmp_path):
    result = runner.invoke(app, ["reproduce", "nonsense"])
    assert result.exit_code == 2 and "unknown study" in result.output
    result = runner.invoke(app, ["reproduce", "all", "--set", "steps=3", "--out", str(tmp_path)])
    assert result.exit_code == 2 and "one study" in result.output
    result = runner.invoke(app, ["reproduce", "quadratic", "--set", "bogus=1", "--out", str(tmp_path)])
    assert result.exit_code == 2 and "bogus" in result.output
