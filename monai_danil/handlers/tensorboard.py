"""TensorBoard handlers that make a DANIL training reviewable: what was mined, what gets confused,
how the classes separate, and the learning rate.

Each is a plain ignite handler in MONAI's style (``__init__`` validates, ``attach(engine)`` is
idempotent) that writes to a shared ``SummaryWriter`` or its own one in ``log_dir``, on rank 0
only under ``torch.distributed``:

- :class:`LearningRateTensorBoardHandler`: the optimizer's learning rate, per epoch or iteration;
- :class:`DistractorPairsHandler`: training images beside the distractor mined for each, with
  their classes and distance, and the per-epoch counts of (true class, distractor class) pairs;
- :class:`ConfusionMatrixTensorBoardHandler`: the validation confusion matrix as a figure, and
  the most frequent (true class, distractor class) pairs as a table;
- :class:`EmbeddingProjectorHandler`: validation features with labels and thumbnails for
  TensorBoard's projector.

The per-iteration scalars (``loss``, ``danil_ce``, ``danil_da``, ``danil_lambda``,
``danil_distance``, ``danil_fraction``, ``danil_from_bank``) come from MONAI's
``TensorBoardStatsHandler`` reading :data:`~monai_danil.handlers.MINING_FIGURES`, and the
validation metrics from the evaluator's ``TensorBoardStatsHandler``; see ``docs/tensorboard.md``.
"""

from __future__ import annotations

import logging
import math
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from monai.engines.utils import IterationEvents
from monai.handlers import from_engine
from monai.utils import IgniteInfo, min_version, optional_import
from torch import nn

from monai_danil.networks import NeuronTap, unwrap_network
from monai_danil.transforms.io.array import BadImageError

from .distractor_mining import DistractorMiningHandler
from .figures import (
    PairTile,
    confusion_figure,
    fit_tile,
    load_display_image,
    markdown_table,
    pair_grid,
    square_thumbnail,
)

Events, _ = optional_import("ignite.engine", IgniteInfo.OPT_IMPORT_VERSION, min_version, "Events")
if TYPE_CHECKING:
    from ignite.engine import Engine
    from torch.utils.tensorboard import SummaryWriter

    _has_tensorboard = True
else:
    Engine, _ = optional_import(
        "ignite.engine", IgniteInfo.OPT_IMPORT_VERSION, min_version, "Engine", as_type="decorator"
    )
    SummaryWriter, _has_tensorboard = optional_import("torch.utils.tensorboard", name="SummaryWriter")

__all__ = [
    "ConfusionMatrixTensorBoardHandler",
    "DistractorPairsHandler",
    "EmbeddingProjectorHandler",
    "LearningRateTensorBoardHandler",
]


def _rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def _check_interval(interval: int, name: str = "interval", minimum: int = 1) -> int:
    if isinstance(interval, bool) or not isinstance(interval, int) or interval < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {interval!r}.")
    return interval


def _check_class_names(class_names: Sequence[str]) -> list[str]:
    names = [str(name) for name in class_names]
    if len(names) < 2:
        raise ValueError(f"class_names must name at least 2 classes, got {names}.")
    return names


def _class_indices(values: Any, num_classes: int) -> torch.Tensor:
    """(B,) class indices from indices (B,)/(B, 1), one-hot or scores (B, C), or a list of either."""
    if isinstance(values, (list, tuple)):
        values = torch.stack([torch.as_tensor(v) for v in values])
    values = torch.as_tensor(values)
    if values.ndim == 2 and values.shape[1] == num_classes and num_classes > 1:
        return values.argmax(dim=1)
    if values.ndim > 1 and values[0].numel() != 1:
        raise ValueError(
            f"expected class indices (B,) or (B, 1), or scores (B, {num_classes}); got shape {tuple(values.shape)}."
        )
    return values.reshape(-1).long()


