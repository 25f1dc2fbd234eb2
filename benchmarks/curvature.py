"""Curvature benchmark: samcli vs PyHessian and hessian-eigenthings on one trained mnist1d MLP.

All in one process, on the same model (40-256-256-10, ReLU, cross-entropy, float32) and the
full 4000-example training set, against a converged float64 reference:
  (a) wall time and HVP count to reach lambda_1 within 1e-4 relative of the reference;
  (b) |Tr estimate - Tr| over 20 seeds at equal wall-time budgets (10, 30, 100 PyHessian HVPs);
  (c) one HVP's time over one full-data gradient's time, single and batched per vector.
Peers are benchmark-only extras: pip install -e ".[bench]".

    python benchmarks/curvature.py [--quick] [--out results/benchmarks]
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import torch

from samcli.config import TrainConfig
from samcli.curvature.ggn import GGNOperator, exact_ggn_trace
from samcli.curvature.hvp import HessianOperator
from samcli.curvature.lanczos import lanczos
from samcli.curvature.trace import ggn_control_variate
from samcli.sharpness.notions import _block_masks
from samcli.task import build_task
from samcli.train import train

REL_TARGET = 1e-4


def timed(fn, repeats: int = 1):
    times, out = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), out


def trained_mlp(steps: int):
    cfg = TrainConfig.from_dict({"data": {"name": "mnist1d"}, "model": {"name": "mlp", "widths": [256, 256]},
                                 "optimizer": {"method": "sgd", "lr": 0.1, "batch_size": 128, "momentum": 0.9},
                                 "steps": steps, "eval_every": steps, "device": "cpu"})
    task = build_task(cfg)
    result = train(cfg, task=task, write=False)
    task.objective.load_into_module(result.theta)
    task.objective.set_training(False)
    return task, result.theta, result.summary["final"]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="fewer seeds and repeats (smoke test)")
    # 300 momentum-SGD steps leave the model mid-training (train loss ~0.54, Tr ~138), the regime of the
    # issue's reference figures (Tr ~134); a fully trained one is much flatter (Tr ~3) and easier.
    parser.add_argument("--steps", type=int, default=300, help="SGD steps to train the measured model")
    parser.add_argument("--out", default="results/benchmarks")
    args = parser.parse_args()
    seeds = 3 if args.quick else 20
    repeats = 3 if args.quick else 10
    torch.manual_seed(0)

    import hessian_eigenthings as he
    from pyhessian import hessian as PyHessian
    import sys
    pyhessian_module = sys.modules["pyhessian.hessian"]   # the package re-exports a class of the same name

    task, theta, final = trained_mlp(args.steps)
    objective, data = task.objective, task.train
    model = objective.module
    x, y = data.inputs, data.targets
    criterion = torch.nn.CrossEntropyLoss()
    D, n = objective.dim, len(data)
    print(f"model: mnist1d MLP 40-256-256-10, D={D}, n={n}, train loss {final['train_loss']:.4f}, "
          f"test acc {final['test_accuracy']:.3f}; torch {torch.__version__}, {torch.get_num_threads()} threads")

    # ---- float64 reference --------------------------------------------------------------------
    theta64 = theta.double()
    data64 = data.to(dtype=torch.float64)
    ref_op = HessianOperator(objective, theta64, data64)
    ref = lanczos(ref_op.matmat, D, k=1, max_iter=200, tol=1e-9, generator=torch.Generator().manual_seed(123))
    lam_ref = ref.eigenvalues[0, 0].item()
    ggn64 = GGNOperator(objective, theta64, data64)
    masks64 = _block_masks(objective, theta64)
    tr_g64 = exact_ggn_trace(objective, theta64, data64)
    remainder = ggn_control_variate(ref_op.matmat, ggn64.matmat, tr_g64, masks64, D, 16,
                                    torch.Generator().manual_seed(7), torch.float64)
    tr_ref = remainder.value
    print(f"reference (float64): lambda_1 = {lam_ref:.8f} (residual {ref.residuals[0, 0]:.1e}), "
          f"Tr(H) = {tr_ref:.6f} = Tr(G) {tr_g64:.6f} + remainder {tr_ref - tr_g64:.2e} +- {remainder.stderr:.1e}")

    # ---- (c) HVP cost in gradients ---------------------------------------------------------------
    op = HessianOperator(objective, theta, data)
    v = torch.randn(D)
    t_grad, _ = timed(lambda: objective.value_and_grad(theta, data, 4096), repeats)
    t_hvp, _ = timed(lambda: op.matvec(v), repeats)
    batched = {}
    streamed = HessianOperator(objective, theta, data, keep_graph=False)
    for k in (4, 10, 20):
        V = torch.randn(k, D)
        t_kept, _ = timed(lambda: op.matmat(V), max(2, repeats // 3))
        t_stream, _ = timed(lambda: streamed.matmat(V), max(2, repeats // 3))
        batched[k] = min(t_kept, t_stream) / k
    model.zero_grad()
    py = PyHessian(model, criterion, data=(x, y), cuda=False)      # its fastest mode: one batch, graph kept
    vs = [torch.randn_like(p) for p in py.params]
    t_py_hvp, _ = timed(lambda: pyhessian_module.hessian_vector_product(py.gradsH, py.params, vs), repeats)
    t_py_setup, _ = timed(lambda: PyHessian(model, criterion, data=(x, y), cuda=False), 1)
    he_op = he.HessianOperator(model, [(x, y)], he.supervised_loss(criterion))
    t_he_hvp, _ = timed(lambda: he_op.matvec(torch.randn(D)), repeats)
    c = {"gradient_s": t_grad, "samcli_hvp_s": t_hvp, "samcli_hvp_over_grad": t_hvp / t_grad,
         "samcli_batched_hvp_over_grad": {k: t / t_grad for k, t in batched.items()},
         "pyhessian_hvp_s": t_py_hvp, "pyhessian_setup_s": t_py_setup,
         "pyhessian_hvp_over_grad": t_py_hvp / t_grad,
         "hessian_eigenthings_hvp_over_grad": t_he_hvp / t_grad}
    print(f"(c) gradient {t_grad * 1e3:.1f} ms; samcli HVP {t_hvp / t_grad:.2f} grads, batched per vector "
          + ", ".join(f"k={k}: {t / t_grad:.2f}" for k, t in batched.items())
          + f"; PyHessian HVP {t_py_hvp / t_grad:.2f} grads (+ setup {t_py_setup / t_grad:.1f}), "
            f"hessian-eigenthings {t_he_hvp / t_grad:.2f}")

    # ---- (a) lambda_1 to 1e-4 ------------------------------------------------------------------
    def rel(value):
        return abs(value - lam_ref) / abs(lam_ref)

    rows_a = []
    for tol in (1e-2, 3e-3, 1e-3, 1e-4):
        counter = HessianOperator(objective, theta, data)
        t, res = timed(lambda: lanczos(counter.matmat, D, k=1, max_iter=200, tol=tol,
                                       generator=torch.Generator().manual_seed(0)), 1)
        rows_a.append({"tool": "samcli lanczos", "setting": f"tol={tol}", "seconds": t,
                       "hvps": counter.matvecs, "rel_error": rel(res.eigenvalues[0, 0].item())})
    calls = {"n": 0}
    original = pyhessian_module.hessian_vector_product

    def counting(*a, **kw):
        calls["n"] += 1
        return original(*a, **kw)
    pyhessian_module.hessian_vector_product = counting
    for tol in (1e-3, 1e-4, 1e-5, 1e-6, 1e-7):
        torch.manual_seed(0)
        calls["n"] = 0
        start = time.perf_counter()
        model.zero_grad()
        lam, _ = PyHessian(model, criterion, data=(x, y), cuda=False).eigenvalues(maxIter=1000, tol=tol)
        rows_a.append({"tool": "pyhessian power", "setting": f"tol={tol}", "seconds": time.perf_counter() - start,
                       "hvps": calls["n"], "rel_error": rel(lam[0])})
    pyhessian_module.hessian_vector_product = original
    for max_iter in (2, 5, 10, 15, 20, 30):
        he_op = he.HessianOperator(model, [(x, y)], he.supervised_loss(criterion))
        t, res = timed(lambda: he.lanczos(he_op, k=1, max_iter=max_iter, seed=0, which="LA"), 1)
        rows_a.append({"tool": "hessian-eigenthings lanczos", "setting": f"max_iter={max_iter}", "seconds": t,
                       "hvps": max_iter, "rel_error": rel(res.eigenvalues[0].item())})
    print("(a) lambda_1:")
    for r in rows_a:
        print(f"    {r['tool']:28s} {r['setting']:14s} {r['seconds']:7.3f} s {r['hvps']:5d} HVPs  rel err {r['rel_error']:.1e}")
    best = {}
    for r in rows_a:
        if r["rel_error"] < REL_TARGET and (r["tool"] not in best or r["seconds"] < best[r["tool"]]["seconds"]):
            best[r["tool"]] = r

    # ---- (b) trace at equal wall-time budgets ------------------------------------------------------
    ggn = GGNOperator(objective, theta, data)
    masks = _block_masks(objective, theta)
    rows_b = []
    for budget_hvps in (10, 30, 100):
        budget = budget_hvps * t_py_hvp
        errors = {"pyhessian hutchinson": [], "hessian-eigenthings hutch++": [], "samcli (exact Tr(G))": [],
                  "samcli ggn+block, 1 probe": []}
        seconds = {k: [] for k in errors}
        he_matvecs = max(3, int(budget / t_he_hvp))
        for seed in range(seeds):
            torch.manual_seed(seed)
            model.zero_grad()
            start = time.perf_counter()
            py = PyHessian(model, criterion, data=(x, y), cuda=False)
            estimate = statistics.mean(py.trace(maxIter=budget_hvps, tol=0.0))
            seconds["pyhessian hutchinson"].append(time.perf_counter() - start)
            errors["pyhessian hutchinson"].append(abs(estimate - tr_ref))

            he_op = he.HessianOperator(model, [(x, y)], he.supervised_loss(criterion))
            start = time.perf_counter()
            result = he.hutch_plus_plus(he_op, num_matvecs=he_matvecs, seed=seed)
            seconds["hessian-eigenthings hutch++"].append(time.perf_counter() - start)
            errors["hessian-eigenthings hutch++"].append(abs(float(result.estimate) - tr_ref))

            # what `samcli sharpness` does for this ReLU MLP: Tr(H) = Tr(G), computed exactly
            start = time.perf_counter()
            value = exact_ggn_trace(objective, theta, data)
            seconds["samcli (exact Tr(G))"].append(time.perf_counter() - start)
            errors["samcli (exact Tr(G))"].append(abs(value - tr_ref))
            # the generic estimator it uses for smooth activations, at its smallest budget
            start = time.perf_counter()
            hop = HessianOperator(objective, theta, data)
            estimate = ggn_control_variate(hop.matmat, ggn.matmat, exact_ggn_trace(objective, theta, data), masks,
                                           D, 1, torch.Generator().manual_seed(seed))
            seconds["samcli ggn+block, 1 probe"].append(time.perf_counter() - start)
            errors["samcli ggn+block, 1 probe"].append(abs(estimate.value - tr_ref))
        for tool in errors:
            rows_b.append({"budget_pyhessian_hvps": budget_hvps, "budget_s": budget, "tool": tool,
                           "mean_abs_error": statistics.mean(errors[tool]),
                           "median_seconds": statistics.median(seconds[tool]),
                           "matvecs": {"pyhessian hutchinson": budget_hvps,
                                       "hessian-eigenthings hutch++": he_matvecs,
                                       "samcli (exact Tr(G))": 0,
                                       "samcli ggn+block, 1 probe": len(masks)}[tool]})
    print(f"(b) trace, |error| mean over {seeds} seeds (Tr = {tr_ref:.4f}):")
    for r in rows_b:
        print(f"    budget {r['budget_pyhessian_hvps']:3d} PyHessian HVPs ({r['budget_s']:.2f} s): {r['tool']:28s} "
              f"err {r['mean_abs_error']:.4f}  median {r['median_seconds']:.3f} s ({r['matvecs']} matvecs)")

    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")),
               platform.processor())
    record = {"machine": {"cpu": cpu, "threads": torch.get_num_threads(), "torch": torch.__version__,
                          "python": platform.python_version()},
              "model": {"parameters": D, "examples": n, **final}, "seeds": seeds, "repeats": repeats,
              "reference": {"lambda_1": lam_ref, "trace": tr_ref, "ggn_trace": tr_g64, "trace_stderr": remainder.stderr},
              "a_lambda_1": rows_a, "a_best_within_1e-4": best, "b_trace": rows_b, "c_hvp_cost": c}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    name = "curvature_quick" if args.quick else "curvature"
    (out / f"{name}.json").write_text(json.dumps(record, indent=2) + "\n")
    lines = [f"# Curvature benchmark ({cpu}, {torch.get_num_threads()} threads, torch {torch.__version__})", "",
             f"mnist1d MLP 40-256-256-10, D = {D}, n = {n}; reference lambda_1 = {lam_ref:.6f}, Tr = {tr_ref:.4f}.", "",
             "(a) fastest run with lambda_1 within 1e-4 relative:", "",
             "| tool | setting | seconds | HVPs | rel. error |", "|---|---|---|---|---|"]
    lines += [f"| {t} | {r['setting']} | {r['seconds']:.3f} | {r['hvps']} | {r['rel_error']:.1e} |" for t, r in best.items()]
    if "samcli lanczos" in best and "pyhessian power" in best:
        ratio = best["samcli lanczos"]["seconds"] / best["pyhessian power"]["seconds"]
        lines += ["", f"samcli / PyHessian time to 1e-4: **{ratio:.2f}x** (target <= 0.33x)."]
        print(f"(a) samcli / PyHessian time to lambda_1 within 1e-4: {ratio:.2f}x")
    lines += ["", f"(b) mean |Tr error| over {seeds} seeds at equal wall-time budgets:", "",
              "| budget (PyHessian HVPs) | tool | mean abs error | median seconds |", "|---|---|---|---|"]
    lines += [f"| {r['budget_pyhessian_hvps']} | {r['tool']} | {r['mean_abs_error']:.3g} | {r['median_seconds']:.3f} |"
              for r in rows_b]
    lines += ["", "(c) cost in full-data gradients: samcli HVP "
              f"{c['samcli_hvp_over_grad']:.2f}, batched per vector "
              + ", ".join(f"k={k}: {v:.2f}" for k, v in c["samcli_batched_hvp_over_grad"].items())
              + f"; PyHessian {c['pyhessian_hvp_over_grad']:.2f}; hessian-eigenthings {c['hessian_eigenthings_hvp_over_grad']:.2f}.", ""]
    (out / f"{name}.md").write_text("\n".join(lines))
    print(f"written {out / name}.json and .md")


if __name__ == "__main__":
    main()
