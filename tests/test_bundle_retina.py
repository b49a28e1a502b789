"""The retina bundle, run by the literal MONAI command, on the real RetinaMNIST images."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from monai.bundle import ConfigParser
from monai.networks.nets import resnet18
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from conftest import REPO_ROOT

BUNDLE = REPO_ROOT / "bundles" / "retina"
SCHEMA = REPO_ROOT.parent / "shared" / "design" / "monai_meta_schema_20240725.json"
VAL_METRICS = ("val_kappa", "val_accuracy", "val_balanced_accuracy", "val_macro_f1", "val_auc")


def _copy_bundle(root: Path) -> Path:
    """A private copy of the bundle (symlinks followed), so tests never write into the repository."""
    target = root / "bundles" / "retina"
    shutil.copytree(BUNDLE, target, symlinks=True, ignore=shutil.ignore_patterns("models", "logs", "synthetic_demo"))
    # the top-level links point inside the bundle except LICENSE, which points at the repository's
    (target / "LICENSE").unlink()
    shutil.copy(REPO_ROOT / "LICENSE", target / "LICENSE")
    return target


def _run(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    result = subprocess.run(
        [sys.executable, "-m", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=900
    )
    assert result.returncode == 0, f"{' '.join(args)} failed:\n{result.stdout[-3000:]}\n{result.stderr[-5000:]}"
    return result


def _network(ckpt_dir: Path) -> torch.nn.Module:
    parser = ConfigParser()
    parser.read_config(BUNDLE / "configs" / "train.json")
    kwargs = {k: v for k, v in parser["network_def"].items() if k != "_target_"}
    kwargs["num_classes"] = 5
    net = resnet18(**kwargs)
    net.load_state_dict(torch.load(ckpt_dir / "model.pt", weights_only=True))
    return net


def test_layout_links_configs_without_duplicates():
    for name in ("train.json", "metadata.json", "logging.conf"):
        link = BUNDLE / name
        assert link.is_symlink() and link.resolve() == (BUNDLE / "configs" / name).resolve()
    for name in ("LICENSE", "configs/inference.json", "docs/README.md"):
        assert (BUNDLE / name).is_file()


def test_metadata_verifies_offline_against_monai_schema(tmp_path):
    if not SCHEMA.is_file():
        pytest.fail(f"MONAI's metadata schema not found at {SCHEMA}")
    schema = tmp_path / "schema.json"  # verify_metadata may write beside the schema: use a copy
    shutil.copy(SCHEMA, schema)
    _run(
        ["monai.bundle", "verify_metadata", "--meta_file", str(BUNDLE / "configs" / "metadata.json"),
         "--filepath", str(schema)],
        cwd=tmp_path,
    )


def test_literal_command_trains_one_epoch_on_real_retinamnist(tmp_path, retina_dir):
    bundle = _copy_bundle(tmp_path)
    result = _run(
        ["monai.bundle", "run", "training", "--config_file", "bundles/retina/train.json",
         "--dataset_dir", str(retina_dir), "--epochs", "1"],
        cwd=tmp_path,
    )
    log = result.stdout + result.stderr
    for metric in VAL_METRICS:
        assert f"{metric}: " in log, f"{metric} not logged"
    assert "danil_distance: " in log and "danil_lambda: " in log
    ckpt_dir = bundle / "models"
    net = _network(ckpt_dir).eval()
    with torch.no_grad():
        assert net(torch.rand(2, 3, 28, 28)).shape == (2, 5)
    resume = torch.load(ckpt_dir / "checkpoint.pt", weights_only=True)
    assert {"network", "optimizer", "lr_scheduler", "trainer", "danil"} <= set(resume)
    assert resume["trainer"]["iteration"] == 1080 // 64  # drop_last: 16 full batches of 1080 train images
    assert resume["danil"]["miner"]["bank"]["count"] == 540  # half an epoch of samples
    events = EventAccumulator(str(bundle / "logs"), size_guidance={"scalars": 0})
    events.Reload()
    scalars = set(events.Tags()["scalars"])
    assert set(VAL_METRICS) <= scalars and {"loss", "danil_distance", "danil_fraction"} <= scalars
    for metric in ("val_accuracy", "val_balanced_accuracy", "val_auc"):
        (value,) = [e.value for e in events.Scalars(metric)]
        assert 0.0 <= value <= 1.0


def test_run_id_from_inside_the_bundle_writes_into_the_bundle(tmp_path):
    bundle = _copy_bundle(tmp_path)
    _run(["monai_danil.data", "synthetic", "--task", "retina", "--out", "synthetic_demo", "--num-images", "160"],
         cwd=bundle)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    _run(["monai.bundle", "run", "run", "--config_file", "configs/train.json", "--epochs", "1"], cwd=bundle)
    assert (bundle / "models" / "model.pt").is_file() and any((bundle / "logs").iterdir())
    # and from an unrelated folder through the top-level link, still into the bundle
    shutil.rmtree(bundle / "models")
    _run(["monai.bundle", "run", "training", "--config_file", str(bundle / "train.json"), "--epochs", "1"],
         cwd=elsewhere)
    assert (bundle / "models" / "model.pt").is_file()
    assert not any(elsewhere.iterdir())
    _network(bundle / "models")


def test_config_wires_danil_in_plain_sight():
    config = json.loads((BUNDLE / "configs" / "train.json").read_text())
    assert config["loss"]["_target_"] == "monai_danil.losses.DistractorAwareLoss"
    assert config["danil"]["_target_"] == "monai_danil.handlers.DistractorMiningHandler"
    assert "@danil" in config["train"]["handlers"]
    assert config["train"]["trainer"]["max_epochs"] == "@epochs"
    assert config["train"]["dataloader"]["drop_last"] is True
    for section in ("train", "validate"):
        assert "read_manifest" in config[section]["dataset"]["data"]