def _sources(datalist: Iterable[Mapping[str, Any]], image_key: str, id_key: str) -> dict[int, Any]:
    """``{sample id: image}`` from a MONAI datalist such as ``read_manifest`` returns."""
    sources: dict[int, Any] = {}
    for row, item in enumerate(datalist):
        if image_key not in item or id_key not in item:
            raise ValueError(
                f"datalist row {row} has keys {sorted(item)}; expected {image_key!r} and {id_key!r} "
                "(monai_danil.data.read_manifest writes both)."
            )
        sample_id = int(item[id_key])
        if sample_id in sources:
            raise ValueError(f"datalist repeats {id_key} {sample_id} (row {row}); ids must be unique.")
        sources[sample_id] = item[image_key]
    return sources


class _TensorBoardWriter:
    """Holds a shared ``SummaryWriter`` or creates one in ``log_dir`` on first use.

    Unlike MONAI's ``TensorBoardHandler``, which creates its writer in ``__init__``, creation waits
    for the first write, so ranks other than 0 under ``torch.distributed`` never create an event file.
    """

    def __init__(self, summary_writer: SummaryWriter | None, log_dir: str) -> None:
        if summary_writer is None and not _has_tensorboard:
            raise RuntimeError(f"{type(self).__name__} needs tensorboard: pip install tensorboard")
        self._writer = summary_writer
        self.internal_writer = summary_writer is None
        self.log_dir = log_dir

    @property
    def writer(self) -> SummaryWriter:
        if self._writer is None:
            self._writer = SummaryWriter(log_dir=self.log_dir)
        return self._writer

    def close(self) -> None:
        """Close the writer if this handler created it (a shared one belongs to its owner)."""
        if self.internal_writer and self._writer is not None:
            self._writer.close()
            self._writer = None


