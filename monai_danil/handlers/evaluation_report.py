"""The evaluation report of a trained bundle: ``metrics.json`` and the per-image CSV of a scored split."""

from __future__ import annotations

import datetime
import hashlib
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from monai_danil.data.atomic import write_atomically
from monai_danil.metrics import evaluation_report

from .prediction_saver import PredictionSaver
from .utils import is_rank_zero

if TYPE_CHECKING:
    from ignite.engine import Engine

__all__ = ["EvaluationReportSaver", "file_sha256"]


def file_sha256(path: str | os.PathLike[str]) -> str:
    """The SHA-256 of a file's bytes, as hex."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class EvaluationReportSaver(PredictionSaver):
    """Scores an evaluator's round and writes ``metrics.json`` and a per-image CSV.

    Attached to the evaluator of a labelled split (a bundle's ``configs/evaluate.json``), at the end of
    the round it gathers every image's probabilities and label (all ranks under ``torch.distributed``,
    see :class:`PredictionSaver`) and writes, on rank 0, through a temporary file and a rename:

    - ``{output_dir}/{metrics_filename}``: :func:`~monai_danil.metrics.evaluation_report` of the
      round (accuracy, balanced accuracy, macro-F1, macro AUC and quadratic-weighted kappa; per class
      precision, recall, AUC and support by class name; the confusion matrix with class names; the
      number of images; scikit-learn on exactly the probabilities of the CSV), plus ``model``
      (``file``, ``sha256`` of its bytes), ``data`` (``manifest``, ``split``) and ``date`` (UTC, ISO 8601);
    - ``{output_dir}/{filename}``: ``image,label,prediction,<class name>...``, one row per image.

    Args:
        class_names: class names, index = class number.
        output_dir: the folder of both files, created if needed.
        model_file: the checkpoint that was evaluated, hashed into the report.
        manifest: the manifest that was scored, recorded in the report. Default ``None``.
        split: the split that was scored (``None``: every row). Default ``None``.
        filename: the per-image CSV. Default ``"per_image.csv"``.
        metrics_filename: the report. Default ``"metrics.json"``.
        softmax: apply softmax to ``pred``. Default ``True``: a training config's evaluator outputs logits.
        pred_key: key of the class scores in ``engine.state.output``. Default ``"pred"``.
        name_key: batch key of the image name. Default ``"relative_path"``.
        id_key: batch key of the sample id. Default ``"id"``.
        label_key: batch key of the label. Default ``"label"``.

    Raises:
        ValueError: as :class:`PredictionSaver`.

    Example:
        >>> EvaluationReportSaver(names, "eval", model_file="models/model.pt", split="val").attach(evaluator)
    """

    def __init__(
        self,
        class_names: Sequence[str],
        output_dir: str | os.PathLike[str],
        model_file: str | os.PathLike[str],
        manifest: str | os.PathLike[str] | None = None,
        split: str | None = None,
        filename: str = "per_image.csv",
        metrics_filename: str = "metrics.json",
        softmax: bool = True,
        pred_key: str = "pred",
        name_key: str = "relative_path",
        id_key: str = "id",
        label_key: str = "label",
    ) -> None:
        super().__init__(
            class_names, output_dir, filename, softmax, pred_key=pred_key, name_key=name_key, id_key=id_key,
            label_key=label_key,
        )
        self.model_file = Path(model_file)
        self.manifest = None if manifest is None else Path(manifest)
        self.split = split
        self.metrics_filename = metrics_filename
        self.report: dict[str, Any] | None = None

    def write(self, engine: Engine) -> None:
        """``EPOCH_COMPLETED``: gather, score with scikit-learn and write both files (rank 0)."""
        self.rows = self._gather()
        if not is_rank_zero():
            return
        labels = [label for _, _, label, _ in self.rows]
        probabilities = [p for _, _, _, p in self.rows]
        report = evaluation_report(labels, probabilities, self.class_names)
        report["model"] = {"file": str(self.model_file.resolve()), "sha256": file_sha256(self.model_file)}
        report["data"] = {
            "manifest": None if self.manifest is None else str(self.manifest.resolve()),
            "split": self.split,
        }
        report["date"] = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
        self.report = report
        write_atomically(self.output_dir / self.filename, self.table())
        write_atomically(self.output_dir / self.metrics_filename, json.dumps(report, indent=2) + "\n")
