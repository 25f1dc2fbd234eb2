"""m-SAM at SAM's cost: per-group ascent steps without per-example gradients in memory.

m-SAM's direction is d = mean_j grad L_{B_j}(x + s_j g_j), s_j = rho/(||g_j|| + eps), over groups
B_j of m consecutive examples. The vmapped reference (`vmapped_msam_direction`) materializes every
g_j. For Linear and Conv1d/Conv2d layers it need not: with patches a_{k,p} (a Linear layer has one
patch per example, the bias is a constant-1 column) and output gradients delta_{k,p} of the
unperturbed pass, the layer's part of g_j is (1/m) sum_{k in B_j, p} delta_{k,p} a_{k,p}^T. So

  * ||g_j||^2 comes from those factors: either the patch Gram sum (delta . delta)(a . a) over pairs
    in the group, or the group kernel materialized, whichever is cheaper for the layer's shape;
  * the perturbed pass for all groups is ONE batched pass: a forward hook adds s_j (g_j a'_{i,p})
    to each layer's output (same factor choice), with delta, a, s detached. The weights' own
    gradient through that pass is then exactly sum_j grad L_{B_j}(x + s_j g_j), because the
    correction is constant in the weights, and the backward to the layer input carries s_j g_j^T.

The layers' patches, rows and rules on them are curvature/factors.py's table (shared with the GGN).

Any model with a parameter outside such layers, a batch-statistics layer, a layer used twice, or an
input without the batch as first dimension is measured by the vmapped reference (`msam_path` says
which and why; the last two show only while running and are caught there).
"""
from __future__ import annotations

from typing import Optional, cast

import torch
from torch import Tensor, nn
from torch.func import grad_and_value, vmap

from .ascent import ascent_step
from .curvature.factors import (
    Entry,
    factored_forward,
    gradients,
    lookup,
    multiply_adds,
    norms,
    rule_for,
    squared_norms,
)
from .errors import ConfigError
from .objective import Batch, Objective


class _Unsupported(Exception):
    """A layer cannot be factorized after all (seen only while running it): use the reference."""


def _check(objective: Objective, batch: Batch, m: int) -> None:
    if len(batch) % m:
        raise ConfigError(f"optimizer.m={m} does not divide the batch of {len(batch)} examples; pick a divisor")
    if objective.buffers:
        raise ConfigError("method msam vmaps over groups and cannot update BatchNorm statistics; "
                          "use model.norm: group or none, or method sam")


def _factored_layers(objective: Objective) -> tuple[Optional[dict[str, nn.Module]], str]:
    """The layers the factorized path handles, or None and the reason it cannot run."""
    if objective.call is None or objective.output_loss is None or objective.module is None:
        return None, "the task is not a model (no module to hook)"
    layers: dict[str, nn.Module] = {}
    covered: set[str] = set()
    for name, module in objective.module.named_modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):    # even without buffers or parameters
            return None, f"layer {name} ({type(module).__name__}) mixes the examples of a batch"
        own = [n for n, _ in module.named_parameters(recurse=False)]
        if not own:
            continue
        if lookup(module) is None:
            return None, f"layer {name or 'model'} ({type(module).__name__}) has parameters and is not Linear/Conv"
        if rule_for(module) is None:
            return None, f"layer {name} is a grouped, string-padded or non-zero-padded convolution"
        layers[name] = module
        covered.update(f"{name}.{n}" if name else n for n in own)
    if covered != set(objective.names):
        return None, "the objective's parameters are not exactly those of its Linear/Conv layers"
    return layers, "factorized"


def msam_path(objective: Objective) -> str:
    """'factorized', or 'vmapped: <why>' for a model the factorized path does not cover."""
    layers, why = _factored_layers(objective)
    return why if layers is not None else f"vmapped: {why}"


def msam_direction(objective: Objective, theta: Tensor, batch: Batch, rho: float, m: int, grad_eps: float,
                   chunk_size: int) -> tuple[Tensor, float, float]:
    """m-SAM's (direction, loss L_B(x), ||grad L_B(x)||); groups are consecutive runs of m examples,
    chunks hold whole groups (chunk_size // m of them)."""
    _check(objective, batch, m)
    layers, _ = _factored_layers(objective)
    if layers is not None:
        try:
            return _factorized(objective, layers, theta, batch, rho, m, grad_eps, chunk_size)
        except _Unsupported:
            pass
    return vmapped_msam_direction(objective, theta, batch, rho, m, grad_eps, chunk_size)


