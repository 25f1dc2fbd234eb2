"""The training loop (samcli.train): exact updates, base-optimizer semantics, schedules,
determinism, divergence / interruption handling and the run directory."""
from __future__ import annotations

import json
import math

import pytest
import torch
import yaml

from conftest import (DT, ModuleRef, assert_close, linreg_grad, linreg_loss, linreg_task, mlp_batch, sam_closed_form,
                      tiny_config)
from samcli.config import ConfigError, TrainConfig
from samcli.models import mlp
from samcli.objective import Objective
from samcli.runs import read_metrics
from samcli.task import Task, build_task
from samcli.train import lr_factor, train

RUN_FILES = {"config.yaml", "metrics.jsonl", "summary.json", "checkpoint.pt"}


def linreg_data(n=6, d=3, seed=1):
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=gen, dtype=DT), torch.randn(n, generator=gen, dtype=DT)


def toy_config(**optimizer) -> dict:
    o = {"method": "sam", "lr": 0.1, "rho": 0.05, "batch_size": "full", **optimizer}
    return {"device": "cpu", "dtype": "float64", "steps": 5, "eval_every": 1, "chunk_size": 4,
            "data": {"name": "synthetic"}, "optimizer": o}


def metrics_without_wall_time(run_dir):
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines]
    for r in records:
        assert r.pop("wall_time") >= 0
    return records


# ---- the update through train(): the paper's rule and torch SGD semantics -----------------------

@pytest.mark.parametrize("method", ["sgd", "sam", "usam"])
def test_train_is_exactly_the_papers_update(method):
    """Momentum 0, no weight decay: x <- x - lr * d, with d from the closed form, every step
    (full batch, chunk_size 4 < n = 6 so chunk accumulation is used)."""
    A, y = linreg_data()
    x0 = torch.tensor([0.5, -1.0, 2.0], dtype=DT)
    lr, rho, steps = 0.3, 0.2, 6
    cfg = toy_config(method=method, lr=lr, rho=rho)
    cfg["steps"] = steps
    result = train(cfg, task=linreg_task(A, y, x0), write=False)
    x = x0.clone()
    for _ in range(steps):
        d = linreg_grad(A, y, x) if method == "sgd" else sam_closed_form(A, y, x, rho, normalized=method == "sam")
        x = x - lr * d
    assert result.status == "completed"
    assert_close(result.theta, x, rtol=1e-10, atol=1e-12)
    assert result.metrics[-1]["train_loss"] == pytest.approx(linreg_loss(A, y, x).item(), rel=1e-11)
    assert [m["step"] for m in result.metrics] == list(range(steps + 1))


def test_train_sam_on_model_full_batch_chunked_matches_hand_update():
    """Full-batch SAM on a tiny MLP (n = 8, chunk_size 3) equals SAM on one batch of all examples."""
    torch.manual_seed(0)
    module = mlp(3, [4], 2, torch.nn.Tanh).to(DT)
    ref = ModuleRef(module)
    objective, theta0 = Objective.from_module(module)
    data = mlp_batch(8)
    task = Task(objective, theta0, data, mlp_batch(4, seed=9), 2)
    cfg = toy_config(method="sam", lr=0.5, rho=0.1)
    cfg.update(steps=3, chunk_size=3)
    result = train(cfg, task=task, write=False)
    x = theta0.clone()
    for _ in range(3):
        x = x - 0.5 * ref.sam(x, data.inputs, data.targets, 0.1)
    assert_close(result.theta, x, rtol=1e-10, atol=1e-12)


def test_one_sam_step_uses_one_example_for_both_gradients():
    """batch_size 1: the single step must equal the hand SAM update with exactly one example k,
    and none of the 'mixed' updates (ascent on all examples, descent on k)."""
    A, y = linreg_data(n=5)
    x0 = torch.tensor([0.5, -1.0, 2.0], dtype=DT)
    lr, rho = 0.5, 0.3
    cfg = toy_config(method="sam", lr=lr, rho=rho, batch_size=1)
    cfg["steps"] = 1
    theta = train(cfg, task=linreg_task(A, y, x0), write=False).theta
    candidates = [x0 - lr * sam_closed_form(A[k:k + 1], y[k:k + 1], x0, rho) for k in range(5)]
    matches = [k for k, c in enumerate(candidates) if torch.allclose(theta, c, rtol=1e-10, atol=1e-12)]
    assert len(matches) == 1
    k = matches[0]
    g_all = linreg_grad(A, y, x0)
    mixed = x0 - lr * linreg_grad(A[k:k + 1], y[k:k + 1], x0 + rho * g_all / g_all.norm())
    assert not torch.allclose(theta, mixed, rtol=1e-6, atol=1e-8)
    # distinct examples give distinct updates, so the match identifies the example
    assert min((candidates[i] - candidates[j]).norm() for i in range(5) for j in range(i)) > 1e-6


