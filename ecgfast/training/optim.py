"""Optimizers and learning-rate schedules for large batches (SimCLR's recipe).

- :class:`LARS`: layer-wise adaptive rate scaling as in SimCLR's ``LARSOptimizer``
  (You et al. 2017 with momentum). For each parameter w with gradient g, per step::

      d = g + weight_decay * w                      (decay only where the group has it)
      r = eta * ||w|| / ||d||  if ||w|| > 0 and ||d|| > 0, else 1   (the trust ratio)
      v = momentum * v + lr * r * d                 (v starts at 0)
      w = w - v

  Groups with ``trust_ratio=False`` use r = 1. No dependency of ecgfast ships a LARS
  (torch has none), hence this one.
- :func:`param_groups`: biases and other 1-D parameters (normalisation scales and
  shifts) get no weight decay and no trust ratio, as SimCLR excludes ``bias`` and
  ``batch_normalization`` variables.
- :func:`build_optimizer`: "adam" (today's ``torch.optim.Adam`` over every parameter, one
  group), "adamw" (``torch.optim.AdamW`` with :func:`param_groups`), "lars".
- :func:`scaled_lr`: ``lr * B / 256`` ("linear"), ``lr * sqrt(B / 256)`` ("sqrt") or ``lr``
  ("none"), B the global batch (all ranks).
- :class:`LRSchedule`: per-step learning rate, a pure function of the position in the run
  (epoch, step, steps in that epoch), so a resumed run follows the same curve: linear
  warm-up over ``warmup_epochs`` then constant or cosine decay to 0 at ``horizon_epochs``.
"""

from __future__ import annotations

import math

import torch
from torch import nn

OPTIMIZERS = ("adam", "adamw", "lars")
LR_SCHEDULES = ("constant", "cosine")
LR_SCALINGS = ("none", "linear", "sqrt")
#: The batch size a base learning rate refers to (SimCLR: lr = 0.3 x B / 256).
BASE_BATCH = 256


def check_choice(value, choices, name):
    if value not in choices:
        raise ValueError(f"{name} must be one of {choices}, got {value!r}")
    return value


def scaled_lr(lr: float, global_batch: int, scaling: str) -> float:
    """``lr`` scaled for a global batch of ``global_batch`` windows relative to
    :data:`BASE_BATCH`."""
    check_choice(scaling, LR_SCALINGS, "lr_scaling")
    ratio = global_batch / BASE_BATCH
    return lr * {"none": 1.0, "linear": ratio, "sqrt": math.sqrt(ratio)}[scaling]


def param_groups(module: nn.Module, weight_decay: float) -> list[dict]:
    """Two groups: parameters of 2 or more dimensions (weight decay, trust ratio), and the
    1-D ones (biases, normalisation parameters: neither). Empty groups are left out."""
    decayed, excluded = [], []
    for p in module.parameters():
        if p.requires_grad:
            (decayed if p.dim() > 1 else excluded).append(p)
    groups = [{"params": decayed, "weight_decay": weight_decay},
              {"params": excluded, "weight_decay": 0.0, "trust_ratio": False}]
    return [g for g in groups if g["params"]]


