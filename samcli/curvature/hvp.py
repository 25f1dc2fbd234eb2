"""Hessian-vector products of the objective over a data set: forward-over-reverse, chunked, batched.

H v = d/dt grad L(theta + t v) at t = 0, computed as jvp(grad L) through torch.func. Over a data
set the product is the example-weighted sum over fixed-size chunks, so memory is bounded by the
chunk. `matmat` pushes k vectors through one vmapped jvp: the forward/backward graph is built once
for all k, which is what makes batched products cheaper per vector than k single ones.
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
                 buffers: Optional[dict] = None):
        self.objective, self.theta, self.data = objective, theta.detach(), data
        self.chunk_size = chunk_size
        # A pass in training mode updates BatchNorm statistics in place: hand it throwaway copies.
        self.buffers = {k: v.clone() for k, v in objective.buffers.items()} if buffers is None else buffers
        self.dim = objective.dim
        self.matvecs = 0   # Hessian-vector products served so far (a batched call counts each vector)

    @property
    def shape(self) -> tuple[int, int]:
        return (self.dim, self.dim)

    def _chunk_hvp(self, chunk: Batch, v: Tensor) -> Tensor:
        def gradient(t):
            return grad(self.objective.loss)(t, chunk, self.buffers)
        return jvp(gradient, (self.theta,), (v,))[1]

    def matvec(self, v: Tensor) -> Tensor:
        self.matvecs += 1
        v = v.to(self.theta.dtype)   # callers may keep their vectors in float64
        n = len(self.data)
        out = torch.zeros_like(self.theta)
        for chunk in self.data.chunks(self.chunk_size):
            out += self._chunk_hvp(chunk, v) * (len(chunk) / n)
        return out

    def matmat(self, vectors: Tensor) -> Tensor:
        """H applied to each row of `vectors` (k, D) -> (k, D)."""
        self.matvecs += vectors.shape[0]
        vectors = vectors.to(self.theta.dtype)
        n = len(self.data)
        out = torch.zeros_like(vectors)
        for chunk in self.data.chunks(self.chunk_size):
            out += vmap(lambda v: self._chunk_hvp(chunk, v))(vectors) * (len(chunk) / n)
        return out

    __matmul__ = matvec
