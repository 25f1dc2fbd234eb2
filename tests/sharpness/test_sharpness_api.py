"""The public sharpness API (samcli.measure_sharpness, SharpnessReport) and the `samcli sharpness` CLI,
plus `measure.every` during training."""
from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from typer.testing import CliRunner

import samcli
from samcli.cli import app
from samcli.config import SamcliError
from samcli.curvature.dense import dense_hessian
from samcli.models import cnn, mlp
from samcli.runs import load_run
from samcli.sharpness import SharpnessReport
from samcli.task import build_task

DT = torch.float64
FAST = dict(lanczos_iters=15, trace_probes=2, directions=8, ascent_restarts=1, ascent_iters=3,
            stochastic_examples=3)


def same(a, b) -> bool:
    """Equality of nested report dicts with NaN == NaN."""
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return a == b


def strip(report) -> dict:
    d = report.to_dict()
    for key in ("seconds", "notion_seconds", "spec", "spec_hash"):   # timing, and how the call was spelled
        d.pop(key)
    return d


def problem(n=20, seed=0):
    torch.manual_seed(seed)
    model = mlp(4, [6], 3, nn.Tanh).to(DT)
    gen = torch.Generator().manual_seed(seed + 1)
    x = torch.randn(n, 4, generator=gen, dtype=DT)
    y = torch.randint(0, 3, (n,), generator=gen)
    return model, x, y


def test_tensors_and_dataloader_give_the_same_report():
    model, x, y = problem()
    a = samcli.measure_sharpness(model, (x, y), loss="mse", rho=0.1, samples=12, seed=4, **FAST)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=7, shuffle=False)
    b = samcli.measure_sharpness(model, loader, loss="mse", rho=0.1, samples=12, seed=4, **FAST)
    assert same(strip(a), strip(b))
    assert a.rho == 0.1 and a.examples == 12 and a.seed == 4


def test_loss_choice_and_value_by_hand():
    model, x, y = problem()
    ce = samcli.measure_sharpness(model, (x, y), loss="cross-entropy", notions=("ascent",), stochastic_examples=0)
    mse = samcli.measure_sharpness(model, (x, y), loss="mse", notions=("ascent",), stochastic_examples=0)
    with torch.no_grad():
        out = model(x)
    assert ce.loss == pytest.approx(F.cross_entropy(out, y).item(), rel=1e-12)
    assert mse.loss == pytest.approx((0.5 * (out - F.one_hot(y, 3).to(DT)) ** 2).sum(1).mean().item(), rel=1e-12)
    # a callable loss of (outputs, targets) per example works too
    custom = samcli.measure_sharpness(model, (x, y), loss=lambda o, t: F.cross_entropy(o, t, reduction="none"),
                                      notions=("ascent",), stochastic_examples=0)
    assert custom.loss == pytest.approx(ce.loss, rel=1e-12)
    assert custom.ascent.value == pytest.approx(ce.ascent.value, rel=1e-10)


def test_report_round_trips_through_dict_and_json():
    model, x, y = problem()
    report = samcli.measure_sharpness(model, (x, y), rho=0.05, exact=True, k=2, **FAST)
    assert all(getattr(report, part) is not None for part in ("worst", "ascent", "average", "stochastic", "exact"))
    again = SharpnessReport.from_dict(report.to_dict())
    assert isinstance(again.worst.eigenvalues, tuple) and isinstance(again.worst.residuals, tuple)
    assert same(again.to_dict(), report.to_dict())
    assert again.summary().keys() == report.summary().keys()
    via_json = SharpnessReport.from_dict(json.loads(json.dumps(report.to_dict())))
    assert same(via_json.to_dict(), report.to_dict())
    assert type(via_json.exact).__name__ == "ExactSpectrum"
    # seconds per part: exactly the parts that ran, each non-negative, within the total
    assert set(report.notion_seconds) == {"gradient", "lanczos", "worst", "ascent", "average", "per-example", "exact"}
    assert all(v >= 0 for v in report.notion_seconds.values())
    assert sum(report.notion_seconds.values()) <= report.seconds
    assert via_json.notion_seconds == report.notion_seconds
    assert isinstance(via_json.worst.eigenvalues, tuple) and isinstance(via_json.worst.residuals, tuple)
    # a report with absent notions round-trips too (None parts stay None)
    partial = samcli.measure_sharpness(model, (x, y), notions=("average",), finite=False, stochastic_examples=0)
    back = SharpnessReport.from_dict(json.loads(json.dumps(partial.to_dict())))
    assert back.worst is None and back.ascent is None and back.stochastic is None
    assert set(back.notion_seconds) == {"gradient", "average"}
    assert same(back.to_dict(), partial.to_dict())