class LARS(torch.optim.Optimizer):
    """LARS with momentum (formula in the module docstring).

    Args:
        params: parameters or groups (:func:`param_groups`); a group may set
            ``trust_ratio=False``.
        lr: > 0. momentum: in [0, 1). weight_decay: >= 0. eta: trust coefficient > 0
            (SimCLR: 0.001).

    The trust ratio is computed on the device (``torch.where``), never read back to the
    host. The momentum buffer is kept in each parameter's dtype (fp32 for fp32 weights).
    """

    def __init__(self, params, lr: float, momentum: float = 0.9, weight_decay: float = 0.0,
                 eta: float = 1e-3, trust_ratio: bool = True):
        if not (isinstance(lr, (int, float)) and math.isfinite(lr) and lr > 0):
            raise ValueError(f"LARS: lr must be a finite number > 0, got {lr!r} (a zero "
                             "learning rate would never move the weights)")
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"LARS: momentum must be in [0, 1), got {momentum!r}")
        if not weight_decay >= 0.0:
            raise ValueError(f"LARS: weight_decay must be >= 0, got {weight_decay!r}")
        if not eta > 0.0:
            raise ValueError(f"LARS: eta must be > 0, got {eta!r}")
        super().__init__(params, {"lr": lr, "momentum": momentum,
                                  "weight_decay": weight_decay, "eta": eta,
                                  "trust_ratio": trust_ratio})

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            lr, wd, eta = group["lr"], group["weight_decay"], group["eta"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                d = p.grad if wd == 0 else p.grad.add(p, alpha=wd)
                if group["trust_ratio"]:
                    w_norm, d_norm = torch.linalg.vector_norm(p), torch.linalg.vector_norm(d)
                    one = torch.ones_like(w_norm)
                    ratio = torch.where((w_norm > 0) & (d_norm > 0), eta * w_norm / d_norm, one)
                    d = d * (ratio * lr)
                else:
                    d = d * lr
                state = self.state[p]
                if "momentum_buffer" not in state:
                    state["momentum_buffer"] = torch.zeros_like(p)
                v = state["momentum_buffer"]
                v.mul_(group["momentum"]).add_(d)
                p.sub_(v)
        return loss


def build_optimizer(name: str, module: nn.Module, lr: float, weight_decay: float = 0.0,
                    momentum: float = 0.9) -> torch.optim.Optimizer:
    """The optimizer ``name`` ("adam" | "adamw" | "lars") over ``module``'s parameters."""
    check_choice(name, OPTIMIZERS, "optimizer")
    if name == "adam":
        return torch.optim.Adam(module.parameters(), lr=lr, weight_decay=weight_decay)
    groups = param_groups(module, weight_decay)
    if name == "adamw":
        return torch.optim.AdamW(groups, lr=lr)
    return LARS(groups, lr=lr, momentum=momentum, weight_decay=weight_decay)


class LRSchedule:
    """Learning rate per step: warm-up, then constant or cosine.

    With u = epoch + step / steps (epochs done before this step, 0-based epoch and step),
    W = ``warmup_epochs`` and E = ``horizon_epochs``::

        factor = (u + 1 / steps) / W                         while u < W (linear warm-up)
        factor = 1                                           "constant" after it
        factor = (1 + cos(pi * (u - W) / (E - W))) / 2       "cosine" after it

    and lr = ``base_lr * factor`` is written into every parameter group before the step.
    The warm-up counts the current step as done, so its first step is not wasted on lr 0.
    """

    def __init__(self, base_lr: float, schedule: str = "constant", warmup_epochs: float = 0.0,
                 horizon_epochs: float = 1.0):
        check_choice(schedule, LR_SCHEDULES, "lr_schedule")
        if not (isinstance(warmup_epochs, (int, float)) and math.isfinite(warmup_epochs)
                and warmup_epochs >= 0):
            raise ValueError(f"warmup_epochs must be a finite number >= 0, got {warmup_epochs!r}")
        if schedule == "cosine" and not horizon_epochs > warmup_epochs:
            raise ValueError(f"lr_schedule='cosine' needs warmup_epochs ({warmup_epochs}) below "
                             f"the schedule's length in epochs ({horizon_epochs})")
        self.base_lr, self.schedule = float(base_lr), schedule
        self.warmup_epochs, self.horizon_epochs = float(warmup_epochs), float(horizon_epochs)
        self.last_lr = None

    def factor(self, epoch: int, step: int, steps: int) -> float:
        u, w = epoch + step / steps, self.warmup_epochs
        if u < w:
            return min(1.0, (u + 1.0 / steps) / w)
        if self.schedule == "constant":
            return 1.0
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, (u - w) / (self.horizon_epochs - w))))

    def apply(self, optimizer: torch.optim.Optimizer, epoch: int, step: int, steps: int) -> float:
        """Set every group's lr for step ``step`` (of ``steps``) of epoch ``epoch``."""
        lr = self.base_lr * self.factor(epoch, step, steps)
        for group in optimizer.param_groups:
            group["lr"] = lr
        self.last_lr = lr
        return lr

    def state_dict(self) -> dict:
        return {"base_lr": self.base_lr, "schedule": self.schedule,
                "warmup_epochs": self.warmup_epochs, "horizon_epochs": self.horizon_epochs,
                "last_lr": self.last_lr}

    def load_state_dict(self, state: dict, where: str = "checkpoint") -> None:
        """Check a saved schedule against this one (the curve is recomputed, not stored)."""
        mine = self.state_dict()
        for key in ("base_lr", "schedule", "warmup_epochs"):
            if key in state and state[key] != mine[key]:
                raise ValueError(f"{where}: saved lr schedule has {key}={state[key]!r}, this run "
                                 f"{mine[key]!r}")
        last = state.get("last_lr")
        self.last_lr = float(last) if isinstance(last, (int, float)) else None
