"""The accuracy benchmark's results: runs, their pooling over folds, the JSON report and its Markdown.

:class:`RunResult` is one trained and scored run; :func:`pool_folds` joins a cross-validation's folds
into one scored set per method and seed; :func:`compare_methods` summarises methods over seeds and
compares each with the baselines (``ce`` and ``random``), paired by seed; :func:`accuracy_markdown`
and :func:`speed_markdown` print the tables pasted into docs/benchmarks.md.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from monai_danil.metrics import METRIC_NAMES, classification_report

from .statistics import paired_bootstrap_ci, paired_mean_difference, summarize

__all__ = [
    "BASELINES",
    "RunResult",
    "accuracy_markdown",
    "accuracy_report",
    "compare_methods",
    "dumps_report",
    "merge_reports",
    "pool_folds",
    "speed_markdown",
    "upgrade_report",
]

#: the methods every other method is compared with, when they were run: plain training, and the
#: control that draws its distractor at random (what the mining must beat)
BASELINES = ("ce", "random")
#: decimals of the probabilities kept in the JSON (enough for AUC; a few ties may appear)
PROB_DIGITS = 4


def finite(value: Any) -> float | None:
    """``value`` as a float, ``None`` where it is missing, NaN or infinite (JSON has no NaN)."""
    if value is None:
        return None
    value = float(value)
    return None if math.isnan(value) or math.isinf(value) else value


@dataclass
class RunResult:
    """One trained and scored run (one fold of it, under cross-validation).

    ``ids``, ``labels`` and ``probs`` are the scored images (data-row ids of the source manifest),
    their class indices and the run's (N, C) probabilities, in one order shared by every run.
    """

    method: str
    seed: int
    metrics: dict[str, float | None]
    seconds: float
    predict_seconds: float
    best_epoch: int
    best_val_score: float | None
    val_curve: list[float | None]
    run_dir: str
    labels: np.ndarray = field(repr=False)
    probs: np.ndarray = field(repr=False)
    ids: np.ndarray = field(repr=False, default_factory=lambda: np.zeros(0, dtype=np.int64))
    fold: int | None = None
    folds: list[dict[str, Any]] = field(default_factory=list)

    def record(self) -> dict[str, Any]:
        """The run as it appears in the JSON ``runs`` list."""
        entry = {
            "seed": self.seed,
            **self.metrics,
            "seconds": round(self.seconds, 2),
            "predict_seconds": round(self.predict_seconds, 2),
        }
        if self.folds:
            entry["folds"] = self.folds
        else:
            entry.update(
                best_epoch=self.best_epoch, best_val_score=self.best_val_score, val_curve=self.val_curve,
                run_dir=self.run_dir,
            )
        # what merge_reports needs to compare runs of other benchmark files with these; the scored images'
        # ids and labels, the same for every run, are the report's "scored"
        entry["probs"] = _rounded_probs(self.probs)
        return entry

    @classmethod
    def from_record(cls, method: str, record: Mapping[str, Any], scored: Mapping[str, Any]) -> RunResult:
        """A run back from its JSON record and the report's ``scored`` images (for :func:`merge_reports`).

        Raises:
            ValueError: for a record written before probabilities were kept in the JSON.
        """
        if "probs" not in record:
            raise ValueError(f"the {method!r} seed {record.get('seed')} record has no probabilities to compare.")
        return cls(
            method, int(record["seed"]), {k: record.get(k) for k in METRIC_NAMES}, float(record["seconds"]),
            float(record.get("predict_seconds", 0.0)), int(record.get("best_epoch", -1)), record.get("best_val_score"),
            list(record.get("val_curve", [])), str(record.get("run_dir", "")),
            np.asarray(scored["labels"], dtype=np.int64), np.asarray(record["probs"], dtype=np.float64),
            np.asarray(scored["ids"], dtype=np.int64), None, list(record.get("folds", [])),
        )


def pool_folds(results: Sequence[RunResult], k: int, num_classes: int) -> list[RunResult]:
    """One :class:`RunResult` per method and seed whose ``k`` folds have all finished, scored as one set.

    The folds' predictions are concatenated and ordered by image id, so every pooled run scores the
    same images in the same order; the seconds are the folds' sum, and each fold's own figures are kept
    in ``folds``.
    """
    by_run: dict[tuple[str, int], dict[int, RunResult]] = {}
    for result in results:
        by_run.setdefault((result.method, result.seed), {})[int(result.fold)] = result  # type: ignore[arg-type]
    pooled = []
    for (method, seed), folds in by_run.items():
        if len(folds) < k:
            continue
        parts = [folds[f] for f in range(k)]
        ids = np.concatenate([p.ids for p in parts])
        order = np.argsort(ids, kind="stable")
        labels = np.concatenate([p.labels for p in parts])[order]
        probs = np.concatenate([p.probs for p in parts])[order]
        pooled.append(
            RunResult(
                method, seed, classification_report(labels, probs, num_classes),
                sum(p.seconds for p in parts), sum(p.predict_seconds for p in parts), -1, None, [], "",
                labels, probs, ids[order], None,
                [
                    {"fold": f, **p.metrics, "n_images": len(p.ids), "best_epoch": p.best_epoch,
                     "best_val_score": p.best_val_score, "val_curve": p.val_curve, "seconds": round(p.seconds, 2),
                     "run_dir": p.run_dir}
                    for f, p in enumerate(parts)
                ],
            )
        )
    return pooled


def compare_methods(
    results: Sequence[RunResult],
    methods: Sequence[str],
    num_classes: int,
    weights: np.ndarray,
    baselines: Sequence[str] = BASELINES,
) -> dict[str, Any]:
    """Per method: mean and std over seeds, the runs, and paired comparisons with each baseline run.

    ``vs_<baseline>`` (for each of ``baselines`` that ran, by default :data:`BASELINES`; the second one
    only for methods other than the baselines, since its own ``vs_ce`` already compares the two) holds the
    mean over seeds of the paired difference and a percentile bootstrap interval over the scored images
    (shared ``weights``), or ``None``. ``baselines=("ce", "pr")`` compares with a control run as a variant
    (``--variant 'pr=random ...'``) instead of ``random``.

    Raises:
        RuntimeError: when the runs scored different images or orders.
    """
    labels = results[0].labels
    if any(not np.array_equal(r.labels, labels) for r in results):
        raise RuntimeError("runs scored different images or orders; paired comparisons need the same ones.")
    by_method = {m: {r.seed: r for r in results if r.method == m} for m in methods}
    entries: dict[str, Any] = {}
    for method, runs in by_method.items():
        if not runs:
            continue
        keys = (*METRIC_NAMES, "seconds")
        values = {k: [r.metrics[k] if k != "seconds" else r.seconds for r in runs.values()] for k in keys}
        stats = {k: summarize(v) for k, v in values.items()}
        entry: dict[str, Any] = {
            "mean": {k: s[0] for k, s in stats.items()},
            "std": {k: s[1] for k, s in stats.items()},
            "runs": [r.record() for r in runs.values()],
        }
        for baseline in baselines:
            other = by_method.get(baseline, {})
            entry[f"vs_{baseline}"] = None
            # a baseline is compared with ce, not with the other baseline twice over
            skip = method == baseline or (baseline != baselines[0] and method in baselines)
            if skip or baseline not in methods or not set(runs) & set(other):
                continue
            entry[f"vs_{baseline}"] = {
                "mean_diff": paired_mean_difference(
                    {s: r.metrics for s, r in runs.items()}, {s: r.metrics for s, r in other.items()}
                ),
                "ci95": paired_bootstrap_ci(
                    labels, {s: r.probs for s, r in runs.items()}, {s: r.probs for s, r in other.items()},
                    num_classes, weights,
                ),
                "seeds": sorted(set(runs) & set(other)),
            }
        entries[method] = entry
    return entries

_HEADERS = {
    "accuracy": "accuracy",
    "balanced_accuracy": "balanced acc.",
    "macro_f1": "macro-F1",
    "auc": "macro AUC",
    "kappa": "quad. kappa",
}


def _paired_note(baselines: Sequence[str]) -> str:
    """The report's note on ``std`` and the ``vs_<baseline>.mean_diff`` keys it holds."""
    keys = " and ".join(f"vs_{b}.mean_diff" for b in baselines)
    verb = "are the means" if len(baselines) > 1 else "is the mean"
    return (
        f"std is the population std over seeds (0 for one seed). {keys} {verb} over seeds of the paired "
        "difference (same seed: same initial weights and data order)."
    )


