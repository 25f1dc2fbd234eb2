"""Study files: grid expansion, variants, seeds, validation before any training."""
from __future__ import annotations

import pandas as pd
import pytest
from typer.testing import CliRunner

from samcli.cli import app
from samcli.config import TrainConfig, config_hash
from samcli.study import StudyError, load_study
from samcli.study.grid import default_study_path
from study_helpers import REPO, tiny_study, write_study


def grid_study(grid: dict, **top) -> dict:
    study = tiny_study()
    del study["variants"]
    study["base"]["optimizer"]["batch_size"] = "full"
    study["grid"] = grid
    study.update(top)
    return study


def test_grid_is_the_cross_product_times_seeds():
    study = load_study(grid_study({"optimizer.method": ["sgd", "sam"], "optimizer.batch_size": ["full", 4],
                                   "lr": [0.1, 0.2]}, seeds=[0, 1, 2]))
    assert len(study.runs) == 2 * 2 * 2 * 3
    assert len(study.labels) == 8
    assert study.labels[0] == "sgd b=full lr=0.1"
    combos = {(r.config.optimizer.method, r.config.optimizer.batch_size, r.config.optimizer.lr, r.seed)
              for r in study.runs}
    assert len(combos) == 24
    # every run's config is the base with its overrides
    run = next(r for r in study.runs if r.label == "sam b=4 lr=0.2" and r.seed == 2)
    assert run.config.optimizer.method == "sam" and run.config.optimizer.batch_size == 4
    assert run.config.optimizer.lr == 0.2 and run.config.seed == 2
    assert run.config.data.n_train == 32 and run.config.steps == 20
    assert run.hash == config_hash(run.config)
    assert len({r.hash for r in study.runs}) == len(study.runs)


def test_axes_that_do_not_apply_are_dropped_and_merged():
    """m only for msam, rho neither for sgd: 1 sgd + 2 sam + 4 msam configurations."""
    study = load_study(grid_study({"method": ["sgd", "sam", "msam"], "m": [1, 2], "rho": [0.05, 0.1],
                                   "batch_size": [4]}, seeds=[0]))
    assert study.labels == ("sgd", "sam rho=0.05", "sam rho=0.1", "msam m=1 rho=0.05", "msam m=1 rho=0.1",
                            "msam m=2 rho=0.05", "msam m=2 rho=0.1")
    sgd = [r for r in study.runs if r.method == "sgd"]
    assert len(sgd) == 1 and sgd[0].config.optimizer.m is None
    assert sgd[0].config.optimizer.rho == 0.1         # the base's value: rho does not matter for sgd


def test_variants_times_grid_and_labels():
    study = tiny_study()
    study["grid"] = {"optimizer.rho": [0.05, 0.1]}
    study = load_study(study)
    # GD ignores rho -> one configuration; SAM and 1-SAM get one per rho
    assert study.labels == ("GD", "SAM rho=0.05", "SAM rho=0.1", "1-SAM rho=0.05", "1-SAM rho=0.1")
    assert len(study.runs) == 5 * 2
    one_sam = next(r for r in study.runs if r.label == "1-SAM rho=0.1")
    assert one_sam.config.optimizer.batch_size == 1 and one_sam.config.optimizer.lr == 0.05


def test_seeds_from_grid_or_base():
    study = grid_study({"method": ["sgd"], "seed": [3, 4]})
    del study["seeds"]
    assert sorted({r.seed for r in load_study(study).runs}) == [3, 4]
    with pytest.raises(StudyError, match="seeds are given twice"):
        load_study(grid_study({"method": ["sgd"], "seed": [3, 4]}))
    study = grid_study({"method": ["sgd"]})
    del study["seeds"]
    study["base"]["seed"] = 7
    assert [r.seed for r in load_study(study).runs] == [7]


def test_shipped_studies_load():
    for path in [default_study_path(), REPO / "configs" / "ci.yaml", REPO / "configs" / "cifar10-resnet.yaml"]:
        study = load_study(path)
        assert study.runs and study.labels
    default = load_study(None)
    assert default.name == "default"
    assert all(r.config.stop.train_loss == 0.01 for r in default.runs) and default.confound_tolerance == 0.01
    assert len({r.seed for r in default.runs}) >= 4 and len(default.runs) == 4 * len(default.labels)
    assert all(r.config.data.test_with_unused and r.config.data.train_size == 500 for r in default.runs)
    assert {r.config.optimizer.lr for r in default.runs} == {0.05}        # one learning rate for both batch sizes


