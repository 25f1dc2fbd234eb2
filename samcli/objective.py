"""THE objective: one functional loss of (flat parameters, batch), used by every layer above.

Parameters live in one flat vector `theta` (length D). Training steps, Hessian-vector products,
dense Hessians and every sharpness notion call `Objective.loss` / `per_example_losses`, so they
cannot disagree about what "the loss" is. A flat vector keeps the linear algebra (ascent
directions, Lanczos, probes) to single tensor ops.

A task is anything that provides per-example losses of (params dict, buffers, inputs, targets);
`Objective.from_module` covers model + data set tasks, the paper's analytic toys build their own.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import NamedTuple, Optional

import torch
from torch import Tensor, nn

from .losses import LOSSES, cross_entropy, known_loss, loss_label, mean_squared_error, squared_error  # noqa: F401
from .spec.losses import LOSS_ALIASES, LOSS_NAMES, resolve_loss  # noqa: F401  (re-exported)

PerExampleFn = Callable[[dict, dict, Tensor, Tensor], Tensor]


def _public_backward(outputs, seeds, keep_graph, create_graph, inputs, allow_unreachable, accumulate_grad):
    torch.autograd.backward(outputs, seeds, retain_graph=keep_graph, create_graph=create_graph, inputs=inputs)


# what torch.autograd.backward ends in, called without its per-call Python checks; a torch without
# this internal entry point gets the public function (the same accumulation, a little slower)
_run_backward = getattr(getattr(torch.autograd.Variable, "_execution_engine", None), "run_backward", _public_backward)


@dataclass(frozen=True)
class Batch:
    """Inputs and targets of a set of examples, first dimension the example."""
    inputs: Tensor
    targets: Tensor

    def __len__(self) -> int:
        return self.inputs.shape[0]

    def take(self, index: Tensor | slice) -> Batch:
        """The examples at `index` (integer or boolean tensor, or a slice) as a new Batch."""
        if isinstance(index, Tensor) and not index.is_floating_point() and index.dtype != torch.bool:
            # same gather as inputs[index], without the generic indexing machinery
            if index.dim() == 1:        # what the samplers draw: no reshaping (a third of the cost)
                return Batch(self.inputs.index_select(0, index.to(self.inputs.device)),
                             self.targets.index_select(0, index.to(self.targets.device)))
            flat = index.reshape(-1)
            inputs = self.inputs.index_select(0, flat.to(self.inputs.device))
            targets = self.targets.index_select(0, flat.to(self.targets.device))
            return Batch(inputs.reshape((*index.shape, *inputs.shape[1:])),
                         targets.reshape((*index.shape, *targets.shape[1:])))
        return Batch(self.inputs[index], self.targets[index])

    def chunks(self, size: int) -> Iterator[Batch]:
        """Consecutive batches of at most `size` examples covering this one (itself when it fits)."""
        if 0 < len(self) <= size:    # the usual mini-batch: itself, not a sliced copy of its views
            yield self
            return
        for start in range(0, len(self), size):
            yield self.take(slice(start, start + size))

    def to(self, device=None, dtype=None) -> Batch:
        """The batch on `device`, floating-point tensors cast to `dtype` (integer tensors keep theirs)."""
        inputs = self.inputs.to(device=device, dtype=dtype if self.inputs.is_floating_point() else None)
        targets = self.targets.to(device=device, dtype=dtype if self.targets.is_floating_point() else None)
        return Batch(inputs, targets)


class StatelessCall:
    """`torch.func.functional_call(module, (params, buffers), (inputs,))` for one fixed module: the
    same swap of tensors into the module for the duration of the call, with the parameter and
    buffer slots (tied ones included) found once instead of on every call, which at batch size 1
    costs as much as the forward itself."""

    def __init__(self, module: nn.Module):
        self.module = module
        canonical = {id(p): name for name, p in module.named_parameters()}
        canonical.update({id(b): name for name, b in module.named_buffers()})
        self.slots = []       # (owner module, "_parameters" or "_buffers", attribute, canonical name)
        for table, members in (("_parameters", module.named_parameters(remove_duplicate=False)),
                               ("_buffers", module.named_buffers(remove_duplicate=False))):
            for name, tensor in members:
                owner, _, attr = name.rpartition(".")
                self.slots.append((module.get_submodule(owner), table, attr, canonical[id(tensor)]))

    def __call__(self, params: dict[str, Tensor], buffers: dict[str, Tensor], inputs: Tensor) -> Tensor:
        """The module's outputs on `inputs` with `params` and `buffers` swapped in for the call."""
        saved = []
        try:
            for owner, table, attr, name in self.slots:
                source = params if table == "_parameters" else buffers
                if name in source:       # as functional_call (strict=False): absent names keep the module's
                    slots = getattr(owner, table)
                    saved.append((slots, attr, slots[attr]))
                    slots[attr] = source[name]
            return self.module(inputs)
        finally:
            for slots, attr, original in reversed(saved):
                slots[attr] = original