def accuracy_report(
    results: Sequence[RunResult],
    methods: Sequence[str],
    setting: Any,
    header: Mapping[str, Any],
    config: Mapping[str, Any],
    cross_validation: Mapping[str, Any] | None,
    weights: np.ndarray,
    complete: bool,
) -> dict[str, Any]:
    """The accuracy benchmark's JSON (docs/benchmarks.md, "The JSON") from its scored runs.

    Args:
        results: one run per method and seed (pooled over the folds under cross-validation), all on the
            same images in the same order.
        methods: the methods in the order to report them.
        setting: what every run shares: ``selection_metric``, ``num_classes``, ``class_names``.
        header: ``task``, ``profile``, ``split`` (``"cv"``, ``"test"`` or ``"val"``) and the environment.
        config: the benchmark's configuration, as recorded.
        cross_validation: the folds' record, or ``None``.
        weights: bootstrap counts over the scored images.
        complete: whether every run has finished.
    """
    labels = results[0].labels
    n, split = len(labels), header["split"]
    if cross_validation is not None:
        scored = (
            f"metrics on the {n} images of train+val, each scored once by the run of its fold (the "
            f"{cross_validation['k']} folds' predictions pooled per method and seed); each fold's checkpoint is the "
            f"epoch with the best {setting.selection_metric} on an inner split of its training folds, never on the "
            "scored fold."
        )
    else:
        scored = (
            f"metrics on {n} {split} images; the checkpoint of each run is the epoch with the best "
            f"{setting.selection_metric} on val (the bundle's key metric)."
        )
    bootstrap = config.get("bootstrap", {})
    notes = [
        scored,
        _paired_note(BASELINES),
        f"ci95 is a percentile bootstrap over the {n} images ({bootstrap.get('resamples')} resamples, seed "
        f"{bootstrap.get('seed')}) of that seed-averaged difference: it covers which images happened to be scored, "
        f"not training noise (see std). One image moves accuracy by {1 / n:.4f}; an interval that contains 0 "
        "shows no difference, and one that excludes it still says nothing about other datasets or settings.",
    ]
    if split == "val":
        notes.append(
            "scored on val, the split that also selected the checkpoint: optimistic, and not comparable with "
            "numbers on an official test split (MedMNIST, ISIC)."
        )
    return {
        "task": header["task"],
        "profile": header["profile"],
        "split": split,
        "selection_metric": setting.selection_metric,
        "complete": complete,
        "n_images": n,
        "class_counts": np.bincount(labels, minlength=setting.num_classes).tolist(),
        "class_names": setting.class_names,
        **{k: v for k, v in header.items() if k not in ("task", "profile", "split")},
        "config": dict(config),
        "cross_validation": cross_validation,
        # the scored images in the order of every run's "probs"
        "scored": _scored_images(results[0].ids, labels),
        "methods": compare_methods(results, methods, setting.num_classes, weights),
        "notes": notes,
    }


