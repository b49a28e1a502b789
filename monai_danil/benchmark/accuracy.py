"""The accuracy benchmark: train a bundle per method and seed, select on ``val``, score, compare with ``ce``.

Each run is the bundle's own ``configs/train.json`` run by MONAI's ``ConfigWorkflow`` with overrides
(see :mod:`monai_danil.benchmark.profiles`), with ``bundle_root`` moved to a run folder under the work
directory: the bundle's network, transforms, trainer, loss and handler are what is measured, and
nothing is written into the bundle.
"""

from __future__ import annotations

import csv
import datetime
import gc
import json
import logging
import math
import os
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.bundle import ConfigParser, ConfigWorkflow
from monai.data import DataLoader, Dataset
from monai.utils import IgniteInfo, min_version, optional_import

from monai_danil.data import read_manifest
from monai_danil.metrics import METRIC_NAMES, classification_report

from .environment import code_state, environment
from .profiles import METHODS, PROFILES, check_overrides, method_overrides
from .statistics import bootstrap_weights, paired_bootstrap_ci, paired_mean_difference, summarize

__all__ = ["AccuracyBenchmark", "RunResult", "bundle_dir", "read_test_manifest"]

Events, _ = optional_import("ignite.engine", IgniteInfo.OPT_IMPORT_VERSION, min_version, "Events")

logger = logging.getLogger(__name__)

BOOTSTRAP_RESAMPLES = 1000
BOOTSTRAP_SEED = 0
# the entries a run sets itself; --set may not change them
_RUN_KEYS = ("bundle_root", "dataset_dir", "seed")


def bundle_dir(task: str) -> Path:
    """``bundles/<task>`` of the repository this package was installed from (``pip install -e .``)."""
    return Path(__file__).resolve().parents[2] / "bundles" / task


