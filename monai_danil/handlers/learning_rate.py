"""The optimizer's learning rate in TensorBoard, read when the epoch (or iteration) starts."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from monai.utils import IgniteInfo, min_version, optional_import

from .summary_writer import LazyTensorBoardHandler
from .utils import attach_once, check_int, is_rank_zero

Events, _ = optional_import("ignite.engine", IgniteInfo.OPT_IMPORT_VERSION, min_version, "Events")
if TYPE_CHECKING:  # annotations only
    from ignite.engine import Engine
    from torch.utils.tensorboard import SummaryWriter

__all__ = ["LearningRateTensorBoardHandler"]


class LearningRateTensorBoardHandler(LazyTensorBoardHandler):
    """Writes the optimizer's learning rate to TensorBoard.

    The rate is read when the epoch (or iteration) starts, so the value at step ``e`` is the one the
    optimizer used during epoch ``e``, whichever order the scheduler and this handler run in. With
    several parameter groups, group ``i > 0`` is written as ``{tag}_group{i}``.

    Why not a library handler: MONAI's ``LrScheduleHandler`` only prints the rate;
    ``TensorBoardStatsHandler`` writes its ``output_transform`` at ``ITERATION_COMPLETED`` (steps
    counted in iterations) and ``engine.state`` values at ``EPOCH_COMPLETED``, where an
    ``LrScheduleHandler`` attached before it has already stepped to the next epoch's rate; ignite's
    ``OptimizerParamsHandler`` writes through a ``TensorboardLogger`` only, which opens an event
    file of its own on every rank instead of sharing the bundle's ``summary_writer``.

    Args:
        optimizer: the trainer's optimizer.
        summary_writer: a shared ``SummaryWriter``; default ``None``: one of this handler's own.
        log_dir: where its own writer writes. Default ``"./runs"``.
        epoch_level: write per epoch (step: epoch) or per iteration (step: iteration, for
            schedulers stepped every iteration). Default ``True``.
        interval: write every ``interval`` epochs or iterations. Default 1.
        tag: the scalar's tag. Default ``"lr"``.

    Raises:
        ValueError: when ``interval`` is not an integer >= 1.
        RuntimeError: without ``summary_writer`` when tensorboard is not installed.

    Example:
        >>> LearningRateTensorBoardHandler(optimizer, summary_writer=writer).attach(trainer)
    """

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        summary_writer: SummaryWriter | None = None,
        log_dir: str = "./runs",
        epoch_level: bool = True,
        interval: int = 1,
        tag: str = "lr",
    ) -> None:
        super().__init__(summary_writer, log_dir)
        self.optimizer = optimizer
        self.epoch_level = bool(epoch_level)
        self.interval = check_int(interval, "interval")
        self.tag = tag

    def attach(self, engine: Engine) -> None:
        """Write at ``EPOCH_STARTED`` (or ``ITERATION_STARTED``) every ``interval`` (idempotent)."""
        event = Events.EPOCH_STARTED if self.epoch_level else Events.ITERATION_STARTED
        attach_once(engine, [(event(every=self.interval) if self.interval > 1 else event, self)])

    def __call__(self, engine: Engine) -> None:
        if not is_rank_zero():
            return
        step = engine.state.epoch if self.epoch_level else engine.state.iteration
        for index, group in enumerate(self.optimizer.param_groups):
            self.writer.add_scalar(self.tag if index == 0 else f"{self.tag}_group{index}", float(group["lr"]), step)
        if self.epoch_level:
            self.writer.flush()