@pytest.mark.parametrize("nesterov", [False, True])
@pytest.mark.parametrize("method", ["sgd", "sam"])
def test_momentum_and_weight_decay_follow_torch_sgd(method, nesterov):
    """Hand recurrence of torch.optim.SGD (PyTorch docs): d = dir + wd x; b = d (first step) or
    mu b + d; d = d + mu b (Nesterov) or b; x <- x - lr d. Also cross-check torch.optim.SGD itself."""
    A, y = linreg_data()
    x0 = torch.tensor([0.5, -1.0, 2.0], dtype=DT)
    lr, rho, mu, wd, steps = 0.2, 0.1, 0.9, 0.05, 7
    cfg = toy_config(method=method, lr=lr, rho=rho, momentum=mu, weight_decay=wd, nesterov=nesterov)
    cfg["steps"] = steps
    result = train(cfg, task=linreg_task(A, y, x0), write=False)

    def direction(x):
        return linreg_grad(A, y, x) if method == "sgd" else sam_closed_form(A, y, x, rho)

    x, buf = x0.clone(), None
    for _ in range(steps):
        d = direction(x) + wd * x
        buf = d.clone() if buf is None else mu * buf + d
        d = d + mu * buf if nesterov else buf
        x = x - lr * d
    assert_close(result.theta, x, rtol=1e-10, atol=1e-12)

    p = torch.nn.Parameter(x0.clone())
    sgd = torch.optim.SGD([p], lr=lr, momentum=mu, weight_decay=wd, nesterov=nesterov)
    for _ in range(steps):
        p.grad = direction(p.detach().clone())
        sgd.step()
    assert_close(result.theta, p.detach(), rtol=1e-10, atol=1e-12)
    # momentum really matters here: the plain update lands elsewhere
    plain = x0.clone()
    for _ in range(steps):
        plain = plain - lr * direction(plain)
    assert (plain - x).norm() > 1e-2


def test_stationary_start_stays_put_and_finite():
    """The g = 0 guard through train(): SAM at an exact minimum keeps theta and finishes."""
    A = torch.tensor([[1.0, 2.0], [3.0, -1.0], [0.0, 1.0], [2.0, 2.0]], dtype=DT)
    x_star = torch.tensor([1.0, -2.0], dtype=DT)
    for method in ("sam", "ascent-gd"):
        result = train(toy_config(method=method), task=linreg_task(A, A @ x_star, x_star), write=False)
        assert result.status == "completed"
        assert torch.equal(result.theta, x_star)


# ---- learning-rate schedules --------------------------------------------------------------------

