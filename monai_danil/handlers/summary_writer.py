"""One TensorBoard writer per training run under ``torch.distributed`` (rank 0 writes, other ranks don't), and the
writer base of the package's TensorBoard handlers."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from monai.utils import optional_import

from .utils import is_rank_zero

if TYPE_CHECKING:
    from torch.utils.tensorboard import SummaryWriter

    _has_tensorboard = True
else:
    SummaryWriter, _has_tensorboard = optional_import("torch.utils.tensorboard", name="SummaryWriter")

__all__ = ["LazyTensorBoardHandler", "NullSummaryWriter", "rank_zero_summary_writer"]


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
    if not is_rank_zero():
        return NullSummaryWriter(log_dir)
    return SummaryWriter(log_dir=str(log_dir), **kwargs)


class LazyTensorBoardHandler:
    """Base of the package's TensorBoard handlers: a shared ``SummaryWriter``, or one of its own made on first write.

    Unlike MONAI's ``TensorBoardHandler``, which creates its writer in ``__init__``, creation waits
    for the first write, so ranks other than 0 under ``torch.distributed`` (which never write) never
    create an event file.

    Args:
        summary_writer: a shared ``SummaryWriter`` (its owner closes it); ``None``: one of this
            handler's own, in ``log_dir``.
        log_dir: where its own writer writes.

    Raises:
        RuntimeError: without ``summary_writer`` when tensorboard is not installed.
    """

    def __init__(self, summary_writer: SummaryWriter | None, log_dir: str) -> None:
        if summary_writer is None and not _has_tensorboard:
            raise RuntimeError(f"{type(self).__name__} needs tensorboard: pip install tensorboard")
        self._writer = summary_writer
        self.internal_writer = summary_writer is None
        self.log_dir = log_dir

    @property
    def writer(self) -> SummaryWriter:
        """The shared writer, or this handler's own (created now if it does not exist yet)."""
        if self._writer is None:
            self._writer = SummaryWriter(log_dir=self.log_dir)
        return self._writer

    def close(self) -> None:
        """Close the writer if this handler created it (a shared one belongs to its owner)."""
        if self.internal_writer and self._writer is not None:
            self._writer.close()
            self._writer = None
