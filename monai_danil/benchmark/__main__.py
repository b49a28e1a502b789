"""Command line: ``python -m monai_danil.benchmark accuracy|speed ...``.

stdout carries only the Markdown table of the result; logs and the progress bar go to stderr; the
full result is the JSON written to ``--out``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import sys
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import IO

from .profiles import METHODS, PROFILES

_TASKS = tuple(PROFILES)


def _int_list(text: str) -> list[int]:
    try:
        return [int(item) for item in text.split(",") if item.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _method_list(text: str) -> list[str]:
    methods = [item.strip() for item in text.split(",") if item.strip()]
    if not methods:
        raise argparse.ArgumentTypeError(f"no method in {text!r}; choose from {','.join(METHODS)} or a --variant")
    return methods


def _variant(text: str) -> tuple[str, str, list[str]]:
    """``NAME=BASE KEY=VALUE ...`` -> ``(NAME, BASE, ["KEY=VALUE", ...])``."""
    head, *pairs = text.split()
    name, sep, base = head.partition("=")
    if not sep or not name or base not in METHODS:
        raise argparse.ArgumentTypeError(
            f"--variant expects 'NAME=BASE KEY=VALUE ...' with BASE one of {','.join(METHODS)}, got {text!r}"
        )
    return name, base, pairs


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``python -m monai_danil.benchmark``.

    Example:
        >>> build_parser().parse_args(["speed", "--net", "resnet18", "--image-size", "64", "--batch-size", "32",
        ...                            "--out", "s.json"]).command
        'speed'
    """
    parser = argparse.ArgumentParser(
        prog="python -m monai_danil.benchmark",
        description="DANIL benchmarks: accuracy against plain training on a bundle, and the cost of a training step.",
    )
    parser.add_argument("--verbose", action="store_true", help="also show MONAI's and ignite's training logs")
    parser.add_argument(
        "--threads", type=int, help="torch CPU threads (default: torch's choice; 1 is faster on a busy machine)"
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    accuracy = commands.add_parser(
        "accuracy",
        help="train a bundle per method and seed, select on val, score on a test manifest, val, or by --cv",
        description="Train bundles/<task> once per method and seed (the bundle's own config, with overrides), "
        "select each run's checkpoint on val with the bundle's key metric, score on --test-manifest (or val), "
        "and compare every method with ce, paired by seed.",
    )
    accuracy.add_argument("--task", choices=_TASKS, required=True, help="which bundle")
    accuracy.add_argument("--data-dir", type=Path, required=True, help="dataset folder with manifest.csv (train, val)")
    accuracy.add_argument("--test-manifest", type=Path, help="score every row of this CSV instead of val")
    accuracy.add_argument("--test-dir", type=Path, help="folder the test manifest's paths are relative to")
    accuracy.add_argument(
        "--cv", type=_positive_int, metavar="K",
        help="K-fold cross-validation over train+val instead: stratified folds, near-duplicates and one lesion's "
        "images kept in one fold, each fold's checkpoint selected on an inner split of its training folds",
    )
    accuracy.add_argument("--cv-seed", type=int, default=0, help="seed of the fold split (default 0)")
    accuracy.add_argument(
        "--methods", type=_method_list, default=["ce", "danil"],
        help="comma-separated, from ce,danil,random,focal and the --variant names"
    )
    accuracy.add_argument(
        "--variant", dest="variants", action="append", default=[], type=_variant, metavar="'NAME=BASE KEY=VALUE ...'",
        help="a named method: BASE's edits plus these overrides (space-separated, values as --set), e.g. "
        "--variant 'semi_hard=danil miner#distractor_sample=semi_hard'; list NAME in --methods",
    )
    accuracy.add_argument("--seeds", type=_int_list, default=[0, 1, 2], help="comma-separated (default 0,1,2)")
    accuracy.add_argument("--profile", choices=("cpu", "gpu"), default="cpu", help="settings table (default cpu)")
    accuracy.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="bundle config override, repeatable, e.g. --set danil#lambda_max=1.0 --set loss#margin=1.2 "
        "(values are JSON where they parse, else strings)",
    )
    accuracy.add_argument(
        "--jobs", type=_positive_int, default=1,
        help="runs trained at once, each in its own process (default 1; on a GPU several small runs share it well)",
    )
    accuracy.add_argument("--work-dir", type=Path, default=Path(".work/benchmark"), help="where runs write")
    accuracy.add_argument("--bundle-dir", type=Path, help="the bundle to run (default: bundles/<task> of this repo)")
    accuracy.add_argument("--out", type=Path, required=True, help="result JSON")

    compare = commands.add_parser(
        "compare",
        help="merge accuracy JSONs made on the same images and folds, and compare all their methods with ce and random",
        description="Pool the methods of several accuracy results (same task, images and folds) and recompute the "
        "paired comparisons with ce and random from the predictions they keep; a method configured differently in "
        "two files (other edits, or another bundle train.json) is named <method>@<file>.",
    )
    compare.add_argument("results", type=Path, nargs="+", help="accuracy result JSONs")
    compare.add_argument("--out", type=Path, required=True, help="merged result JSON")
    compare.add_argument(
        "--control",
        default="random",
        help="the method compared with as the random control (default random), e.g. a variant "
        "'pr=random danil#lambda_max=0.5'; its table is headed 'vs <name>'",
    )

    speed = commands.add_parser(
        "speed",
        help="images/s of a SupervisedTrainer step with and without DANIL",
        description="Images per second of MONAI's SupervisedTrainer iteration with and without the mining handler "
        "and the distractor term, on the same in-memory batches, alternating runs, median of repeats.",
    )
    speed.add_argument("--net", default="densenet121", help="network name for create_network (default densenet121)")
    speed.add_argument("--image-size", type=int, default=224, help="input side in pixels (default 224)")
    speed.add_argument("--batch-size", type=int, default=64, help="images per step (default 64)")
    speed.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    speed.add_argument("--amp", choices=("none", "bf16", "fp16"), default="none", help="autocast on CUDA")
    speed.add_argument("--num-classes", type=int, default=7, help="classifier outputs (default 7)")
    speed.add_argument("--iterations", type=int, default=20, help="steps per timed run (default 20)")
    speed.add_argument("--repeats", type=int, default=5, help="timed runs per trainer (default 5)")
    speed.add_argument("--warmup", type=int, default=5, help="untimed steps per trainer first (default 5)")
    speed.add_argument("--bank-size", type=int, default=4096, help="DANIL memory bank, filled first (default 4096)")
    speed.add_argument(
        "--reading", choices=("feature", "response_map", "input_gradient"), default="feature",
        help="feature: the memory-bank miner (default); response_map / input_gradient: the second reading",
    )
    speed.add_argument(
        "--miner-option", dest="miner_options", action="append", default=[], metavar="KEY=VALUE",
        help="DistractorMiner keyword, repeatable, e.g. --miner-option distractor_sample=soft --miner-option k=4",
    )
    speed.add_argument("--data-dir", type=Path, help="also time one epoch of this dataset's train split from disk")
    speed.add_argument("--task", choices=_TASKS, default="retina", help="bundle whose transforms --data-dir uses")
    speed.add_argument("--num-workers", type=int, default=0, help="DataLoader workers for --data-dir (default 0)")
    speed.add_argument("--max-images", type=int, help="read at most this many --data-dir images")
    speed.add_argument("--out", type=Path, required=True, help="result JSON")
    return parser


