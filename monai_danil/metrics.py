"""Multi-class, single-label classification metrics for MONAI evaluators.

``ClassificationMetric`` is a MONAI ``CumulativeIterationMetric``: it collects class scores and labels
over an epoch and computes one of accuracy, balanced accuracy, macro-F1, macro one-vs-rest ROC AUC or
quadratic-weighted Cohen kappa with scikit-learn in ``aggregate()``. ``ClassificationMetricHandler`` is
the ignite adapter for evaluators and bundles, and ``classification_report`` computes all five at once
for benchmarks that write JSON; ``evaluation_report`` adds per-class precision, recall and AUC and the
confusion matrix, by class name, for a bundle's ``eval/metrics.json``.

NaN policy:
    accuracy, balanced accuracy and macro-F1 are defined for any non-empty set of samples. Kappa is
    undefined when every label and every prediction fall in one single class; the metric then returns
    0.0 (no agreement beyond chance) so it can select models. AUC is undefined when no class has both
    positive and negative samples; the metric then warns and returns ``float("nan")``, otherwise it is
    the mean over the classes where it is defined. ``classification_report`` returns ``None`` for
    either undefined value.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from monai.handlers.ignite_metric import IgniteMetricHandler
from monai.metrics import CumulativeIterationMetric
from monai.utils import convert_to_tensor
from sklearn.metrics import (
    accuracy_score,
    balanced_accuracy_score,
    cohen_kappa_score,
    confusion_matrix,
    f1_score,
    precision_recall_fscore_support,
    roc_auc_score,
)

__all__ = [
    "METRIC_NAMES",
    "ClassificationMetric",
    "class_indices",
    "ClassificationMetricHandler",
    "classification_report",
    "evaluation_report",
    "nan_safe",
]

METRIC_NAMES: tuple[str, ...] = ("accuracy", "balanced_accuracy", "macro_f1", "auc", "kappa")
"""The values ``metric_name`` accepts, in the order ``classification_report`` lists them."""


def _check_num_classes(num_classes: int) -> int:
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
        raise ValueError(f"num_classes must be an integer >= 2, got {num_classes!r}.")
    return num_classes


def _class_scores(y_pred: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Checks that ``y_pred`` is (B, C) with C == ``num_classes`` and returns it as float."""
    if y_pred.ndim != 2 or y_pred.shape[1] != num_classes:
        raise ValueError(
            f"y_pred must have shape (B, {num_classes}) (or ({num_classes},) per sample), got {tuple(y_pred.shape)}."
        )
    return y_pred.float()