def _same_setting(first: Mapping[str, Any], other: Mapping[str, Any], name: str) -> None:
    for key in ("task", "split", "n_images", "selection_metric", "class_names", "scored"):
        if first.get(key) != other.get(key):
            raise ValueError(f"{name}: {key} is {other.get(key)!r}, the first file's is {first.get(key)!r}.")
    folds, theirs = first.get("cross_validation"), other.get("cross_validation")
    if (folds is None) != (theirs is None) or (
        folds is not None and (folds["ids"], folds["fold"], folds["inner_val_ids"]) !=
        (theirs["ids"], theirs["fold"], theirs["inner_val_ids"])
    ):
        raise ValueError(f"{name}: its folds differ from the first file's; only runs on the same folds pair up.")


def _edits(report: Mapping[str, Any], method: str) -> Any:
    config = report["config"]
    return (config.get("overrides"), config.get("profile_overrides"), config["method_overrides"].get(method))


def _configured_alike(first: Mapping[str, Any], other: Mapping[str, Any], method: str) -> bool:
    """Whether ``method`` ran the same configuration in two files: the same edits of the same train.json.

    A file written before the bundle's ``train.json`` was recorded (``config.train_config_sha256``)
    is compared on its edits alone.
    """
    digests = first["config"].get("train_config_sha256"), other["config"].get("train_config_sha256")
    same_bundle = None in digests or digests[0] == digests[1]
    return same_bundle and _edits(first, method) == _edits(other, method)


