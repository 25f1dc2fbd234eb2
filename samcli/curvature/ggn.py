"""The Gauss-Newton part G of the Hessian: G = (1/n) sum_k J_k^T Lambda_k J_k.

J_k is the Jacobian of example k's outputs, Lambda_k the Hessian of the loss in the outputs
(cross-entropy: diag(p) - p p^T; squared error: I). H = G + (1/n) sum_k sum_c r_kc grad^2 f_kc.

Write Lambda_k = A_k A_k^T: then Tr(G) = (1/n) sum_k ||A_k^T J_k||_F^2, a sum of squared
per-example gradient norms of the C pseudo-losses a_kc . f_k. For a Linear or Conv layer those
gradients factor into the layer's inputs and output gradients (curvature/factors.py): one forward
and one batched (over c) backward to the layer outputs, never a per-example gradient in memory (the
trick BackPACK uses for its exact GGN diagonal). ggn_trace.py computes the exact trace so (any layer,
BatchNorm in eval mode, a vmapped fallback) and decides when Tr(H) = Tr(G); `per_example_gram` gives
from the same factors each example's C x C Gram matrix A_k^T J_k J_k^T A_k, whose eigenvalues are the
nonzero eigenvalues of the per-example G_k.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import cast

import torch
from torch import Tensor
from torch.func import jvp, vjp, vmap

from ..objective import Batch, Objective, cross_entropy, mean_squared_error, squared_error
from .factors import Entry, gram_matrix, rule_for


def supports_ggn(objective: Objective) -> bool:
    """Whether G has the form used here: a module's outputs under cross-entropy or squared error."""
    return objective.module is not None and objective.output_loss in (cross_entropy, squared_error, mean_squared_error)


def output_hessian_sqrt(objective: Objective, outputs: Tensor) -> Tensor:
    """A_k with A_k A_k^T = Lambda_k, shape (n, C, C)."""
    n, c = outputs.shape
    if objective.output_loss is squared_error:
        return torch.eye(c, dtype=outputs.dtype, device=outputs.device).expand(n, c, c)
    if objective.output_loss is mean_squared_error:     # ||f - y||^2 / C: Lambda = (2 / C) I
        return ((2 / c) ** 0.5 * torch.eye(c, dtype=outputs.dtype, device=outputs.device)).expand(n, c, c)
    p = outputs.softmax(-1)
    root = p.sqrt()
    # (diag(sqrt p) - p sqrt(p)^T)(...)^T = diag(p) - p p^T, using sum(p) = 1
    return torch.diag_embed(root) - p.unsqueeze(2) * root.unsqueeze(1)


def output_hessian_apply(objective: Objective, outputs: Tensor, u: Tensor) -> Tensor:
    """Lambda_k u_k for each example (u may carry a leading vmapped dimension)."""
    if objective.output_loss is squared_error:
        return u
    if objective.output_loss is mean_squared_error:
        return u * (2 / outputs.shape[-1])
    p = outputs.softmax(-1)
    return p * u - p * (p * u).sum(-1, keepdim=True)


class GGNOperator:
    """G over `data` as a linear operator: G v = J^T Lambda (J v), chunked and batchable."""

    def __init__(self, objective: Objective, theta: Tensor, data: Batch, chunk_size: int = 4096):
        self.objective, self.theta, self.data, self.chunk_size = objective, theta.detach(), data, chunk_size
        self.dim = objective.dim

    def _chunk(self, chunk: Batch, vectors: Tensor) -> Tensor:
        def f(t):
            return self.objective.outputs(t, chunk.inputs)
        # torch.func.vjp returns a pair without has_aux (its annotation is the union with the triple)
        outputs, pullback = cast("tuple[Tensor, Callable[..., tuple[Tensor, ...]]]", vjp(f, self.theta))
        jv = vmap(lambda v: jvp(f, (self.theta,), (v,))[1])(vectors)
        lam_jv = output_hessian_apply(self.objective, outputs.detach(), jv)
        return vmap(lambda u: pullback(u)[0])(lam_jv)

    def matmat(self, vectors: Tensor) -> Tensor:
        """G applied to each row of `vectors` (k, D)."""
        vectors = vectors.to(self.theta.dtype)
        n = len(self.data)
        out = torch.zeros_like(vectors)
        for chunk in self.data.chunks(self.chunk_size):
            out += self._chunk(chunk, vectors) / n      # the chunk's sum over examples
        return out

    def matvec(self, v: Tensor) -> Tensor:
        """G v."""
        return self.matmat(v.unsqueeze(0))[0]


def per_example_gram(objective: Objective, theta: Tensor, data: Batch) -> Tensor:
    """(n, C, C) Gram matrices A_k^T J_k J_k^T A_k, by the per-layer factorization; every parameter
    must belong to a Linear/Conv layer the table covers, each called once."""
    if objective.module is None:
        raise ValueError("per_example_gram needs an objective built from a module (Objective.from_module)")
    modules = dict(objective.module.named_modules())
    owners = list(dict.fromkeys(name.rsplit(".", 1)[0] if "." in name else "" for name in objective.names))
    if any(rule_for(modules[o]) is None for o in owners):
        raise ValueError("per_example_gram factorizes Linear and Conv1d/Conv2d layers only")
    captured: dict[str, tuple[Tensor, Tensor]] = {}

    def hook(name, module, args, out):
        if name in captured:
            raise ValueError(f"per_example_gram: layer {name} is called twice")
        captured[name] = (cast(Entry, rule_for(module)).patches(module, args[0].detach()), out)   # checked above
    handles = [modules[o].register_forward_hook(lambda mod, args, out, o=o: hook(o, mod, args, out)) for o in owners]
    try:
        with torch.enable_grad():
            outputs = objective.outputs(theta.detach().requires_grad_(True), data.inputs)
    finally:
        for h in handles:
            h.remove()
    roots = output_hessian_sqrt(objective, outputs.detach())               # (n, C, C)
    # d(a_c . f)/dz for every c at once: grad_outputs batched over the C columns of A.
    deltas = torch.autograd.grad(outputs, [captured[o][1] for o in owners], grad_outputs=roots.permute(2, 0, 1),
                                 is_grads_batched=True)
    gram = torch.zeros_like(roots)
    for o, delta in zip(owners, deltas):
        module = modules[o]
        rows = cast(Entry, rule_for(module)).rows(module, delta, lead=1)    # (C, n, P, Cout)
        gram += gram_matrix(captured[o][0], rows, float(module.bias is not None))
    return gram


def parameter_blocks(objective: Objective) -> list[list[int]]:
    """Indices of parameter tensors grouped by owning module (a layer's weight and bias together)."""
    groups: dict[str, list[int]] = {}
    for i, name in enumerate(objective.names):
        groups.setdefault(name.rsplit(".", 1)[0] if "." in name else name, []).append(i)
    return list(groups.values())
