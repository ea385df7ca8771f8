"""Sharpness-aware minimisation around any torch optimizer, switched on late in training."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch.optim import Optimizer


class SAM(Optimizer):
    """SAM (Foret et al., ICLR 2021): step with the gradient taken at the worst point within ``rho`` of the weights.

    Each step evaluates the loss twice: at the weights w for the gradient g, then at ``w + rho g / |g|``,
    whose gradient ``base_optimizer`` applies at w. It steers training to flat minima, and Foret et al.
    found it markedly robust to noisy labels, which FER-2013 has plenty of. The second pass doubles the
    cost of a step, so ``start`` (a fraction of training, 0..1) keeps SAM off until late: Zhou et al.
    ("Sharpness-aware minimization efficiently selects flatter minima late in training", ICLR 2025)
    find that SAM over the last few epochs alone generalises about as well as SAM throughout. Before
    that a step is ``base_optimizer``'s own; the LightningModule sets ``active`` from the training
    progress. Lightning's loss closure runs the training step (and its logging) once per pass.

    The base optimizer shares this one's ``param_groups``, so LR schedulers drive both, and checkpoints
    hold its state (momentum buffers); ``**base_kwargs`` (lr, momentum, ...) go to it.
    """

    def __init__(
        self,
        params: Any,
        base_optimizer: Callable[..., Optimizer],
        rho: float = 0.05,
        start: float = 0.0,
        **base_kwargs: Any,
    ) -> None:
        if rho <= 0:
            raise ValueError(f"optimizer.rho (SAM's neighbourhood radius) must be positive, got {rho}")
        if not 0.0 <= start <= 1.0:
            raise ValueError(f"optimizer.start is a fraction of training in [0, 1], got {start}")
        super().__init__(params, {"rho": rho})
        self.base_optimizer = base_optimizer(self.param_groups, **base_kwargs)
        self.param_groups = self.base_optimizer.param_groups
        self.defaults.update(self.base_optimizer.defaults)
        self.start = start
        self.active = start == 0.0

    @torch.no_grad()
    def step(self, closure: Callable[[], torch.Tensor] | None = None) -> torch.Tensor | None:  # type: ignore[override]
        if closure is None:
            raise ValueError("SAM needs the loss closure: it evaluates the loss twice per step")
        if not self.active:
            return self.base_optimizer.step(closure)
        with torch.enable_grad():
            loss = closure()
        with_grad = [(p, group["rho"]) for group in self.param_groups for p in group["params"] if p.grad is not None]
        if not with_grad:
            return loss
        grad_norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(p.grad) for p, _ in with_grad]))
        offsets = [p.grad * (rho / (grad_norm + 1e-12)) for p, rho in with_grad]
        for (p, _), offset in zip(with_grad, offsets, strict=True):
            p.add_(offset)
        with torch.enable_grad():
            closure()
        for (p, _), offset in zip(with_grad, offsets, strict=True):
            p.sub_(offset)
        self.base_optimizer.step()
        return loss

    def state_dict(self) -> dict[str, Any]:
        return self.base_optimizer.state_dict()

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.base_optimizer.load_state_dict(state_dict)
        # torch rebuilds param_groups on load: share the new list again so LR schedulers still reach the base.
        self.param_groups = self.base_optimizer.param_groups