def _rounded_probs(probs: Any) -> list[list[float]]:
    """Class probabilities as the JSON keeps them: ``PROB_DIGITS`` decimals."""
    return [[round(float(p), PROB_DIGITS) for p in row] for row in probs]


def _scored_images(ids: Any, labels: Any) -> dict[str, list[int]]:
    """The report's ``scored``: the scored images' source ids and labels, in the order of every run's probs."""
    return {"ids": [int(i) for i in ids], "labels": [int(v) for v in labels]}


def upgrade_report(report: Mapping[str, Any], name: str = "report") -> dict[str, Any]:
    """An accuracy JSON of an earlier commit in the current layout, for :func:`merge_reports`.

    Before the scored images were kept once per file (``report["scored"]``), every run carried its own
    ``predictions`` (``ids``, ``labels`` and ``probs``). Such a file is returned with its runs' ``probs``
    rounded to ``PROB_DIGITS`` decimals and the scored images moved to ``scored``; a file in the current
    layout is returned unchanged (as a shallow copy).

    Raises:
        ValueError: when two runs of the older file scored other images or orders.
    """
    upgraded = dict(report)
    if upgraded.get("scored") is not None:
        return upgraded
    scored = None
    methods: dict[str, Any] = {}
    for method, entry in report.get("methods", {}).items():
        runs = []
        for record in entry.get("runs", []):
            record = dict(record)
            predictions = record.pop("predictions", None)
            if predictions is None:
                runs.append(record)
                continue
            images = _scored_images(predictions["ids"], predictions["labels"])
            if scored is None:
                scored = images
            elif images != scored:
                raise ValueError(f"{name}: {method} seed {record.get('seed')} scored other images than its first run.")
            record["probs"] = _rounded_probs(predictions["probs"])
            runs.append(record)
        methods[method] = {**entry, "runs": runs}
    upgraded["methods"] = methods
    upgraded["scored"] = scored
    return upgraded