class _Bound(NamedTuple):
    """A flat vector of a `bound` block, with what passes at it reuse."""
    vector: Tensor
    named: dict[str, Tensor]      # per-tensor leaves (views of vector, requires_grad)
    leaves: tuple[Tensor, ...]    # the same, in order
    grad: Tensor                  # flat gradient buffer; each leaf's .grad is a view of it
    one: Tensor                   # d loss / d loss, the backward's seed


class Objective:
    """L(theta) = mean_k L_k(theta) over a batch, as pure functions of a flat parameter vector.

    `buffers` (BatchNorm running statistics) are state outside theta. In training mode a forward
    pass updates the buffer tensors it is handed in place; callers hand clones to passes whose
    statistics must be discarded (SAM's perturbed pass), see `methods.py`.
    """

    def __init__(self, per_example: PerExampleFn, shapes: dict[str, torch.Size], buffers: dict[str, Tensor],
                 module: Optional[nn.Module] = None, output_loss: Optional[Callable] = None):
        self._per_example = per_example
        self.names = list(shapes)
        self.shapes = [torch.Size(s) for s in shapes.values()]
        self._view_shapes = [tuple(s) for s in self.shapes]     # view() parses a tuple faster than a Size
        self.sizes = [math.prod(s) for s in self.shapes]
        self.dim = sum(self.sizes)
        self.buffers = buffers
        self.module = module               # the nn.Module behind a model task (None for toys)
        self.output_loss = output_loss     # loss of (outputs, targets) for model tasks
        self.loss_label: Optional[str] = None    # the loss in words (from_module), for reports
        # module outputs of (params dict, buffers dict, inputs), for model tasks
        self.call: Optional[StatelessCall] = None
        self._bound: dict[int, _Bound] = {}       # id(vector) -> _Bound, inside a `bound` block
        self._shift: Optional[tuple[Tensor, Tensor]] = None      # (bound vector, where `shifted` writes)

    # ---- construction ------------------------------------------------------------------------
    @classmethod
    def from_module(cls, module: nn.Module, loss: str | Callable = "cross-entropy") -> tuple[Objective, Tensor]:
        """Wrap a module and a loss (a name, a per-example function, or a torch loss module: see
        `known_loss`); returns the objective and the module's current flat parameters."""
        label, loss = loss_label(loss), known_loss(loss)
        output_loss = LOSSES[resolve_loss(loss)] if isinstance(loss, str) else loss
        named = dict(module.named_parameters())
        buffers = {k: v for k, v in module.named_buffers()}
        call = StatelessCall(module)

        def per_example(params, bufs, inputs, targets):
            return output_loss(call(params, bufs, inputs), targets)

        objective = cls(per_example, {k: v.shape for k, v in named.items()}, buffers, module, output_loss)
        objective.call = call
        objective.loss_label = label
        theta = torch.cat([p.detach().reshape(-1) for p in named.values()])
        return objective, theta

    # ---- flat <-> named ----------------------------------------------------------------------
    def unflatten(self, theta: Tensor) -> dict[str, Tensor]:
        """The flat vector `theta` as named views shaped like the module's parameters."""
        pieces = theta.split_with_sizes(self.sizes)      # torch.split's Python dispatch costs as much
        return {n: p.view(s) for n, p, s in zip(self.names, pieces, self._view_shapes)}

    def load_into_module(self, theta: Tensor) -> None:
        """Copy the flat vector `theta` into the module's parameters, in place."""
        if self.module is None:
            raise TypeError("load_into_module needs an objective built from a module (Objective.from_module)")
        with torch.no_grad():
            for name, value in self.unflatten(theta).items():
                self.module.get_parameter(name).copy_(value)

    @contextmanager
    def bound(self, theta: Tensor) -> Iterator[None]:
        """Within the block, passes at `theta` itself (the training loop's vector, detached, which it
        updates in place) and at the points `shifted` writes differentiate through per-tensor leaves made here
        once, not split off a flat vector per pass: at batch size 1 the split, its views and their
        requires_grad_ cost a tenth of a step. The leaves are views, so they hold current values.
        A gradient there (one chunk) is a buffer the next pass at the same vector overwrites."""
        previous = self._bound, self._shift
        shift_target = torch.empty_like(theta)
        self._bound = {id(v): self._bound_vector(v) for v in (theta, shift_target)}
        self._shift = (theta, shift_target)
        try:
            yield
        finally:
            self._bound, self._shift = previous

    def _bound_vector(self, vector: Tensor) -> _Bound:
        named, grad = self._leaves(vector), torch.empty_like(vector)
        for leaf, view in zip(named.values(), self.unflatten(grad).values()):
            leaf.grad = view
        seed = torch.ones((), dtype=vector.dtype, device=vector.device)
        return _Bound(vector, named, tuple(named.values()), grad, seed)

    def _bound_entry(self, theta: Tensor) -> Optional[_Bound]:
        entry = self._bound.get(id(theta))
        return entry if entry is not None and entry.vector is theta else None

    def shifted(self, theta: Tensor, step: Tensor) -> Tensor:
        """theta + step (SAM's ascent point). From the bound vector it is written into the block's
        second bound vector, whose leaves are ready: valid until the next such call, which overwrites it."""
        if self._shift is not None and theta is self._shift[0]:
            return torch.add(theta, step, out=self._shift[1])
        return theta + step

    def _leaves(self, theta: Tensor) -> dict[str, Tensor]:
        # leaves per parameter tensor, not one flat leaf: the backward then skips a split's
        # and every view's backward node (the same values; what small batches pay for)
        return {k: v.requires_grad_(True) for k, v in self.unflatten(theta.detach()).items()}

    def set_training(self, training: bool) -> None:
        """Put the module (if any) in training or eval mode."""
        if self.module is not None:
            self.module.train(training)

    # ---- the loss ----------------------------------------------------------------------------
    def per_example_losses(self, theta: Tensor, batch: Batch, buffers: Optional[dict] = None) -> Tensor:
        """The vector of L_k(theta) for the examples of `batch`."""
        return self.named_loss(self.unflatten(theta), batch, buffers, reduce=False)

    def named_loss(self, params: dict[str, Tensor], batch: Batch, buffers: Optional[dict] = None,
                   reduce: bool = True) -> Tensor:
        """The same loss of the named parameter tensors: for per-group gradients under vmap, where
        differentiating through the flat vector's split would materialize a copy per group."""
        bufs = self.buffers if buffers is None else buffers
        losses = self._per_example(params, bufs, batch.inputs, batch.targets)
        if not reduce:
            return losses
        # the mean of one loss is that loss, exactly (x / 1); a view skips the reduction and its backward
        return losses.view(()) if losses.numel() == 1 else losses.mean()

    def loss(self, theta: Tensor, batch: Batch, buffers: Optional[dict] = None) -> Tensor:
        """L(theta): the mean of the per-example losses over `batch`."""
        return self.per_example_losses(theta, batch, buffers).mean()

    def outputs(self, theta: Tensor, inputs: Tensor) -> Tensor:
        """The model's outputs f(theta) on `inputs`, with the objective's buffers."""
        if self.call is None:
            raise TypeError("outputs needs an objective built from a module (Objective.from_module)")
        return self.call(self.unflatten(theta), self.buffers, inputs)

    # ---- full-data passes, chunked so memory stays bounded -----------------------------------
    def value_and_grad(self, theta: Tensor, data: Batch, chunk_size: int,
                       buffers: Optional[dict] = None) -> tuple[Tensor, Tensor]:
        """Mean loss and its gradient over all of `data`, summed over chunks (exact, not a sample)."""
        n = len(data)
        if n <= chunk_size:     # the usual mini-batch: one pass, no accumulator, no (exact) scaling by 1
            bound = self._bound_entry(theta)
            if bound is not None:
                return self._bound_value_and_grad(bound, data, buffers)
            return self._chunk_value_and_grad(theta, data, buffers, None)
        total_loss: Optional[Tensor] = None
        total_grad: Optional[Tensor] = None
        for chunk in data.chunks(chunk_size):
            value, g = self._chunk_value_and_grad(theta, chunk, buffers, len(chunk) / n)
            if total_loss is None or total_grad is None:
                total_loss, total_grad = value, g
            else:
                total_loss, total_grad = total_loss + value, total_grad.add_(g)
        assert total_loss is not None and total_grad is not None    # n > chunk_size: at least one chunk
        return total_loss, total_grad

    def value_grad_and_losses(self, theta: Tensor, data: Batch, chunk_size: int,
                              buffers: Optional[dict] = None) -> tuple[Tensor, Tensor, Tensor]:
        """value_and_grad's mean loss and gradient, and the per-example losses of the same pass (ESAM's
        data selection compares them with those at the perturbed point). Several chunks: the losses
        come from one more forward, on throwaway copies of the buffers."""
        if len(data) > chunk_size:
            value, g = self.value_and_grad(theta, data, chunk_size, buffers)
            scratch = {k: v.clone() for k, v in (self.buffers if buffers is None else buffers).items()}
            with torch.no_grad():
                losses = torch.cat([self.per_example_losses(theta, c, scratch) for c in data.chunks(chunk_size)])
            return value, g, losses
        bound = self._bound_entry(theta)
        if bound is not None:       # the training loop's vector: its leaves and gradient buffer, as value_and_grad
            with torch.enable_grad():
                losses = self.named_loss(bound.named, data, buffers, reduce=False)
                value = losses.mean()
            bound.grad.fill_(-0.0)
            _run_backward((value,), (bound.one,), False, False, bound.leaves, allow_unreachable=True,
                          accumulate_grad=True)
            return value.detach(), bound.grad, losses.detach()
        with torch.enable_grad():
            named = self._leaves(theta)
            losses = self.named_loss(named, data, buffers, reduce=False)
            value = losses.mean()
        return value.detach(), self._leaf_gradient(value, list(named.values())), losses.detach()

    def value_and_lazy_grad(self, theta: Tensor, data: Batch, chunk_size: int,
                            buffers: Optional[dict] = None) -> tuple[Tensor, Callable[[], Tensor]]:
        """value_and_grad's loss now and its gradient (the same numbers) on demand, for a caller that
        may discard the point (a rejected ascent step) and so skips the backward pass. One chunk: the
        forward's graph waits for the call; several: computed at once (all their graphs would not fit)."""
        if len(data) > chunk_size:
            value, g = self.value_and_grad(theta, data, chunk_size, buffers)
            return value, lambda: g
        value, leaves = self._chunk_forward(theta, data, buffers, None)
        return value.detach(), lambda: self._leaf_gradient(value, leaves)

    def _bound_value_and_grad(self, bound: _Bound, data: Batch, buffers: Optional[dict]) -> tuple[Tensor, Tensor]:
        """The backward adds each gradient into its leaf's .grad, a view of the flat buffer, so no
        concatenation follows. The buffer starts at -0.0, the one x with x + g == g bit for bit for
        every g (+0.0 too); a parameter the loss does not use keeps -0.0, equal to the usual 0.
        The engine is called as torch.autograd.backward calls it, without that function's Python
        checks of its arguments (a tenth of a batch-size-1 step), which these arguments pass by making."""
        with torch.enable_grad():
            value = self.named_loss(bound.named, data, buffers)
        bound.grad.fill_(-0.0)
        _run_backward((value,), (bound.one,), False, False, bound.leaves, allow_unreachable=True, accumulate_grad=True)
        return value.detach(), bound.grad

    def _chunk_value_and_grad(self, theta: Tensor, chunk: Batch, buffers: Optional[dict],
                              weight: Optional[float]) -> tuple[Tensor, Tensor]:
        value, leaves = self._chunk_forward(theta, chunk, buffers, weight)
        return value.detach(), self._leaf_gradient(value, leaves)

    def _chunk_forward(self, theta: Tensor, chunk: Batch, buffers: Optional[dict],
                       weight: Optional[float]) -> tuple[Tensor, Sequence[Tensor]]:
        leaves: Sequence[Tensor]
        with torch.enable_grad():
            bound = self._bound_entry(theta)
            if bound is not None:
                named, leaves = bound.named, bound.leaves
            else:
                named = self._leaves(theta)
                leaves = list(named.values())
            value = self.named_loss(named, chunk, buffers)
            return (value if weight is None else value * weight), leaves

    @staticmethod
    def _leaf_gradient(value: Tensor, leaves: Sequence[Tensor]) -> Tensor:
        grads = torch.autograd.grad(value, leaves, allow_unused=True, materialize_grads=True)
        return torch.cat([part.reshape(-1) for part in grads])

    def grad(self, theta: Tensor, data: Batch, chunk_size: int, buffers: Optional[dict] = None) -> Tensor:
        """grad L(theta) over `data`, accumulated chunk by chunk."""
        return self.value_and_grad(theta, data, chunk_size, buffers)[1]

    @torch.no_grad()
    def evaluate_loss(self, theta: Tensor, data: Batch, chunk_size: int) -> float:
        """L(theta) over `data` as a float, chunk by chunk and without a graph."""
        return sum(self.per_example_losses(theta, c).sum().item() for c in data.chunks(chunk_size)) / len(data)

    @torch.no_grad()
    def evaluate(self, theta: Tensor, data: Batch, chunk_size: int) -> dict[str, float]:
        """Mean loss and (for classification) accuracy over `data`."""
        total, correct = 0.0, 0.0
        classifies = self.module is not None and not data.targets.is_floating_point()
        output_loss = self.output_loss if classifies else None      # None: the mean loss only
        for chunk in data.chunks(chunk_size):
            if output_loss is not None:
                outputs = self.outputs(theta, chunk.inputs)
                total += output_loss(outputs, chunk.targets).sum().item()
                correct += (outputs.argmax(-1) == chunk.targets).sum().item()
            else:
                total += self.per_example_losses(theta, chunk).sum().item()
        result = {"loss": total / len(data)}
        if output_loss is not None:
            result["accuracy"] = correct / len(data)
        return result