@contextlib.contextmanager
def _stdout_for_table() -> Iterator[IO[str]]:
    """Sends everything written to stdout to stderr, and yields the real stdout for the table.

    MONAI's bundle loggers hold handlers on ``sys.stdout`` made at import, so only moving file
    descriptor 1 keeps stdout for the table alone.
    """
    sys.stdout.flush()
    saved = os.dup(1)
    os.dup2(2, 1)
    table = os.fdopen(os.dup(saved), "w", encoding="utf-8")
    try:
        yield table
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)
        table.close()


class _TqdmHandler(logging.Handler):
    """Writes log records above the progress bar instead of through it."""

    def emit(self, record: logging.LogRecord) -> None:
        from tqdm.auto import tqdm

        try:
            tqdm.write(self.format(record), file=sys.stderr)
        except Exception:  # noqa: BLE001 - logging must never raise into the benchmark
            self.handleError(record)


def setup_logging(verbose: bool) -> None:
    """Logs to stderr above the progress bar; MONAI's training logs only with ``verbose``."""
    handler = _TqdmHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s: %(message)s", "%H:%M:%S"))
    # training loggers stay at INFO (StatsHandler warns otherwise); the handler decides what shows
    handler.setLevel(logging.INFO if verbose else logging.WARNING)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)
    ours = logging.getLogger("monai_danil.benchmark")
    ours_handler = _TqdmHandler()
    ours_handler.setFormatter(handler.formatter)
    ours.handlers[:] = [ours_handler]
    ours.setLevel(logging.INFO)
    ours.propagate = False
    # MONAI's module loggers print to stdout and do not propagate; route them through the same handler
    # ("monai.handlers.StatsHandler" is made here first, so MONAI never gives it a stdout handler)
    names = [n for n in logging.root.manager.loggerDict if n.startswith("monai.")]
    for name in {*names, "monai.handlers.StatsHandler"}:
        logger = logging.getLogger(name)
        if name == "monai.handlers.StatsHandler" or logger.handlers:
            logger.handlers[:] = [handler]
    if not verbose:
        logging.getLogger("monai.bundle.workflows").setLevel(logging.ERROR)  # "logging file set to False"
        warnings.filterwarnings("ignore", message=".*torch.cuda.amp.GradScaler.*")