class LearningRateTensorBoardHandler(_TensorBoardWriter):
    """Writes the optimizer's learning rate to TensorBoard.

    MONAI's ``LrScheduleHandler`` only prints it. The rate is read when the epoch (or iteration)
    starts, so the value at step ``e`` is the one the optimizer used during epoch ``e``, whichever
    order the scheduler and this handler run in. With several parameter groups, group ``i > 0``
    is written as ``{tag}_group{i}``.

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
        self.interval = _check_interval(interval)
        self.tag = tag

    def attach(self, engine: Engine) -> None:
        """Write at ``EPOCH_STARTED`` (or ``ITERATION_STARTED``) every ``interval`` (idempotent)."""
        event = Events.EPOCH_STARTED if self.epoch_level else Events.ITERATION_STARTED
        if not engine.has_event_handler(self, event):
            engine.add_event_handler(event(every=self.interval) if self.interval > 1 else event, self)

    def __call__(self, engine: Engine) -> None:
        if _rank() != 0:
            return
        step = engine.state.epoch if self.epoch_level else engine.state.iteration
        for index, group in enumerate(self.optimizer.param_groups):
            self.writer.add_scalar(self.tag if index == 0 else f"{self.tag}_group{index}", float(group["lr"]), step)
        if self.epoch_level:
            self.writer.flush()


class DistractorPairsHandler(_TensorBoardWriter):
    """Shows what DANIL mined: training images beside their distractors, every ``interval`` epochs.

    Attached to a MONAI trainer with the :class:`DistractorMiningHandler` it reads, at
    ``LOSS_COMPLETED`` (after the mining, before MONAI decollates the batch) it keeps
    references to a few small tensors of the mining handler's ``last_batch`` (labels,
    distractor classes and ids, similarity; no features, no host sync) and adds the batch's
    (true class, distractor class) pairs to :attr:`pair_counts` on the device. At the end of every
    ``interval``-th epoch it picks ``num_pairs`` pairs from the last iterations (one true class
    after another, so rare classes show up), loads both images from their files by sample id, and
    writes:

    - ``{tag}`` (image): a grid of pairs, the training image left, its distractor right (from the
      memory bank or the batch: the bank keeps each entry's integer sample id, so its image is
      found too), captioned with the true class, the distractor's class, its source and the
      distance ``sqrt(2 - 2 cos)`` in the weighted feature space (``danil_distance``'s measure);
    - ``{tag}_table`` (text): the same pairs as a table with the sample ids.

    Images are read from their files (:func:`~monai_danil.handlers.figures.load_display_image`,
    the bundles' loading transform), never from the batch tensors, which are augmented and
    resized. Each
    image is shown at its native size, or shrunk to ``tile_size`` if larger, or enlarged by a whole
    factor (pixel blocks) if at most half of it.

    :attr:`pair_counts` (C x C, the current epoch's counts by true class and distractor class) is
    what :class:`ConfusionMatrixTensorBoardHandler` lists beside the validation confusions. Under
    ``torch.distributed`` only rank 0 collects and writes (its share of the batches).

    Args:
        mining: the trainer's :class:`DistractorMiningHandler`.
        datalist: the training datalist, dicts with the image path and the integer sample id (what
            ``monai_danil.data.read_manifest`` returns and the trainer's dataset holds).
        class_names: class names, index = class number.
        summary_writer: a shared ``SummaryWriter``; default ``None``: one of this handler's own.
        log_dir: where its own writer writes. Default ``"./runs"``.
        interval: write every ``interval`` epochs. Default 1.
        num_pairs: pairs in the grid. Default 8.
        columns: pairs per grid row. Default 2.
        tile_size: longest side of a displayed image, see above. Default 224.
        image_key: datalist key of the image path. Default ``"image"``.
        id_key: key of the sample id, in the datalist and in the batch. Default ``"id"``.
        loader: ``source -> (H, W, 3) uint8`` for datalist entries that are not image files.
            Default ``None``: :func:`~monai_danil.handlers.figures.load_display_image`.
        tag: tag of the grid; the table is ``{tag}_table``. Default ``"train_distractor_pairs"``.

    Raises:
        TypeError: when ``mining`` is not a ``DistractorMiningHandler``.
        ValueError: for a bad ``interval``/``num_pairs``/``columns``/``tile_size``, fewer than two
            class names, or a datalist row without the keys or with a repeated id; at the first
            iteration, when the batch carries no ids or the network has another class count.

    Example:
        >>> pairs = DistractorPairsHandler(mining, datalist=train_files, class_names=names, summary_writer=writer)
        >>> pairs.attach(trainer)
    """

    def __init__(
        self,
        mining: DistractorMiningHandler,
        datalist: Sequence[Mapping[str, Any]],
        class_names: Sequence[str],
        summary_writer: SummaryWriter | None = None,
        log_dir: str = "./runs",
        interval: int = 1,
        num_pairs: int = 8,
        columns: int = 2,
        tile_size: int = 224,
        image_key: str = "image",
        id_key: str = "id",
        loader: Callable[[Any], np.ndarray] | None = None,
        tag: str = "train_distractor_pairs",
    ) -> None:
        if not isinstance(mining, DistractorMiningHandler):
            raise TypeError(f"mining must be a DistractorMiningHandler, got {type(mining).__name__}.")
        super().__init__(summary_writer, log_dir)
        self.mining = mining
        self.class_names = _check_class_names(class_names)
        self.interval = _check_interval(interval)
        self.num_pairs = _check_interval(num_pairs, "num_pairs")
        self.columns = _check_interval(columns, "columns")
        self.tile_size = _check_interval(tile_size, "tile_size")
        self.id_key = id_key
        self.sources = _sources(datalist, image_key, id_key)
        self.loader = loader or load_display_image
        self.tag = tag
        self.logger = logging.getLogger(__name__)
        self.pair_counts: torch.Tensor | None = None
        self.pairs_epoch = 0
        self.last_pairs: list[dict[str, Any]] = []
        self._recent: deque[tuple[torch.Tensor, ...]] = deque()
        self._checked = False

    def attach(self, engine: Engine) -> None:
        """Register on the trainer's epoch and iteration events (idempotent)."""
        for event, handler in (
            (Events.EPOCH_STARTED, self.reset),
            (IterationEvents.LOSS_COMPLETED, self.collect),
            (Events.EPOCH_COMPLETED, self.write),
        ):
            if not engine.has_event_handler(handler, event):
                engine.add_event_handler(event, handler)

    def reset(self, engine: Engine) -> None:
        """``EPOCH_STARTED``: start the epoch's counts."""
        self._recent.clear()
        if self.pair_counts is not None:
            self.pair_counts.zero_()
        self.pairs_epoch = engine.state.epoch

    def _check(self, engine: Engine) -> None:
        batch = engine.state.batch
        if not isinstance(batch, Mapping) or self.id_key not in batch:
            keys = sorted(batch) if isinstance(batch, Mapping) else type(batch).__name__
            raise ValueError(
                f"DistractorPairsHandler needs the sample id of every image in batch key {self.id_key!r}; "
                f"the batch has {keys} (monai_danil.data.read_manifest writes 'id')."
            )
        weight = self.mining.tap.classifier_weight
        if weight is not None and weight.shape[0] != len(self.class_names):
            raise ValueError(
                f"the network has {weight.shape[0]} classes but {len(self.class_names)} class names were given: "
                f"{self.class_names}."
            )
        self._checked = True

    def collect(self, engine: Engine) -> None:
        """``LOSS_COMPLETED``: count the batch's pairs and keep its last few rows (no sync)."""
        mined = self.mining.last_batch
        if mined is None or _rank() != 0:
            return
        if not self._checked:
            self._check(engine)
        num_classes = len(self.class_names)
        if self.pair_counts is None or self.pair_counts.device != mined.labels.device:
            self.pair_counts = torch.zeros(num_classes * num_classes, dtype=torch.long, device=mined.labels.device)
        flat = mined.labels * num_classes + mined.distractor_class.clamp_min(0)
        self.pair_counts.scatter_add_(0, flat, mined.has_distractor.long())
        if self._recent.maxlen is None:
            # enough rows at the end of the epoch to pick num_pairs pairs across the classes
            self._recent = deque(maxlen=max(1, math.ceil(8 * self.num_pairs / mined.batch_size)))
        ids = torch.as_tensor(engine.state.batch[self.id_key]).reshape(-1)
        self._recent.append(
            (
                ids,
                mined.labels,
                mined.has_distractor,
                mined.distractor_class,
                mined.distractor_id,
                mined.from_bank,
                mined.similarity.detach(),
            )
        )

    def counts(self) -> np.ndarray:
        """The epoch's (true class, distractor class) counts as a ``(C, C)`` array (zeros before any)."""
        num_classes = len(self.class_names)
        if self.pair_counts is None:
            return np.zeros((num_classes, num_classes), dtype=np.int64)
        return self.pair_counts.view(num_classes, num_classes).cpu().numpy()

    def _choose(self) -> list[dict[str, Any]]:
        columns = [torch.cat([part[i].reshape(-1).cpu() for part in self._recent]) for i in range(7)]
        ids, labels, has, classes, distractor_ids, from_bank, similarity = columns
        newest_first = [int(i) for i in torch.nonzero(has).reshape(-1).flip(0)]
        by_class: dict[int, list[int]] = {}
        for row in newest_first:
            by_class.setdefault(int(labels[row]), []).append(row)
        chosen: list[int] = []
        while len(chosen) < self.num_pairs and any(by_class.values()):
            for label in sorted(by_class):
                if by_class[label] and len(chosen) < self.num_pairs:
                    chosen.append(by_class[label].pop(0))
        chosen.sort(key=lambda row: (int(labels[row]), -row))
        return [
            {
                "anchor_id": int(ids[row]),
                "label": int(labels[row]),
                "distractor_id": int(distractor_ids[row]),
                "distractor_class": int(classes[row]),
                "from_bank": bool(from_bank[row]),
                "distance": math.sqrt(max(0.0, 2.0 - 2.0 * float(similarity[row]))),
            }
            for row in chosen
        ]

    def _image(self, sample_id: int) -> np.ndarray | None:
        source = self.sources.get(sample_id)
        if source is None:
            return None
        try:
            return fit_tile(self.loader(source), self.tile_size)
        except (OSError, BadImageError) as error:  # a display problem must not stop a training run
            self.logger.warning(f"DistractorPairsHandler: cannot show sample {sample_id} ({source}): {error}")
            return None

    def write(self, engine: Engine) -> None:
        """``EPOCH_COMPLETED``: write the grid and the table every ``interval`` epochs."""
        epoch = engine.state.epoch
        if epoch % self.interval or not self._recent or _rank() != 0:
            return
        pairs = self._choose()
        tiles: list[PairTile] = []
        shown: list[dict[str, Any]] = []
        for pair in pairs:
            anchor = self._image(pair["anchor_id"])
            if anchor is None:
                continue
            source = "bank" if pair["from_bank"] else "batch"
            distractor_name = self.class_names[pair["distractor_class"]]
            tiles.append(
                PairTile(
                    anchor=anchor,
                    distractor=self._image(pair["distractor_id"]),
                    caption=[
                        f"true: {self.class_names[pair['label']]}  (id {pair['anchor_id']})",
                        f"distractor: {distractor_name}  (id {pair['distractor_id']}, {source})",
                        f"distance: {pair['distance']:.3f}",
                    ],
                )
            )
            shown.append(pair)
        if not tiles:
            return
        grid, boxes = pair_grid(tiles, self.columns)
        for pair, box in zip(shown, boxes):
            pair.update(anchor_box=box["anchor"], distractor_box=box["distractor"])
        self.last_pairs = shown
        self.writer.add_image(self.tag, grid, epoch, dataformats="HWC")
        rows = [
            [
                index,
                self.class_names[p["label"]],
                p["anchor_id"],
                self.class_names[p["distractor_class"]],
                p["distractor_id"],
                "bank" if p["from_bank"] else "batch",
                f"{p['distance']:.4f}",
            ]
            for index, p in enumerate(shown)
        ]
        header = ["pair", "true class", "id", "distractor class", "distractor id", "from", "distance"]
        self.writer.add_text(f"{self.tag}_table", markdown_table(header, rows), epoch)
        self.writer.flush()


class ConfusionMatrixTensorBoardHandler(_TensorBoardWriter):
    """Writes the validation confusion matrix as a figure, and the most frequent distractor pairs.

    Attached to the evaluator, it counts (true class, predicted class) over the validation round
    on the device and, at the end of a round whose epoch (the trainer's, as MONAI's
    ``ValidationHandler`` passes it) is a multiple of ``interval``, writes:

    - ``{tag}`` (image): the matrix with class names, cells coloured by their share of the row;
    - ``{tag}_pairs`` (text): with ``distractor_pairs``, the ``num_frequent`` most frequent
      (true class, distractor class) pairs mined in the latest training epoch, each with how
      often validation images of the true class were predicted as the distractor class; without
      it, the most frequent validation confusions.

    Under ``torch.distributed`` the matrix is summed over the ranks (every rank must then attach
    this handler: it is a collective; set ``gather_distributed=False`` where only rank 0 has it)
    and rank 0 writes.

    Args:
        class_names: class names, index = class number.
        summary_writer: a shared ``SummaryWriter``; default ``None``: one of this handler's own.
        log_dir: where its own writer writes. Default ``"./runs"``.
        interval: write every ``interval`` epochs. Default 1.
        output_transform: ``engine.state.output -> (predictions, labels)``; predictions as scores
            ``(B, C)`` or class indices, labels as indices or one-hot, batched or as the decollated
            lists MONAI evaluators hold. Default ``from_engine(["pred", "label"])``.
        distractor_pairs: the trainer's :class:`DistractorPairsHandler`, whose pair counts are
            listed. Default ``None``.
        num_frequent: rows of the table. Default 10.
        gather_distributed: sum the matrix over ranks under ``torch.distributed``. Default ``True``.
        tag: tag of the figure; the table is ``{tag}_pairs``. Default ``"val_confusion_matrix"``.

    Raises:
        ValueError: for fewer than two class names or a bad ``interval``/``num_frequent``; during
            a round, for predictions of another class count.

    Example:
        >>> ConfusionMatrixTensorBoardHandler(names, summary_writer=writer, distractor_pairs=pairs).attach(evaluator)
    """

    def __init__(
        self,
        class_names: Sequence[str],
        summary_writer: SummaryWriter | None = None,
        log_dir: str = "./runs",
        interval: int = 1,
        output_transform: Callable[[Any], tuple[Any, Any]] = from_engine(["pred", "label"]),
        distractor_pairs: DistractorPairsHandler | None = None,
        num_frequent: int = 10,
        gather_distributed: bool = True,
        tag: str = "val_confusion_matrix",
    ) -> None:
        super().__init__(summary_writer, log_dir)
        self.class_names = _check_class_names(class_names)
        self.interval = _check_interval(interval)
        self.output_transform = output_transform
        self.distractor_pairs = distractor_pairs
        self.num_frequent = _check_interval(num_frequent, "num_frequent")
        self.gather_distributed = gather_distributed
        self.tag = tag
        self.matrix: np.ndarray | None = None
        self._counts: torch.Tensor | None = None
        self._active = False

    def attach(self, engine: Engine) -> None:
        """Register on the evaluator's epoch and iteration events (idempotent)."""
        for event, handler in (
            (Events.EPOCH_STARTED, self.reset),
            (Events.ITERATION_COMPLETED, self.update),
            (Events.EPOCH_COMPLETED, self.write),
        ):
            if not engine.has_event_handler(handler, event):
                engine.add_event_handler(event, handler)

    def reset(self, engine: Engine) -> None:
        """``EPOCH_STARTED``: a new round; count only in rounds that are written."""
        self._active = engine.state.epoch % self.interval == 0
        if self._counts is not None:
            self._counts.zero_()

    def update(self, engine: Engine) -> None:
        """``ITERATION_COMPLETED``: add the batch to the counts (on the device, no sync)."""
        if not self._active:
            return
        predictions, labels = self.output_transform(engine.state.output)
        num_classes = len(self.class_names)
        if isinstance(predictions, (list, tuple)):
            predictions = torch.stack([torch.as_tensor(p) for p in predictions])
        predictions = torch.as_tensor(predictions)
        if predictions.ndim == 2 and predictions.shape[1] > 1 and predictions.shape[1] != num_classes:
            raise ValueError(
                f"predictions have {predictions.shape[1]} classes but {num_classes} class names were given: "
                f"{self.class_names}."
            )
        predicted = _class_indices(predictions, num_classes)
        truth = _class_indices(labels, num_classes).to(predicted.device)
        if self._counts is None or self._counts.device != predicted.device:
            self._counts = torch.zeros(num_classes * num_classes, dtype=torch.long, device=predicted.device)
        self._counts.scatter_add_(0, truth * num_classes + predicted, torch.ones_like(predicted))

    def write(self, engine: Engine) -> None:
        """``EPOCH_COMPLETED``: reduce over ranks, then draw and write on rank 0."""
        if not self._active or self._counts is None:
            return
        counts = self._counts
        if self.gather_distributed and dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            counts = counts.clone()
            dist.all_reduce(counts)
        if _rank() != 0:
            return
        num_classes = len(self.class_names)
        self.matrix = counts.view(num_classes, num_classes).cpu().numpy()
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


class EmbeddingProjectorHandler(_TensorBoardWriter):
    """Writes validation features, labels and thumbnails for TensorBoard's embedding projector.

    At the end of training (and every ``interval`` epochs if ``interval > 0``) it runs the network
    over ``data_loader`` in ``eval`` mode without gradients, reads the neurons DANIL mines in with
    a :class:`~monai_danil.networks.NeuronTap` (attached only during this pass), and calls
    ``SummaryWriter.add_embedding`` with per-sample metadata (true class, predicted class, id) and
    thumbnails. This writes ``projector_config.pbtxt`` into the log folder and the tensors,
    ``metadata.tsv`` and ``sprite.png`` into ``{step:05d}/{tag}/`` beside it.

    Thumbnails are read from the files of ``datalist`` by the batch's sample id, in their true
    colours and orientation; without a datalist they are the batch images, each scaled to its own
    range (as the network sees them, so they may look transposed if the pipeline transposes).
    Under ``torch.distributed`` only rank 0 runs, on the plain (unwrapped) network and its own
    ``data_loader`` (its shard, if the loader is sharded).

    Args:
        network: the trained classifier (possibly DDP-wrapped).
        data_loader: the validation loader (batches of dicts).
        class_names: class names, index = class number.
        datalist: the validation datalist (image path and integer id per dict) for thumbnails.
            Default ``None``: thumbnails from the batch images.
        summary_writer: a shared ``SummaryWriter``; default ``None``: one of this handler's own.
        log_dir: where its own writer writes. Default ``"./runs"``.
        interval: also write every ``interval`` epochs; 0 writes at the end of training only.
            Default 0.
        layer: module name of the neurons; default: the pooled features of a known MONAI network,
            as the mining uses (see :class:`~monai_danil.networks.NeuronTap`).
        max_samples: at most this many samples (the loader's first). Default 2000.
        thumbnail_size: side of the square thumbnails. Default 32.
        image_key: batch key of the images. Default ``"image"``.
        label_key: batch key of the labels. Default ``"label"``.
        id_key: key of the sample id, in the batch and in the datalist. Default ``"id"``.
        device: where to run the network; default: the device of its parameters.
        loader: ``source -> (H, W, 3) uint8`` for datalist entries that are not image files.
            Default ``None``: :func:`~monai_danil.handlers.figures.load_display_image`.
        tag: the embedding's name in the projector. Default ``"val_features"``.

    Raises:
        ValueError: for a bad ``interval``/``max_samples``/``thumbnail_size``, fewer than two class
            names, a datalist row without the keys, or an unknown ``layer``.

    Example:
        >>> EmbeddingProjectorHandler(net, val_loader, names, datalist=val_files, summary_writer=writer).attach(trainer)
    """

    def __init__(
        self,
        network: nn.Module,
        data_loader: Iterable[Mapping[str, Any]],
        class_names: Sequence[str],
        datalist: Sequence[Mapping[str, Any]] | None = None,
        summary_writer: SummaryWriter | None = None,
        log_dir: str = "./runs",
        interval: int = 0,
        layer: str | None = None,
        max_samples: int = 2000,
        thumbnail_size: int = 32,
        image_key: str = "image",
        label_key: str = "label",
        id_key: str = "id",
        device: torch.device | str | None = None,
        loader: Callable[[Any], np.ndarray] | None = None,
        tag: str = "val_features",
    ) -> None:
        super().__init__(summary_writer, log_dir)
        self.network = network
        self.data_loader = data_loader
        self.class_names = _check_class_names(class_names)
        self.sources = _sources(datalist, image_key, id_key) if datalist is not None else None
        self.interval = _check_interval(interval, minimum=0)
        self.tap = NeuronTap(network, layer=layer)
        self.max_samples = _check_interval(max_samples, "max_samples")
        self.thumbnail_size = _check_interval(thumbnail_size, "thumbnail_size")
        self.image_key, self.label_key, self.id_key = image_key, label_key, id_key
        self.device = torch.device(device) if device is not None else None
        self.loader = loader or load_display_image
        self.tag = tag
        self.written_steps: list[int] = []

    def attach(self, engine: Engine) -> None:
        """Register at ``COMPLETED`` (and ``EPOCH_COMPLETED`` when ``interval > 0``), idempotent."""
        if not engine.has_event_handler(self, Events.COMPLETED):
            engine.add_event_handler(Events.COMPLETED, self)
        if self.interval and not engine.has_event_handler(self, Events.EPOCH_COMPLETED):
            engine.add_event_handler(Events.EPOCH_COMPLETED(every=self.interval), self)

    def _thumbnail(self, sample_id: int | None, image: torch.Tensor) -> torch.Tensor:
        size = self.thumbnail_size
        if self.sources is not None and sample_id in self.sources:
            rgb = square_thumbnail(self.loader(self.sources[sample_id]), size)
            return torch.tensor(rgb).permute(2, 0, 1).float() / 255.0
        image = image.detach().float().cpu()
        image = image[:3] if image.shape[0] >= 3 else image[:1].expand(3, -1, -1)
        low, high = image.min(), image.max()
        image = (image - low) / (high - low) if high > low else torch.zeros_like(image)
        scale = size / max(image.shape[1:])
        height, width = max(1, round(image.shape[1] * scale)), max(1, round(image.shape[2] * scale))
        image = F.interpolate(image[None], size=(height, width), mode="area" if scale < 1 else "nearest")[0]
        top, left = (size - height) // 2, (size - width) // 2
        return F.pad(image, (left, size - width - left, top, size - height - top))

    @torch.no_grad()
    def features(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, list[int | None], torch.Tensor]:
        """Run the network over the loader: ``(features, labels, predictions, ids, thumbnails)``."""
        network = unwrap_network(self.network)
        device = self.device or next(network.parameters()).device
        was_training = network.training
        network.eval()
        features, labels, predictions, ids, thumbnails = [], [], [], [], []
        count = 0
        try:
            with self.tap:
                for batch in self.data_loader:
                    images = torch.as_tensor(batch[self.image_key])[: self.max_samples - count]
                    logits = network(images.to(device))
                    take = images.shape[0]
                    features.append(self.tap.pop().float().cpu())
                    predictions.append(logits.argmax(dim=1).cpu())
                    labels.append(_class_indices(batch[self.label_key], len(self.class_names))[:take].cpu())
                    batch_ids: list[int | None] = (
                        [int(i) for i in torch.as_tensor(batch[self.id_key]).reshape(-1)[:take]]
                        if self.id_key in batch
                        else [None] * take
                    )
                    ids += batch_ids
                    thumbnails += [self._thumbnail(i, image) for i, image in zip(batch_ids, images)]
                    count += take
                    if count >= self.max_samples:
                        break
        finally:
            network.train(was_training)
        return torch.cat(features), torch.cat(labels), torch.cat(predictions), ids, torch.stack(thumbnails)

    def __call__(self, engine: Engine) -> None:
        step = engine.state.epoch
        if _rank() != 0 or step in self.written_steps:
            return
        features, labels, predictions, ids, thumbnails = self.features()
        metadata = [
            [self.class_names[int(y)], self.class_names[int(p)], "" if i is None else i]
            for y, p, i in zip(labels, predictions, ids)
        ]
        self.writer.add_embedding(
            features,
            metadata=metadata,
            label_img=thumbnails,
            global_step=step,
            tag=self.tag,
            metadata_header=["class", "predicted", "id"],
        )
        self.writer.flush()
        self.written_steps.append(step)
