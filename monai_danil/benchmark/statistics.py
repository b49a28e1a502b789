"""Summaries across seeds and paired comparisons against a baseline, for benchmark JSON.

Every function here returns plain floats, lists and ``None`` (never ``NaN``), so its output can be
written with ``json.dump(..., allow_nan=False)``.

The bootstrap resamples *test images*: it measures how much a difference between two sets of trained
models could move had another sample of images of the same size been scored. It says nothing about
training randomness (that is what the seeds and their standard deviation are for), and with a small
evaluation set (120 images) one image is almost a point of accuracy.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np

from monai_danil.metrics import METRIC_NAMES

__all__ = [
    "bootstrap_weights",
    "metrics_from_weights",
    "paired_bootstrap_ci",
    "paired_mean_difference",
    "summarize",
]


def _defined(values: Sequence[float | None]) -> list[float]:
    return [float(v) for v in values if v is not None and not math.isnan(float(v))]


def summarize(values: Sequence[float | None]) -> tuple[float | None, float | None]:
    """Mean and population standard deviation (``ddof=0``) of the defined values.

    Args:
        values: one value per run; ``None`` or NaN where a metric was undefined in that run.

    Returns:
        ``(mean, std)``; the std of one value is 0.0; ``(None, None)`` when no value is defined.

    Example:
        >>> summarize([0.5, None, 0.7])
        (0.6, 0.09999999999999998)
    """
    defined = _defined(values)
    if not defined:
        return None, None
    return float(np.mean(defined)), float(np.std(defined))


def paired_mean_difference(
    runs: Mapping[int, Mapping[str, float | None]],
    baseline: Mapping[int, Mapping[str, float | None]],
    keys: Sequence[str] = METRIC_NAMES,
) -> dict[str, float | None]:
    """Mean over seeds of ``runs[seed][key] - baseline[seed][key]``, per key.

    Only seeds present in both, with both values defined, form a pair: runs are paired by seed, so
    the two methods share the initial weights and the data order of that seed.

    Args:
        runs: per seed, the metrics of the method under test.
        baseline: per seed, the metrics of the baseline (``ce``).
        keys: the metric names to compare. Default: the five of ``classification_report``.

    Returns:
        ``{key: mean difference or None}``; ``None`` where no pair is defined.

    Example:
        >>> paired_mean_difference({0: {"accuracy": 0.6}, 1: {"accuracy": 0.8}},
        ...                        {0: {"accuracy": 0.5}, 1: {"accuracy": 0.5}}, keys=["accuracy"])
        {'accuracy': 0.2}
    """
    result: dict[str, float | None] = {}
    for key in keys:
        diffs = [
            float(runs[seed][key]) - float(baseline[seed][key])  # type: ignore[arg-type]
            for seed in sorted(set(runs) & set(baseline))
            if _defined([runs[seed].get(key)]) and _defined([baseline[seed].get(key)])
        ]
        result[key] = float(np.mean(diffs)) if diffs else None
    return result


def bootstrap_weights(num_samples: int, num_resamples: int = 1000, seed: int = 0) -> np.ndarray:
    """How often each sample is drawn in each bootstrap resample: ``(num_resamples, num_samples)`` counts.

    A resample draws ``num_samples`` indices with replacement; its counts are a multinomial draw.

    Args:
        num_samples: N, the number of evaluated images.
        num_resamples: R. Default 1000.
        seed: seed of the numpy generator, so intervals are reproducible. Default 0.

    Raises:
        ValueError: when ``num_samples`` or ``num_resamples`` is below 1.
    """
    if num_samples < 1 or num_resamples < 1:
        raise ValueError(f"num_samples and num_resamples must be >= 1, got {num_samples}, {num_resamples}.")
    rng = np.random.default_rng(seed)
    return rng.multinomial(num_samples, np.full(num_samples, 1.0 / num_samples), size=num_resamples).astype(
        np.float64
    )


def _auc_from_weights(is_pos: np.ndarray, scores: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """(R,) weighted one-vs-rest ROC AUC of one class, ties counted half (as scikit-learn); NaN if undefined."""
    order = np.argsort(scores, kind="stable")
    sorted_scores, sorted_pos = scores[order], is_pos[order]
    w = weights[:, order]
    w_pos, w_neg = w * sorted_pos, w * ~sorted_pos
    cum_neg = np.concatenate([np.zeros((len(w), 1)), np.cumsum(w_neg, axis=1)], axis=1)
    # the first and one-past-last position of each sample's group of tied scores
    starts = np.searchsorted(sorted_scores, sorted_scores, side="left")
    ends = np.searchsorted(sorted_scores, sorted_scores, side="right")
    below, tied = cum_neg[:, starts], cum_neg[:, ends] - cum_neg[:, starts]
    pairs = (w_pos * (below + 0.5 * tied)).sum(axis=1)
    total = w_pos.sum(axis=1) * w_neg.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, pairs / np.where(total > 0, total, 1.0), np.nan)


def metrics_from_weights(
    y_true: np.ndarray, y_prob: np.ndarray, weights: np.ndarray, num_classes: int
) -> dict[str, np.ndarray]:
    """The five metrics of ``classification_report`` for many weighted copies of one set at once.

    Sample i counts ``weights[r, i]`` times in copy r, so bootstrap counts from :func:`bootstrap_weights`
    give each resample's metrics without re-indexing or a Python loop over resamples. The definitions
    match ``monai_danil.metrics.classification_report`` (balanced accuracy over the classes present,
    macro-F1 over all classes with 0 for empty ones, quadratic kappa over all classes, macro AUC over
    the classes with both positives and negatives); undefined values are NaN here.

    Args:
        y_true: (N,) class indices.
        y_prob: (N, C) class probabilities.
        weights: (R, N) non-negative sample counts (a row of ones reproduces the plain metrics).
        num_classes: C.

    Returns:
        ``{name: (R,) float array}`` for ``accuracy``, ``balanced_accuracy``, ``macro_f1``, ``auc``, ``kappa``.

    Raises:
        ValueError: when the shapes disagree.
    """
    y_true = np.asarray(y_true, dtype=np.int64)
    y_prob = np.asarray(y_prob, dtype=np.float64)
    weights = np.atleast_2d(np.asarray(weights, dtype=np.float64))
    n = len(y_true)
    if y_prob.shape != (n, num_classes) or weights.shape[1] != n:
        raise ValueError(
            f"expected y_true (N,), y_prob (N, {num_classes}), weights (R, N); got {y_true.shape}, "
            f"{y_prob.shape}, {weights.shape}."
        )
    c = num_classes
    y_pred = y_prob.argmax(axis=1)
    cell = np.zeros((n, c * c))
    cell[np.arange(n), y_true * c + y_pred] = 1.0
    confusion = (weights @ cell).reshape(-1, c, c)  # (R, label, prediction)
    total = confusion.sum(axis=(1, 2))
    tp = np.diagonal(confusion, axis1=1, axis2=2)
    per_label, per_pred = confusion.sum(axis=2), confusion.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        accuracy = tp.sum(axis=1) / total
        present = per_label > 0
        recall = np.where(present, tp / np.where(present, per_label, 1.0), 0.0)
        balanced = recall.sum(axis=1) / present.sum(axis=1)
        f1_denominator = per_label + per_pred
        f1 = np.where(f1_denominator > 0, 2 * tp / np.where(f1_denominator > 0, f1_denominator, 1.0), 0.0)
        grade = np.arange(c)
        penalty = (grade[:, None] - grade[None, :]) ** 2.0
        observed = (confusion * penalty).sum(axis=(1, 2))
        expected = (per_label[:, :, None] * per_pred[:, None, :] * penalty).sum(axis=(1, 2)) / total
        kappa = np.where(expected > 0, 1.0 - observed / np.where(expected > 0, expected, 1.0), np.nan)
        per_class_auc = np.stack([_auc_from_weights(y_true == k, y_prob[:, k], weights) for k in range(c)], axis=1)
        defined_auc = ~np.isnan(per_class_auc)
        auc = np.where(
            defined_auc.any(axis=1),
            np.where(defined_auc, per_class_auc, 0.0).sum(axis=1) / np.maximum(defined_auc.sum(axis=1), 1),
            np.nan,
        )
    return {
        "accuracy": accuracy,
        "balanced_accuracy": balanced,
        "macro_f1": f1.mean(axis=1),
        "auc": auc,
        "kappa": kappa,
    }


def paired_bootstrap_ci(
    y_true: np.ndarray,
    method_probs: Mapping[int, np.ndarray],
    baseline_probs: Mapping[int, np.ndarray],
    num_classes: int,
    weights: np.ndarray,
    level: float = 0.95,
) -> dict[str, list[float] | None]:
    """Percentile bootstrap interval of the seed-averaged paired difference, resampling images.

    In each resample (a row of ``weights``), every seed's method and baseline predictions are scored
    on the same resampled images; the statistic is the mean over seeds of the paired differences
    (seeds where a metric is undefined for either side are left out of that resample's mean).

    Args:
        y_true: (N,) class indices of the evaluated images.
        method_probs: per seed, (N, C) probabilities of the method under test.
        baseline_probs: per seed, (N, C) probabilities of the baseline, same image order.
        num_classes: C.
        weights: (R, N) bootstrap counts from :func:`bootstrap_weights`; share them across methods
            so every comparison sees the same resamples.
        level: the interval's coverage. Default 0.95.

    Returns:
        ``{metric: [low, high] or None}``; ``None`` when no seed pair or no resample is defined.

    Raises:
        ValueError: when ``level`` is not in (0, 1).
    """
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level}.")
    seeds = sorted(set(method_probs) & set(baseline_probs))
    result: dict[str, list[float] | None] = {key: None for key in METRIC_NAMES}
    if not seeds:
        return result
    per_seed = []
    for seed in seeds:
        ours = metrics_from_weights(y_true, method_probs[seed], weights, num_classes)
        theirs = metrics_from_weights(y_true, baseline_probs[seed], weights, num_classes)
        per_seed.append({key: ours[key] - theirs[key] for key in METRIC_NAMES})
    tail = 100.0 * (1.0 - level) / 2.0
    for key in METRIC_NAMES:
        diffs = np.stack([d[key] for d in per_seed])  # (seeds, R)
        defined = ~np.isnan(diffs)
        count = defined.sum(axis=0)
        mean = np.where(defined, diffs, 0.0).sum(axis=0) / np.maximum(count, 1)
        mean = mean[count > 0]
        if mean.size:
            result[key] = [float(np.percentile(mean, tail)), float(np.percentile(mean, 100.0 - tail))]
    return result
