"""`optimizer:` of a train config: the base optimizer's knobs and one field per method parameter.

Torch-free. Each method parameter's default, range and rules are in samcli/spec/methods.py
(`PARAMETERS`); a parameter that some method reads but the configured one does not is refused there
("only applies to method X"), so a field here costs nothing to the methods that ignore it.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Optional, Union

from .methods import PARAMETERS


@dataclass
class OptimizerConfig:
    """`optimizer:` of a train config: the method, its step size, batches and schedule, and the method's parameters."""
    method: str = "sgd"                 # a name in samcli.spec.methods.METHODS
    lr: float = 0.1
    batch_size: Union[int, Literal["full"]] = 128
    # the method parameters: their defaults, ranges and rules are in samcli.spec.methods.PARAMETERS
    rho: float = PARAMETERS["rho"].default           # SAM perturbation radius
    m: Optional[int] = PARAMETERS["m"].default       # msam group size; must divide batch_size
    # the SAM family's parameters (unset: the method's own default; refused by methods that ignore them)
    eta: Optional[float] = None          # asam
    asam_biases: Optional[bool] = None   # asam
    alpha: Optional[float] = None        # gsam, looksam, rwp
    k: Optional[int] = None              # looksam
    sigma: Optional[float] = None        # fsam
    lmbda: Optional[float] = None        # fsam
    wsam_gamma: Optional[float] = None   # wsam
    wsam_decouple: Optional[bool] = None  # wsam
    esam_beta: Optional[float] = None    # esam
    esam_gamma: Optional[float] = None   # esam
    rwp_sigma: Optional[float] = None    # rwp
    momentum: float = 0.0
    nesterov: bool = False
    weight_decay: float = 0.0
    schedule: Literal["constant", "cosine", "step"] = "constant"
    milestones: list[float] = field(default_factory=lambda: [0.5, 0.75])  # step: fractions of steps
    gamma: float = 0.1                  # step: lr multiplier at each milestone
    grad_eps: float = PARAMETERS["grad_eps"].default   # SAM: ascent direction is g / (||g|| + grad_eps)
    # epochs: each epoch visits every example once (reshuffled); iid: every batch a uniform random set
    # of b examples, independent across steps (the paper's 1-SAM, Eq. 17, samples k_t i.i.d.)
    sampling: Literal["epochs", "iid"] = "epochs"
