"""Hessian-vector products of the objective over a data set, chunked so memory stays bounded.

Two ways to the same product, chosen by what the caller does with the operator:
- kept graph (default when the data fit in one chunk): build grad L once with create_graph and
  answer each product by one backward pass through it (reverse-over-reverse). Lanczos asks for
  dozens of products at one point; reusing the forward and first backward makes each product
  cost about 1.5 gradients instead of 3 (measured, benchmarks/curvature.py).
- streamed (data in several chunks): per chunk, forward-over-reverse jvp(grad L) through
  torch.func, vmapped over the vectors of a `matmat`, so only one chunk's graph is alive.
Both are tested against the dense Hessian. Training-mode BatchNorm passes update the buffers
they are handed in place, so the operator always works on throwaway copies.
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor
from torch.func import grad, jvp, vmap

from ..objective import Batch, Objective


class HessianOperator:
    """The Hessian of mean_k L_k(theta) over `data` as a symmetric linear operator on R^D."""

    def __init__(self, objective: Objective, theta: Tensor, data: Batch, chunk_size: int = 4096,
                 buffers: Optional[dict] = None, keep_graph: Optional[bool] = None):
        self.objective, self.theta, self.data = objective, theta.detach(), data
        self.chunk_size = chunk_size
        self.buffers = {k: v.clone() for k, v in objective.buffers.items()} if buffers is None else buffers
        self.keep_graph = len(data) <= chunk_size if keep_graph is None else keep_graph
        self.dim = objective.dim
        self.matvecs = 0          # products served so far (a matmat counts each vector)
        self._graphs: Optional[list] = None

    @property
    def shape(self) -> tuple[int, int]:
        """The operator's shape (D, D)."""
        return (self.dim, self.dim)

    def _gradient_graphs(self):
        """(x, grad L_chunk(x) with its graph, chunk weight) per chunk; kept when keep_graph."""
        if self._graphs is not None:
            yield from self._graphs
            return
        graphs = []
        for chunk in self.data.chunks(self.chunk_size):
            with torch.enable_grad():
                x = self.theta.clone().requires_grad_(True)
                (g,) = torch.autograd.grad(self.objective.loss(x, chunk, self.buffers), x, create_graph=True)
            graphs.append((x, g, len(chunk) / len(self.data)))
            if not self.keep_graph:
                yield graphs.pop()
        if self.keep_graph:
            self._graphs = graphs
            yield from graphs

    def matvec(self, v: Tensor) -> Tensor:
        """H v for one vector v of length D, in the parameters' dtype."""
        self.matvecs += 1
        v = v.to(self.theta.dtype)      # callers may keep their vectors in float64
        out = torch.zeros_like(self.theta)
        for x, g, weight in self._gradient_graphs():
            if g.requires_grad:         # else the loss is linear in theta and H = 0
                (hv,) = torch.autograd.grad(g, x, v, retain_graph=self.keep_graph, allow_unused=True)
                if hv is not None:
                    out += hv * weight
        return out

    def matmat(self, vectors: Tensor) -> Tensor:
        """H applied to each row of `vectors` (k, D) -> (k, D)."""
        module = self.objective.module
        if self.keep_graph or (module is not None and module.training and self.buffers):
            # training-mode BatchNorm writes its buffers in place, which vmap refuses
            return torch.stack([self.matvec(v) for v in vectors])
        self.matvecs += vectors.shape[0]
        vectors = vectors.to(self.theta.dtype)
        out = torch.zeros_like(vectors)
        for chunk in self.data.chunks(self.chunk_size):
            def chunk_hvp(v, chunk=chunk):
                return jvp(lambda t: grad(self.objective.loss)(t, chunk, self.buffers), (self.theta,), (v,))[1]
            out += vmap(chunk_hvp)(vectors) * (len(chunk) / len(self.data))
        return out

    __matmul__ = matvec
