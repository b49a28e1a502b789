"""Benchmarks: DANIL against plain training on the bundles (accuracy), and its cost per step (speed).

Run them with ``python -m monai_danil.benchmark accuracy|speed --help``; docs/benchmarks.md holds the
commands, the JSON fields and the published numbers.
"""

from __future__ import annotations

from .accuracy import AccuracyBenchmark, bundle_dir
from .folds import CrossValidation, build_cross_validation, near_duplicate_groups
from .profiles import METHODS, PROFILES, method_overrides, parse_overrides
from .report import RunResult, accuracy_markdown, compare_methods, pool_folds, speed_markdown
from .speed import AMP_MODES, SpeedBenchmark
from .statistics import (
    bootstrap_weights,
    metrics_from_weights,
    paired_bootstrap_ci,
    paired_mean_difference,
    summarize,
)

__all__ = [
    "AMP_MODES",
    "METHODS",
    "PROFILES",
    "AccuracyBenchmark",
    "CrossValidation",
    "RunResult",
    "build_cross_validation",
    "compare_methods",
    "near_duplicate_groups",
    "pool_folds",
    "SpeedBenchmark",
    "accuracy_markdown",
    "bootstrap_weights",
    "bundle_dir",
    "method_overrides",
    "metrics_from_weights",
    "paired_bootstrap_ci",
    "paired_mean_difference",
    "parse_overrides",
    "speed_markdown",
    "summarize",
]
