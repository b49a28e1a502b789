"""Learning-rate schedules that a resumed training can re-plan (torch only)."""

from __future__ import annotations

import logging
import math
from typing import Any

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler

__all__ = ["ResumableCosineLR"]

logger = logging.getLogger(__name__)


class ResumableCosineLR(LRScheduler):
    """Cosine annealing from each group's initial learning rate to ``eta_min`` over ``total_epochs``.

    Epoch ``e`` (the number of ``step()`` calls so far) gets
    ``eta_min + (base_lr - eta_min) * (1 + cos(pi * min(e, T) / T)) / 2``: torch's
    ``CosineAnnealingLR`` with ``T_max = T`` in closed form, held at ``eta_min`` after ``T`` instead
    of rising again. What differs is the resume. ``CosineAnnealingLR`` saves ``T_max``, so a
    training resumed with more epochs keeps the old plan and, past it, climbs back towards the
    initial rate. Here the plan is the constructor's ``total_epochs`` (the bundle's ``epochs``),
    never the checkpoint's: :meth:`load_state_dict` keeps the restored epoch count, re-plans to the
    current total and sets the optimizer's learning rate to the new plan's value at once. The
    remaining epochs then get the rates a run planned for the new total from the start would have
    had at those epochs (extending a finished 30-epoch run to 40 restarts at 15% of the initial
    rate). Load it after the optimizer, whose state also holds a learning rate (ignite loads a
    ``save_dict`` in its order: list the optimizer first).

    Args:
        optimizer: the wrapped optimizer.
        total_epochs: T, the length of the plan in scheduler steps (epochs), at least 1.
        eta_min: the final learning rate. Default 0.0.
        last_epoch: the index of the last epoch, as for torch schedulers. Default -1 (a new run).

    Raises:
        ValueError: for ``total_epochs`` below 1 or a negative ``eta_min``.

    Example:
        >>> optimizer = torch.optim.SGD(torch.nn.Linear(2, 2).parameters(), lr=1.0)
        >>> schedule = ResumableCosineLR(optimizer, total_epochs=4)
        >>> for epoch in range(3):
        ...     optimizer.step()
        ...     schedule.step()
        >>> round(schedule.get_last_lr()[0], 3)
        0.146
    """

    def __init__(self, optimizer: Optimizer, total_epochs: int, eta_min: float = 0.0, last_epoch: int = -1) -> None:
        if int(total_epochs) < 1:
            raise ValueError(f"total_epochs must be >= 1, got {total_epochs}.")
        if eta_min < 0:
            raise ValueError(f"eta_min must be >= 0, got {eta_min}.")
        self.total_epochs = int(total_epochs)
        self.eta_min = float(eta_min)
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> list[float]:
        """The learning rate of each parameter group at epoch ``last_epoch`` (closed form)."""
        progress = min(max(self.last_epoch, 0), self.total_epochs) / self.total_epochs
        factor = 0.5 * (1.0 + math.cos(math.pi * progress))
        return [self.eta_min + (base - self.eta_min) * factor for base in self.base_lrs]

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore the epoch count and initial rates, then re-plan to this schedule's ``total_epochs``."""
        total = self.total_epochs
        super().load_state_dict(state_dict)
        saved = self.total_epochs
        self.total_epochs = total
        rates = self.get_lr()
        for group, rate in zip(self.optimizer.param_groups, rates):
            group["lr"] = rate
        self._last_lr = rates
        if saved != total:
            logger.info(
                "learning-rate schedule re-planned from %d to %d epochs at epoch %d: learning rate now %s",
                saved, total, self.last_epoch, ", ".join(f"{r:.3g}" for r in rates),
            )
