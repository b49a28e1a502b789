"""The accuracy benchmark: train a bundle per method and seed, select, score, compare with ``ce`` and ``random``.

Each run is the bundle's own ``configs/train.json`` run by MONAI's ``ConfigWorkflow`` with overrides
(see :mod:`monai_danil.benchmark.profiles`), with ``bundle_root`` moved to a run folder under the work
directory: the bundle's network, transforms, trainer, loss and handler are what is measured, and
nothing is written into the bundle. Runs are scored on ``val``, on a test manifest, or (``cv``) by
K-fold cross-validation of ``train`` and ``val`` (see :mod:`monai_danil.benchmark.folds`).
"""

from __future__ import annotations

import csv
import datetime
import gc
import json
import logging
import os
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.bundle import ConfigParser, ConfigWorkflow
from monai.data import DataLoader, Dataset
from monai.utils import IgniteInfo, min_version, optional_import

from monai_danil.data import read_manifest
from monai_danil.data.atomic import write_atomically
from monai_danil.handlers import file_sha256
from monai_danil.metrics import classification_report
from monai_danil.predict import predict

from .environment import code_state, environment
from .folds import CrossValidation, build_cross_validation
from .profiles import METHODS, PROFILES, check_overrides, method_overrides
from .report import RunResult, accuracy_report, dumps_report, finite, pool_folds
from .statistics import bootstrap_weights

__all__ = ["AccuracyBenchmark", "RunResult", "bundle_dir"]

Events, _ = optional_import("ignite.engine", IgniteInfo.OPT_IMPORT_VERSION, min_version, "Events")

logger = logging.getLogger(__name__)

BOOTSTRAP_RESAMPLES = 1000
BOOTSTRAP_SEED = 0
# the entries a run sets itself; --set may not change them
_RUN_KEYS = ("bundle_root", "dataset_dir", "seed")
# under cross-validation, each fold's manifest, and the source data-row id of each of its rows
_FOLD_DIR = "folds"
_SOURCE_IDS = "source_ids.json"


def bundle_dir(task: str) -> Path:
    """``bundles/<task>`` of the repository this package was installed from (``pip install -e .``)."""
    return Path(__file__).resolve().parents[2] / "bundles" / task


@dataclass
class _Setting:
    """What every run of a benchmark shares, read from the first run's parsed config."""

    selection_metric: str
    num_classes: int
    class_names: list[str]
    device: str
    epochs: int


