"""The curvature benchmark's peers, each behind one function that times what a user of that library
would run, on a plain nn.Module with a cross-entropy criterion and the whole data set as one batch.

A peer that is not installed, or fails on this torch, is skipped with a printed reason (`load`).
BackPACK works on a deep copy: its `extend` hooks break other libraries' autograd on the same module.
"""
from __future__ import annotations

import copy
import importlib
import sys
import time
import traceback

import numpy as np
import torch

PACKAGES = {"pyhessian": "pyhessian", "hessian-eigenthings": "hessian_eigenthings",
            "curvlinops": "curvlinops", "backpack": "backpack"}
DISTRIBUTIONS = {"pyhessian": "pyhessian", "hessian-eigenthings": "hessian-eigenthings",
                 "curvlinops": "curvlinops-for-pytorch", "backpack": "backpack-for-pytorch"}


def version(peer: str) -> str:
    from importlib.metadata import PackageNotFoundError, version as installed
    try:
        return installed(DISTRIBUTIONS[peer])
    except PackageNotFoundError:
        return "?"


def load() -> tuple[dict, dict]:
    """(available modules by peer name, skip reason by peer name)."""
    found, skipped = {}, {}
    for peer, module in PACKAGES.items():
        try:
            found[peer] = importlib.import_module(module)
        except Exception as error:      # noqa: BLE001 - any import failure means: skip this peer, say why
            skipped[peer] = f"import {module} failed: {type(error).__name__}: {error}"
    for peer, reason in skipped.items():
        print(f"skipping {peer}: {reason}")
    return found, skipped


def guarded(peer: str, skipped: dict, fn, *args, **kwargs):
    """fn(*args, **kwargs), or None (and the peer marked skipped, with the reason) when it raises."""
    try:
        return fn(*args, **kwargs)
    except Exception as error:          # noqa: BLE001
        reason = f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"
        skipped[peer] = reason
        print(f"skipping {peer} here: {reason}")
        traceback.print_exc(limit=2)
        return None


def pyhessian_power(model, x, y, tols, rel) -> list[dict]:
    """PyHessian's power iteration (its fastest mode: one batch, graph kept), one run per tolerance."""
    from pyhessian import hessian as PyHessian
    module = sys.modules["pyhessian.hessian"]      # the package re-exports a class of the same name
    criterion, calls = torch.nn.CrossEntropyLoss(), {"n": 0}
    original = module.hessian_vector_product

    def counting(*a, **kw):
        calls["n"] += 1
        return original(*a, **kw)
    module.hessian_vector_product = counting
    rows = []
    try:
        for tol in tols:
            torch.manual_seed(0)
            calls["n"] = 0
            start = time.perf_counter()
            model.zero_grad()
            lam, _ = PyHessian(model, criterion, data=(x, y), cuda=False).eigenvalues(maxIter=1000, tol=tol)
            rows.append({"tool": "pyhessian power", "setting": f"tol={tol}", "seconds": time.perf_counter() - start,
                         "hvps": calls["n"], "rel_error": rel(lam[0])})
    finally:
        module.hessian_vector_product = original
    return rows


def eigenthings_lanczos(model, x, y, max_iters, rel) -> list[dict]:
    import hessian_eigenthings as he
    criterion, rows = torch.nn.CrossEntropyLoss(), []
    for max_iter in max_iters:
        start = time.perf_counter()
        op = he.HessianOperator(model, [(x, y)], he.supervised_loss(criterion))
        res = he.lanczos(op, k=1, max_iter=max_iter, seed=0, which="LA")
        rows.append({"tool": "hessian-eigenthings lanczos", "setting": f"max_iter={max_iter}",
                     "seconds": time.perf_counter() - start, "hvps": max_iter,
                     "rel_error": rel(res.eigenvalues[0].item())})
    return rows


def curvlinops_hessian(model, x, y):
    from curvlinops import HessianLinearOperator
    params = [p for p in model.parameters() if p.requires_grad]
    # check_deterministic=False: its check costs extra passes, and the model (eval mode) and data are fixed
    return HessianLinearOperator(model, torch.nn.CrossEntropyLoss(), params, [(x, y)], check_deterministic=False)


def curvlinops_eigsh(model, x, y, tols, rel) -> list[dict]:
    """curvlinops' Hessian as a scipy LinearOperator, scipy.sparse.linalg.eigsh (ARPACK, Lanczos) for lambda_1."""
    from scipy.sparse.linalg import LinearOperator, eigsh
    rows = []
    for ncv, tol in tols:
        calls = {"n": 0}
        start = time.perf_counter()
        scipy_op = curvlinops_hessian(model, x, y).to_scipy()

        def matvec(v, scipy_op=scipy_op):
            calls["n"] += 1
            return scipy_op.matvec(v)
        counted = LinearOperator(scipy_op.shape, matvec=matvec, dtype=scipy_op.dtype)
        v0 = np.random.default_rng(0).standard_normal(scipy_op.shape[0]).astype(scipy_op.dtype)
        values = eigsh(counted, k=1, which="LA", tol=tol, v0=v0, ncv=ncv, return_eigenvectors=False)
        rows.append({"tool": "curvlinops + scipy eigsh", "setting": f"ncv={ncv}, tol={tol}",
                     "seconds": time.perf_counter() - start, "hvps": calls["n"], "rel_error": rel(float(values[0]))})
    return rows


def curvlinops_trace(model, x, y, method: str, matvecs: int, seed: int) -> tuple[float, float]:
    """(estimate, seconds) of curvlinops' hutchpp_trace or xtrace with `matvecs` Hessian products."""
    import curvlinops
    torch.manual_seed(seed)
    start = time.perf_counter()
    estimate = getattr(curvlinops, method)(curvlinops_hessian(model, x, y), matvecs).item()
    return estimate, time.perf_counter() - start


def backpack_ggn_trace(model, x, y, chunk: int = 512) -> tuple[float, float]:
    """(Tr(G) of the mean loss, seconds): BackPACK's DiagGGNExact summed, chunk by chunk.
    Residual blocks (a Python forward with a sum) need its torch.fx converter. Its convolution
    backward builds modules in the default dtype, so a float64 run sets that for the duration."""
    default = torch.get_default_dtype()
    torch.set_default_dtype(x.dtype)
    try:
        return _backpack_ggn_trace(model, x, y, chunk)
    finally:
        torch.set_default_dtype(default)


def _backpack_ggn_trace(model, x, y, chunk: int) -> tuple[float, float]:
    from backpack import backpack, extend
    from backpack.extensions import DiagGGNExact
    plain = all(isinstance(m, (torch.nn.Sequential,)) or not list(m.children()) for m in model.modules())
    extended = extend(copy.deepcopy(model), use_converter=not plain)
    criterion = extend(torch.nn.CrossEntropyLoss())
    start = time.perf_counter()     # after extend (and its conversion): the passes only
    total = 0.0
    for i in range(0, len(x), chunk):
        xb, yb = x[i:i + chunk], y[i:i + chunk]
        extended.zero_grad()
        loss = criterion(extended(xb), yb)
        with backpack(DiagGGNExact()):
            loss.backward()
        total += sum(p.diag_ggn_exact.sum().item() for p in extended.parameters()) * len(xb) / len(x)
    return total, time.perf_counter() - start
