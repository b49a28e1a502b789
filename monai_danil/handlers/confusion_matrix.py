"""The validation confusion matrix as a TensorBoard figure, beside the most frequent distractor pairs."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
from monai.utils import IgniteInfo, min_version, optional_import

from .distractor_pairs import DistractorPairsHandler
from .figures import confusion_figure, markdown_table
from .summary_writer import LazyTensorBoardHandler
from .utils import attach_round, check_class_names, check_int, from_engine_batched, is_rank_zero

ConfusionMatrix, _ = optional_import("ignite.metrics", IgniteInfo.OPT_IMPORT_VERSION, min_version, "ConfusionMatrix")
if TYPE_CHECKING:  # annotations only
    from ignite.engine import Engine
    from torch.utils.tensorboard import SummaryWriter

__all__ = ["ConfusionMatrixTensorBoardHandler"]


class ConfusionMatrixTensorBoardHandler(LazyTensorBoardHandler):
    """Draws the validation confusion matrix, and lists the most frequent distractor pairs beside it.

    The matrix is counted by ignite's ``ConfusionMatrix`` (``metric``), which this handler feeds
    during each validation round whose epoch (the trainer's, as MONAI's ``ValidationHandler``
    passes it) is a multiple of ``interval``, and computes at its end: under ``torch.distributed``
    the counts are summed over the ranks (a collective: every rank attaches the handler). Then, on
    rank 0, it writes:

    - ``{tag}`` (image): the matrix with class names, cells coloured by their share of the row;
    - ``{tag}_pairs`` (text): with ``distractor_pairs``, the ``num_frequent`` most frequent
      (true class, distractor class) pairs mined in the latest training epoch, each with how
      often validation images of the true class were predicted as the distractor class; without
      it, the most frequent validation confusions.

    The metric is not one of the evaluator's ``additional_metrics`` on purpose: MONAI's
    ``StatsHandler`` prints every entry of ``engine.state.metrics`` in its epoch line, and a C x C
    tensor would spread that line over C lines. In a bundle::

        "metric": {
            "_target_": "ignite.metrics.ConfusionMatrix",
            "num_classes": "@num_classes",
            "output_transform": "$monai_danil.handlers.from_engine_batched(['pred', 'label'])",
            "device": "@device"
        }

    Args:
        class_names: class names, index = class number.
        metric: an ``ignite.metrics.ConfusionMatrix`` of ``len(class_names)`` classes reading
            ``(scores, labels)`` from the evaluator's output. Default ``None``: one with
            :func:`~monai_danil.handlers.from_engine_batched` of ``pred`` and ``label``, counting
            on the CPU.
        summary_writer: a shared ``SummaryWriter``; default ``None``: one of this handler's own.
        log_dir: where its own writer writes. Default ``"./runs"``.
        interval: write every ``interval`` epochs. Default 1.
        distractor_pairs: the trainer's :class:`~monai_danil.handlers.DistractorPairsHandler`,
            whose pair counts are listed. Default ``None``.
        num_frequent: rows of the table. Default 10.
        tag: tag of the figure; the table is ``{tag}_pairs``. Default ``"val_confusion_matrix"``.

    Raises:
        ValueError: for fewer than two class names, a bad ``interval``/``num_frequent``, or a
            ``metric`` of another class count.

    Example:
        >>> ConfusionMatrixTensorBoardHandler(names, summary_writer=writer, distractor_pairs=pairs).attach(evaluator)
    """

    def __init__(
        self,
        class_names: Sequence[str],
        metric: ConfusionMatrix | None = None,
        summary_writer: SummaryWriter | None = None,
        log_dir: str = "./runs",
        interval: int = 1,
        distractor_pairs: DistractorPairsHandler | None = None,
        num_frequent: int = 10,
        tag: str = "val_confusion_matrix",
    ) -> None:
        super().__init__(summary_writer, log_dir)
        self.class_names = check_class_names(class_names)
        num_classes = len(self.class_names)
        if metric is None:
            metric = ConfusionMatrix(num_classes, output_transform=from_engine_batched(["pred", "label"]))
        if metric.num_classes != num_classes:
            raise ValueError(
                f"the confusion matrix counts {metric.num_classes} classes but {num_classes} class names were given: "
                f"{self.class_names}."
            )
        self.metric = metric
        self.interval = check_int(interval, "interval")
        self.distractor_pairs = distractor_pairs
        self.num_frequent = check_int(num_frequent, "num_frequent")
        self.tag = tag
        self.matrix: np.ndarray | None = None
        self._active = False

    def attach(self, engine: Engine) -> None:
        """Register on the evaluator's epoch and iteration events (idempotent)."""
        attach_round(engine, self.reset, self.update, self.write)

    def reset(self, engine: Engine) -> None:
        """``EPOCH_STARTED``: a new round; count only in rounds that are written."""
        self._active = engine.state.epoch % self.interval == 0
        self.metric.reset()

    def update(self, engine: Engine) -> None:
        """``ITERATION_COMPLETED``: add the batch to the metric's counts."""
        if self._active:
            self.metric.iteration_completed(engine)

    def write(self, engine: Engine) -> None:
        """``EPOCH_COMPLETED``: compute the matrix (summed over ranks), then draw and write it (rank 0)."""
        if not self._active:
            return
        self.matrix = self.metric.compute().cpu().numpy().astype(np.int64)
        if not is_rank_zero():
            return
        epoch = engine.state.epoch
        total = int(self.matrix.sum())
        accuracy = float(np.trace(self.matrix)) / total if total else 0.0
        title = f"validation, epoch {epoch}: {total} images, accuracy {accuracy:.3f}"
        figure = confusion_figure(self.matrix, self.class_names, title)
        self.writer.add_image(self.tag, figure, epoch, dataformats="HWC")
        self.writer.add_text(f"{self.tag}_pairs", self._table(), epoch)
        self.writer.flush()

    def _table(self) -> str:
        matrix = self.matrix
        names = self.class_names
        row_sums = matrix.sum(axis=1)

        def val_share(true: int, other: int) -> str:
            count = int(matrix[true, other])
            return f"{count} of {int(row_sums[true])}" if row_sums[true] else "0 of 0"

        if self.distractor_pairs is not None:
            counts = self.distractor_pairs.counts()
            total = int(counts.sum())
            order = [(int(counts[t, c]), t, c) for t, c in zip(*np.nonzero(counts))]
            order.sort(key=lambda item: (-item[0], item[1], item[2]))
            rows = [
                [names[t], names[c], count, f"{count / total:.1%}", val_share(t, c)]
                for count, t, c in order[: self.num_frequent]
            ]
            intro = (
                f"Most frequent (true class, distractor class) pairs mined in training epoch "
                f"{self.distractor_pairs.pairs_epoch} ({total} pairs), and how many validation images of the "
                "true class were predicted as the distractor class.\n\n"
            )
            header = ["true class", "distractor class", "training pairs", "share", "validation: predicted as it"]
            return intro + markdown_table(header, rows)
        order = [(int(matrix[t, p]), t, p) for t, p in zip(*np.nonzero(matrix)) if t != p]
        order.sort(key=lambda item: (-item[0], item[1], item[2]))
        rows = [[names[t], names[p], val_share(t, p)] for _, t, p in order[: self.num_frequent]]
        intro = "Most frequent validation confusions (true class predicted as another class).\n\n"
        return intro + markdown_table(["true class", "predicted class", "count"], rows)