def test_default_study_is_factorial():
    """rho x batch size at one lr, and m = 1 vs m = b (sam) at batch 32: the granulated groups along each
    axis are exactly the design's cells, so every axis the design varies has groups."""
    from samcli.study.report import axis_values
    from samcli.study.stats import axis_groups, axis_value, varying_axes
    default = load_study(None)
    frame = pd.DataFrame(axis_values(default)).T.map(axis_value)
    frame.columns = [c.removeprefix("optimizer.") for c in frame.columns]
    axes = varying_axes(frame, list(frame.columns))
    assert sorted(axes) == ["batch_size", "method", "rho"]
    rho = sorted(tuple(sorted(frame.loc[list(g), "rho"])) for g in axis_groups(frame, "rho", axes))
    assert rho == [(0.0, 0.02, 0.05), (0.0, 0.02, 0.05), (0.02, 0.05)]
    batch = axis_groups(frame, "batch_size", axes)
    assert len(batch) == 3 and all(sorted(frame.loc[list(g), "batch_size"], key=str) == [32, "full"] for g in batch)
    method = axis_groups(frame, "method", axes)
    assert len(method) == 2 and all(set(frame.loc[list(g), "batch_size"]) == {32} for g in method)
    assert all(frame.loc[list(g), "m"].tolist().count(1) == 1 for g in method)    # sam (m = b) vs msam m = 1


@pytest.mark.parametrize("change, needle", [
    ({"bogus": 1}, "unknown key 'bogus'"),
    ({"grid": {}}, "grid is empty"),
    ({"grid": {"optimizer.rho": []}}, "grid.optimizer.rho is an empty list"),
    ({"grid": {"optimizer.bogus": [1]}}, "optimizer.bogus"),
    ({"grid": {"method": ["msam"], "m": [3], "batch_size": [4]}}, "optimizer.m=3 does not divide optimizer.batch_size=4"),
    ({"grid": {"method": ["msam"], "m": [5], "batch_size": ["full"]}}, "optimizer.m=5 does not divide the 32"),
    ({"grid": {"batch_size": [64]}}, "optimizer.batch_size=64 exceeds the 32 training examples"),
    ({"grid": {"method": ["adam"]}}, "optimizer.method='adam' is unknown"),
    ({"seeds": []}, "seeds is an empty list"),
    ({"sharpness": {"rho": 0.05, "bogus": 1}}, "sharpness.bogus"),
    ({"sharpness": {"samples": 0}}, "sharpness.samples=0"),
    ({"baseline": {"tolerances": {"accuracy": {"abs": 0.1}}}}, "baseline.tolerances.accuracy"),
    ({"baseline": {"tolerances": {"test_accuracy": {"abs": -1}}}}, "must be a number >= 0"),
    ({"baseline": {"orderings": ["XYZ lambda_1 < GD lambda_1"]}}, "configuration 'XYZ'"),
    ({"baseline": {"orderings": ["GD lambda_1 less than SAM"]}}, "must read 'LABEL METRIC < LABEL METRIC'"),
])
def test_invalid_studies_are_refused_naming_the_entry(change, needle):
    study = tiny_study()
    if "grid" in change:
        del study["variants"]
    study.update(change)
    with pytest.raises(StudyError) as err:
        load_study(study)
    assert needle in str(err.value)
    assert "\n" not in str(err.value)


def test_a_bad_variant_is_named():
    study = tiny_study()
    study["variants"].append({"label": "broken", "optimizer.method": "msam", "optimizer.m": 3,
                              "optimizer.batch_size": 4})
    with pytest.raises(StudyError, match="configuration 'broken'.*optimizer.m=3 does not divide"):
        load_study(study)
    study = tiny_study()
    study["variants"].append({"label": "GD", "optimizer.method": "sam", "optimizer.batch_size": "full"})
    with pytest.raises(StudyError, match="two different configurations are labelled 'GD'"):
        load_study(study)


def test_cli_refuses_an_invalid_study_before_training(tmp_path):
    study = tiny_study()
    study["variants"][0]["model.widths"] = [0]
    path = write_study(tmp_path / "bad.yaml", study)
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["compare", str(path), "--out", str(out), "--jobs", "1"])
    assert result.exit_code == 2
    message = result.output.strip()
    assert message.count("\n") == 0 and "model.widths" in message and "'GD'" in message
    assert not out.exists()                 # nothing trained, no study directory
    result = CliRunner().invoke(app, ["compare", str(tmp_path / "missing.yaml")])
    assert result.exit_code == 2 and "does not exist" in result.output


def test_hash_ignores_how_a_value_was_written():
    a = load_study(grid_study({"lr": [1]}))
    b = load_study(grid_study({"optimizer.lr": [1.0]}))
    assert [r.hash for r in a.runs] == [r.hash for r in b.runs]
    assert a.runs[0].hash == config_hash(TrainConfig.from_dict(a.runs[0].config.to_dict()))