def merge_reports(
    reports: Sequence[Mapping[str, Any]],
    names: Sequence[str],
    weights: np.ndarray,
    baselines: Sequence[str] = BASELINES,
) -> dict[str, Any]:
    """One comparison of the methods of several benchmark JSONs made on the same images (and folds).

    A method that appears in several files with the same configuration (the same edits of the same
    bundle ``train.json``) pools its seeds; one whose configuration differs is renamed
    ``<method>@<file name>``. Comparisons with ``ce`` and ``random``
    are recomputed from the kept predictions, pairing runs by seed.

    Args:
        reports: the parsed JSONs (the first one sets the task, images and folds); files of earlier
            commits are read through :func:`upgrade_report`.
        names: a short name per report (its file name), for renamed methods.
        weights: bootstrap counts over the images (see :func:`~monai_danil.benchmark.bootstrap_weights`).
        baselines: the methods every other one is compared with (see :func:`compare_methods`).

    Raises:
        ValueError: when the files scored other images or folds, two runs of one method and seed differ,
            or a baseline other than ``ce`` and ``random`` is none of the merged methods.
    """
    reports = [upgrade_report(report, name) for report, name in zip(reports, names)]
    first = reports[0]
    runs: dict[str, dict[int, RunResult]] = {}
    origin: dict[str, tuple[Mapping[str, Any], str]] = {}
    for report, name in zip(reports, names):
        _same_setting(first, report, name)
        for method, entry in report["methods"].items():
            label = method
            if method in origin and not _configured_alike(origin[method][0], report, method):
                label = f"{method}@{name}"
            origin.setdefault(label, (report, name))
            for record in entry["runs"]:
                result = RunResult.from_record(label, record, report["scored"])
                known = runs.setdefault(label, {}).get(result.seed)
                if known is not None and not np.allclose(known.probs, result.probs, atol=10.0 ** -PROB_DIGITS):
                    raise ValueError(f"{label} seed {result.seed} differs between files although configured alike.")
                runs[label][result.seed] = result
    results = [r for by_seed in runs.values() for r in by_seed.values()]
    methods = list(runs)
    missing = [b for b in baselines if b not in runs and b not in BASELINES]  # the default ones are optional
    if missing:
        raise ValueError(f"no method {missing[0]!r} to compare with in these files; they hold {', '.join(methods)}.")
    merged = compare_methods(results, methods, len(first["class_names"]), weights, baselines)
    kept = first.get("notes", [])  # accuracy_report's: what is scored, the paired note (rewritten here), ...
    return {
        **{k: first[k] for k in ("task", "profile", "split", "selection_metric", "n_images", "class_counts", "class_names")},
        "scored": first["scored"],
        "complete": all(r.get("complete", False) for r in reports),
        "cross_validation": first.get("cross_validation"),
        "config": {
            "seeds": sorted({r.seed for r in results}),
            "sources": [
                {"file": name, "git_sha": r.get("git_sha"), "methods": list(r["methods"]), "config": r["config"]}
                for r, name in zip(reports, names)
            ],
        },
        "methods": merged,
        "notes": [
            f"merged from {', '.join(names)}: runs of the same method and seed are paired across files; a method "
            "configured differently in two files is named <method>@<file>.",
            *kept[:1],
            _paired_note(baselines),
            *kept[2:],
        ],
    }


# a list of numbers (the kept predictions, fold lists) on one line: the files stay small and readable
_NUMBER_LIST = re.compile(r"\[\s*(-?[\d.eE+-]+(?:,\s*-?[\d.eE+-]+)*)\s*\]")


def dumps_report(report: Mapping[str, Any]) -> str:
    """The report as indented JSON with every list of numbers on one line (no NaN: ``allow_nan=False``)."""
    text = json.dumps(report, indent=2, allow_nan=False)
    return _NUMBER_LIST.sub(lambda m: "[" + ", ".join(v.strip() for v in m.group(1).split(",")) + "]", text) + "\n"


def _value(value: float | None, signed: bool = False) -> str:
    if value is None:
        return "n/a"
    return f"{value:+.3f}" if signed else f"{value:.3f}"