def _group_chunks(batch: Batch, m: int, chunk_size: int):
    groups_per_chunk = max(1, chunk_size // m)
    groups = len(batch) // m
    for start in range(0, groups, groups_per_chunk):
        yield batch.take(slice(start * m, min(groups, start + groups_per_chunk) * m))


# ---- the reference: per-group gradients, vmapped ----------------------------------------------------

def vmapped_msam_direction(objective: Objective, theta: Tensor, batch: Batch, rho: float, m: int,
                           grad_eps: float, chunk_size: int) -> tuple[Tensor, float, float]:
    """msam_direction by vmapped per-group gradients (torch.func): any model, every g_j materialized."""
    _check(objective, batch, m)
    value_and_grad = grad_and_value(objective.named_loss)
    params = objective.unflatten(theta)

    def group_direction(inputs, targets):
        group = Batch(inputs, targets)
        g, loss = value_and_grad(params, group)
        step = ascent_step(g, rho, grad_eps)
        d, _ = value_and_grad({k: params[k] + step[k] for k in params}, group)
        return d, loss, g

    direction, g_sum, loss_sum = torch.zeros_like(theta), torch.zeros_like(theta), 0.0
    for part in _group_chunks(batch, m, chunk_size):
        k = len(part) // m
        inputs = part.inputs.reshape(k, m, *part.inputs.shape[1:])
        targets = part.targets.reshape(k, m, *part.targets.shape[1:])
        d, losses, g = vmap(group_direction)(inputs, targets)
        direction += torch.cat([d[name].sum(0).reshape(-1) for name in objective.names])
        g_sum += torch.cat([g[name].sum(0).reshape(-1) for name in objective.names])
        loss_sum += losses.sum().item()
    groups = len(batch) // m
    return direction / groups, loss_sum / groups, (g_sum / groups).norm().item()


# ---- the factorized path ---------------------------------------------------------------------------

def use_kernel(rows: int, features: int, channels: int) -> bool:
    """Materialize the group kernel (rows x features x channels multiply-adds per group) rather than
    work with patch Grams (rows^2 (features + channels))? rows = m x patches per example. The counts are
    curvature/factors.py's `multiply_adds`; m-SAM leaves the bias's term uncounted and takes Grams on a
    tie, as it always has (its float32 directions depend on the choice)."""
    gram, materialized = multiply_adds(rows, features, channels, bias=0)
    return gram > materialized


class _LayerFactors:
    """One layer's unperturbed factors for a chunk of G groups of m examples: patches A (G, mP, D)
    and output gradients Delta (G, mP, C), both of the SUM of per-example losses (their layer gradient
    is m g_j); the bias's patch is a constant 1.

    Bitwise m-SAM: the float operations are those m-SAM has always done, so its float32 directions do
    not move at rounding level. The 1/m is applied where it always was (the group kernel and the
    bias's 1/m, the Gram sum's 1/m^2, the factored correction before s_j): for an m that is not a
    power of two, s_j / m applied to m g_j rounds differently. Patches are made contiguous (n, P, K),
    the layout m-SAM's matrix products always read (MKL rounds some shapes differently on the
    table's transposed (n, K, P) copy; for m > 1 the reshape into groups copies anyway)."""

    def __init__(self, module: nn.Module, a: Tensor, delta: Tensor, m: int):
        # _factored_layers took only the layers the table covers
        self.module, self.rule, self.bias = module, cast(Entry, rule_for(module)), float(module.bias is not None)
        self.m = m
        patches, rows = self.rule.patches(module, a).contiguous(), self.rule.rows(module, delta)
        groups = a.shape[0] // m
        self.A = patches.reshape(groups, -1, patches.shape[-1])
        self.Delta = rows.reshape(groups, -1, rows.shape[-1])
        self.kernel: Optional[Tensor] = None
        rows_per_group, features = self.A.shape[1:]
        if use_kernel(rows_per_group, features, self.Delta.shape[2]):
            kernel, self.kernel_bias = gradients(self.A, self.Delta, self.bias / m)     # bias: g_j's
            self.kernel = kernel / m if m > 1 else kernel                               # g_j

    def sq_norms(self) -> Tensor:
        """||g_j||^2 of this layer's weight and bias, per group."""
        if self.kernel is not None:
            return norms(self.kernel, cast(Tensor, self.kernel_bias))
        total = squared_norms(self.A, self.Delta, self.bias, gram=True)        # m^2 ||g_j||^2
        return total / self.m ** 2 if self.m > 1 else total

    def correction(self, a_perturbed: Tensor, output: Tensor, scale: Tensor) -> Tensor:
        """s_j g_j applied to the perturbed pass's layer input, shaped as the layer output."""
        if self.kernel is not None:
            return self.rule.grouped_forward(self.module, a_perturbed, self.kernel, self.kernel_bias, scale)
        groups = scale.shape[0]
        patches = self.rule.patches(self.module, a_perturbed).contiguous()
        per_example_rows = patches.shape[1]
        z = factored_forward(self.A, self.Delta, self.bias, patches.reshape(groups, -1, patches.shape[-1]))
        if self.m > 1:
            z = z / self.m                                                     # m g_j a' -> g_j a'
        z = (scale.view(groups, 1, 1) * z).reshape(-1, per_example_rows, z.shape[-1])
        return self.rule.as_output(self.module, z, output)


def _forward(objective: Objective, layers: dict[str, nn.Module], theta: Tensor, batch: Batch, hook):
    """Sum of per-example losses with `hook(name, module, input, output)` on every factored layer;
    returns (loss sum, leaf x)."""
    call, output_loss = objective.call, objective.output_loss
    if call is None or output_loss is None:      # _factored_layers refused such a task
        raise _Unsupported("the task is not a model (no module to hook)")
    x = theta.detach().requires_grad_(True)
    handles = [module.register_forward_hook(lambda mod, args, out, name=name: hook(name, mod, args[0], out))
               for name, module in layers.items()]
    try:
        with torch.enable_grad():
            outputs = call(objective.unflatten(x), objective.buffers, batch.inputs)
            losses = output_loss(outputs, batch.targets)
    finally:
        for handle in handles:
            handle.remove()
    if losses.shape != (len(batch),):
        raise _Unsupported("the loss is not one value per example")
    return losses.sum(), x


def _factorized(objective: Objective, layers: dict[str, nn.Module], theta: Tensor, batch: Batch, rho: float, m: int,
                grad_eps: float, chunk_size: int) -> tuple[Tensor, float, float]:
    """msam_direction by the layers' factors: one unperturbed and one batched perturbed pass per chunk."""
    direction, g_sum, loss_sum = torch.zeros_like(theta), torch.zeros_like(theta), 0.0
    for part in _group_chunks(batch, m, chunk_size):
        seen: dict[str, tuple[Tensor, Tensor]] = {}

        def collect(name, module, a, out, seen=seen, part=part):
            if name in seen or a.shape[0] != len(part):
                raise _Unsupported(f"layer {name} runs twice or loses the batch dimension")
            seen[name] = (a.detach(), out)

        loss, x = _forward(objective, layers, theta, part, collect)
        names = list(seen)
        grads = torch.autograd.grad(loss, [x] + [seen[n][1] for n in names], allow_unused=True,
                                    materialize_grads=True)
        factors = {n: _LayerFactors(layers[n], seen[n][0], delta, m) for n, delta in zip(names, grads[1:])}
        lengths = torch.sqrt(cast(Tensor, sum(f.sq_norms() for f in factors.values())))   # ||g_j||, a layer at least
        scale = rho / (lengths + grad_eps)                                 # s_j, one per group

        def perturb(name, module, a, out, factors=factors, scale=scale):
            return out + factors[name].correction(a, out, scale)

        perturbed_loss, x = _forward(objective, layers, theta, part, perturb)
        (d,) = torch.autograd.grad(perturbed_loss, x)
        direction += d
        g_sum += grads[0]
        loss_sum += loss.item()
    n = len(batch)
    return direction / n, loss_sum / n, (g_sum / n).norm().item()
