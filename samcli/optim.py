"""`samcli.optim.SAM`: the SAM family as a torch optimizer for a user's own training loop.

    opt = samcli.optim.SAM(model.parameters(), torch.optim.SGD, rho=0.05, lr=0.1, momentum=0.9, model=model)
    loss_fn(model(x), y).backward()
    opt.first_step(zero_grad=True)     # to x + e
    loss_fn(model(x), y).backward()
    opt.second_step(zero_grad=True)    # back to x, the base optimizer steps along the method's direction

or `opt.step(closure)` after the first backward, as davda54/sam and pytorch-optimizer. `method=` takes
any registered method whose update is a `samcli.rules.Rule` (the same functions `samcli.train` runs,
so the two cannot drift apart) and its parameters as keywords of the same names (`method="asam",
rho=0.5, eta=0.01`); every other keyword goes to the base optimizer. What its users ask of a SAM
optimizer, and how it is met:
- BatchNorm: with `model=`, the running statistics after a step are those of the first pass alone
  (the perturbed pass's update is undone), and the model's parameter names reach rules that need them.
- rho = 0 (a method's null) is the base optimizer, bit for bit.
- mixed precision: `first_step(unscale=scaler)` divides the first gradients by a GradScaler's scale
  without touching its state, so `scaler.unscale_(opt)` (clipping), `scaler.step(opt)` and
  `scaler.update()` then run once per step on the second pass as usual. A step the scaler skips
  (inf/nan) leaves the perturbation in place; the next `first_step` (or `restore()`) undoes it.
- gradient accumulation: accumulate the first gradients over micro-batches, `first_step`, accumulate
  the second over the same micro-batches, `second_step` (tests/test_optim.py).
- learning-rate schedulers attach to it directly: it shares the base optimizer's parameter groups.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import fields
from typing import Any, Optional, get_type_hints

import torch
from torch import Tensor, nn

from . import rules
from .errors import ConfigError, SamcliError
from .methods import DIRECTIONS
from .rules import Layout, Rule, StepContext
from .spec.methods import PARAMETERS, get_method, null_method, validate_optimizer, with_method_defaults
from .spec.optimizer import OptimizerConfig

_PREFIX = "samcli.optim.SAM: "
# the method parameters that are switches (True / False), not numbers
_SWITCHES = {k for k, hint in get_type_hints(OptimizerConfig).items() if hint == Optional[bool] and k in PARAMETERS}


def _settings(method: str, values: dict[str, Any]) -> OptimizerConfig:
    """The method's settings, validated by the same rules as a config's `optimizer:` section."""
    raw = with_method_defaults({"method": method, **{k: v for k, v in values.items() if v is not None}})
    known = {f.name for f in fields(OptimizerConfig)}
    try:
        o = OptimizerConfig(**{k: v for k, v in raw.items() if k in known})
        validate_optimizer(o)
    except ConfigError as err:          # in the words of this interface: keywords, not config keys
        words = str(err).replace("optimizer.method=", "method=").replace("optimizer.", "")
        raise ConfigError(_PREFIX + words) from None
    return o


class SAM(torch.optim.Optimizer):
    """A SAM-family method around a base optimizer (class and keywords, as davda54/sam)."""

    def __init__(self, params: Iterable[Any], base_optimizer: type[torch.optim.Optimizer], rho: Optional[float] = None,
                 method: str = "sam", *, model: Optional[nn.Module] = None, seed: int = 0, **kwargs: Any):
        try:
            spec = get_method(method)
        except ConfigError as err:
            raise ConfigError(_PREFIX + str(err).replace("optimizer.method=", "method=")) from None
        ours = {k: kwargs.pop(k) for k in list(kwargs) if k in PARAMETERS}
        for key, value in {"rho": rho, **ours}.items():
            if value is not None and (isinstance(value, bool) != (key in _SWITCHES)
                                      or not isinstance(value, (int, float))):
                raise ConfigError(f"{_PREFIX}{key}={value!r} must be a {'bool' if key in _SWITCHES else 'number'}")
        momentum = kwargs.get("momentum", 0.0)
        self.settings = _settings(method, {"rho": rho, **ours, "momentum": momentum})
        update = DIRECTIONS.get(null_method(spec, self.settings) or method)
        if not isinstance(update, Rule):
            raise ConfigError(f"{_PREFIX}method={method} needs the whole batch's per-example structure, which a "
                              "user's loop does not hand over; train it with samcli.train, or pick a rule-based method")
        if update.second_batch is not None and self.settings.esam_gamma is not None and self.settings.esam_gamma < 1:
            raise ConfigError(f"{_PREFIX}method={method}'s data selection picks the examples of the second pass, which "
                              "a user's loop computes; set esam_gamma=1 (weight perturbation only) or use samcli.train")
        if model is not None and not spec.batchnorm and any(_running(m) for m in model.modules()):
            raise ConfigError(_PREFIX + f"method={method} cannot honour BatchNorm's first-pass statistics "
                              f"({spec.batchnorm_reason}); use a model without BatchNorm or another method")
        self.rule, self.model = update, model
        super().__init__(params, {"rho": self.settings.rho, **kwargs})
        self.base_optimizer = base_optimizer(self.param_groups, **kwargs)
        self.param_groups = self.base_optimizer.param_groups      # one set of groups: schedulers see the base's lr
        self.defaults.update(self.base_optimizer.defaults)
        names = {id(p): n for n, p in model.named_parameters()} if model is not None else {}
        self._params = [p for g in self.param_groups for p in g["params"]]
        self._lr_of = {id(p): g for g in self.param_groups for p in g["params"]}     # a group: its lr as scheduled
        if method == "asam" and not self.settings.asam_biases and not names:
            raise ConfigError(f"{_PREFIX}method=asam scales the tensors named 'weight': pass model=your_module "
                              "for the names, or asam_biases=True to scale every tensor")
        layout = Layout(tuple(names.get(id(p), f"param{i}") for i, p in enumerate(self._params)),
                        tuple(p.shape for p in self._params))
        self._ctx = StepContext(x=torch.empty(0), g=None, norm=None, cfg=self.settings, layout=layout, step=0,
                                generator=torch.Generator().manual_seed(seed), momentum=self._momentum)
        self._saved: Optional[Tensor] = None           # x (flat) while the parameters sit at x + e
        self._statistics: Optional[list[Tensor]] = None
        self._pending: Optional[str] = None            # "direct" (no second pass) or "second"

    # ---- flat views -------------------------------------------------------------------------------
    def _flat(self, tensors: Iterable[Optional[Tensor]]) -> Tensor:
        return torch.cat([(torch.zeros_like(p) if t is None else t).reshape(-1) for p, t in zip(self._params, tensors)])

    def _grads(self) -> Tensor:
        return self._flat(p.grad for p in self._params)

    def _write_grads(self, flat: Tensor) -> None:
        for p, (_, where, shape) in zip(self._params, self._ctx.layout.pieces()):
            piece = flat[where].view(shape)
            if p.grad is None:
                p.grad = piece.to(p.dtype).clone()
            else:
                p.grad.copy_(piece)

    def _momentum(self) -> Optional[Tensor]:
        buffers = [self.base_optimizer.state.get(p, {}).get("momentum_buffer") for p in self._params]
        return None if any(b is None for b in buffers) else self._flat(buffers)

    def _statistics_buffers(self) -> list[Tensor]:
        return [b for m in self.model.modules() if _running(m) for b in m.buffers(recurse=False)] if self.model else []

    # ---- the protocol -----------------------------------------------------------------------------
    @torch.no_grad()
    def restore(self) -> None:
        """Put the parameters (and BatchNorm statistics) back at x if a perturbation is in place."""
        if self._saved is not None:      # x itself, from the flat copy first_step made
            for p, (_, where, shape) in zip(self._params, self._ctx.layout.pieces()):
                p.copy_(self._saved[where].view(shape))
            self._saved = None
        if self._statistics is not None:
            for b, kept in zip(self._statistics_buffers(), self._statistics):
                b.copy_(kept)
            self._statistics = None
        self._pending = None

    @torch.no_grad()
    def first_step(self, zero_grad: bool = False, *, unscale: Any = None) -> bool:
        """Move to the method's perturbed point from the gradients in `.grad` (a rule without a clean pass
        reads none). True when a second forward/backward pass is needed before `second_step`; False on a
        step of the method that has none (LookSAM between its SAM steps). `unscale`: a GradScaler whose
        scale the gradients carry."""
        self.restore()                 # a step a GradScaler skipped left its perturbation in place
        ctx = self._ctx
        ctx.step += 1
        ctx.x = self._flat(p.detach() for p in self._params)
        if self.rule.clean:
            if all(p.grad is None for p in self._params):   # else the ascent would be silently zero: plain SGD
                raise SamcliError(f"{_PREFIX}first_step found no gradients in .grad; call loss.backward() "
                                  "before first_step (and before step(closure), as davda54/sam's protocol asks)")
            g = self._grads()
            if unscale is not None:
                g = g / unscale.get_scale()
            ctx.g, ctx.norm = g, torch.linalg.vector_norm(g)
        if ctx.norm is not None and not torch.isfinite(ctx.norm):
            self._pending = "skip"     # an overflowed first pass: no step (the scaler lowers its scale)
            if zero_grad:
                self.zero_grad()
            return True
        e = self.rule.perturb(ctx)
        if e is None and self.rule.clean:
            self._pending = "direct"
        else:
            self._pending = "second"
            self._statistics = [b.clone() for b in self._statistics_buffers()]
            if e is not None:
                self._saved = ctx.x
                for p, (_, where, shape) in zip(self._params, ctx.layout.pieces()):
                    p.add_(e[where].view(shape).to(p.dtype))
        if zero_grad:
            self.zero_grad()
        return self._pending == "second"

    @torch.no_grad()
    def second_step(self, zero_grad: bool = False) -> None:
        """Back to x and the base optimizer's step along the method's direction (from the second
        pass's gradients in `.grad`)."""
        if self._pending is None:
            raise RuntimeError("samcli.optim.SAM.second_step: call first_step first")
        pending, g_p = self._pending, (self._grads() if self._pending == "second" else None)
        self.restore()
        if pending == "skip":
            self.zero_grad()
            return
        if self.rule is rules.SGD:     # the null: the base optimizer's own step on its own gradients
            if g_p is None and self._ctx.g is not None:
                self._write_grads(self._ctx.g)
        else:
            self._write_grads(self.rule.combine(self._ctx, g_p))
        self.base_optimizer.step()
        after = self.rule.decoupled(self._ctx, g_p) if self.rule.decoupled is not None else None
        if after is not None:          # outside the base optimizer: x <- x - lr * term, each group at its lr
            for p, (_, where, shape) in zip(self._params, self._ctx.layout.pieces()):
                p.add_(after[where].view(shape), alpha=-self._lr_of[id(p)]["lr"])
        if zero_grad:
            self.zero_grad()

    @torch.no_grad()
    def step(self, closure: Optional[Callable[[], Any]] = None) -> None:   # type: ignore[override]
        """With a closure (zero_grad, forward, backward), after the first backward: the whole step.
        Without one, after `first_step` and the second backward: `second_step` (what GradScaler calls)."""
        if closure is None:
            if self._pending is None:
                raise RuntimeError("samcli.optim.SAM.step needs a closure, or first_step before it")
            self.second_step()
            return
        if self.first_step(zero_grad=True):
            with torch.enable_grad():
                closure()
        self.second_step()

    def state_dict(self) -> dict:
        """The base optimizer's state (momentum buffers, ...) and the rule's: its step count, its memory
        (LookSAM's g_v, FriendlySAM's average) and its random generator, so a resumed loop continues the
        same steps."""
        rule = {"step": self._ctx.step, "memory": dict(self._ctx.memory)}
        generator = self._ctx.generator.get_state() if self._ctx.generator is not None else None
        return {"base": self.base_optimizer.state_dict(), "rule": rule, "generator": generator}

    def load_state_dict(self, state_dict: dict) -> None:
        """Restore what `state_dict` returned (the base optimizer's parameter groups are this one's)."""
        self.base_optimizer.load_state_dict(state_dict["base"])
        self.param_groups = self.base_optimizer.param_groups
        self._lr_of = {id(p): g for g in self.param_groups for p in g["params"]}
        self._ctx.step = state_dict["rule"]["step"]
        self._ctx.memory = dict(state_dict["rule"]["memory"])
        if state_dict.get("generator") is not None and self._ctx.generator is not None:
            self._ctx.generator.set_state(state_dict["generator"])

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Clear the gradients of every parameter (the base optimizer's groups are this one's)."""
        self.base_optimizer.zero_grad(set_to_none)


def _running(module: nn.Module) -> bool:
    return isinstance(module, nn.modules.batchnorm._BatchNorm) and module.track_running_stats
