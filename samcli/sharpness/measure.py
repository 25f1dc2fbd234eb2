"""One measurement: every notion the spec enables, in registry order, on one shared context.

Everything is measured through `Objective.loss`, the same function training descends, with the
model in eval mode (BatchNorm uses its running statistics, so the loss is a fixed function of
theta). Every stochastic estimate is seeded from spec.seed and carries a standard error or residual;
the notions draw from one generator in registry order, so a report depends on the spec alone.
"""
from __future__ import annotations

import time
from contextlib import contextmanager

import torch
from torch import Tensor

from .. import _version
from ..curvature.hvp import HessianOperator
from ..curvature.lanczos import lanczos
from ..errors import SamcliError
from ..objective import Batch, Objective
from ..spec.measure import MeasureSpec
from .context import MeasureContext
from .report import SharpnessReport

_DEFAULT_SPEC = MeasureSpec()       # every knob at its default


def measure(objective: Objective, theta: Tensor, data: Batch, spec: MeasureSpec = _DEFAULT_SPEC, *,
            chunk_size: int = 4096, checkpoint: str | None = None) -> SharpnessReport:
    """Measure the notions `spec` enables of L = mean loss over `data` at `theta`."""
    spec = MeasureSpec.build(spec.to_dict())          # a spec made by hand is checked like any other
    if not torch.isfinite(theta).all():
        raise SamcliError("the parameters are not finite (a diverged run?): sharpness is undefined there")
    if spec.k > objective.dim:
        raise SamcliError(f"k={spec.k} eigenvalues asked of a model with {objective.dim} parameters; "
                          f"ask for at most {objective.dim}")
    started = time.perf_counter()
    seconds: dict[str, float] = {}
    part = _timer(seconds, theta.device)
    objective.set_training(False)
    theta = theta.detach()
    ctx = MeasureContext(objective, theta, data, spec, chunk_size, torch.Generator().manual_seed(spec.seed),
                         HessianOperator(objective, theta, data, chunk_size))
    with part("gradient"):
        loss, ctx.gradient = objective.value_and_grad(theta, data, chunk_size)
        ctx.loss = loss.item()
    notions = spec.notions_to_run()
    if any(n.needs_lanczos for n in notions):
        with part("lanczos"):
            ctx.top = lanczos(ctx.hessian.matmat, objective.dim, k=spec.k, max_iter=spec.lanczos_iters,
                              tol=spec.lanczos_tol, generator=ctx.generator, device=theta.device)
    for notion in notions:
        with part(notion.name):
            ctx.results[notion.name] = _user_code(notion)(ctx)
    return SharpnessReport(spec.rho, len(data), objective.dim, ctx.loss, "eval", spec.seed, dict(ctx.results),
                           time.perf_counter() - started, seconds, spec.to_dict(), spec.hash(), _version.__version__,
                           checkpoint)


def _user_code(notion):
    """The notion's compute function; a registered notion that raises is reported as its own."""
    compute = notion.compute_function()
    if isinstance(notion.compute, str) and notion.compute.startswith("samcli."):
        return compute

    def guarded(ctx):
        try:
            return compute(ctx)
        except SamcliError:
            raise
        except Exception as err:
            raise SamcliError(f"sharpness notion {notion.name!r} ({getattr(compute, '__qualname__', compute)}) "
                              f"raised {type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
                              .rstrip(": ")) from None
    return guarded


def _timer(seconds: dict[str, float], device):
    """`with part(name):` adds the block's wall seconds to seconds[name]."""
    @contextmanager
    def part(name: str):
        start = time.perf_counter()
        try:
            yield
        finally:
            if device is not None and torch.device(device).type == "cuda":
                torch.cuda.synchronize(device)     # kernels run asynchronously; charge them to their part
            seconds[name] = seconds.get(name, 0.0) + time.perf_counter() - start
    return part


def measure_during_training(objective, theta, data, spec: MeasureSpec, chunk_size: int) -> dict[str, float]:
    """The notions `measure:` asks for, every `measure.every` steps, as sharp_<key> entries of metrics.jsonl."""
    sample = data
    if spec.samples is not None and spec.samples < len(data):
        index = torch.randperm(len(data), generator=torch.Generator().manual_seed(spec.seed))[:spec.samples]
        sample = data.take(index.to(data.inputs.device))
    report = measure(objective, theta, sample, spec, chunk_size=chunk_size)
    return {f"sharp_{k}": v for k, v in report.summary().items() if k != "loss"}
