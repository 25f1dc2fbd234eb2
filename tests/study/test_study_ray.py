"""The Ray executor on a local Ray instance (loopback only): the same results as the local executor."""
from __future__ import annotations

import pandas as pd
import pytest

import samcli
from study_helpers import tiny_study

ray = pytest.importorskip("ray")

COLUMNS = ["label", "seed", "hash", "status", "test_accuracy", "test_loss", "train_loss", "lambda_1", "trace",
           "r_asc", "r_max", "r_avg", "alignment", "steps"]


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, _node_ip_address="127.0.0.1", log_to_driver=False,
             configure_logging=False)
    yield
    ray.shutdown()


def test_ray_executor_equals_local_executor(local_ray, tmp_path):
    raw = tiny_study(seeds=[0, 1])
    local = samcli.compare(raw, out=tmp_path / "local", executor="local", jobs=1)
    events = []
    remote = samcli.compare(raw, out=tmp_path / "ray", executor="ray", progress=events.append)
    pd.testing.assert_frame_equal(local.runs[COLUMNS], remote.runs[COLUMNS])
    assert sum(e.kind == "done" for e in events) == 6
    for name in ("config.yaml", "metrics.jsonl", "summary.json", "checkpoint.pt", "sharpness.json"):
        assert all((tmp_path / "ray" / "runs" / h / name).is_file() for h in local.runs["hash"])

    # a rerun through Ray reuses every run; a run whose measurement is gone is measured again remotely
    first = local.runs["hash"].iloc[0]
    (tmp_path / "ray" / "runs" / first / "sharpness.json").unlink()
    events.clear()
    again = samcli.compare(raw, out=tmp_path / "ray", executor="ray", progress=events.append)
    assert sum(e.kind == "done" for e in events) == 1
    pd.testing.assert_frame_equal(again.runs[COLUMNS], remote.runs[COLUMNS])