def test_lr_factor_closed_forms():
    T = 10
    for s in range(T + 1):
        assert lr_factor("constant", s, T, [0.5], 0.1) == 1.0
        assert lr_factor("cosine", s, T, [0.5], 0.1) == pytest.approx((1 + math.cos(math.pi * s / T)) / 2, abs=1e-15)
    assert lr_factor("cosine", 0, T, [], 0.1) == 1.0
    assert lr_factor("cosine", T // 2, T, [], 0.1) == pytest.approx(0.5, abs=1e-15)
    assert lr_factor("cosine", T, T, [], 0.1) == pytest.approx(0.0, abs=1e-15)
    # step: x gamma at each milestone fraction (0.5 -> step 5, 0.75 -> step 7.5)
    expected = {0: 1, 4: 1, 5: 0.1, 7: 0.1, 8: 0.01, 9: 0.01}
    for s, f in expected.items():
        assert lr_factor("step", s, T, [0.5, 0.75], 0.1) == pytest.approx(f, rel=1e-14)
    assert lr_factor("step", 3, 4, [0.5], 0.3) == pytest.approx(0.3)


@pytest.mark.parametrize("schedule", ["constant", "cosine", "step"])
def test_lr_recorded_in_metrics_and_applied(schedule, tmp_path):
    """Step s (1-based) uses lr * factor(s - 1); the metrics record that lr, and plain GD on a
    least-squares problem ends at the product of (I - lr_s H) applied to the start."""
    A, y = linreg_data()
    x0 = torch.tensor([0.5, -1.0, 2.0], dtype=DT)
    lr, T = 0.4, 8
    cfg = toy_config(method="sgd", lr=lr, schedule=schedule, milestones=[0.5, 0.75], gamma=0.1)
    cfg["steps"] = T
    result = train(cfg, tmp_path / "run", task=linreg_task(A, y, x0))

    def closed(s):   # factor for 0-based step index s
        if schedule == "cosine":
            return 0.5 * (1 + math.cos(math.pi * s / T))
        if schedule == "step":
            return 1.0 if s < 4 else (0.1 if s < 6 else 0.01)
        return 1.0

    lrs = [lr * closed(s - 1) for s in range(1, T + 1)]
    records = read_metrics(tmp_path / "run")
    assert records[0]["lr"] == lr
    for record, expected in zip(records[1:], lrs):
        assert record["lr"] == pytest.approx(expected, rel=1e-14)
    x = x0.clone()
    for lr_s in lrs:
        x = x - lr_s * linreg_grad(A, y, x)
    assert_close(result.theta, x, rtol=1e-10, atol=1e-12)


# ---- determinism --------------------------------------------------------------------------------

def test_same_config_same_run_different_seed_differs(tmp_path):
    cfg = tiny_config(**{"optimizer.method": "sam", "optimizer.momentum": 0.9, "steps": 6})
    a = train(cfg, tmp_path / "a")
    b = train(cfg, tmp_path / "b")
    assert metrics_without_wall_time(a.run_dir) == metrics_without_wall_time(b.run_dir)
    assert torch.equal(a.theta, b.theta)
    ckpt_a = torch.load(a.run_dir / "checkpoint.pt", weights_only=True)
    ckpt_b = torch.load(b.run_dir / "checkpoint.pt", weights_only=True)
    assert torch.equal(ckpt_a["theta"], ckpt_b["theta"]) and torch.equal(ckpt_a["theta"], a.theta)
    assert (a.run_dir / "config.yaml").read_text() == (b.run_dir / "config.yaml").read_text()

    c = train({**cfg, "seed": 1}, tmp_path / "c")
    assert not torch.equal(a.theta, c.theta)
    assert metrics_without_wall_time(a.run_dir) != metrics_without_wall_time(c.run_dir)


def test_seed_fixes_the_batch_order():
    """Same init and data, different sampler seed: identical theta0 but a different trajectory."""
    A, y = linreg_data(n=6)
    x0 = torch.tensor([0.5, -1.0, 2.0], dtype=DT)
    runs = []
    for seed in (0, 0, 1):
        cfg = toy_config(method="sgd", batch_size=2)
        cfg["seed"] = seed
        runs.append(train(cfg, task=linreg_task(A, y, x0), write=False).theta)
    assert torch.equal(runs[0], runs[1]) and not torch.equal(runs[0], runs[2])


# ---- hooks: on_record at every evaluation, stop ends the run there ---------------------------------

def test_on_record_sees_every_evaluation_with_its_theta_and_can_add_keys(tmp_path):
    """The hook's theta at step t is the closed-form SAM iterate x_t; keys it adds reach metrics.jsonl."""
    A, y = linreg_data()
    x0 = torch.tensor([0.5, -1.0, 2.0], dtype=DT)
    lr, rho = 0.3, 0.2
    cfg = {**toy_config(lr=lr, rho=rho), "steps": 7, "eval_every": 3}
    seen = {}

    def on_record(step, theta, record):
        seen[step] = theta
        record["theta_norm"] = float(theta.norm())
    result = train(cfg, tmp_path / "run", task=linreg_task(A, y, x0), on_record=on_record, eval_at=[5])
    assert sorted(seen) == [0, 3, 5, 6, 7] == [m["step"] for m in result.metrics]
    x, expected = x0.clone(), {0: x0.clone()}
    for step in range(1, 8):
        x = x - lr * sam_closed_form(A, y, x, rho, normalized=True)
        expected[step] = x
    for step, theta in seen.items():
        assert_close(theta, expected[step], rtol=1e-10, atol=1e-12)
    assert torch.equal(seen[7], result.theta)       # the hook got a copy, not the live parameters
    assert not torch.equal(seen[0], result.theta)
    logged = read_metrics(tmp_path / "run")
    assert [r["theta_norm"] for r in logged] == pytest.approx([float(seen[r["step"]].norm()) for r in logged])
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["stopped_at"] is None


def test_stop_ends_the_run_at_the_first_evaluation_where_it_holds(tmp_path):
    A, y = linreg_data()
    x0 = torch.tensor([0.5, -1.0, 2.0], dtype=DT)
    cfg = {**toy_config(method="sgd", lr=0.1), "steps": 50, "eval_every": 4}
    full = train(cfg, task=linreg_task(A, y, x0), write=False)
    target = full.metrics[3]["train_loss"]          # first reached at step 12
    asked = []

    def stop(record):
        asked.append(record["step"])
        return record["train_loss"] <= target
    result = train(cfg, tmp_path / "run", task=linreg_task(A, y, x0), stop=stop)
    assert asked == [0, 4, 8, 12]
    assert result.status == "completed" and result.summary["stopped_at"] == 12
    assert result.summary["steps_done"] == 12 and result.metrics[-1]["step"] == 12
    twelve_steps = train({**cfg, "steps": 12}, task=linreg_task(A, y, x0), write=False)
    assert torch.equal(result.theta, twelve_steps.theta)
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["stopped_at"] == 12
    assert full.summary["stopped_at"] is None


# ---- the run directory --------------------------------------------------------------------------

def test_run_directory_contents(tmp_path):
    cfg = tiny_config(**{"steps": 5, "eval_every": 2})
    result = train(cfg, tmp_path / "run")
    run = tmp_path / "run"
    assert {p.name for p in run.iterdir()} == RUN_FILES
    records = read_metrics(run)
    assert [r["step"] for r in records] == [0, 2, 4, 5]
    # epoch = step * b / n with b = 4, n = 16
    assert [r["epoch"] for r in records] == [0.0, 0.5, 1.0, 1.25]
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["steps_done"] == 5
    assert summary["final"] == {k: v for k, v in records[-1].items() if k not in ("step", "batch_loss")}
    assert summary["parameters"] == 3 * 4 + 4 + 4 * 2 + 2
    assert TrainConfig.from_dict(yaml.safe_load((run / "config.yaml").read_text())) == TrainConfig.from_dict(cfg)
    # the final metrics are those of the saved parameters, recomputed independently
    task = build_task(TrainConfig.from_dict(cfg))
    ckpt = torch.load(run / "checkpoint.pt", weights_only=True)
    assert_close(ckpt["theta"], result.theta, rtol=0, atol=0)
    ref = ModuleRef(task.objective.module)
    loss = ref.loss(ckpt["theta"], task.train.inputs, task.train.targets, train=False).item()
    assert records[-1]["train_loss"] == pytest.approx(loss, rel=1e-12)


def test_write_false_writes_nothing(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = train(tiny_config(steps=2), write=False)
    assert result.run_dir is None and list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("eval_every", [1, 100])
def test_divergence_stops_and_keeps_parseable_metrics(tmp_path, eval_every):
    """lr 1e30 on least squares: the loss grows ~1e60 per step and overflows within 10 steps.
    eval_every 1 catches it in the evaluation, eval_every 100 in the batch loss / direction."""
    cfg = tiny_config(**{"data.task": "regression", "loss": "mse", "optimizer.method": "sgd",
                         "optimizer.lr": 1e30, "optimizer.batch_size": 16, "steps": 50, "eval_every": eval_every})
    result = train(cfg, tmp_path / "run")
    run = tmp_path / "run"
    assert result.status == "diverged"
    summary = json.loads((run / "summary.json").read_text())     # strict JSON: no bare NaN/Infinity
    assert summary["status"] == "diverged" and 1 <= summary["steps_done"] <= 10
    lines = (run / "metrics.jsonl").read_text().splitlines()
    records = [json.loads(line, parse_constant=lambda c: pytest.fail(f"bare {c} in metrics")) for line in lines]
    assert records[0]["step"] == 0 and math.isfinite(records[0]["train_loss"])
    if eval_every == 1:
        assert [r["step"] for r in records] == list(range(summary["steps_done"] + 1))
        assert records[-1]["train_loss"] in ("inf", "nan")
        assert all(isinstance(r["train_loss"], float) for r in records[:-1])
    else:
        assert len(records) == 1
    assert {p.name for p in run.iterdir()} == RUN_FILES


def test_interrupt_through_progress_callback(tmp_path):
    seen = []

    def progress(step, total, loss):
        seen.append((step, total))
        assert math.isfinite(loss)
        if step == 3:
            raise KeyboardInterrupt

    run = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        train(tiny_config(steps=10), run, progress=progress)
    assert seen == [(1, 10), (2, 10), (3, 10)]
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "interrupted"
    assert [r["step"] for r in read_metrics(run)] == [0, 1, 2]
    assert {p.name for p in run.iterdir()} == RUN_FILES          # atomic writes: no *.tmp left
    assert torch.isfinite(torch.load(run / "checkpoint.pt", weights_only=True)["theta"]).all()


def test_no_temp_files_after_completed_runs(tmp_path):
    for i, method in enumerate(["sgd", "msam"]):
        extra = {"optimizer.m": 2} if method == "msam" else {}
        train(tiny_config(**{"optimizer.method": method, "steps": 2, **extra}), tmp_path / str(i))
        assert {p.name for p in (tmp_path / str(i)).iterdir()} == RUN_FILES


def test_an_error_mid_run_is_not_reported_as_completed(tmp_path):
    """msam cannot run with BatchNorm; the refusal comes at the first step, after the run directory
    exists: the summary must say 'failed', not 'completed', and be written atomically."""
    torch.manual_seed(0)
    module = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4), torch.nn.Tanh(),
                                 torch.nn.Linear(4, 2)).to(DT)
    objective, theta = Objective.from_module(module)
    task = Task(objective, theta, mlp_batch(8), mlp_batch(4, seed=3), 2)
    run = tmp_path / "run"
    with pytest.raises(ConfigError, match="BatchNorm"):
        train(tiny_config(**{"optimizer.method": "msam", "optimizer.m": 2}), run, task=task)
    assert json.loads((run / "summary.json").read_text())["status"] == "failed"
    assert [r["step"] for r in read_metrics(run)] == [0]
    assert {p.name for p in run.iterdir()} == RUN_FILES