def read_test_manifest(
    manifest: str | os.PathLike,
    image_dir: str | os.PathLike | None,
    class_names: Sequence[str],
    label_aliases: Mapping[str, str | int] | None = None,
) -> list[dict]:
    """Every row of a test manifest, labels read as in training, images looked up under ``image_dir``.

    Args:
        manifest: a CSV with ``relative_path,label`` (a ``split`` column, if any, is ignored).
        image_dir: the folder the paths are relative to. Default ``None``: the manifest's folder.
        class_names: the bundle's class names (labels may be names, numbers or aliases).
        label_aliases: the bundle's ``label_aliases``, if it has any.

    Raises:
        FileNotFoundError: when the manifest or an image is missing (the message names the row).
        ValueError: for an unknown label (the message names the line).
    """
    manifest = Path(manifest)
    if image_dir is None or Path(image_dir).resolve() == manifest.resolve().parent:
        return read_manifest(manifest, None, class_names, label_aliases)
    datalist = read_manifest(manifest, None, class_names, label_aliases, check_files=False)
    with open(manifest, newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        reader.fieldnames = [name.strip() for name in reader.fieldnames or []]
        relative = [(row.get("relative_path") or "").strip() for row in reader]
    for item in datalist:
        image = os.path.normpath(os.path.join(image_dir, relative[item["id"]]))
        if not os.path.isfile(image):
            raise FileNotFoundError(
                f"{manifest}, line {item['id'] + 2}: image not found: {image} "
                f"(relative_path {relative[item['id']]!r} under --test-dir {image_dir})."
            )
        item["image"] = image
    return datalist


@dataclass
class RunResult:
    """One trained and scored run."""

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

    def record(self) -> dict[str, Any]:
        """The run as it appears in the JSON ``runs`` list."""
        return {
            "seed": self.seed,
            **self.metrics,
            "seconds": round(self.seconds, 2),
            "predict_seconds": round(self.predict_seconds, 2),
            "best_epoch": self.best_epoch,
            "best_val_score": self.best_val_score,
            "val_curve": self.val_curve,
            "run_dir": self.run_dir,
        }


@dataclass
class _Setting:
    """What every run of a benchmark shares, read from the first run's parsed config."""

    selection_metric: str
    num_classes: int
    class_names: list[str]
    device: str
    epochs: int


def _finite(value: Any) -> float | None:
    if value is None:
        return None
    value = float(value)
    return None if math.isnan(value) or math.isinf(value) else value


class AccuracyBenchmark:
    """Trains ``methods`` x ``seeds`` from one bundle and writes the comparison JSON.

    Args:
        task: ``skin``, ``retina`` or ``pathology`` (a folder of ``bundles/``).
        data_dir: the dataset folder (``manifest.csv`` with ``train`` and ``val`` rows).
        methods: any of ``ce``, ``danil``, ``random``, ``focal``.
        seeds: one run per method and seed; runs of the same seed are paired.
        profile: ``cpu`` or ``gpu`` (see :data:`~monai_danil.benchmark.profiles.PROFILES`).
        work_dir: every file a run writes goes under ``work_dir/<task>-<profile>-<stamp>/``.
        overrides: extra config overrides (``--set``), applied after the profile, before the method.
        test_manifest: score every row of this manifest instead of ``val``. Default ``None``.
        test_dir: folder the test manifest's paths are relative to. Default: the manifest's folder.
        bundle: the bundle folder. Default: ``bundles/<task>`` of this repository.
        progress: show a tqdm bar on stderr. Default ``True``.

    Raises:
        ValueError: for an unknown task, profile or method, no seeds, an override the bundle cannot
            take, or a work directory inside ``bundles/``.
        FileNotFoundError: when the bundle or the dataset is missing.
    """

    def __init__(
        self,
        task: str,
        data_dir: str | os.PathLike,
        methods: Sequence[str],
        seeds: Sequence[int],
        profile: str,
        work_dir: str | os.PathLike,
        overrides: Mapping[str, Any] | None = None,
        test_manifest: str | os.PathLike | None = None,
        test_dir: str | os.PathLike | None = None,
        bundle: str | os.PathLike | None = None,
        progress: bool = True,
    ) -> None:
        self._init_kwargs = {
            "task": task, "data_dir": data_dir, "methods": list(methods), "seeds": list(seeds), "profile": profile,
            "work_dir": work_dir, "overrides": dict(overrides or {}), "test_manifest": test_manifest,
            "test_dir": test_dir, "bundle": bundle,
        }
        if task not in PROFILES:
            raise ValueError(f"unknown task {task!r}; expected one of {', '.join(PROFILES)}.")
        if profile not in PROFILES[task]:
            raise ValueError(f"unknown profile {profile!r}; expected one of {', '.join(PROFILES[task])}.")
        unknown = [m for m in methods if m not in METHODS]
        if unknown or not methods:
            raise ValueError(f"methods {list(methods)!r}: expected a non-empty list of {', '.join(METHODS)}.")
        if not seeds:
            raise ValueError("no seeds given; expected at least one, e.g. --seeds 0,1,2.")
        self.task, self.profile = task, profile
        self.methods = list(dict.fromkeys(methods))
        self.seeds = [int(s) for s in dict.fromkeys(seeds)]
        self.bundle = Path(bundle) if bundle is not None else bundle_dir(task)
        self.config_file = self.bundle / "configs" / "train.json"
        if not self.config_file.is_file():
            raise FileNotFoundError(f"bundle config not found: {self.config_file} (is bundles/{task} written yet?)")
        self.data_dir = Path(data_dir).resolve()
        if not (self.data_dir / "manifest.csv").is_file():
            raise FileNotFoundError(f"no manifest.csv in --data-dir {self.data_dir}.")
        self.test_manifest = Path(test_manifest).resolve() if test_manifest is not None else None
        if test_dir is not None and self.test_manifest is None:
            raise ValueError("--test-dir needs --test-manifest.")
        self.test_dir = Path(test_dir).resolve() if test_dir is not None else None
        self.overrides = dict(overrides or {})
        clash = [k for k in self.overrides if k in _RUN_KEYS]
        if clash:
            raise ValueError(f"--set may not change {clash}: use --data-dir, --seeds and --work-dir.")
        work = Path(work_dir).resolve()
        for guarded in (self.bundle.resolve(), bundle_dir(task).parent):
            if work == guarded or guarded in work.parents:
                raise ValueError(f"--work-dir {work} is inside {guarded}; the benchmark never writes into a bundle.")
        stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
        self.root = work / f"{task}-{profile}-{stamp}-{uuid.uuid4().hex[:4]}"
        self.code = code_state()  # what is measured: the commit as the benchmark starts
        self.progress = progress
        self.profile_overrides = dict(PROFILES[task][profile])
        self._base = self._parser({**self.profile_overrides, **self.overrides}, check=True)
        self._setting: _Setting | None = None
        self.method_edits = {m: method_overrides(m, self._base) for m in self.methods}

    def _parser(self, overrides: Mapping[str, Any], check: bool = False) -> ConfigParser:
        parser = ConfigParser()
        parser.read_config(str(self.config_file))
        parser.read_meta(str(self.bundle / "configs" / "metadata.json"))
        if check:
            check_overrides(parser, self.profile_overrides, f"profile {self.task}/{self.profile}")
            check_overrides(parser, self.overrides, "--set")
        parser.update(dict(overrides))
        return parser

    def run_overrides(self, method: str, seed: int) -> dict[str, Any]:
        """Everything a run changes in the bundle config, in the order it is applied."""
        return {
            **self.profile_overrides,
            **self.overrides,
            **self.method_edits[method],
            "bundle_root": str(self.root / method / f"seed{seed}"),
            "dataset_dir": str(self.data_dir),
            "seed": seed,
        }

    def _workflow(self, method: str, seed: int) -> ConfigWorkflow:
        return ConfigWorkflow(
            config_file=str(self.config_file),
            meta_file=str(self.bundle / "configs" / "metadata.json"),
            logging_file=False,  # the CLI owns logging; the bundle's logging.conf writes to stdout
            workflow_type="train",
            **self.run_overrides(method, seed),
        )

    def _eval_loader(self, parser: ConfigParser) -> Any:
        """The bundle's val loader, or one over the test manifest with the bundle's val transforms."""
        if self.test_manifest is None:
            return parser.get_parsed_content("validate#dataloader")
        aliases = parser.get_parsed_content("label_aliases") if "label_aliases" in parser else None
        datalist = read_test_manifest(
            self.test_manifest, self.test_dir, parser.get_parsed_content("class_names"), aliases or None
        )
        dataset = Dataset(datalist, transform=parser.get_parsed_content("validate#preprocessing"))
        return DataLoader(
            dataset,
            batch_size=parser.get_parsed_content("batch_size"),
            shuffle=False,
            num_workers=parser.get_parsed_content("num_workers"),
        )

    def _train_and_score(self, method: str, seed: int, on_epoch: Callable[[], None]) -> RunResult:
        run_dir = self.root / method / f"seed{seed}"
        workflow = self._workflow(method, seed)
        parser = workflow.parser
        start = time.perf_counter()
        workflow.initialize()
        trainer = parser.get_parsed_content("train#trainer")
        evaluator = parser.get_parsed_content("validate#evaluator")
        key = evaluator.state.key_metric_name
        curve: list[float | None] = []

        def _record_val(engine: Any) -> None:
            curve.append(_finite(engine.state.metrics.get(key)))

        evaluator.add_event_handler(Events.EPOCH_COMPLETED, _record_val)
        trainer.add_event_handler(Events.EPOCH_COMPLETED, lambda _: on_epoch())
        workflow.run()
        seconds = time.perf_counter() - start
        if any(v is None for v in curve):
            logger.warning(
                "%s seed %d: the selection metric %s was undefined (NaN) at some epochs %s; the best checkpoint "
                "may be the first one saved.", method, seed, key, curve,
            )
        start = time.perf_counter()
        network = parser.get_parsed_content("network")
        device = parser.get_parsed_content("device")
        model_file = Path(parser.get_parsed_content("ckpt_dir")) / "model.pt"
        if not model_file.is_file():
            raise FileNotFoundError(f"{model_file} was not written: did validation run at least once?")
        network.load_state_dict(torch.load(model_file, map_location=device, weights_only=True))
        loader = self._eval_loader(parser)
        ids, labels, probs = _predict(network, loader, device, parser.get_parsed_content("validate#inferer"))
        num_classes = parser.get_parsed_content("num_classes")
        metrics = classification_report(labels, probs, num_classes)
        _write_predictions(run_dir / "predictions.csv", ids, labels, probs)
        predict_seconds = time.perf_counter() - start
        best_epoch = int(evaluator.state.best_metric_epoch)
        best_score = _finite(evaluator.state.best_metric)
        workflow.finalize()
        if self._setting is None:
            self._setting = _Setting(
                key, num_classes, list(parser.get_parsed_content("class_names")), str(device),
                int(parser.get_parsed_content("epochs")),
            )
        del workflow, parser, trainer, evaluator, network, loader
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        return RunResult(
            method, seed, metrics, seconds, predict_seconds, best_epoch, best_score, curve, str(run_dir), labels, probs
        )

    def run(
        self, out: str | os.PathLike | None = None, jobs: int = 1, threads: int | None = None, verbose: bool = False
    ) -> dict[str, Any]:
        """Trains and scores every run (seed-major, so pairs complete early) and returns the JSON dict.

        Args:
            out: write the JSON here after every run (``"complete": false`` until the last one), so a
                long benchmark leaves usable partial results. Default ``None``: only return it.
            jobs: runs trained at once, each in its own process (``spawn``). Default 1: one after the
                other in this process. On a GPU, small networks leave the device mostly idle, so several
                runs share it well; each process holds its own CUDA context (about 0.5 GiB).
            threads: torch CPU threads per job process (``jobs > 1`` only). Default: the CPU count
                divided by ``jobs``, at least 1.
            verbose: ``jobs > 1`` only: the job processes log MONAI's per-iteration training logs too
                (default: warnings only, as the command line without ``--verbose``).

        Raises:
            ValueError: for ``jobs < 1``.
        """
        from tqdm.auto import tqdm

        if jobs < 1:
            raise ValueError(f"jobs must be at least 1, got {jobs}.")
        epochs = int(self._base.get_parsed_content("epochs"))
        results: list[RunResult] = []
        self.root.mkdir(parents=True, exist_ok=False)
        logger.info("runs under %s", self.root)
        order = [(method, seed) for seed in self.seeds for method in self.methods]
        total = epochs * len(order)

        def _finished(result: RunResult) -> None:
            results.append(result)
            logger.info(
                "%s seed %d: %s (%.0f s, best epoch %d)", result.method, result.seed,
                ", ".join(f"{k} {_fmt(v)}" for k, v in result.metrics.items()), result.seconds, result.best_epoch,
            )
            if out is not None:
                _write_json(out, self.report(_in_order(results, order), complete=False))

        with tqdm(total=total, desc=f"{self.task}/{self.profile}", unit="epoch", disable=not self.progress) as bar:
            if jobs == 1:
                for method, seed in order:
                    bar.set_postfix_str(f"{method} seed {seed}")
                    _finished(self._train_and_score(method, seed, lambda: bar.update(1)))
            else:
                import multiprocessing
                from concurrent.futures import ProcessPoolExecutor, as_completed

                per_job = threads if threads is not None else max(1, (os.cpu_count() or 1) // jobs)
                context = multiprocessing.get_context("spawn")
                with ProcessPoolExecutor(max_workers=min(jobs, len(order)), mp_context=context) as pool:
                    futures = {
                        pool.submit(
                            _run_in_process, self._init_kwargs, str(self.root), method, seed, per_job, verbose
                        ): (method, seed)
                        for method, seed in order
                    }
                    for future in as_completed(futures):
                        try:
                            result, setting = future.result()
                        except Exception:
                            # fail fast: no new run starts; the ones already training finish first
                            pool.shutdown(wait=False, cancel_futures=True)
                            logger.error("%s seed %d failed; the runs not yet started are cancelled.", *futures[future])
                            raise
                        if self._setting is None:
                            self._setting = setting
                        bar.update(epochs)
                        _finished(result)
        report = self.report(_in_order(results, order), complete=True)
        if out is not None:
            _write_json(out, report)
        return report

    def report(self, results: Sequence[RunResult], complete: bool = True) -> dict[str, Any]:
        """The benchmark JSON for ``results`` (see docs/benchmarks.md for the fields)."""
        if not results or self._setting is None:
            raise ValueError("no run has finished yet; nothing to report.")
        setting = self._setting
        split = "test" if self.test_manifest is not None else "val"
        labels = results[0].labels
        if any(not np.array_equal(r.labels, labels) for r in results):
            raise RuntimeError("runs scored different images or orders; paired comparisons need the same ones.")
        weights = bootstrap_weights(len(labels), BOOTSTRAP_RESAMPLES, BOOTSTRAP_SEED)
        by_method = {m: {r.seed: r for r in results if r.method == m} for m in self.methods}
        methods: dict[str, Any] = {}
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
                "vs_ce": None,
            }
            baseline = by_method.get("ce", {})
            if method != "ce" and set(runs) & set(baseline):
                entry["vs_ce"] = {
                    "mean_diff": paired_mean_difference(
                        {s: r.metrics for s, r in runs.items()}, {s: r.metrics for s, r in baseline.items()}
                    ),
                    "ci95": paired_bootstrap_ci(
                        labels,
                        {s: r.probs for s, r in runs.items()},
                        {s: r.probs for s, r in baseline.items()},
                        setting.num_classes,
                        weights,
                    ),
                    "seeds": sorted(set(runs) & set(baseline)),
                }
            methods[method] = entry
        n = len(labels)
        notes = [
            f"metrics on {n} {split} images; the checkpoint of each run is the epoch with the best "
            f"{setting.selection_metric} on val (the bundle's key metric).",
            "std is the population std over seeds (0 for one seed). vs_ce.mean_diff is the mean over seeds of the "
            "paired difference (same seed: same initial weights and data order).",
            f"vs_ce.ci95 is a percentile bootstrap over the {n} images ({BOOTSTRAP_RESAMPLES} resamples, seed "
            f"{BOOTSTRAP_SEED}) of that seed-averaged difference: it covers which images happened to be scored, not "
            f"training noise (see std). One image moves accuracy by {1 / n:.4f}; an interval that contains 0 "
            "shows no difference, and one that excludes it still says nothing about other datasets or settings.",
        ]
        if split == "val":
            notes.append(
                "scored on val, the split that also selected the checkpoint: optimistic, and not comparable with "
                "numbers on an official test split (MedMNIST, ISIC)."
            )
        return {
            "task": self.task,
            "profile": self.profile,
            "split": split,
            "selection_metric": setting.selection_metric,
            "complete": complete,
            "n_images": n,
            "class_counts": np.bincount(labels, minlength=setting.num_classes).tolist(),
            "class_names": setting.class_names,
            **environment(setting.device, self.code),
            "config": {
                "bundle": str(self.bundle.resolve()),
                "data_dir": str(self.data_dir),
                "test_manifest": str(self.test_manifest) if self.test_manifest else None,
                "test_dir": str(self.test_dir or self.test_manifest.parent) if self.test_manifest else None,
                "work_dir": str(self.root),
                "methods": self.methods,
                "seeds": self.seeds,
                "epochs": setting.epochs,
                "profile_overrides": self.profile_overrides,
                "overrides": self.overrides,
                "method_overrides": self.method_edits,
                "bootstrap": {"resamples": BOOTSTRAP_RESAMPLES, "seed": BOOTSTRAP_SEED, "level": 0.95},
            },
            "methods": methods,
            "notes": notes,
        }


def _in_order(results: Sequence[RunResult], order: Sequence[tuple[str, int]]) -> list[RunResult]:
    """``results`` in the benchmark's run order, whatever order parallel jobs finished in."""
    rank = {key: i for i, key in enumerate(order)}
    return sorted(results, key=lambda r: rank[(r.method, r.seed)])


def _run_in_process(
    kwargs: Mapping[str, Any], root: str, method: str, seed: int, threads: int, verbose: bool
) -> tuple[RunResult, _Setting | None]:
    """One run of a parallel benchmark, in a fresh (spawned) process: the same bundle, overrides and root."""
    from .__main__ import setup_logging

    setup_logging(verbose)
    torch.set_num_threads(threads)
    benchmark = AccuracyBenchmark(**kwargs, progress=False)
    benchmark.root = Path(root)
    result = benchmark._train_and_score(method, seed, lambda: None)
    return result, benchmark._setting


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


@torch.no_grad()
def _predict(
    network: torch.nn.Module, loader: Any, device: Any, inferer: Any
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Manifest row ids (N,), class indices (N,) and softmax probabilities (N, C), in loader order."""
    network.eval()
    ids, labels, probs = [], [], []
    for batch in loader:
        logits = inferer(batch["image"].to(device), network)
        probs.append(torch.softmax(logits.float(), dim=1).cpu())
        labels.append(torch.as_tensor(batch["label"]).reshape(-1).cpu())
        ids.append(torch.as_tensor(batch.get("id", [-1] * len(logits))).reshape(-1).cpu())
    return torch.cat(ids).numpy(), torch.cat(labels).long().numpy(), torch.cat(probs).double().numpy()


def _write_predictions(path: Path, ids: np.ndarray, labels: np.ndarray, probs: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(["id", "label", *[f"prob_{k}" for k in range(probs.shape[1])]])
        for index, label, row in zip(ids, labels, probs):
            writer.writerow([int(index), int(label), *[f"{p:.6f}" for p in row]])


def _write_json(path: str | os.PathLike, report: Mapping[str, Any]) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(report, indent=2, allow_nan=False) + "\n", encoding="utf-8")
    os.replace(tmp, path)
