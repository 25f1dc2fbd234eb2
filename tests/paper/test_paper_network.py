"""`samcli reproduce network --quick` and `batchsize --quick`: they run through the engine and the sharpness
tool and report every prediction with numbers. At the quick settings only what is guaranteed is asserted:
GD interpolates, and GD from the interpolating point changes neither lambda_1 nor Tr."""
from __future__ import annotations

import json
import math

from samcli.paper import reproduce_study as reproduce


def test_network_quick(tmp_path):
    result = reproduce("network", tmp_path / "network", quick=True)
    ids = [v.id for v in result.verdicts]
    assert ids == ["setup-interpolation", "sam-lowers-lambda1-more", "1sam-lowers-trace-more", "gd-changes-neither",
                   "sam-alignment", "test-accuracy"]
    assert result.verdict("setup-interpolation").passed
    assert result.verdict("gd-changes-neither").passed, result.verdict("gd-changes-neither").measured
    for vid in ("sam-lowers-lambda1-more", "1sam-lowers-trace-more"):
        assert all(math.isfinite(x) for x in result.verdict(vid).measured.values())
    summary = json.loads((tmp_path / "network" / "results.json").read_text())["tables"]["summary"]
    assert [row["status"] for row in summary] == ["completed"] * 3
    assert (tmp_path / "network" / "sharpness.png").is_file()


def test_batchsize_quick(tmp_path):
    result = reproduce("batchsize", tmp_path / "batchsize", quick=True)
    assert result.verdict("setup-interpolation").passed
    assert all(v.passed is None for v in result.verdicts[1:])     # the open case: reported, not judged
    rows = result.tables["by_batch_size"]
    assert [r["batch_size"] for r in rows] == [1, 4, "full"]
    assert all(r["status"] == "completed" and math.isfinite(r["trace"]) for r in rows)
    # b = 1: the one-example Hessian is rank one, so its gradient is its top eigenvector
    assert rows[0]["batch_alignment"] > 0.999
    assert (tmp_path / "batchsize" / "by_batch_size.png").is_file()
