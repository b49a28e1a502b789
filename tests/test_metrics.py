"""Tests for ``monai_danil.metrics``: hand-computed values, agreement with scikit-learn, and a real evaluator."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
from monai.bundle import ConfigParser
from monai.data import DataLoader
from monai.engines import SupervisedEvaluator
from monai.handlers import from_engine
from sklearn.metrics import (
    accuracy_score,
    balanced_accuracy_score,
    cohen_kappa_score,
    f1_score,
    roc_auc_score,
)

from monai_danil.metrics import (
    METRIC_NAMES,
    ClassificationMetric,
    ClassificationMetricHandler,
    classification_report,
    nan_safe,
)

# A 3-class toy set. Rows: probabilities; the argmax is the prediction.
#   sample  label  probabilities      prediction
#   0       0      [0.7, 0.2, 0.1]    0  correct
#   1       0      [0.6, 0.3, 0.1]    0  correct
#   2       0      [0.3, 0.5, 0.2]    1  wrong
#   3       1      [0.2, 0.6, 0.2]    1  correct
#   4       1      [0.5, 0.4, 0.1]    0  wrong
#   5       2      [0.1, 0.5, 0.4]    1  wrong
TOY_LABELS = [0, 0, 0, 1, 1, 2]
TOY_PROBS = [
    [0.7, 0.2, 0.1],
    [0.6, 0.3, 0.1],
    [0.3, 0.5, 0.2],
    [0.2, 0.6, 0.2],
    [0.5, 0.4, 0.1],
    [0.1, 0.5, 0.4],
]
TOY_EXPECTED = {
    # 3 of 6 correct.
    "accuracy": 1 / 2,
    # recalls: class 0 2/3, class 1 1/2, class 2 0/1 -> (2/3 + 1/2 + 0) / 3 = 7/18.
    "balanced_accuracy": 7 / 18,
    # class 0: tp 2, fp 1 (s4), fn 1 (s2) -> P 2/3, R 2/3, F1 2/3.
    # class 1: tp 1, fp 2 (s2, s5), fn 1 (s4) -> P 1/3, R 1/2, F1 2*(1/6)/(5/6) = 2/5.
    # class 2: tp 0 -> F1 0.  Macro: (2/3 + 2/5 + 0) / 3 = 16/45.
    "macro_f1": 16 / 45,
    # one-vs-rest, counting positive-over-negative pairs (no ties):
    # class 0: positives 0.7, 0.6, 0.3 vs negatives 0.2, 0.5, 0.1 -> 3 + 3 + 2 = 8 of 9.
    # class 1: positives 0.6, 0.4 vs negatives 0.2, 0.3, 0.5, 0.5 -> 4 + 2 = 6 of 8.
    # class 2: positive 0.4 vs negatives 0.1, 0.1, 0.2, 0.2, 0.1 -> 5 of 5.
    # Macro: (8/9 + 3/4 + 1) / 3 = 95/108.
    "auc": 95 / 108,
    # confusion O (rows label, cols prediction): [[2, 1, 0], [1, 1, 0], [0, 1, 0]];
    # label totals [3, 2, 1], prediction totals [3, 3, 0], N 6; expected E = outer / 6 =
    # [[1.5, 1.5, 0], [1, 1, 0], [0.5, 0.5, 0]]; weights (i - j)^2.
    # sum w*O = 1 + 1 + 1 = 3; sum w*E = 1.5 + 1 + 4*0.5 + 0.5 = 5 -> kappa = 1 - 3/5 = 2/5.
    "kappa": 2 / 5,
}


def _metric_value(name: str, y_pred, y, num_classes: int = 3, softmax: bool = False) -> float:
    metric = ClassificationMetric(name, num_classes=num_classes, softmax=softmax)
    metric(y_pred, y)
    return metric.aggregate()


def _sklearn(name: str, labels: np.ndarray, probs: np.ndarray, num_classes: int) -> float:
    preds = probs.argmax(axis=1)
    classes = list(range(num_classes))
    if name == "accuracy":
        return accuracy_score(labels, preds)
    if name == "balanced_accuracy":
        return balanced_accuracy_score(labels, preds)
    if name == "macro_f1":
        return f1_score(labels, preds, labels=classes, average="macro", zero_division=0)
    if name == "auc":
        return roc_auc_score(labels, probs, multi_class="ovr", average="macro", labels=classes)
    return cohen_kappa_score(labels, preds, labels=classes, weights="quadratic")


@pytest.mark.parametrize("name", METRIC_NAMES)
def test_toy_example_matches_hand_computation(name: str) -> None:
    value = _metric_value(name, torch.tensor(TOY_PROBS), torch.tensor(TOY_LABELS))
    assert value == pytest.approx(TOY_EXPECTED[name])


@pytest.mark.parametrize("name", METRIC_NAMES)
def test_softmax_of_log_probabilities_gives_the_same_values(name: str) -> None:
    logits = torch.log(torch.tensor(TOY_PROBS)) + 3.0  # softmax is shift invariant
    value = _metric_value(name, logits, torch.tensor(TOY_LABELS), softmax=True)
    assert value == pytest.approx(TOY_EXPECTED[name])


def test_toy_example_report() -> None:
    report = classification_report(TOY_LABELS, TOY_PROBS, num_classes=3)
    assert list(report) == list(METRIC_NAMES)
    for name, expected in TOY_EXPECTED.items():
        assert report[name] == pytest.approx(expected)


@pytest.mark.parametrize("name", METRIC_NAMES)
def test_agrees_with_sklearn_on_random_batches(name: str) -> None:
    generator = torch.Generator().manual_seed(7)
    num_classes = 4
    logits = 2 * torch.randn(150, num_classes, generator=generator)
    labels = torch.randint(0, num_classes, (150,), generator=generator)
    metric = ClassificationMetric(name, num_classes=num_classes)
    for start in range(0, 150, 32):  # uneven last batch
        metric(logits[start : start + 32], labels[start : start + 32])
    expected = _sklearn(name, labels.numpy(), torch.softmax(logits, dim=1).double().numpy(), num_classes)
    assert metric.aggregate() == pytest.approx(expected)


def test_reset_starts_a_new_epoch() -> None:
    metric = ClassificationMetric("accuracy", num_classes=3, softmax=False)
    metric(torch.tensor(TOY_PROBS), torch.tensor(TOY_LABELS))
    metric.reset()
    metric(torch.tensor([[0.9, 0.05, 0.05]]), torch.tensor([0]))
    assert metric.aggregate() == 1.0


@pytest.mark.parametrize("name", METRIC_NAMES)
def test_label_formats_agree(name: str) -> None:
    probs = torch.tensor(TOY_PROBS)
    indices = torch.tensor(TOY_LABELS)
    formats = {
        "indices": indices,
        "column": indices[:, None],
        "float column": indices[:, None].float(),
        "one-hot": torch.nn.functional.one_hot(indices, 3),
        "one-hot float": torch.nn.functional.one_hot(indices, 3).float(),
    }
    for label_format, y in formats.items():
        assert _metric_value(name, probs, y) == pytest.approx(TOY_EXPECTED[name]), label_format


@pytest.mark.parametrize("name", METRIC_NAMES)
def test_lists_of_per_sample_tensors(name: str) -> None:
    probs = list(torch.tensor(TOY_PROBS))  # each (3,)
    as_scalars = list(torch.tensor(TOY_LABELS))  # each (), as decollate_batch gives integer labels
    as_vectors = [torch.tensor([label]) for label in TOY_LABELS]  # each (1,)
    as_one_hot = list(torch.nn.functional.one_hot(torch.tensor(TOY_LABELS), 3))  # each (3,)
    for y in (as_scalars, as_vectors, as_one_hot):
        assert _metric_value(name, probs, y) == pytest.approx(TOY_EXPECTED[name])


def test_class_missing_from_labels_and_predictions() -> None:
    # The toy set declared as 4 classes; class 3 is never a label nor a prediction.
    probs = [row + [0.0] for row in TOY_PROBS]
    expected = dict(TOY_EXPECTED)
    expected["macro_f1"] = (2 / 3 + 2 / 5 + 0 + 0) / 4  # class 3 counts with F1 0
    # balanced accuracy averages recall over classes present in the labels: unchanged.
    # AUC skips class 3 (no positives): unchanged. Kappa: row and column 3 are empty: unchanged.
    for name in METRIC_NAMES:
        assert _metric_value(name, torch.tensor(probs), torch.tensor(TOY_LABELS), num_classes=4) == pytest.approx(
            expected[name]
        ), name
    report = classification_report(TOY_LABELS, probs, num_classes=4)
    assert report == pytest.approx(expected)


def test_class_predicted_but_absent_from_labels_does_not_warn() -> None:
    probs = torch.tensor([[0.1, 0.1, 0.8], [0.8, 0.1, 0.1], [0.1, 0.8, 0.1]])
    labels = torch.tensor([0, 0, 1])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        # recalls: class 0 1/2, class 1 1/1; class 2 has no labels and is not averaged.
        assert _metric_value("balanced_accuracy", probs, labels) == pytest.approx(3 / 4)


def test_degenerate_kappa_is_zero() -> None:
    # Every label and every prediction is class 1: sklearn's kappa is 0/0.
    probs = torch.tensor([[0.1, 0.8, 0.1], [0.2, 0.7, 0.1]])
    labels = torch.tensor([1, 1])
    with pytest.warns((UserWarning, RuntimeWarning)):  # UndefinedMetricWarning; a 0/0 RuntimeWarning before 1.4
        assert math.isnan(cohen_kappa_score(labels.numpy(), [1, 1], labels=[0, 1, 2], weights="quadratic"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert _metric_value("kappa", probs, labels) == 0.0
        assert _metric_value("accuracy", probs, labels) == 1.0


def test_kappa_is_defined_when_labels_are_one_class_but_predictions_differ() -> None:
    probs = torch.tensor([[0.1, 0.8, 0.1], [0.8, 0.1, 0.1]])
    labels = torch.tensor([1, 1])
    expected = cohen_kappa_score([1, 1], [1, 0], labels=[0, 1, 2], weights="quadratic")
    assert _metric_value("kappa", probs, labels) == pytest.approx(expected)


def test_undefined_auc_is_nan_with_a_warning() -> None:
    probs = torch.tensor([[0.1, 0.8, 0.1], [0.6, 0.3, 0.1]])
    labels = torch.tensor([1, 1])
    with pytest.warns(UserWarning, match="AUC is undefined"):
        assert math.isnan(_metric_value("auc", probs, labels))


def test_report_uses_none_for_undefined_values() -> None:
    report = classification_report([2, 2, 2], [[0.1, 0.1, 0.8]] * 3, num_classes=3)
    # macro-F1: class 2 scores 1, classes 0 and 1 (never labelled nor predicted) score 0.
    expected = {"accuracy": 1.0, "balanced_accuracy": 1.0, "macro_f1": pytest.approx(1 / 3), "auc": None, "kappa": None}
    assert report == expected


def test_report_accepts_numpy_and_one_hot() -> None:
    one_hot = np.eye(3)[TOY_LABELS]
    assert classification_report(one_hot, np.array(TOY_PROBS), 3) == pytest.approx(TOY_EXPECTED)


def test_nan_safe() -> None:
    assert nan_safe(None) == -math.inf
    assert nan_safe(float("nan")) == -math.inf
    assert nan_safe(float("nan"), fallback=0.0) == 0.0
    assert nan_safe(0.25) == 0.25
    assert nan_safe(np.float32(0.5)) == 0.5


def test_warns_once_when_softmax_is_applied_to_probabilities() -> None:
    metric = ClassificationMetric("auc", num_classes=3)
    with pytest.warns(UserWarning, match="softmax=False"):
        metric(torch.tensor(TOY_PROBS), torch.tensor(TOY_LABELS))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        metric(torch.tensor(TOY_PROBS), torch.tensor(TOY_LABELS))


@pytest.mark.parametrize(
    ("y_pred", "y", "message"),
    [
        (torch.zeros(2, 4), torch.tensor([0, 1]), r"shape \(B, 3\)"),
        (torch.zeros(2, 3), torch.tensor([0, 3]), "label 3 at position 1"),
        (torch.zeros(2, 3), torch.tensor([0.0, 1.5]), "label 1.5"),
        (torch.zeros(2, 3), torch.tensor([-1, 0]), "label -1 at position 0"),
        (torch.zeros(2, 3), torch.tensor([[0, 1, 0], [1, 1, 0]]), "one-hot label row 1"),
        (torch.zeros(2, 3), torch.zeros(2, 2), r"got shape \(2, 2\)"),
        (torch.zeros(3, 3), torch.tensor([0, 1]), "3 samples but y has 2"),
    ],
)
def test_invalid_inputs_name_the_offending_value(y_pred, y, message) -> None:
    # shapes fail at the call; label values when the epoch is aggregated (one host sync per epoch)
    metric = ClassificationMetric("accuracy", num_classes=3)
    with pytest.raises(ValueError, match=message):
        metric(y_pred, y)
        metric.aggregate()


def test_label_values_are_checked_when_the_epoch_is_aggregated() -> None:
    metric = ClassificationMetric("accuracy", num_classes=3)
    for sample in range(3):  # per sample, as after decollation: nothing here reads a value on the host
        metric([torch.zeros(3)], [torch.tensor(3 if sample == 2 else 0)])
    with pytest.raises(ValueError, match="label 3 at position 2"):
        metric.aggregate()


def test_invalid_settings() -> None:
    with pytest.raises(ValueError, match="expected one of accuracy"):
        ClassificationMetric("f1", num_classes=3)
    with pytest.raises(ValueError, match="num_classes must be an integer >= 2"):
        ClassificationMetric("accuracy", num_classes=1)
    with pytest.raises(ValueError, match="has no samples"):
        ClassificationMetric("accuracy", num_classes=3).aggregate()
    with pytest.raises(ValueError, match="no samples"):
        classification_report(torch.zeros(0, dtype=torch.long), torch.zeros(0, 3), 3)
    with pytest.raises(ValueError, match="needs labels"):
        ClassificationMetric("accuracy", num_classes=3)(torch.zeros(2, 3))


def test_handler_from_bundle_config() -> None:
    config = {
        "_target_": "monai_danil.metrics.ClassificationMetricHandler",
        "metric_name": "kappa",
        "num_classes": 5,
        "output_transform": "$monai.handlers.from_engine(['pred', 'label'])",
    }
    handler = ConfigParser({"handler": config}).get_parsed_content("handler")
    assert isinstance(handler, ClassificationMetricHandler)
    assert handler.metric_fn.metric_name == "kappa"
    assert handler.metric_fn.num_classes == 5


def test_handler_in_supervised_evaluator() -> None:
    torch.manual_seed(0)
    num_classes, num_samples = 3, 40
    images = torch.randn(num_samples, 1, 4, 4)
    labels = torch.randint(0, num_classes, (num_samples,))
    data = [{"image": image, "label": int(label)} for image, label in zip(images, labels)]
    network = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, num_classes))
    handlers = {
        f"val_{name}": ClassificationMetricHandler(
            name, num_classes, output_transform=from_engine(["pred", "label"]), save_details=name == "kappa"
        )
        for name in METRIC_NAMES
    }
    evaluator = SupervisedEvaluator(
        device=torch.device("cpu"),
        val_data_loader=DataLoader(data, batch_size=8, shuffle=False, num_workers=0),
        network=network,
        key_val_metric={"val_kappa": handlers.pop("val_kappa")},
        additional_metrics=handlers,
    )
    evaluator.run()

    with torch.no_grad():
        probs = torch.softmax(network(images), dim=1).double().numpy()
    for name in METRIC_NAMES:
        expected = _sklearn(name, labels.numpy(), probs, num_classes)
        assert evaluator.state.metrics[f"val_{name}"] == pytest.approx(expected), name
    assert evaluator.state.best_metric == pytest.approx(evaluator.state.metrics["val_kappa"])
    scores, buffered_labels = evaluator.state.metric_details["val_kappa"]
    assert torch.equal(buffered_labels, labels)
    assert scores.shape == (num_samples, num_classes)
