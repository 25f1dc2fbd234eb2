"""The family step benchmark runs (a seconds-long --quick run) and reports every variant and every peer;
its timings are not asserted here (speed is a benchmark's business: results/benchmarks/)."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def test_the_family_benchmark_reports_every_variant_and_peer(tmp_path, monkeypatch):
    pytest.importorskip("pytorch_optimizer")
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    import family_step_time
    assert family_step_time.main(["--quick", "--out", str(tmp_path)]) == 0
    result = json.loads((tmp_path / "family_step_time.json").read_text())
    methods = {name for name, _ in family_step_time.FAMILY}
    for model in ("mlp", "cnn"):
        assert {r["method"] for r in result["family"] if r["model"] == model} == methods
    assert {r["method"] for r in result["peers"]} == {"sam", "asam", "gsam", "looksam", "fsam", "wsam"}
    assert all(r["ratio"] > 0 for r in result["peers"])
    assert "SAM-family step time" in (tmp_path / "family_step_time.md").read_text()
    sys.modules.pop("family_step_time", None)
