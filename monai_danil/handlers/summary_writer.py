"""One TensorBoard writer per training run under ``torch.distributed``: rank 0 writes, other ranks don't."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import torch.distributed as dist
from monai.utils import optional_import

if TYPE_CHECKING:
    from torch.utils.tensorboard import SummaryWriter
else:
    SummaryWriter, _ = optional_import("torch.utils.tensorboard", name="SummaryWriter")

__all__ = ["NullSummaryWriter", "rank_zero_summary_writer"]


def _nothing(*args: Any, **kwargs: Any) -> None:
    return None


class NullSummaryWriter:
    """Takes every call of a ``SummaryWriter`` (``add_*``, ``flush``, ``close``) and writes nothing.

    The shared writer of ranks other than 0 in a distributed run, so that MONAI's
    ``TensorBoardStatsHandler`` and this package's TensorBoard handlers can be attached on every rank
    (and reach the collectives they share) while a single rank writes event files.

    Args:
        log_dir: recorded as ``log_dir`` like a ``SummaryWriter``'s; nothing is created there.
    """

    def __init__(self, log_dir: str | os.PathLike[str] | None = None) -> None:
        self.log_dir = None if log_dir is None else str(log_dir)

    def __getattr__(self, name: str) -> Callable[..., None]:
        if name.startswith("add_") or name in ("flush", "close"):
            return _nothing
        raise AttributeError(f"{type(self).__name__} has no attribute {name!r}")


def rank_zero_summary_writer(log_dir: str | os.PathLike[str], **kwargs: Any) -> SummaryWriter | NullSummaryWriter:
    """A ``SummaryWriter`` on rank 0 (or without ``torch.distributed``), a :class:`NullSummaryWriter` elsewhere.

    Args:
        log_dir: the event-file folder of rank 0.
        kwargs: further ``SummaryWriter`` arguments.

    Example:
        >>> writer = rank_zero_summary_writer("logs")  # in a bundle: "$monai_danil.handlers.rank_zero_summary_writer(@log_dir)"
    """
    if dist.is_available() and dist.is_initialized() and dist.get_rank() != 0:
        return NullSummaryWriter(log_dir)
    return SummaryWriter(log_dir=str(log_dir), **kwargs)