def _compare(files: Sequence[Path], out: Path, table: IO[str], control: str) -> int:
    from .accuracy import BOOTSTRAP_RESAMPLES, BOOTSTRAP_SEED, _write_json
    from .report import accuracy_markdown, merge_reports
    from .statistics import bootstrap_weights

    reports = []
    for path in files:
        if not path.is_file():
            raise FileNotFoundError(f"result file not found: {path}")
        reports.append(json.loads(path.read_text(encoding="utf-8")))
    weights = bootstrap_weights(int(reports[0]["n_images"]), BOOTSTRAP_RESAMPLES, BOOTSTRAP_SEED)
    merged = merge_reports(reports, [p.stem for p in files], weights, ("ce", control))
    _write_json(out, merged)
    logging.getLogger("monai_danil.benchmark").info("wrote %s", out)
    table.write(accuracy_markdown(merged))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the command; returns the exit status."""
    args = build_parser().parse_args(argv)
    from . import AccuracyBenchmark, SpeedBenchmark, accuracy_markdown, parse_overrides, speed_markdown

    setup_logging(args.verbose)
    if args.threads is not None:
        import torch

        torch.set_num_threads(args.threads)

    log = logging.getLogger("monai_danil.benchmark")
    with _stdout_for_table() as table:
        try:  # user mistakes (bad path, bad override) end in one line; anything later keeps its traceback
            if args.command == "compare":
                return _compare(args.results, args.out, table, args.control)
            if args.command == "accuracy":
                benchmark = AccuracyBenchmark(
                    task=args.task,
                    data_dir=args.data_dir,
                    methods=args.methods,
                    seeds=args.seeds,
                    profile=args.profile,
                    work_dir=args.work_dir,
                    overrides=parse_overrides(args.overrides),
                    test_manifest=args.test_manifest,
                    test_dir=args.test_dir,
                    bundle=args.bundle_dir,
                    cv=args.cv,
                    cv_seed=args.cv_seed,
                    variants={name: (base, parse_overrides(pairs)) for name, base, pairs in args.variants},
                )
            else:
                benchmark = SpeedBenchmark(
                    net=args.net,
                    image_size=args.image_size,
                    batch_size=args.batch_size,
                    device=args.device,
                    amp=args.amp,
                    num_classes=args.num_classes,
                    iterations=args.iterations,
                    repeats=args.repeats,
                    warmup=args.warmup,
                    bank_size=args.bank_size,
                    data_dir=args.data_dir,
                    task=args.task,
                    num_workers=args.num_workers,
                    max_images=args.max_images,
                    reading=args.reading,
                    miner_options=parse_overrides(args.miner_options),
                )
        except (ValueError, FileNotFoundError) as err:
            log.error("%s", err)
            return 2
        if isinstance(benchmark, AccuracyBenchmark):
            markdown = accuracy_markdown(benchmark.run(out=args.out, jobs=args.jobs, threads=args.threads, verbose=args.verbose))
        else:
            result = benchmark.run()
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(json.dumps(result, indent=2, allow_nan=False) + "\n", encoding="utf-8")
            markdown = speed_markdown(result)
        log.info("wrote %s", args.out)
        table.write(markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
