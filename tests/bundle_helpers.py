"""What the bundle tests share: a private copy of a bundle, the MONAI command line, its outputs.

Every test runs a bundle the way a user does, ``python -m monai.bundle ...`` in a subprocess, on a
copy of the bundle under ``tmp_path``, so no test ever writes into the repository.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from monai.bundle import ConfigParser

from conftest import REPO_ROOT

BUNDLES = REPO_ROOT / "bundles"
SCHEMA = REPO_ROOT.parent / "shared" / "design" / "monai_meta_schema_20240725.json"


def copy_bundle(name: str, root: Path) -> Path:
    """Copy ``bundles/<name>`` to ``root/bundles/<name>``, links kept, outputs of earlier runs left out."""
    target = root / "bundles" / name
    shutil.copytree(
        BUNDLES / name, target, symlinks=True, ignore=shutil.ignore_patterns("models", "logs", "eval", "synthetic_demo", "data")
    )
    # the top-level links point inside the bundle except LICENSE, which points at the repository's
    (target / "LICENSE").unlink()
    shutil.copy(REPO_ROOT / "LICENSE", target / "LICENSE")
    return target


def run_module(
    args: list[str], cwd: Path, env: dict[str, str] | None = None, check: bool = True
) -> subprocess.CompletedProcess:
    """``python -m <args>`` in ``cwd``; with ``check``, a failure shows the end of its output."""
    full_env = dict(os.environ, PYTHONUNBUFFERED="1", **(env or {}))
    result = subprocess.run(
        [sys.executable, "-m", *args], cwd=cwd, env=full_env, capture_output=True, text=True, timeout=900
    )
    if check:
        assert result.returncode == 0, f"{' '.join(args)} failed:\n{result.stdout[-3000:]}\n{result.stderr[-5000:]}"
    return result


def verify_metadata(meta_file: Path, tmp_path: Path) -> None:
    """``monai.bundle verify_metadata`` against MONAI's schema, offline (a copy of the shared schema)."""
    if not SCHEMA.is_file():
        pytest.fail(f"MONAI's metadata schema not found at {SCHEMA}")
    schema = tmp_path / "schema.json"  # verify_metadata may write beside the schema: use a copy
    shutil.copy(SCHEMA, schema)
    run_module(["monai.bundle", "verify_metadata", "--meta_file", str(meta_file), "--filepath", str(schema)], cwd=tmp_path)


def class_names(bundle: Path) -> list[str]:
    """The class names of a bundle, from where they are defined: its metadata's output channels."""
    meta = json.loads((bundle / "configs" / "metadata.json").read_text())
    return list(meta["network_data_format"]["outputs"]["pred"]["channel_def"].values())


def parse_config(bundle: Path, config: str = "train.json", overlays: tuple[str, ...] = (), **override) -> ConfigParser:
    """The bundle's config (plus overlay files from ``configs/``) with its metadata and overrides, unresolved."""
    parser = ConfigParser()
    parser.read_config([str(bundle / "configs" / config), *(str(bundle / "configs" / o) for o in overlays)])
    parser.read_meta(str(bundle / "configs" / "metadata.json"))
    parser.update(override)
    return parser


def plain_network(bundle: Path, model_file: Path, num_classes: int) -> torch.nn.Module:
    """The bundle's ``network_def`` built without the config, as plain MONAI, with ``model_file`` loaded."""
    parser = ConfigParser()
    parser.read_config(str(bundle / "configs" / "train.json"))
    spec = dict(parser["network_def"])
    target = spec.pop("_target_")
    assert target.startswith("monai.networks.nets."), target
    spec["num_classes"] = num_classes
    module_name, _, class_name = target.rpartition(".")
    network_class = getattr(__import__(module_name, fromlist=[class_name]), class_name)
    net = network_class(**spec)
    net.load_state_dict(torch.load(model_file, weights_only=True))
    return net.eval()


def read_predictions(csv_file: Path) -> list[list[str]]:
    """The rows of an inference ``predictions.csv``: image, then one probability per class.

    The file's header is ``image,prediction,<class names>``; its ``prediction`` column is checked to
    name the class of the highest probability and left out of the rows returned.
    """
    with open(csv_file, newline="") as handle:
        header, *rows = list(csv.reader(handle))
    assert header[:2] == ["image", "prediction"], header
    classes = header[2:]
    for row in rows:
        probabilities = [float(p) for p in row[2:]]
        assert row[1] == classes[probabilities.index(max(probabilities))], row
    return [[row[0], *row[2:]] for row in rows]


def read_events(log_dir: Path):
    """Every TensorBoard event under ``log_dir`` (scalars, images, text), none sampled away."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(log_dir), size_guidance={"scalars": 0, "images": 0, "tensors": 0})
    events.Reload()
    return events


def check_tensorboard_log(log_dir: Path, val_metrics: tuple[str, ...]) -> None:
    """One epoch's log holds the DANIL figures, the learning rate, the metrics and the review handlers."""
    events = read_events(log_dir)
    tags = events.Tags()
    assert {"loss", "danil_distance", "danil_fraction", "danil_lambda", "lr", *val_metrics} <= set(tags["scalars"])
    for metric in val_metrics:
        (value,) = [e.value for e in events.Scalars(metric)]
        assert 0.0 <= value <= 1.0, (metric, value)  # never NaN
    for tag in ("train_distractor_pairs", "val_confusion_matrix"):
        assert [e.step for e in events.Images(tag)] == [1], tag
    assert (log_dir / "projector_config.pbtxt").is_file()


def write_manifest(path: Path, rows: list[tuple[str, str, str]]) -> Path:
    """A ``relative_path,label,split`` manifest with ``rows``."""
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["relative_path", "label", "split"])
        writer.writerows(rows)
    return path