class AccuracyBenchmark:
    """Trains ``methods`` x ``seeds`` (x folds) from one bundle and writes the comparison JSON.

    Args:
        task: ``skin``, ``retina`` or ``pathology`` (a folder of ``bundles/``).
        data_dir: the dataset folder (``manifest.csv`` with ``train`` and ``val`` rows).
        methods: any of ``ce``, ``danil``, ``random``, ``focal``, and the names of ``variants``.
        seeds: one run per method and seed (and fold); runs of the same seed are paired.
        profile: ``cpu`` or ``gpu`` (see :data:`~monai_danil.benchmark.profiles.PROFILES`).
        work_dir: every file a run writes goes under ``work_dir/<task>-<profile>-<stamp>/``.
        overrides: extra config overrides (``--set``), applied after the profile, before the method.
        test_manifest: score every row of this manifest instead of ``val``. Default ``None``.
        test_dir: folder the test manifest's paths are relative to. Default: the manifest's folder.
        bundle: the bundle folder. Default: ``bundles/<task>`` of this repository.
        progress: show a tqdm bar on stderr. Default ``True``.
        cv: K for K-fold cross-validation over ``train`` + ``val`` (each fold scored once, by runs that
            select their checkpoint on an inner split of the other folds); ``None`` scores ``val`` or the
            test manifest. Default ``None``.
        cv_seed: seed of the fold split. Default 0.
        variants: named methods of their own, ``{name: (base method, overrides)}``: the base method's edits
            plus the overrides, e.g. ``{"semi_hard": ("danil", {"miner#distractor_sample": "semi_hard"})}``,
            so several settings are compared with the same ``ce`` and ``random`` runs. Default ``None``.

    Raises:
        ValueError: for an unknown task, profile or method, no seeds, an override the bundle cannot
            take, a work directory inside ``bundles/``, or ``cv`` together with a test manifest.
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
        cv: int | None = None,
        cv_seed: int = 0,
        variants: Mapping[str, tuple[str, Mapping[str, Any]]] | None = None,
    ) -> None:
        variants = {name: (base, dict(edits)) for name, (base, edits) in (variants or {}).items()}
        self._init_kwargs = {
            "task": task, "data_dir": data_dir, "methods": list(methods), "seeds": list(seeds), "profile": profile,
            "work_dir": work_dir, "overrides": dict(overrides or {}), "test_manifest": test_manifest,
            "test_dir": test_dir, "bundle": bundle, "cv": cv, "cv_seed": cv_seed, "variants": variants,
        }
        if task not in PROFILES:
            raise ValueError(f"unknown task {task!r}; expected one of {', '.join(PROFILES)}.")
        if profile not in PROFILES[task]:
            raise ValueError(f"unknown profile {profile!r}; expected one of {', '.join(PROFILES[task])}.")
        for name, (base, _) in variants.items():
            if name in METHODS or base not in METHODS or not name.replace("_", "").replace("-", "").isalnum():
                raise ValueError(
                    f"variant {name!r} of {base!r}: a variant needs a new name (letters, digits, _ or -) and a base "
                    f"method from {', '.join(METHODS)}."
                )
        unknown = [m for m in methods if m not in METHODS and m not in variants]
        if unknown or not methods:
            raise ValueError(
                f"methods {list(methods)!r}: expected a non-empty list of {', '.join([*METHODS, *variants])}."
            )
        if not seeds:
            raise ValueError("no seeds given; expected at least one, e.g. --seeds 0,1,2.")
        if cv is not None and (cv < 2 or test_manifest is not None):
            raise ValueError(
                f"--cv {cv}: cross-validation needs at least 2 folds and scores its own folds of train+val, "
                "so it takes no --test-manifest."
            )
        self.task, self.profile = task, profile
        self.methods = list(dict.fromkeys(methods))
        self.seeds = [int(s) for s in dict.fromkeys(seeds)]
        self.cv, self.cv_seed = cv, int(cv_seed)
        self.bundle = Path(bundle) if bundle is not None else bundle_dir(task)
        self.config_file = self.bundle / "configs" / "train.json"
        if not self.config_file.is_file():
            raise FileNotFoundError(f"bundle config not found: {self.config_file} (is bundles/{task} written yet?)")
        # what the runs train from, read once: two files whose bundle train.json differ do not pool in compare
        self.config_sha256 = file_sha256(self.config_file)
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
        self.variants = variants
        self.method_edits = {}
        for method in self.methods:
            base, edits = variants.get(method, (method, {}))
            check_overrides(self._base, edits, f"variant {method!r}")
            self.method_edits[method] = {**method_overrides(base, self._base), **edits}
        self.folds: CrossValidation | None = None

    def _parser(self, overrides: Mapping[str, Any], check: bool = False) -> ConfigParser:
        parser = ConfigParser()
        parser.read_config(str(self.config_file))
        parser.read_meta(str(self.bundle / "configs" / "metadata.json"))
        if check:
            check_overrides(parser, self.profile_overrides, f"profile {self.task}/{self.profile}")
            check_overrides(parser, self.overrides, "--set")
        parser.update(dict(overrides))
        return parser

    def _fold_dir(self, fold: int) -> Path:
        return self.root / _FOLD_DIR / f"fold{fold}"

    def _run_dir(self, method: str, seed: int, fold: int | None) -> Path:
        run_dir = self.root / method / f"seed{seed}"
        return run_dir if fold is None else run_dir / f"fold{fold}"

    def run_overrides(self, method: str, seed: int, fold: int | None = None) -> dict[str, Any]:
        """Everything a run changes in the bundle config, in the order it is applied."""
        return {
            **self.profile_overrides,
            **self.overrides,
            **self.method_edits[method],
            "bundle_root": str(self._run_dir(method, seed, fold)),
            "dataset_dir": str(self.data_dir if fold is None else self._fold_dir(fold)),
            "seed": seed,
        }

    def _workflow(self, method: str, seed: int, fold: int | None) -> ConfigWorkflow:
        return ConfigWorkflow(
            config_file=str(self.config_file),
            meta_file=str(self.bundle / "configs" / "metadata.json"),
            logging_file=False,  # the CLI owns logging; the bundle's logging.conf writes to stdout
            workflow_type="train",
            **self.run_overrides(method, seed, fold),
        )

    def build_folds(self) -> CrossValidation:
        """The cross-validation of ``train`` + ``val`` (deterministic in the data and ``cv_seed``).

        Raises:
            ValueError: without ``cv``, or when the manifest has no ``train``/``val`` rows.
        """
        if self.cv is None:
            raise ValueError("build_folds needs cv (--cv K).")
        manifest = self.data_dir / "manifest.csv"
        aliases = self._base.get_parsed_content("label_aliases") if "label_aliases" in self._base else None
        names = self._base.get_parsed_content("class_names")
        rows = read_manifest(manifest, None, names, aliases or None)
        with open(manifest, newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            reader.fieldnames = [c.strip() for c in reader.fieldnames or []]
            raw = [((r.get("split") or "").strip(), (r.get("label") or "").strip()) for r in reader]
        pooled = [row for row in rows if raw[row["id"]][0] in ("train", "val")]
        if not pooled:
            raise ValueError(f"{manifest}: no train or val rows to cross-validate.")
        self._pooled_labels = [raw[row["id"]][1] for row in pooled]
        self._pooled_images = [row["image"] for row in pooled]
        return build_cross_validation(manifest, pooled, [raw[r["id"]][0] for r in pooled], self.cv, self.cv_seed)

    def _write_folds(self) -> None:
        assert self.folds is not None
        rows = [{"image": i, "label": lab} for i, lab in zip(self._pooled_images, self._pooled_labels)]
        for fold in range(self.folds.k):
            folder = self.folds.write_fold(fold, rows, self._fold_dir(fold))
            (folder / _SOURCE_IDS).write_text(json.dumps(self.folds.ids.tolist()) + "\n", encoding="utf-8")

    def _eval_data(self, parser: ConfigParser, fold: int | None) -> tuple[Any, np.ndarray | None]:
        """The loader that is scored, and (cross-validation) the source ids of its rows by fold-row id."""
        if self.test_manifest is None and fold is None:
            return parser.get_parsed_content("validate#dataloader"), None
        aliases = parser.get_parsed_content("label_aliases") if "label_aliases" in parser else None
        names = parser.get_parsed_content("class_names")
        if fold is None:
            datalist = read_manifest(self.test_manifest, None, names, aliases or None, image_dir=self.test_dir)
            source_ids = None
        else:
            datalist = read_manifest(self._fold_dir(fold), "test", names, aliases or None)
            source_ids = np.array(json.loads((self._fold_dir(fold) / _SOURCE_IDS).read_text()), dtype=np.int64)
        dataset = Dataset(datalist, transform=parser.get_parsed_content("validate#preprocessing"))
        loader = DataLoader(
            dataset,
            batch_size=parser.get_parsed_content("batch_size"),
            shuffle=False,
            num_workers=parser.get_parsed_content("num_workers"),
        )
        return loader, source_ids

    def _train_and_score(
        self, method: str, seed: int, on_epoch: Callable[[], None], fold: int | None = None
    ) -> RunResult:
        run_dir = self._run_dir(method, seed, fold)
        workflow = self._workflow(method, seed, fold)
        parser = workflow.parser
        start = time.perf_counter()
        workflow.initialize()
        trainer = parser.get_parsed_content("train#trainer")
        evaluator = parser.get_parsed_content("validate#evaluator")
        key = evaluator.state.key_metric_name
        curve: list[float | None] = []

        def _record_val(engine: Any) -> None:
            curve.append(finite(engine.state.metrics.get(key)))

        evaluator.add_event_handler(Events.EPOCH_COMPLETED, _record_val)
        trainer.add_event_handler(Events.EPOCH_COMPLETED, lambda _: on_epoch())
        workflow.run()
        seconds = time.perf_counter() - start
        where = "" if fold is None else f" fold {fold}"
        if any(v is None for v in curve):
            logger.warning(
                "%s seed %d%s: the selection metric %s was undefined (NaN) at some epochs %s; the best checkpoint "
                "may be the first one saved.", method, seed, where, key, curve,
            )
        start = time.perf_counter()
        network = parser.get_parsed_content("network")
        device = parser.get_parsed_content("device")
        model_file = Path(parser.get_parsed_content("ckpt_dir")) / "model.pt"
        if not model_file.is_file():
            raise FileNotFoundError(f"{model_file} was not written: did validation run at least once?")
        network.load_state_dict(torch.load(model_file, map_location=device, weights_only=True))
        loader, source_ids = self._eval_data(parser, fold)
        scored = predict(network, loader, device, parser.get_parsed_content("validate#inferer"))
        ids = scored.ids if source_ids is None else source_ids[scored.ids]
        num_classes = parser.get_parsed_content("num_classes")
        metrics = classification_report(scored.labels, scored.probs, num_classes)
        _write_predictions(run_dir / "predictions.csv", ids, scored.labels, scored.probs)
        predict_seconds = time.perf_counter() - start
        best_epoch = int(evaluator.state.best_metric_epoch)
        best_score = finite(evaluator.state.best_metric)
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
            method, seed, metrics, seconds, predict_seconds, best_epoch, best_score, curve, str(run_dir),
            scored.labels, scored.probs, ids, fold,
        )

    def run_order(self) -> list[tuple[str, int, int | None]]:
        """(method, seed, fold) of every run: seed-major, then fold, so paired pools complete early."""
        folds: list[int | None] = list(range(self.cv)) if self.cv is not None else [None]
        return [(method, seed, fold) for seed in self.seeds for fold in folds for method in self.methods]

    def run(
        self, out: str | os.PathLike | None = None, jobs: int = 1, threads: int | None = None, verbose: bool = False
    ) -> dict[str, Any]:
        """Trains and scores every run and returns the JSON dict.

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
        if self.cv is not None:
            self.folds = self.build_folds()
            self._write_folds()
            logger.info(
                "%d folds of %d images (%d groups of near-duplicates or one lesion)",
                self.folds.k, len(self.folds.ids), len(np.unique(self.folds.groups)),
            )
        order = self.run_order()
        total = epochs * len(order)

        def _finished(result: RunResult) -> None:
            results.append(result)
            where = "" if result.fold is None else f" fold {result.fold}"
            logger.info(
                "%s seed %d%s: %s (%.0f s, best epoch %d)", result.method, result.seed, where,
                ", ".join(f"{k} {_fmt(v)}" for k, v in result.metrics.items()), result.seconds, result.best_epoch,
            )
            if out is not None and self._reportable(results):
                _write_json(out, self.report(_in_order(results, order), complete=False))

        with tqdm(total=total, desc=f"{self.task}/{self.profile}", unit="epoch", disable=not self.progress) as bar:
            if jobs == 1:
                for method, seed, fold in order:
                    bar.set_postfix_str(f"{method} seed {seed}" + ("" if fold is None else f" fold {fold}"))
                    _finished(self._train_and_score(method, seed, lambda: bar.update(1), fold))
            else:
                import multiprocessing
                from concurrent.futures import ProcessPoolExecutor, as_completed

                per_job = threads if threads is not None else max(1, (os.cpu_count() or 1) // jobs)
                context = multiprocessing.get_context("spawn")
                with ProcessPoolExecutor(max_workers=min(jobs, len(order)), mp_context=context) as pool:
                    futures = {
                        pool.submit(
                            _run_in_process, self._init_kwargs, str(self.root), method, seed, fold, per_job, verbose
                        ): (method, seed, fold)
                        for method, seed, fold in order
                    }
                    for future in as_completed(futures):
                        try:
                            result, setting = future.result()
                        except Exception:
                            # fail fast: no new run starts; the ones already training finish first
                            pool.shutdown(wait=False, cancel_futures=True)
                            logger.error("%s seed %d fold %s failed; the runs not yet started are cancelled.",
                                         *futures[future])
                            raise
                        if self._setting is None:
                            self._setting = setting
                        bar.update(epochs)
                        _finished(result)
        report = self.report(_in_order(results, order), complete=True)
        if out is not None:
            _write_json(out, report)
        return report

    def _reportable(self, results: Sequence[RunResult]) -> bool:
        """Whether a partial report has anything to show (under cross-validation: one complete pool)."""
        if self.cv is None or self._setting is None:
            return bool(results)
        return bool(pool_folds(results, self.cv, self._setting.num_classes))

    def report(self, results: Sequence[RunResult], complete: bool = True) -> dict[str, Any]:
        """The benchmark JSON for ``results`` (see docs/benchmarks.md for the fields).

        Under cross-validation the folds of each method and seed are pooled first; a method and seed
        whose folds have not all finished is left out of a partial report.

        Raises:
            ValueError: when no run (no complete pool) has finished yet.
        """
        if not results or self._setting is None:
            raise ValueError("no run has finished yet; nothing to report.")
        setting = self._setting
        if self.cv is not None:
            results = pool_folds(results, self.cv, setting.num_classes)
            if not results:
                raise ValueError("no method and seed has all its folds yet; nothing to report.")
            split = "cv"
        else:
            split = "test" if self.test_manifest is not None else "val"
        config = {
            "bundle": str(self.bundle.resolve()),
            "train_config_sha256": self.config_sha256,
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
            "variants": {name: {"base": base, "overrides": edits} for name, (base, edits) in self.variants.items()},
            "bootstrap": {"resamples": BOOTSTRAP_RESAMPLES, "seed": BOOTSTRAP_SEED, "level": 0.95},
        }
        header = {"task": self.task, "profile": self.profile, "split": split, **environment(setting.device, self.code)}
        folds = self.folds.record() if self.folds is not None else None
        weights = bootstrap_weights(len(results[0].labels), BOOTSTRAP_RESAMPLES, BOOTSTRAP_SEED)
        return accuracy_report(results, self.methods, setting, header, config, folds, weights, complete)


def _in_order(results: Sequence[RunResult], order: Sequence[tuple[str, int, int | None]]) -> list[RunResult]:
    """``results`` in the benchmark's run order, whatever order parallel jobs finished in."""
    rank = {key: i for i, key in enumerate(order)}
    return sorted(results, key=lambda r: rank[(r.method, r.seed, r.fold)])


def _run_in_process(
    kwargs: Mapping[str, Any], root: str, method: str, seed: int, fold: int | None, threads: int, verbose: bool
) -> tuple[RunResult, _Setting | None]:
    """One run of a parallel benchmark, in a fresh (spawned) process: the same bundle, overrides and root."""
    from .__main__ import setup_logging

    setup_logging(verbose)
    torch.set_num_threads(threads)
    benchmark = AccuracyBenchmark(**kwargs, progress=False)
    benchmark.root = Path(root)
    result = benchmark._train_and_score(method, seed, lambda: None, fold)
    return result, benchmark._setting


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def _write_predictions(path: Path, ids: np.ndarray, labels: np.ndarray, probs: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(["id", "label", *[f"prob_{k}" for k in range(probs.shape[1])]])
        for index, label, row in zip(ids, labels, probs):
            writer.writerow([int(index), int(label), *[f"{p:.6f}" for p in row]])


def _write_json(path: str | os.PathLike, report: Mapping[str, Any]) -> None:
    write_atomically(path, dumps_report(report))
