"""The Gauss-Newton part G of the Hessian: G = (1/n) sum_k J_k^T Lambda_k J_k.

J_k is the Jacobian of example k's outputs, Lambda_k the Hessian of the loss in the outputs
(cross-entropy: diag(p) - p p^T; squared error: I). H = G + (1/n) sum_k sum_c r_kc grad^2 f_kc.

`exact_ggn_trace` computes Tr(G) exactly without forming J: write Lambda_k = A_k A_k^T, so
Tr(G) = (1/n) sum_k ||A_k^T J_k||_F^2, a sum of squared per-example gradient norms of the C
pseudo-losses a_kc . f_k. For a linear layer z = W a + b the per-example gradient is the outer
product delta a^T, whose squared norm factors as ||delta||^2 (||a||^2 + 1): one forward and one
batched (over c) backward to the layer outputs, never a per-example gradient in memory (the trick
BackPACK uses for its exact GGN diagonal). The same factors give each example's C x C Gram matrix
A_k^T J_k J_k^T A_k, whose eigenvalues are the nonzero eigenvalues of the per-example G_k.
ggn_trace.py extends the exact trace to convolutions, BatchNorm and any other layer, and decides
when Tr(H) = Tr(G).
"""
from __future__ import annotations


import torch
from torch import Tensor, nn
from torch.func import jvp, vjp, vmap

from ..objective import Batch, Objective, cross_entropy, squared_error


def supports_ggn(objective: Objective) -> bool:
    return objective.module is not None and objective.output_loss in (cross_entropy, squared_error)


def linear_only(objective: Objective) -> bool:
    """True when every parameter belongs to an nn.Linear (so the factorized trace applies)."""
    if not supports_ggn(objective):
        return False
    owners = {name.rsplit(".", 1)[0] for name in objective.names}
    modules = dict(objective.module.named_modules())
    return all(isinstance(modules.get(owner), nn.Linear) for owner in owners)


def output_hessian_sqrt(objective: Objective, outputs: Tensor) -> Tensor:
    """A_k with A_k A_k^T = Lambda_k, shape (n, C, C)."""
    n, c = outputs.shape
    if objective.output_loss is squared_error:
        return torch.eye(c, dtype=outputs.dtype, device=outputs.device).expand(n, c, c)
    p = outputs.softmax(-1)
    root = p.sqrt()
    # (diag(sqrt p) - p sqrt(p)^T)(...)^T = diag(p) - p p^T, using sum(p) = 1
    return torch.diag_embed(root) - p.unsqueeze(2) * root.unsqueeze(1)


def output_hessian_apply(objective: Objective, outputs: Tensor, u: Tensor) -> Tensor:
    """Lambda_k u_k for each example (u may carry a leading vmapped dimension)."""
    if objective.output_loss is squared_error:
        return u
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
        outputs, pullback = vjp(f, self.theta)
        jv = vmap(lambda v: jvp(f, (self.theta,), (v,))[1])(vectors)
        lam_jv = output_hessian_apply(self.objective, outputs.detach(), jv)
        return vmap(lambda u: pullback(u)[0])(lam_jv)

    def matmat(self, vectors: Tensor) -> Tensor:
        vectors = vectors.to(self.theta.dtype)
        n = len(self.data)
        out = torch.zeros_like(vectors)
        for chunk in self.data.chunks(self.chunk_size):
            out += self._chunk(chunk, vectors) / n      # the chunk's sum over examples
        return out

    def matvec(self, v: Tensor) -> Tensor:
        return self.matmat(v.unsqueeze(0))[0]


def per_example_gram(objective: Objective, theta: Tensor, data: Batch) -> Tensor:
    """(n, C, C) Gram matrices A_k^T J_k J_k^T A_k, by the linear-layer factorization."""
    linears = [m for m in objective.module.modules() if isinstance(m, nn.Linear)]
    captured: list[tuple[Tensor, Tensor]] = []
    handles = [m.register_forward_hook(lambda mod, inp, out: captured.append((inp[0], out))) for m in linears]
    try:
        with torch.enable_grad():
            outputs = objective.outputs(theta.detach().requires_grad_(True), data.inputs)
    finally:
        for h in handles:
            h.remove()
    roots = output_hessian_sqrt(objective, outputs.detach())               # (n, C, C)
    layer_outputs = [out for _, out in captured]
    # d(a_c . f)/dz for every c at once: grad_outputs batched over the C columns of A.
    deltas = torch.autograd.grad(outputs, layer_outputs, grad_outputs=roots.permute(2, 0, 1),
                                 is_grads_batched=True)
    gram = torch.zeros_like(roots)
    for (inputs, _), delta, module in zip(captured, deltas, linears):
        scale = inputs.detach().pow(2).sum(1) + (1.0 if module.bias is not None else 0.0)   # (n,)
        gram += torch.einsum("cno,dno->ncd", delta, delta) * scale[:, None, None]
    return gram


def exact_ggn_trace(objective: Objective, theta: Tensor, data: Batch, chunk_size: int = 4096) -> float:
    total = 0.0
    for chunk in data.chunks(chunk_size):
        total += torch.diagonal(per_example_gram(objective, theta, chunk), dim1=1, dim2=2).sum().item()
    return total / len(data)


def parameter_blocks(objective: Objective) -> list[list[int]]:
    """Indices of parameter tensors grouped by owning module (a layer's weight and bias together)."""
    groups: dict[str, list[int]] = {}
    for i, name in enumerate(objective.names):
        groups.setdefault(name.rsplit(".", 1)[0] if "." in name else name, []).append(i)
    return list(groups.values())