def test_augment_changes_the_batches_and_stays_seeded(tmp_path):
    from samcli.config import ConfigError
    from samcli.objective import Batch
    from samcli.train import BatchSampler, train
    images = Batch(torch.randn(16, 1, 8, 8), torch.arange(16) % 10)
    plain = BatchSampler(images, 4, seed=0).next()
    first = BatchSampler(images, 4, seed=0, augment=True).next()
    again = BatchSampler(images, 4, seed=0, augment=True).next()
    assert torch.equal(first.inputs, again.inputs) and torch.equal(first.targets, plain.targets)
    assert not torch.equal(first.inputs, plain.inputs)
    cfg = TrainConfig.from_dict({"data": {"name": "digits", "augment": True}, "model": {"name": "cnn", "norm": "none"},
                                 "optimizer": {"batch_size": 16}, "steps": 2, "eval_every": 2})
    assert train(cfg, tmp_path / "run").status == "completed"
    with pytest.raises(ConfigError, match="data.augment"):
        train(cfg.replace(**{"data.name": "synthetic", "model.name": "mlp"}), tmp_path / "bad")


def test_train_to_a_loss_target_stops_at_the_first_evaluation_that_reaches_it():
    base = {"data": {"name": "synthetic", "n_train": 64, "n_test": 16, "dim": 5, "classes": 3},
            "model": {"name": "mlp", "widths": [16]}, "optimizer": {"lr": 0.5, "batch_size": "full"},
            "steps": 400, "eval_every": 10, "device": "cpu", "dtype": "float64"}
    free = train(base, write=False)
    losses = {r["step"]: r["train_loss"] for r in free.metrics}
    target = losses[200]        # reached by step 200, first at some evaluation <= 200
    first = min(s for s, value in losses.items() if value <= target)
    hit = train({**base, "stop": {"train_loss": target}}, write=False)
    assert hit.summary["stopped_at"] == first == hit.metrics[-1]["step"]
    assert hit.summary["target"] == {"reached": True, "step": first, "epoch": float(first)}
    assert hit.status == "completed"


def test_a_target_not_reached_runs_to_the_cap_and_says_so():
    cfg = {"data": {"name": "synthetic", "n_train": 64, "n_test": 16, "dim": 5, "classes": 3},
           "model": {"name": "mlp", "widths": [8]}, "optimizer": {"lr": 0.01, "batch_size": 16},
           "steps": 20, "eval_every": 5, "device": "cpu", "stop": {"train_accuracy": 1.0}}
    result = train(cfg, write=False)
    assert result.summary["steps_done"] == 20 and result.summary["stopped_at"] is None
    assert result.summary["target"] == {"reached": False, "step": None, "epoch": None}
    assert "target" not in train({**cfg, "stop": {}}, write=False).summary