def test_same_seed_same_result_other_seed_differs():
    model, x, y = problem()
    a = samcli.measure_sharpness(model, (x, y), seed=1, **FAST)
    b = samcli.measure_sharpness(model, (x, y), seed=1, **FAST)
    c = samcli.measure_sharpness(model, (x, y), seed=2, **FAST)
    assert same(strip(a), strip(b))
    assert a.average.finite != c.average.finite


def test_samples_take_a_seeded_subset():
    model, x, y = problem(n=30)
    sub = samcli.measure_sharpness(model, (x, y), samples=10, seed=3, **FAST)
    assert sub.examples == 10
    # the subset is a seeded draw without replacement: the same report as measuring those examples directly
    index = torch.randperm(30, generator=torch.Generator().manual_seed(3))[:10].sort().values
    direct = samcli.measure_sharpness(model, (x[index], y[index]), seed=3, **FAST)
    assert same(strip(sub), strip(direct))
    # the loss is that subset's loss (and not the full set's)
    with torch.no_grad():
        assert sub.loss == pytest.approx(F.cross_entropy(model(x[index]), y[index]).item(), rel=1e-12)
        assert abs(sub.loss - F.cross_entropy(model(x), y).item()) > 1e-6
    other = samcli.measure_sharpness(model, (x, y), samples=10, seed=4, notions=("ascent",), stochastic_examples=0)
    assert other.loss != sub.loss
    # samples >= n (or None) measures everything
    everything = samcli.measure_sharpness(model, (x, y), samples=None, seed=3, **FAST)
    assert everything.examples == 30
    assert same(strip(samcli.measure_sharpness(model, (x, y), samples=99, seed=3, **FAST)), strip(everything))
    for bad in (0, -2):
        with pytest.raises(SamcliError, match="samples"):
            samcli.measure_sharpness(model, (x, y), samples=bad)


def test_bad_arguments_raise_samcli_errors():
    model, x, y = problem()
    for rho in (0.0, -0.1):
        with pytest.raises(SamcliError, match="rho"):
            samcli.measure_sharpness(model, (x, y), rho=rho)
    with pytest.raises(SamcliError, match="pair of tensors"):
        samcli.measure_sharpness(model, [x])
    with pytest.raises(SamcliError, match="unknown sharpness notion"):
        samcli.measure_sharpness(model, (x, y), notions=("flatness",))


@pytest.mark.parametrize("training", [True, False])
def test_model_mode_parameters_and_batchnorm_statistics_are_restored(training):
    torch.manual_seed(0)
    model = cnn(1, [2], 3, "batch", nn.ReLU).to(DT)
    gen = torch.Generator().manual_seed(1)
    x, y = torch.randn(12, 1, 6, 6, generator=gen, dtype=DT), torch.randint(0, 3, (12,), generator=gen)
    model.train()
    for _ in range(3):       # non-trivial running statistics
        model(x + torch.randn(x.shape, generator=gen, dtype=DT))
    model.train(training)
    params = {k: v.detach().clone() for k, v in model.named_parameters()}
    buffers = {k: v.clone() for k, v in model.named_buffers()}
    report = samcli.measure_sharpness(model, (x, y), **FAST)
    assert model.training is training
    assert all(m.training is training for m in model.modules())
    for k, v in model.named_parameters():
        torch.testing.assert_close(v.detach(), params[k], rtol=0, atol=0)
    for k, v in model.named_buffers():
        torch.testing.assert_close(v, buffers[k], rtol=0, atol=0)
    # measured in eval mode: the loss with running statistics, not batch statistics
    model.eval()
    with torch.no_grad():
        eval_loss = F.cross_entropy(model(x), y).item()
        model.train()
        train_loss = F.cross_entropy(model(x), y).item()
    assert report.mode == "eval"
    assert report.loss == pytest.approx(eval_loss, rel=1e-12)
    assert abs(report.loss - train_loss) > 1e-6


def test_float32_model_with_float64_data():
    torch.manual_seed(0)
    model = mlp(4, [6], 3, nn.Tanh)
    _, x, y = problem()
    report = samcli.measure_sharpness(model, (x, y), notions=("worst",), finite=False, stochastic_examples=0,
                                      exact=True)
    assert report.worst.eigenvalues[0] == pytest.approx(report.exact.lambda_1, rel=1e-3)


# ---- CLI ---------------------------------------------------------------------------------------------

runner = CliRunner()


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("sharp") / "run"
    # batch size 16: the default (128) exceeds the 64 training examples and is refused
    result = runner.invoke(app, ["train", "--dataset", "synthetic", "--set", "data.n_train=64", "--set",
                                 "data.n_test=32", "--set", "data.dim=5", "--set", "model.widths=[8]",
                                 "--batch-size", "16", "--steps", "5", "--quiet", "--out", str(out)])
    assert result.exit_code == 0, result.output
    return out