def accuracy_markdown(report: Mapping[str, Any]) -> str:
    """Mean ± std per method, then each method's paired difference against each baseline (``ce``, ``random``)."""
    seeds = ",".join(str(s) for s in report["config"]["seeds"])
    cv = report.get("cross_validation")
    scored = (
        f"{cv['k']}-fold cross-validation of train+val (cv-seed {cv['cv_seed']}, {report['n_images']} images pooled)"
        if cv else f"{report['split']} split ({report['n_images']} images)"
    )
    lines = [
        f"### {report['task']}, profile {report['profile']}: {scored}, "
        f"checkpoint by {report['selection_metric']}, seeds {seeds}",
        "",
        "| method | " + " | ".join(_HEADERS[k] for k in METRIC_NAMES) + " | seconds |",
        "|---" * (len(METRIC_NAMES) + 2) + "|",
    ]
    for method, entry in report["methods"].items():
        cells = [f"{_value(entry['mean'][k])} ± {_value(entry['std'][k])}" for k in (*METRIC_NAMES, "seconds")]
        cells[-1] = f"{entry['mean']['seconds']:.0f} ± {entry['std']['seconds']:.0f}"
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    baselines = dict.fromkeys(k[3:] for e in report["methods"].values() for k in e if k.startswith("vs_"))
    for baseline in baselines:
        compared = {m: e[f"vs_{baseline}"] for m, e in report["methods"].items() if e.get(f"vs_{baseline}")}
        if not compared:
            continue
        lines += [
            "",
            f"| vs {baseline}: mean paired diff. [95% CI] | " + " | ".join(_HEADERS[k] for k in METRIC_NAMES) + " |",
            "|---" * (len(METRIC_NAMES) + 1) + "|",
        ]
        for method, vs in compared.items():
            cells = []
            for key in METRIC_NAMES:
                interval = vs["ci95"].get(key)
                span = f" [{_value(interval[0], True)}, {_value(interval[1], True)}]" if interval else ""
                cells.append(_value(vs["mean_diff"][key], True) + span)
            lines.append(f"| {method} | " + " | ".join(cells) + " |")
    lines += [""] + [f"- {note}" for note in report.get("notes", [])]
    return "\n".join(lines) + "\n"


def speed_markdown(report: Mapping[str, Any]) -> str:
    """One row per measurement: rates, their ratio, the overhead and the peak memory of each trainer."""
    device = report["device"] + (f" ({report['machine']['gpu']})" if report["machine"].get("gpu") else "")
    config = report["config"]
    options = ", ".join(f"{k}={v}" for k, v in config.get("miner_options", {}).items())
    reading = config.get("reading", "feature") + (f" ({options})" if options else "")
    lines = [
        "| device | net | px | batch | amp | reading | ce img/s | danil img/s | danil/ce | overhead | paired danil/ce "
        "| peak GiB ce / danil |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
        f"| {device} | {report['net']} | {report['image_size']} | {report['batch_size']} | {report['amp']} | {reading} | "
        f"{report['ce_img_per_s']:.1f} | {report['danil_img_per_s']:.1f} | {report['ratio']:.3f} | "
        f"{100 * report['overhead']:.1f}% | {report['paired_ratio_median']:.3f} | "
        f"{report['peak_gib']['ce']:.2f} / {report['peak_gib']['danil']:.2f} |",
        "",
        f"- rates: median of {report['config']['repeats']} alternating runs of {report['config']['iterations']} steps "
        f"each, after {report['config']['warmup']} warm-up steps; paired danil/ce: median over repeats of the ratio "
        f"of a repeat's two adjacent runs; bank {report['config']['bank_filled']} of {report['config']['bank_size']} "
        f"slots filled; peak memory: {report['peak_memory_source']}.",
    ]
    data = report.get("data")
    if data:
        lines.append(
            f"- {data['task']} data from disk ({data['images']} images, {data['num_workers']} workers): loader alone "
            f"{data['loader_img_per_s']:.1f} img/s, DANIL epoch {data['epoch_img_per_s']:.1f} img/s, model alone "
            f"{data['model_img_per_s']:.1f} img/s: the limit is {data['limit']}."
        )
    return "\n".join(lines) + "\n"