def _label_values(y: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Labels as indices (B,), (B, 1) or one-hot (B, C) to one float per sample, on their device, without a host sync.

    A one-hot row that is not exactly one 1 among zeros becomes ``-inf``; every other value is kept as
    it is, so :func:`class_indices` can name it. Float, so that a bad value survives to be reported.

    Raises:
        ValueError: when the shape is none of these (the shape is known without a sync).
    """
    if y.ndim == 2 and y.shape[1] == num_classes:
        is_one_hot = ((y == 0) | (y == 1)).all(dim=1) & (y.sum(dim=1) == 1)
        return torch.where(is_one_hot, y.argmax(dim=1).float(), -math.inf)
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1:
        raise ValueError(
            f"y must be class indices (B,) or (B, 1), or one-hot (B, {num_classes}); got shape {tuple(y.shape)}."
        )
    return y.float()


def _checked_indices(values: torch.Tensor, num_classes: int) -> torch.Tensor:
    """int64 class indices from :func:`_label_values`; one host sync for the whole set.

    Raises:
        ValueError: naming the first sample that is not a class index in ``[0, num_classes)`` or not a
            valid one-hot row.
    """
    bad = ~((values >= 0) & (values < num_classes) & (values == torch.round(values)))
    if bool(bad.any()):
        position = int(torch.nonzero(bad)[0, 0])
        value = float(values[position])
        if value == -math.inf:
            raise ValueError(f"one-hot label row {position} is not exactly one 1 among zeros.")
        shown = int(value) if value.is_integer() else value
        raise ValueError(f"label {shown} at position {position} is not a class index in [0, {num_classes}).")
    return values.long()


def class_indices(y: Any, num_classes: int) -> torch.Tensor:
    """Labels given as indices (N,), (N, 1) or one-hot (N, C) as int64 class indices (N,), checked.

    The one label conversion of the package: the metrics and the handlers read labels with it.

    Args:
        y: labels, as a tensor, array or list (of numbers or of per-sample tensors).
        num_classes: number of classes C.

    Raises:
        ValueError: when the shape is none of these, a one-hot row is not exactly one 1 among zeros,
            or an index is not an integer in ``[0, num_classes)``.

    Example:
        >>> class_indices([[0, 1, 0], [1, 0, 0]], 3)
        tensor([1, 0])
    """
    values = _label_values(convert_to_tensor(y, track_meta=False, wrap_sequence=True), num_classes)
    return _checked_indices(values, num_classes)


def _as_arrays(y_true: Any, y_prob: Any, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """Validated numpy copies: int64 class indices (N,) and float64 class scores (N, C)."""
    scores = _class_scores(convert_to_tensor(y_prob, track_meta=False, wrap_sequence=True), num_classes)
    labels = class_indices(y_true, num_classes)
    if len(labels) != len(scores):
        raise ValueError(f"y_true has {len(labels)} samples but y_prob has {len(scores)}.")
    if len(labels) == 0:
        raise ValueError("no samples to score: y_true and y_prob are empty.")
    return labels.cpu().numpy(), scores.detach().cpu().double().numpy()


def _balanced_accuracy(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    with warnings.catch_warnings():
        # A class predicted but absent from the labels has no recall to average, and a single class is
        # a valid (if small) set: both are the documented definition, not faults to warn about every epoch.
        warnings.filterwarnings("ignore", message="y_pred contains classes not in y_true")
        warnings.filterwarnings("ignore", message="A single label was found")
        return float(balanced_accuracy_score(y_true, y_pred))


def _kappa(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> float | None:
    # Chance agreement equals observed agreement (0/0) exactly when labels and predictions all fall in
    # one class; checking first avoids sklearn's NaN and warning.
    if np.unique(np.concatenate([y_true, y_pred])).size == 1:
        return None
    return float(cohen_kappa_score(y_true, y_pred, labels=list(range(num_classes)), weights="quadratic"))


def _auc(y_true: np.ndarray, y_prob: np.ndarray, num_classes: int) -> float | None:
    per_class = [
        roc_auc_score(y_true == c, y_prob[:, c])
        for c in range(num_classes)
        if 0 < np.count_nonzero(y_true == c) < len(y_true)
    ]
    return float(np.mean(per_class)) if per_class else None


def _compute(metric_name: str, y_true: np.ndarray, y_prob: np.ndarray, num_classes: int) -> float | None:
    """One metric on validated arrays; ``None`` where it is undefined (kappa, auc)."""
    y_pred = y_prob.argmax(axis=1)
    if metric_name == "accuracy":
        return float(accuracy_score(y_true, y_pred))
    if metric_name == "balanced_accuracy":
        return _balanced_accuracy(y_true, y_pred)
    if metric_name == "macro_f1":
        return float(f1_score(y_true, y_pred, labels=list(range(num_classes)), average="macro", zero_division=0))
    if metric_name == "auc":
        return _auc(y_true, y_prob, num_classes)
    if metric_name == "kappa":
        return _kappa(y_true, y_pred, num_classes)
    raise ValueError(f"unsupported metric_name {metric_name!r}; expected one of {', '.join(METRIC_NAMES)}.")


def classification_report(y_true: Any, y_prob: Any, num_classes: int) -> dict[str, float | None]:
    """Computes all five classification metrics at once, with ``None`` for undefined values.

    Meant for benchmarks that write JSON, where ``NaN`` is not valid. Kappa is ``None`` when every label
    and every prediction fall in one class (``ClassificationMetric`` reports 0.0 there instead), and
    AUC is ``None`` when no class has both positive and negative samples.

    Args:
        y_true: labels as class indices (N,) or (N, 1), or one-hot (N, C); tensor, array or list.
        y_prob: class probabilities (N, C). The predicted class is the row's argmax; AUC ranks each
            column, so any per-class scores work, but logits give a different AUC than their softmax.
        num_classes: number of classes C (>= 2), so that classes absent from ``y_true`` still count.

    Returns:
        ``{"accuracy", "balanced_accuracy", "macro_f1", "auc", "kappa"}`` mapped to floats or ``None``.

    Raises:
        ValueError: When ``num_classes`` < 2, the shapes do not match, a label is not a class index in
            ``[0, num_classes)``, or there are no samples.

    Example:
        >>> classification_report([0, 1, 1], [[0.8, 0.2], [0.3, 0.7], [0.6, 0.4]], num_classes=2)["accuracy"]
        0.6666666666666666
    """
    _check_num_classes(num_classes)
    labels, scores = _as_arrays(y_true, y_prob, num_classes)
    return {name: _compute(name, labels, scores, num_classes) for name in METRIC_NAMES}


def _defined(value: float) -> float | None:
    return None if math.isnan(value) else float(value)


def evaluation_report(y_true: Any, y_prob: Any, class_names: Sequence[str]) -> dict[str, Any]:
    """Everything a bundle's ``eval/metrics.json`` reports about a set of predictions, by class name.

    All values come from scikit-learn on the same arrays: the five metrics of
    :func:`classification_report`, per class precision, recall (``precision_recall_fscore_support``)
    and one-vs-rest ROC AUC (``roc_auc_score``), and the confusion matrix (``confusion_matrix``, rows
    = true class, columns = predicted class, in ``class_names`` order). A value that is undefined is
    ``None``: precision of a class never predicted, recall of a class absent from the labels, AUC of a
    class that is all or none of the labels, and kappa and macro AUC as in ``classification_report``.

    Args:
        y_true: labels as class indices (N,) or (N, 1), or one-hot (N, C).
        y_prob: class probabilities (N, C); the predicted class is the row's argmax.
        class_names: the C class names, index = class number.

    Returns:
        ``{"num_images", "metrics": {accuracy, balanced_accuracy, macro_f1, auc, kappa}, "per_class":
        {name: {"precision", "recall", "auc", "support"}}, "confusion_matrix": {"classes", "rows",
        "columns", "matrix"}}``.

    Raises:
        ValueError: as :func:`classification_report`, or when ``class_names`` does not have C names.

    Example:
        >>> report = evaluation_report([0, 1, 1], [[0.8, 0.2], [0.3, 0.7], [0.6, 0.4]], ["benign", "malignant"])
        >>> report["per_class"]["malignant"]["recall"], report["confusion_matrix"]["matrix"]
        (0.5, [[1, 0], [1, 1]])
    """
    names = [str(name) for name in class_names]
    num_classes = _check_num_classes(len(names))
    labels, scores = _as_arrays(y_true, y_prob, num_classes)
    predicted = scores.argmax(axis=1)
    classes = list(range(num_classes))
    precision, recall, _, support = precision_recall_fscore_support(
        labels, predicted, labels=classes, zero_division=np.nan
    )
    per_class = {}
    for c, name in enumerate(names):
        positives = int(np.count_nonzero(labels == c))
        auc = float(roc_auc_score(labels == c, scores[:, c])) if 0 < positives < len(labels) else None
        per_class[name] = {
            "precision": _defined(precision[c]),
            "recall": _defined(recall[c]),
            "auc": auc,
            "support": int(support[c]),
        }
    return {
        "num_images": int(len(labels)),
        "metrics": {name: _compute(name, labels, scores, num_classes) for name in METRIC_NAMES},
        "per_class": per_class,
        "confusion_matrix": {
            "classes": names,
            "rows": "true class",
            "columns": "predicted class",
            "matrix": confusion_matrix(labels, predicted, labels=classes).tolist(),
        },
    }


def nan_safe(value: float | None, fallback: float = -math.inf) -> float:
    """Returns ``value`` as a float, or ``fallback`` when it is ``None`` or NaN.

    Model selection compares scores with ``>``, which is always false against NaN; mapping undefined
    scores to ``-inf`` makes them lose every comparison instead.

    Args:
        value: a metric value, possibly ``None`` or NaN.
        fallback: what to return for an undefined value. Defaults to ``-inf``.

    Example:
        >>> nan_safe(float("nan"))
        -inf
    """
    if value is None or math.isnan(value):
        return fallback
    return float(value)


class ClassificationMetric(CumulativeIterationMetric):
    """Accuracy, balanced accuracy, macro-F1, macro one-vs-rest ROC AUC or quadratic-weighted Cohen kappa.

    Multi-class, single-label. Each call adds a batch of class scores and labels to the buffers;
    ``aggregate()`` computes the metric over everything added since ``reset()`` with scikit-learn:

    - ``"accuracy"``: fraction of samples whose argmax is the label.
    - ``"balanced_accuracy"``: mean recall over the classes present in the labels.
    - ``"macro_f1"``: mean F1 over all ``num_classes`` classes; a class with no true and no predicted
      sample scores 0, so a class missing from the validation set lowers every model's score alike.
    - ``"auc"``: mean one-vs-rest ROC AUC of the (softmax) scores over the classes that have both
      positive and negative samples.
    - ``"kappa"``: Cohen's kappa with quadratic weights over all ``num_classes`` classes.

    NaN policy: accuracy, balanced accuracy and macro-F1 are always defined for a non-empty set. Kappa
    is 0.0 when undefined (every label and prediction in one class, where sklearn gives NaN), so it can
    select models. AUC is ``float("nan")``, with a warning, when no class has both positives and
    negatives.

    Inputs follow MONAI: batch-first tensors or lists of per-sample tensors, as evaluators deliver
    them after decollation. The buffers stay on the inputs' device; labels are checked and
    everything is copied to the host once per epoch, in ``aggregate()``, so a bad label value is
    reported there (shapes are checked at once).

    Args:
        metric_name: one of ``"accuracy"``, ``"balanced_accuracy"``, ``"macro_f1"``, ``"auc"``, ``"kappa"``.
        num_classes: number of classes C (>= 2), so that classes absent from a batch or from the whole
            set are handled the same way every epoch.
        softmax: apply softmax over the class dimension of ``y_pred``. Defaults to ``True``: ``y_pred``
            holds logits. Set ``False`` when a post-processing transform already produced probabilities;
            a second softmax keeps the argmax but changes AUC (a warning says so if inputs look like it).

    Raises:
        ValueError: When ``metric_name`` is not one of the five, or ``num_classes`` < 2.

    Example:
        >>> metric = ClassificationMetric("accuracy", num_classes=3)
        >>> _ = metric(torch.tensor([[2.0, 0.1, 0.1], [0.1, 2.0, 0.1]]), torch.tensor([0, 2]))
        >>> metric.aggregate()
        0.5
    """

    def __init__(self, metric_name: str, num_classes: int, softmax: bool = True) -> None:
        super().__init__()
        if metric_name not in METRIC_NAMES:
            raise ValueError(f"unsupported metric_name {metric_name!r}; expected one of {', '.join(METRIC_NAMES)}.")
        self.metric_name = metric_name
        self.num_classes = _check_num_classes(num_classes)
        self.softmax = softmax
        self._checked_probabilities = False

    def _compute_tensor(  # type: ignore[override]
        self, y_pred: torch.Tensor, y: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns what the buffers keep, on the device: class scores (B, C) and one label value per sample (B,).

        MONAI calls this once per sample after decollation, so nothing here waits for the device:
        shapes are checked now, label values once per epoch in :meth:`aggregate` (the label values
        are floats until then, so that a bad one can be named).

        Args:
            y_pred: logits, or probabilities with ``softmax=False``, shaped (B, C).
            y: class indices (B,) or (B, 1), or one-hot (B, C).

        Raises:
            ValueError: When ``y`` is missing, a shape is wrong, or the batch sizes differ.
        """
        if y is None:
            raise ValueError(f"{self.__class__.__name__} needs labels y, got None.")
        scores = _class_scores(convert_to_tensor(y_pred, track_meta=False), self.num_classes)
        labels = _label_values(convert_to_tensor(y, track_meta=False), self.num_classes)
        if len(labels) != len(scores):
            raise ValueError(f"y_pred has {len(scores)} samples but y has {len(labels)}.")
        if self.softmax:
            self._warn_if_probabilities(scores)
            scores = torch.softmax(scores, dim=1)
        return scores, labels

    def _warn_if_probabilities(self, scores: torch.Tensor) -> None:
        # the first batch only: one host sync in the metric's life, not one per sample
        if self._checked_probabilities or len(scores) == 0:
            return
        self._checked_probabilities = True
        ones = torch.ones(len(scores), dtype=scores.dtype, device=scores.device)
        if bool((scores >= 0).all()) and torch.allclose(scores.sum(dim=1), ones, atol=1e-4):
            warnings.warn(
                f"{self.__class__.__name__}({self.metric_name!r}) applies softmax to y_pred, whose rows already"
                " sum to 1; pass softmax=False if they are probabilities (AUC differs, the argmax does not).",
                stacklevel=3,
            )

    def aggregate(self) -> float:
        """Computes the metric over every sample added since the last ``reset()``.

        The buffers (under ``torch.distributed``, every rank's) are checked and copied to the host
        once, then scored with scikit-learn.

        Returns:
            The metric as a float; ``float("nan")`` for AUC when undefined (see the class docstring).

        Raises:
            ValueError: When no sample has been added, or a label is not a class index in
                ``[0, num_classes)`` or a valid one-hot row (the message names its position among
                the samples added).
        """
        buffers = self.get_buffer()
        if buffers is None:
            raise ValueError(
                f"{self.__class__.__name__}({self.metric_name!r}) has no samples; call it on a batch first."
            )
        scores, labels = buffers
        labels = _checked_indices(labels, self.num_classes)
        y_true, y_prob = labels.cpu().numpy(), scores.cpu().double().numpy()
        value = _compute(self.metric_name, y_true, y_prob, self.num_classes)
        if value is not None:
            return value
        if self.metric_name == "kappa":
            return 0.0
        warnings.warn(
            f"AUC is undefined: no class has both positive and negative samples among {len(y_true)} labels"
            f" (classes present: {sorted(set(y_true.tolist()))}); returning NaN.",
            stacklevel=2,
        )
        return float("nan")


class ClassificationMetricHandler(IgniteMetricHandler):
    """Ignite handler computing a ``ClassificationMetric`` over an evaluator's epoch.

    Usable in a bundle like MONAI's ``ROCAUC`` handler, e.g. as the evaluator's ``key_metric``::

        "key_metric": {"val_kappa": {
            "_target_": "monai_danil.metrics.ClassificationMetricHandler",
            "metric_name": "kappa",
            "num_classes": 5,
            "output_transform": "$monai.handlers.from_engine(['pred', 'label'])"
        }}

    The result lands in ``engine.state.metrics`` under the name it is attached with; see
    ``ClassificationMetric`` for the definitions and the NaN policy (AUC may be NaN, kappa never is).

    Args:
        metric_name: one of ``"accuracy"``, ``"balanced_accuracy"``, ``"macro_f1"``, ``"auc"``, ``"kappa"``.
        num_classes: number of classes C (>= 2).
        output_transform: callable extracting ``(y_pred, y)`` from ``engine.state.output``, as batch-first
            tensors or lists of per-sample tensors. Defaults to the identity.
        save_details: store the buffered ``[scores, labels]`` (probabilities, or the scores as given
            with ``softmax=False``, and the labels as float class numbers) in ``engine.state.metric_details``
            under the metric's name. Defaults to ``False``.
        softmax: apply softmax to ``y_pred`` (logits). Defaults to ``True``; use ``False`` after a
            post-processing softmax.

    Raises:
        ValueError: When ``metric_name`` is not one of the five, or ``num_classes`` < 2.

    Example:
        >>> from monai.handlers import from_engine
        >>> handler = ClassificationMetricHandler("macro_f1", 3, output_transform=from_engine(["pred", "label"]))
    """

    def __init__(
        self,
        metric_name: str,
        num_classes: int,
        output_transform: Callable = lambda x: x,
        save_details: bool = False,
        softmax: bool = True,
    ) -> None:
        metric_fn = ClassificationMetric(metric_name=metric_name, num_classes=num_classes, softmax=softmax)
        super().__init__(metric_fn=metric_fn, output_transform=output_transform, save_details=save_details)
