"""Training images beside the distractors DANIL mined for them, in TensorBoard, and the per-epoch pair counts."""

from __future__ import annotations

import logging
import math
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from monai.engines.utils import IterationEvents

from monai_danil.transforms.io.array import BadImageError

from .distractor_mining import DistractorMiningHandler
from .figures import PairTile, fit_tile, load_display_image, markdown_table, pair_grid
from .summary_writer import LazyTensorBoardHandler
from .utils import attach_round, check_class_names, check_int, datalist_sources, is_rank_zero

if TYPE_CHECKING:  # annotations only
    from ignite.engine import Engine
    from torch.utils.tensorboard import SummaryWriter

__all__ = ["DistractorPairsHandler"]


class DistractorPairsHandler(LazyTensorBoardHandler):
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
        self.class_names = check_class_names(class_names)
        self.interval = check_int(interval, "interval")
        self.num_pairs = check_int(num_pairs, "num_pairs")
        self.columns = check_int(columns, "columns")
        self.tile_size = check_int(tile_size, "tile_size")
        self.id_key = id_key
        self.sources = datalist_sources(datalist, image_key, id_key)
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
        attach_round(engine, self.reset, self.collect, self.write, IterationEvents.LOSS_COMPLETED)

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
        if mined is None or not is_rank_zero():
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
        if epoch % self.interval or not self._recent or not is_rank_zero():
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
