"""Adam moments of the warm-up run, keyed by parameter name, and the gradient types.

LESS reads the moments from `optimizer.bin` by parameter *index*, which breaks as soon as
the parameter order or the file layout changes (LESS issues #4, #10). We save them by
parameter name with safetensors, plus the step count and the Adam hyper-parameters.

Gradient types (the feature Γ(z) that a sample's gradient g becomes):
- ``sgd``: g.
- ``sign``: sign(g).
- ``adam``: the direction of one Adam step taken from the warm-up state (LESS's formula,
  ε inside the square root, no bias correction by default):
  m' = β1·m + (1−β1)·g,  v' = β2·v + (1−β2)·g²,  Γ = m' / sqrt(v' + ε).
  With ``bias_correction=True``, m' and v' are divided by (1 − β^t), t = step + 1.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from rait.artifacts import atomic_path
from rait.errors import RaitError

GRADIENT_TYPES = ("sgd", "sign", "adam")
MOMENTS_FILE = "adam_moments.safetensors"


@dataclass
class AdamMoments:
    """First and second moments {parameter name: tensor}, the number of steps taken, betas and eps."""

    exp_avg: dict[str, torch.Tensor]
    exp_avg_sq: dict[str, torch.Tensor]
    step: int
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8

    @classmethod
    def from_optimizer(cls, optimizer: torch.optim.Optimizer, model: nn.Module) -> AdamMoments:
        """Read an Adam/AdamW optimizer's state, naming each parameter through `model.named_parameters()`."""
        names = {id(p): name for name, p in model.named_parameters()}
        exp_avg, exp_avg_sq, steps = {}, {}, set()
        for group in optimizer.param_groups:
            for p in group["params"]:
                state = optimizer.state.get(p)
                if not state:
                    continue
                name = names[id(p)]
                exp_avg[name] = state["exp_avg"].detach().float().cpu().contiguous()
                exp_avg_sq[name] = state["exp_avg_sq"].detach().float().cpu().contiguous()
                steps.add(int(state["step"]))
        if not exp_avg:
            raise RaitError("the optimizer holds no Adam state (has it taken a step?)")
        group = optimizer.param_groups[0]
        return cls(exp_avg, exp_avg_sq, max(steps), tuple(group["betas"]), float(group["eps"]))

    def save(self, folder: str | Path) -> Path:
        path = Path(folder) / MOMENTS_FILE
        tensors = {f"{name}::exp_avg": t for name, t in self.exp_avg.items()}
        tensors |= {f"{name}::exp_avg_sq": t for name, t in self.exp_avg_sq.items()}
        metadata = {"step": str(self.step), "betas": json.dumps(list(self.betas)), "eps": repr(self.eps)}
        with atomic_path(path) as tmp:
            save_file(tensors, str(tmp), metadata=metadata)
        return path

    @classmethod
    def load(cls, folder: str | Path) -> AdamMoments:
        path = Path(folder) / MOMENTS_FILE
        if not path.is_file():
            raise RaitError(f"no Adam moments at {path} (run the warm-up first, or use --gradient-type sgd)")
        with safe_open(str(path), "pt") as fh:
            metadata = fh.metadata()
        tensors = load_file(str(path))
        exp_avg = {k.removesuffix("::exp_avg"): v for k, v in tensors.items() if k.endswith("::exp_avg")}
        exp_avg_sq = {k.removesuffix("::exp_avg_sq"): v for k, v in tensors.items() if k.endswith("::exp_avg_sq")}
        return cls(exp_avg, exp_avg_sq, int(metadata["step"]), tuple(json.loads(metadata["betas"])), float(metadata["eps"]))


class GradientTransform:
    """Turns a per-sample gradient (batch, *shape) of parameter `name` into its feature Γ."""

    def __init__(self, kind: str = "sgd", moments: AdamMoments | None = None, bias_correction: bool = False):
        if kind not in GRADIENT_TYPES:
            raise RaitError(f"unknown gradient type {kind!r} (use one of {', '.join(GRADIENT_TYPES)})")
        if kind == "adam" and moments is None:
            raise RaitError("gradient type 'adam' needs the warm-up's Adam moments")
        self.kind = kind
        self.moments = moments
        self.bias_correction = bias_correction
        self._on_device: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}

    def check_names(self, names: list[str]) -> None:
        """Fail early if the moments do not cover exactly the parameters we take gradients of."""
        if self.kind != "adam":
            return
        missing = [n for n in names if n not in self.moments.exp_avg]
        if missing:
            raise RaitError(f"the Adam moments have no entry for {missing[0]!r} ({len(missing)} missing); "
                            "were they saved from this adapter?")

    def __call__(self, name: str, grad: torch.Tensor) -> torch.Tensor:
        if self.kind == "sgd":
            return grad
        if self.kind == "sign":
            return torch.sign(grad)
        m, beta2_v = self._moments(name, grad.device)
        beta1, beta2 = self.moments.betas
        m_new = torch.lerp(m.to(grad.dtype), grad, 1 - beta1)  # β1·m + (1−β1)·g
        v_new = torch.addcmul(beta2_v.to(grad.dtype), grad, grad, value=1 - beta2)  # β2·v + (1−β2)·g², one pass
        if self.bias_correction:
            t = self.moments.step + 1
            m_new.div_(1 - beta1**t)
            v_new.div_(1 - beta2**t)
        return m_new.div_(v_new.add_(self.moments.eps).sqrt_())

    def _moments(self, name: str, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """(m, β2·v) of `name` on `device`, made once: every batch reuses them."""
        if name not in self._on_device:
            beta2 = self.moments.betas[1]
            self._on_device[name] = (self.moments.exp_avg[name].to(device), self.moments.exp_avg_sq[name].to(device) * beta2)
        return self._on_device[name]