def test_cli_sharpness_json(run_dir):
    result = runner.invoke(app, ["sharpness", str(run_dir), "--samples", "32", "--json"])
    assert result.exit_code == 0, result.stderr
    printed = json.loads(result.stdout)
    written = json.loads((run_dir / "sharpness.json").read_text())
    assert same(printed, written)
    report = SharpnessReport.from_dict(written)
    assert report.examples == 32 and report.parameters == 5 * 8 + 8 + 8 * 10 + 10
    assert report.worst.converged and report.worst.eigenvalues[0] > 0
    assert report.ascent is not None and report.average is not None and report.stochastic is not None
    assert report.exact is None


def test_cli_sharpness_exact_matches_dense_hessian(run_dir):
    result = runner.invoke(app, ["sharpness", str(run_dir), "--samples", "8", "--exact", "--notions", "worst",
                                 "--json", "--seed", "1"])
    assert result.exit_code == 0, result.stderr
    report = SharpnessReport.from_dict(json.loads(result.stdout))
    assert report.examples == 8 and report.seed == 1
    assert report.ascent is None and report.average is None
    # ground truth: the dense Hessian of the run's own objective on the same 8 examples
    cfg, state = load_run(run_dir)
    task = build_task(cfg)
    index = torch.randperm(len(task.train), generator=torch.Generator().manual_seed(1))[:8].sort().values
    task.objective.set_training(False)
    H = dense_hessian(task.objective, state["theta"], task.train.take(index))
    values = torch.linalg.eigvalsh(H)
    assert report.exact.lambda_1 == pytest.approx(values[-1].item(), rel=1e-5)
    assert report.exact.trace == pytest.approx(values.sum().item(), rel=1e-5)
    assert report.worst.eigenvalues[0] == pytest.approx(values[-1].item(), rel=1e-3)


@pytest.mark.parametrize("args,needle", [
    (["--samples", "abc"], "--samples"),
    (["--samples", "0"], "samples"),
    (["--samples", "-3"], "samples"),
    (["--rho", "0"], "rho"),
    (["--rho", "-0.5"], "rho"),
])
def test_cli_bad_arguments_exit_2_with_one_line(run_dir, args, needle):
    result = runner.invoke(app, ["sharpness", str(run_dir), *args])
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0] and "Traceback" not in result.output
    assert result.stdout == ""


def test_cli_samples_message_names_the_accepted_words(run_dir):
    result = runner.invoke(app, ["sharpness", str(run_dir), "--samples", "lots"])
    assert result.exit_code == 2
    assert "'all'" in result.stderr and "'full'" not in result.stderr


def test_cli_unparseable_rho_exits_2(run_dir):
    result = runner.invoke(app, ["sharpness", str(run_dir), "--rho", "abc"])
    assert result.exit_code == 2


def test_cli_missing_run_dir_exits_2(tmp_path):
    result = runner.invoke(app, ["sharpness", str(tmp_path / "nope")])
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "checkpoint" in lines[0]
    assert not (tmp_path / "nope").exists()


def test_measure_every_records_sharpness_in_metrics(tmp_path):
    out = tmp_path / "run"
    result = runner.invoke(app, ["train", "--dataset", "synthetic", "--set", "data.n_train=32", "--set",
                                 "data.n_test=8", "--set", "data.dim=4", "--set", "model.widths=[6]", "--set",
                                 "data.classes=3", "--dtype", "float64", "--batch-size", "8", "--steps", "4",
                                 "--set", "measure.every=2", "--set", "measure.lanczos_iters=60",
                                 "--quiet", "--out", str(out)])
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    measured = [r for r in rows if "sharp_lambda_1" in r]
    assert [r["step"] for r in measured] == [0, 2, 4]
    assert all("sharp_trace" in r and math.isfinite(r["sharp_lambda_1"]) for r in measured)
    # the last record matches the dense Hessian at the final checkpoint (ReLU MLP: the trace is exact)
    cfg, state = load_run(out)
    task = build_task(cfg)
    task.objective.set_training(False)
    values = torch.linalg.eigvalsh(dense_hessian(task.objective, state["theta"], task.train))
    last = measured[-1]
    assert last["sharp_lambda_1"] == pytest.approx(values[-1].item(), rel=1e-6)
    assert last["sharp_trace"] == pytest.approx(values.sum().item(), rel=1e-8)
    # sharpness moves with the parameters: step 0 differs from the final step
    assert measured[0]["sharp_lambda_1"] != last["sharp_lambda_1"]
