"""lambda_1 during training against the stability threshold: the points, the notes and the plot."""
from __future__ import annotations

import pytest

from samcli.study.edge import above_threshold_notes, threshold_points
from samcli.study.plots import training_curves
from samcli.study.rundir import RunRecord


def record(label, optimizer, history, steps=100):
    return RunRecord(label, 0, "h", optimizer["method"], "/tmp/x", "completed",
                     config={"steps": steps, "optimizer": optimizer},
                     curve=[{"step": 0, "epoch": 0.0, "train_loss": 1.0}, {"step": steps, "epoch": 5.0, "train_loss": 0.1}],
                     history=history)


GD = {"method": "sgd", "lr": 0.1, "momentum": 0.0, "schedule": "constant"}
SAM = {"method": "sam", "lr": 0.1, "rho": 0.05, "momentum": 0.0, "schedule": "constant"}


def test_gd_points_carry_two_over_eta_and_the_note_counts_the_points_above_it():
    history = [{"step": s, "epoch": s / 20, "sharp_lambda_1": lam} for s, lam in ((10, 5.0), (50, 19.0), (90, 21.0))]
    points = threshold_points(record("GD", GD, history))
    assert [t for _, _, t in points] == pytest.approx([20.0, 20.0, 20.0])
    [note] = above_threshold_notes([record("GD", GD, history)])
    assert note == "GD: lambda_1 above its stability threshold 2/eta (Cohen et al. 2021) at 1 of 3 points " \
                   "measured during training (0.33)"


def test_a_schedule_moves_the_threshold_and_sam_reads_the_gradient_norm():
    cosine = {**GD, "schedule": "cosine"}
    history = [{"step": 51, "epoch": 2.5, "sharp_lambda_1": 5.0}]
    [(_, _, t)] = threshold_points(record("GD", cosine, history))
    assert t == pytest.approx(2 / (0.1 * 0.5))              # half way through a cosine schedule: lr / 2
    sam = [{"step": 10, "epoch": 0.5, "sharp_lambda_1": 5.0, "sharp_grad_norm": 0.2}]
    [(_, _, t)] = threshold_points(record("SAM", SAM, sam))
    assert t == pytest.approx(0.2 / 0.1 * ((1 + 8 * 0.05 / (0.1 * 0.2)) ** 0.5 - 1))
    assert t < 20


def test_a_method_without_a_stated_threshold_says_so():
    history = [{"step": 10, "epoch": 0.5, "sharp_lambda_1": 5.0}]
    [note] = above_threshold_notes([record("ASAM", {**SAM, "method": "asam"}, history)])
    assert note == "ASAM: lambda_1 measured during training; no threshold stated for asam"
    assert above_threshold_notes([record("GD", GD, [])]) == []       # nothing measured during training


def test_the_training_curves_draw_the_threshold(tmp_path):
    history = [{"step": s, "epoch": s / 20, "sharp_lambda_1": 10.0 + s / 10} for s in (10, 50, 90)]
    path = training_curves([record("GD", GD, history)], tmp_path / "curves.png")
    assert path.read_bytes()[:4] == b"\x89PNG" and (tmp_path / "curves.pdf").read_bytes()[:5] == b"%PDF-"
