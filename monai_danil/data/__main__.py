"""Command line: ``python -m monai_danil.data <command> --out DIR ...``.

Commands: ``synthetic`` (a SYNTHETIC demo set, not medical data), and converters from public
dataset layouts: ``ham10000``, ``isic2018``, ``aptos2019``, ``medmnist``, ``folders``. Each writes
``DIR/manifest.csv`` (``relative_path,label,split``, read by ``monai_danil.data.read_manifest``)
and nothing else outside ``DIR``; a failed run leaves no ``DIR`` behind.
"""

from __future__ import annotations

import argparse
import csv
import sys
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from .converters import convert_aptos2019, convert_folders, convert_ham10000, convert_isic2018, convert_medmnist
from .synthetic import make_synthetic_retina


def _add_common(parser: argparse.ArgumentParser, split: bool = True) -> None:
    parser.add_argument("--out", required=True, type=Path, help="output folder (created; must be empty or absent)")
    parser.add_argument("--overwrite", action="store_true", help="replace a non-empty --out folder")
    if split:
        parser.add_argument(
            "--val-fraction", type=float, default=0.15, help="share of each class in val (default 0.15)"
        )
        parser.add_argument("--seed", type=int, default=0, help="seed of the train/val split (default 0)")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``python -m monai_danil.data``.

    Returns:
        The parser, one sub-command per generator or converter.

    Example:
        >>> build_parser().parse_args(["medmnist", "--npz", "a.npz", "--out", "b"]).command
        'medmnist'
    """
    parser = argparse.ArgumentParser(
        prog="python -m monai_danil.data",
        description="Build manifest.csv datasets: a SYNTHETIC demo set, or converters from public layouts. "
        "Converters reference input images by absolute path (no copy); medmnist and synthetic write PNGs under --out.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    synthetic = commands.add_parser(
        "synthetic",
        help="SYNTHETIC fundus-like demo images (NOT medical data) to try the pipeline without real data",
        description="Write SYNTHETIC fundus-like pictures with 5 made-up grades (NOT medical data) and a manifest.",
    )
    synthetic.add_argument("--task", choices=["retina"], required=True, help="which demo set (only 'retina')")
    synthetic.add_argument("--num-images", type=int, default=300, help="number of images (default 300)")
    synthetic.add_argument("--image-size", type=int, default=64, help="image side in pixels (default 64)")
    synthetic.add_argument("--seed", type=int, default=0, help="seed (default 0)")
    synthetic.add_argument("--val-fraction", type=float, default=0.2, help="share of each grade in val (default 0.2)")
    _add_common(synthetic, split=False)

    ham = commands.add_parser("ham10000", help="HAM10000 image folders + HAM10000_metadata.csv (split by lesion)")
    ham.add_argument(
        "--images", action="append", required=True, type=Path, help="image folder; repeat for part_1, part_2"
    )
    ham.add_argument("--metadata", required=True, type=Path, help="HAM10000_metadata.csv")
    _add_common(ham)

    isic = commands.add_parser("isic2018", help="ISIC 2018 Task 3 images + one-hot ground-truth CSV")
    isic.add_argument("--images", required=True, type=Path, help="folder of <image>.jpg")
    isic.add_argument("--ground-truth", required=True, type=Path, help="ISIC2018_Task3_Training_GroundTruth.csv")
    isic.add_argument(
        "--lesion-groupings",
        type=Path,
        help="CSV with lesion_id and image/image_id (LesionGroupings.csv or HAM10000_metadata.csv) to split by lesion",
    )
    _add_common(isic)

    aptos = commands.add_parser("aptos2019", help="APTOS 2019 train.csv (id_code,diagnosis) + train_images/")
    aptos.add_argument("--csv", required=True, type=Path, help="train.csv")
    aptos.add_argument("--images", required=True, type=Path, help="folder of <id_code>.png")
    _add_common(aptos)

    medmnist = commands.add_parser("medmnist", help="a 2D single-label MedMNIST .npz (keeps its own splits)")
    medmnist.add_argument("--npz", required=True, type=Path, help="MedMNIST file, e.g. retinamnist.npz")
    _add_common(medmnist, split=False)

    folders = commands.add_parser("folders", help="class-per-folder tree root/<class>/<image> (label = folder name)")
    folders.add_argument("--root", required=True, type=Path, help="folder holding one sub-folder per class")
    _add_common(folders)
    return parser


def _run(args: argparse.Namespace) -> Path:
    common = {"out_dir": args.out, "overwrite": args.overwrite}
    if args.command == "synthetic":
        return make_synthetic_retina(
            num_images=args.num_images,
            image_size=args.image_size,
            seed=args.seed,
            val_fraction=args.val_fraction,
            **common,
        )
    if args.command == "medmnist":
        return convert_medmnist(args.npz, **common)
    common.update(val_fraction=args.val_fraction, seed=args.seed)
    if args.command == "ham10000":
        return convert_ham10000(args.images, args.metadata, **common)
    if args.command == "isic2018":
        return convert_isic2018(args.images, args.ground_truth, lesion_groupings=args.lesion_groupings, **common)
    if args.command == "aptos2019":
        return convert_aptos2019(args.csv, args.images, **common)
    if args.command == "folders":
        return convert_folders(args.root, **common)
    raise ValueError(f"unknown command {args.command!r}")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; user errors print one ``error:`` line instead of a traceback.

    Args:
        argv: arguments without the program name. Default ``None``: ``sys.argv[1:]``.

    Returns:
        The exit status: 0 on success, 1 when the input was refused.

    Example:
        >>> main(["synthetic", "--task", "retina", "--out", "/tmp/demo", "--num-images", "20"])  # doctest: +SKIP
        0
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        manifest = _run(args)
    except (ValueError, FileNotFoundError, FileExistsError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    with open(manifest, newline="", encoding="utf-8") as handle:
        splits = Counter(row["split"] for row in csv.DictReader(handle))
    order = {"train": 0, "val": 1, "test": 2}
    counts = ", ".join(f"{name} {splits[name]}" for name in sorted(splits, key=lambda s: (order.get(s, 3), s)))
    print(f"wrote {manifest}: {sum(splits.values())} rows ({counts})")
    if args.command == "synthetic":
        print("note: these images are SYNTHETIC, not medical data")
    return 0


if __name__ == "__main__":
    sys.exit(main())
