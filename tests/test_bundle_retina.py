"""The retina bundle, run by the literal MONAI command, on the real RetinaMNIST images."""

from __future__ import annotations

import json
import shutil

import torch
from bundle_helpers import (
    BUNDLES,
    check_tensorboard_log,
    copy_bundle,
    plain_network,
    read_events,
    read_predictions,
    run_module,
    verify_metadata,
)

BUNDLE = BUNDLES / "retina"
VAL_METRICS = ("val_kappa", "val_accuracy", "val_balanced_accuracy", "val_macro_f1", "val_auc")


def test_layout_links_configs_without_duplicates():
    for name in ("train.json", "metadata.json", "logging.conf"):
        link = BUNDLE / name
        assert link.is_symlink() and link.resolve() == (BUNDLE / "configs" / name).resolve()
    for name in ("LICENSE", "configs/inference.json", "docs/README.md"):
        assert (BUNDLE / name).is_file()


def test_metadata_verifies_offline_against_monai_schema(tmp_path):
    verify_metadata(BUNDLE / "configs" / "metadata.json", tmp_path)


def test_literal_command_trains_one_epoch_on_real_retinamnist(tmp_path, retina_dir):
    bundle = copy_bundle("retina", tmp_path)
    result = run_module(
        ["monai.bundle", "run", "training", "--config_file", "bundles/retina/train.json",
         "--dataset_dir", str(retina_dir), "--epochs", "1"],
        cwd=tmp_path,
    )
    log = result.stdout + result.stderr
    for metric in VAL_METRICS:
        assert f"{metric}: " in log, f"{metric} not logged"
    assert "danil_distance: " in log and "danil_lambda: " in log
    ckpt_dir = bundle / "models"
    net = plain_network(bundle, ckpt_dir / "model.pt", num_classes=5)
    with torch.no_grad():
        assert net(torch.rand(2, 3, 28, 28)).shape == (2, 5)
    resume = torch.load(ckpt_dir / "checkpoint.pt", weights_only=True)
    assert {"network", "optimizer", "lr_scheduler", "trainer", "danil"} <= set(resume)
    assert resume["trainer"]["iteration"] == 1080 // 64  # drop_last: 16 full batches of 1080 train images
    assert resume["danil"]["miner"]["bank"]["count"] == 540  # half an epoch of samples
    check_tensorboard_log(bundle / "logs", VAL_METRICS)
    assert {"danil_ce", "danil_da", "danil_from_bank"} <= set(read_events(bundle / "logs").Tags()["scalars"])
    # inference.json on the trained model: one row of 5 probabilities per val image
    run_module(["monai.bundle", "run", "--config_file", "bundles/retina/configs/inference.json",
                "--dataset_dir", str(retina_dir)], cwd=tmp_path)
    rows = read_predictions(bundle / "eval" / "predictions.csv")
    assert len(rows) == 120 and all(abs(sum(map(float, row[1:])) - 1.0) < 1e-4 for row in rows)


def test_run_id_from_inside_the_bundle_writes_into_the_bundle(tmp_path):
    bundle = copy_bundle("retina", tmp_path)
    run_module(["monai_danil.data", "synthetic", "--task", "retina", "--out", "synthetic_demo", "--num-images", "160"],
         cwd=bundle)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    run_module(["monai.bundle", "run", "run", "--config_file", "configs/train.json", "--epochs", "1"], cwd=bundle)
    assert (bundle / "models" / "model.pt").is_file() and any((bundle / "logs").iterdir())
    # run id "resume" continues from models/checkpoint.pt: one more epoch, the bank restored, not refilled
    first = torch.load(bundle / "models" / "checkpoint.pt", weights_only=True)
    run_module(["monai.bundle", "run", "resume", "--config_file", "configs/train.json", "--epochs", "2"], cwd=bundle)
    resumed = torch.load(bundle / "models" / "checkpoint.pt", weights_only=True)
    assert resumed["trainer"]["max_epochs"] == 2 and resumed["trainer"]["iteration"] == 2 * first["trainer"]["iteration"]
    assert resumed["danil"]["miner"]["bank"]["count"] == first["danil"]["miner"]["bank"]["count"]
    # and from an unrelated folder through the top-level link, still into the bundle
    shutil.rmtree(bundle / "models")
    run_module(["monai.bundle", "run", "training", "--config_file", str(bundle / "train.json"), "--epochs", "1"],
         cwd=elsewhere)
    assert (bundle / "models" / "model.pt").is_file()
    assert not any(elsewhere.iterdir())
    plain_network(bundle, bundle / "models" / "model.pt", num_classes=5)


def test_config_wires_danil_in_plain_sight():
    config = json.loads((BUNDLE / "configs" / "train.json").read_text())
    assert config["loss"]["_target_"] == "monai_danil.losses.DistractorAwareLoss"
    assert config["danil"]["_target_"] == "monai_danil.handlers.DistractorMiningHandler"
    assert {"_target_": "monai_danil.handlers.SharedHandler", "handler": "@danil"} in config["train"]["handlers"]
    assert config["train"]["trainer"]["max_epochs"] == "@epochs"
    assert config["train"]["dataloader"]["drop_last"] is True
    for section in ("train", "validate"):
        assert "read_manifest" in config[section]["dataset"]["data"]
