"""Per-image class probabilities of an evaluator's round, written as a CSV with class-name columns."""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch.distributed as dist

from monai_danil.data.atomic import write_atomically

from .utils import attach_round, is_rank_zero

if TYPE_CHECKING:  # annotations only
    from ignite.engine import Engine

__all__ = ["PredictionSaver"]

_FIXED_COLUMNS = ("image", "label", "prediction")


def _per_sample(data: Any, key: str) -> list[Any]:
    """The values of ``key`` per sample, from a decollated list of dicts or a batch-first dict."""
    if isinstance(data, Mapping):
        values = data[key]
        return list(values)
    return [item[key] for item in data]


class PredictionSaver:
    """Collects each image's class probabilities over an evaluator's round and writes them as a CSV.

    The CSV has the header ``image,prediction,<class name>...`` (``image,label,prediction,...`` when
    ``label_key`` is given): ``image`` is each sample's ``name_key`` (the path as the manifest lists it
    or as found in the folder, see :func:`~monai_danil.data.image_datalist`), ``prediction`` the class
    name of the highest probability, then one probability per class in ``class_names`` order. Rows are
    in sample-id order. The file is written at the end of the round, once, through a temporary file
    and a rename, so it is never half-written; an existing file of the same name is replaced.

    Under ``torch.distributed`` every rank's rows are gathered (``all_gather_object``; every rank must
    attach the handler) and rank 0 writes; a sample id seen twice (a padded sampler) is kept once.

    Args:
        class_names: class names, index = class number.
        output_dir: the folder of the CSV, created if needed.
        filename: the CSV's name. Default ``"predictions.csv"``.
        softmax: apply softmax to ``pred`` (logits). Default ``False``: ``pred`` holds probabilities
            (a post-processing ``Activationsd(softmax=True)`` made them).
        pred_key: key of the class scores in ``engine.state.output``. Default ``"pred"``.
        name_key: batch key of the image name written to the ``image`` column. Default
            ``"relative_path"``.
        id_key: batch key of the integer sample id that orders the rows. Default ``"id"``.
        label_key: batch key of the label, written as its class name in a ``label`` column.
            Default ``None``: no label column.

    Raises:
        ValueError: for fewer than two class names, a class name that repeats or is one of
            ``image``, ``label``, ``prediction``; during a round, for scores of another class count or
            a batch without ``name_key``/``id_key``.

    Example:
        >>> PredictionSaver(["benign", "malignant"], output_dir="eval").attach(evaluator)
    """

    def __init__(
        self,
        class_names: Sequence[str],
        output_dir: str | os.PathLike[str],
        filename: str = "predictions.csv",
        softmax: bool = False,
        pred_key: str = "pred",
        name_key: str = "relative_path",
        id_key: str = "id",
        label_key: str | None = None,
    ) -> None:
        names = [str(name) for name in class_names]
        if len(names) < 2:
            raise ValueError(f"class_names must name at least 2 classes, got {names}.")
        clashes = sorted({n for n in names if n in _FIXED_COLUMNS or names.count(n) > 1})
        if clashes:
            raise ValueError(
                f"class names {clashes} repeat or clash with the columns {list(_FIXED_COLUMNS)}; "
                "every class needs a column of its own."
            )
        self.class_names = names
        self.output_dir = Path(output_dir)
        self.filename = filename
        self.softmax = softmax
        self.pred_key, self.name_key, self.id_key, self.label_key = pred_key, name_key, id_key, label_key
        self.rows: list[tuple[int, str, int | None, list[float]]] = []
        self._ids: list[torch.Tensor] = []
        self._names: list[str] = []
        self._labels: list[torch.Tensor] = []
        self._scores: list[torch.Tensor] = []

    def attach(self, engine: Engine) -> None:
        """Register on the round's start, iterations and end (idempotent)."""
        attach_round(engine, self.reset, self.collect, self.write)

    def reset(self, engine: Engine) -> None:
        """``EPOCH_STARTED``: forget the previous round."""
        self._ids, self._names, self._labels, self._scores = [], [], [], []

    def collect(self, engine: Engine) -> None:
        """``ITERATION_COMPLETED``: keep the batch's scores, names, ids (and labels) on the device."""
        batch, output = engine.state.batch, engine.state.output
        try:
            names = [str(name) for name in _per_sample(batch, self.name_key)]
            ids = torch.as_tensor([int(i) for i in _per_sample(batch, self.id_key)])
        except (KeyError, TypeError):
            keys = sorted(batch[0] if isinstance(batch, list) and batch else batch or {})
            raise ValueError(
                f"{type(self).__name__} needs batch keys {self.name_key!r} and {self.id_key!r}; the batch has "
                f"{keys} (monai_danil.data.image_datalist writes both)."
            ) from None
        scores = torch.stack([torch.as_tensor(s).detach().reshape(-1) for s in _per_sample(output, self.pred_key)])
        if scores.shape[1] != len(self.class_names):
            raise ValueError(
                f"predictions have {scores.shape[1]} classes but {len(self.class_names)} class names were given: "
                f"{self.class_names}."
            )
        self._scores.append(scores.float())
        self._ids.append(ids)
        self._names += names
        if self.label_key is not None:
            labels = [torch.as_tensor(v).reshape(-1) for v in _per_sample(batch, self.label_key)]
            self._labels.append(torch.stack([v.argmax() if v.numel() > 1 else v[0] for v in labels]).long())

    def _gather(self) -> list[tuple[int, str, int | None, list[float]]]:
        """``(id, name, label, probabilities)`` of every rank, sorted by id, each id once."""
        if not self._scores:
            local: list[tuple[int, str, int | None, list[float]]] = []
        else:
            scores = torch.cat(self._scores)
            probabilities = torch.softmax(scores, dim=1) if self.softmax else scores
            ids = torch.cat(self._ids).tolist()
            labels = torch.cat(self._labels).tolist() if self._labels else [None] * len(ids)
            local = list(zip(ids, self._names, labels, probabilities.cpu().float().tolist()))
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            parts: list[Any] = [None] * dist.get_world_size()
            dist.all_gather_object(parts, local)
            local = [row for part in parts for row in part]
        unique = {}
        for row in local:
            unique.setdefault(row[0], row)
        return [unique[i] for i in sorted(unique)]

    def table(self) -> str:
        """The CSV text of :attr:`rows`."""
        handle = io.StringIO()
        writer = csv.writer(handle, lineterminator="\n")
        labelled = self.label_key is not None
        writer.writerow(["image", *(["label"] if labelled else []), "prediction", *self.class_names])
        for _, name, label, probabilities in self.rows:
            predicted = self.class_names[max(range(len(probabilities)), key=probabilities.__getitem__)]
            writer.writerow(
                [
                    name,
                    *([self.class_names[label]] if labelled else []),
                    predicted,
                    # 9 significant digits give back the exact float32 value the metrics were computed on
                    *(f"{p:.9g}" for p in probabilities),
                ]
            )
        return handle.getvalue()

    def write(self, engine: Engine) -> None:
        """``EPOCH_COMPLETED``: gather the rows and write the CSV (rank 0)."""
        self.rows = self._gather()
        if not is_rank_zero():
            return
        write_atomically(self.output_dir / self.filename, self.table())
