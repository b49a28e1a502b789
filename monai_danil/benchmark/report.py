"""Markdown tables of benchmark JSON, as printed on stdout and pasted into docs/benchmarks.md."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from monai_danil.metrics import METRIC_NAMES

__all__ = ["accuracy_markdown", "speed_markdown"]

_HEADERS = {
    "accuracy": "accuracy",
    "balanced_accuracy": "balanced acc.",
    "macro_f1": "macro-F1",
    "auc": "macro AUC",
    "kappa": "quad. kappa",
}


def _value(value: float | None, signed: bool = False) -> str:
    if value is None:
        return "n/a"
    return f"{value:+.3f}" if signed else f"{value:.3f}"


def accuracy_markdown(report: Mapping[str, Any]) -> str:
    """Mean ± std per method, then each method's paired difference against ``ce`` with its interval."""
    seeds = ",".join(str(s) for s in report["config"]["seeds"])
    lines = [
        f"### {report['task']}, profile {report['profile']}: {report['split']} split ({report['n_images']} images), "
        f"checkpoint by {report['selection_metric']}, seeds {seeds}",
        "",
        "| method | " + " | ".join(_HEADERS[k] for k in METRIC_NAMES) + " | seconds |",
        "|---" * (len(METRIC_NAMES) + 2) + "|",
    ]
    for method, entry in report["methods"].items():
        cells = [f"{_value(entry['mean'][k])} ± {_value(entry['std'][k])}" for k in (*METRIC_NAMES, "seconds")]
        cells[-1] = f"{entry['mean']['seconds']:.0f} ± {entry['std']['seconds']:.0f}"
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    compared = {m: e["vs_ce"] for m, e in report["methods"].items() if e.get("vs_ce")}
    if compared:
        lines += [
            "",
            "| vs ce: mean paired diff. [95% CI] | " + " | ".join(_HEADERS[k] for k in METRIC_NAMES) + " |",
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
    lines = [
        "| device | net | px | batch | amp | ce img/s | danil img/s | danil/ce | overhead | paired danil/ce "
        "| peak GiB ce / danil |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
        f"| {device} | {report['net']} | {report['image_size']} | {report['batch_size']} | {report['amp']} | "
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
