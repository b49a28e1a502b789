"""The pathology bundle, run by the literal MONAI command, on real H&E tiles (PathMNIST, Kather 2016, NCT-CRC-HE)."""

from __future__ import annotations

import json

import pytest
import torch
from bundle_helpers import (
    BUNDLES,
    check_tensorboard_log,
    class_names,
    copy_bundle,
    parse_config,
    plain_network,
    read_predictions,
    run_module,
    verify_metadata,
    write_manifest,
)
from monai.transforms import Identityd

from monai_danil.data import read_manifest, to_class_index
from monai_danil.transforms import HEStainNormalized

BUNDLE = BUNDLES / "pathology"
CLASSES = [
    "adipose", "background", "debris", "lymphocytes", "mucus", "smooth muscle", "normal colon mucosa",
    "cancer-associated stroma", "colorectal adenocarcinoma epithelium",
]
KATHER2016 = "kather2016.json"
KATHER2016_FOLDERS = ["01_TUMOR", "02_STROMA", "03_COMPLEX", "04_LYMPHO", "05_DEBRIS", "06_MUCOSA", "07_ADIPOSE", "08_EMPTY"]
NCT_CODES = ["ADI", "BACK", "DEB", "LYM", "MUC", "MUS", "NORM", "STR", "TUM"]
VAL_METRICS = ("val_accuracy", "val_balanced_accuracy", "val_macro_f1", "val_auc")
TRAIN_IMAGES, VAL_IMAGES = 681, 120


@pytest.fixture(scope="module")
def trained(tmp_path_factory, pathology_dir):
    """One epoch of the literal command on the real PathMNIST tiles, at the default 28 px."""
    root = tmp_path_factory.mktemp("pathology")
    bundle = copy_bundle("pathology", root)
    result = run_module(
        ["monai.bundle", "run", "training", "--config_file", "bundles/pathology/train.json",
         "--dataset_dir", str(pathology_dir), "--epochs", "1"],
        cwd=root,
    )
    return root, bundle, result.stdout + result.stderr


def test_layout_links_configs_without_duplicates():
    for name in ("train.json", "metadata.json", "logging.conf"):
        link = BUNDLE / name
        assert link.is_symlink() and link.resolve() == (BUNDLE / "configs" / name).resolve()
    assert (BUNDLE / "LICENSE").resolve() == (BUNDLE.parents[1] / "LICENSE").resolve()
    for name in ("configs/inference.json", f"configs/{KATHER2016}", "docs/README.md"):
        assert (BUNDLE / name).is_file()


def test_metadata_verifies_offline_against_monai_schema(tmp_path):
    verify_metadata(BUNDLE / "configs" / "metadata.json", tmp_path)


def test_class_names_are_defined_once_in_metadata(pathology_dir):
    assert class_names(BUNDLE) == CLASSES
    meta = json.loads((BUNDLE / "configs" / "metadata.json").read_text())["network_data_format"]
    assert meta["post_processed_outputs"]["pred"]["channel_def"] == meta["outputs"]["pred"]["channel_def"]
    for config in ("train.json", "inference.json"):
        assert parse_config(BUNDLE, config).get_parsed_content("class_names") == CLASSES
    # the numbers of PathMNIST are the rows of its classes.txt, in the same order
    listed = [line.split("\t")[1] for line in (pathology_dir / "classes.txt").read_text().splitlines() if line]
    assert [name.replace("_", " ") for name in listed] == [name.replace("-", " ") for name in CLASSES]


def test_config_wires_danil_in_plain_sight():
    config = json.loads((BUNDLE / "configs" / "train.json").read_text())
    assert config["loss"]["_target_"] == "monai_danil.losses.DistractorAwareLoss"
    assert config["miner"]["_target_"] == "monai_danil.mining.DistractorMiner"
    assert config["danil"]["_target_"] == "monai_danil.handlers.DistractorMiningHandler"
    assert {"_target_": "monai_danil.handlers.SharedHandler", "handler": "@danil"} in config["train"]["handlers"]
    assert config["train"]["trainer"]["max_epochs"] == "@epochs"
    assert "val_accuracy" in config["validate"]["key_metric"]
    for section in ("train", "validate"):
        assert "@label_aliases" in config[section]["dataset"]["data"]
    assert {"training", "run", "resume", "finalize"} <= set(config)


@pytest.mark.parametrize(
    "manifest, overlays, expected",
    [
        ("manifest.csv", (), None),  # PathMNIST class numbers
        ("manifest_nct_crc_he_samples.csv", (), {code: i for i, code in enumerate(NCT_CODES)}),
        ("manifest_kather2016_samples.csv", (KATHER2016,), {f: i for i, f in enumerate(KATHER2016_FOLDERS)}),
    ],
)
def test_labels_of_every_real_layout_map_onto_the_class_names(pathology_dir, manifest, overlays, expected):
    parser = parse_config(BUNDLE, "train.json", overlays, dataset_dir=str(pathology_dir))
    datalist = read_manifest(
        pathology_dir / manifest, None, parser.get_parsed_content("class_names"), parser.get_parsed_content("label_aliases")
    )
    raw = [line.split(",")[1].strip() for line in (pathology_dir / manifest).read_text().splitlines()[1:] if line]
    assert len(datalist) == len(raw)
    for item, label in zip(datalist, raw):
        assert item["label"] == (int(label) if expected is None else expected[label])


def test_classes_txt_names_are_aliases_too(pathology_dir):
    aliases = parse_config(BUNDLE).get_parsed_content("label_aliases")
    for line in (pathology_dir / "classes.txt").read_text().splitlines():
        number, name = line.split("\t")
        assert to_class_index(name, CLASSES, aliases) == int(number)


def test_kather2016_overlay_is_8_classes_with_stain_normalisation():
    parser = parse_config(BUNDLE, "train.json", (KATHER2016,))
    assert parser.get_parsed_content("num_classes") == 8
    assert parser.get_parsed_content("stain_normalization") == "macenko"
    assert HEStainNormalized in [type(t) for t in parser.get_parsed_content("train#preprocessing").transforms]
    # and the 9-class default refuses a Kather 2016 folder name instead of guessing
    with pytest.raises(ValueError, match="unknown label '03_COMPLEX'"):
        to_class_index("03_COMPLEX", CLASSES, parse_config(BUNDLE).get_parsed_content("label_aliases"))


def test_stain_normalisation_is_a_switch_off_by_default(pathology_dir):
    def transforms(config="train.json", **override):
        parser = parse_config(BUNDLE, config, **override)
        key = "validate#preprocessing" if config == "train.json" else "preprocessing"
        return [type(t) for t in parser.get_parsed_content(key).transforms]

    assert Identityd in transforms() and HEStainNormalized not in transforms()
    assert HEStainNormalized in transforms(stain_normalization="macenko")
    assert HEStainNormalized in transforms("inference.json", stain_normalization="macenko")
    with pytest.raises(RuntimeError) as error:  # a boolean as the command line passes it
        transforms(stain_normalization="true")
    assert "'true'" in str(error.value.__cause__) and "Available options are" in str(error.value.__cause__)
    # NONORM NCT-CRC-HE tiles (224 px TIFF) through the inference preprocessing, normalised
    parser = parse_config(BUNDLE, "inference.json", stain_normalization="macenko", image_size=64)
    pipeline = parser.get_parsed_content("preprocessing")
    for tile in sorted((pathology_dir / "nct_crc_he_samples").glob("*.tif"))[:3]:
        out = pipeline({"image": str(tile)})["image"]
        assert tuple(out.shape) == (3, 64, 64) and 0.0 <= float(out.min()) <= float(out.max()) <= 1.0


@pytest.mark.slow
def test_literal_command_trains_one_epoch_on_real_pathmnist(trained):
    _, bundle, log = trained
    for metric in VAL_METRICS:
        assert f"{metric}: " in log, f"{metric} not logged"
    assert "Key metric: val_accuracy" in log
    ckpt_dir = bundle / "models"
    net = plain_network(bundle, ckpt_dir / "model.pt", len(CLASSES))
    with torch.no_grad():
        assert net(torch.rand(2, 3, 28, 28)).shape == (2, len(CLASSES))
    resume = torch.load(ckpt_dir / "checkpoint.pt", weights_only=True)
    assert {"network", "optimizer", "lr_scheduler", "trainer", "danil"} <= set(resume)
    assert resume["trainer"]["iteration"] == TRAIN_IMAGES // 64
    assert resume["danil"]["miner"]["bank"]["count"] == TRAIN_IMAGES // 2
    check_tensorboard_log(bundle / "logs", VAL_METRICS)


@pytest.mark.slow
def test_inference_config_runs_on_the_trained_model(trained, pathology_dir):
    root, bundle, _ = trained
    run_module(
        ["monai.bundle", "run", "--config_file", "bundles/pathology/configs/inference.json",
         "--dataset_dir", str(pathology_dir)],
        cwd=root,
    )
    rows = read_predictions(bundle / "eval" / "predictions.csv")
    assert len(rows) == VAL_IMAGES
    for row in rows:
        assert row[0].endswith(".png") and len(row) == 1 + len(CLASSES)
        assert sum(float(p) for p in row[1:]) == pytest.approx(1.0, abs=1e-4)
    # a manifest file without a split column, of NONORM NCT-CRC-HE TIFFs, normalised on the fly
    run_module(
        ["monai.bundle", "run", "--config_file", "bundles/pathology/configs/inference.json",
         "--dataset_dir", str(pathology_dir / "manifest_nct_crc_he_samples.csv"), "--split", "$None",
         "--stain_normalization", "macenko", "--output_dir", str(root / "nonorm")],
        cwd=root,
    )
    rows = read_predictions(root / "nonorm" / "predictions.csv")
    assert sorted(row[0].rsplit("/", 1)[1].split("-")[0] for row in rows) == sorted(NCT_CODES)


@pytest.mark.slow
def test_kather2016_layout_trains_after_the_documented_converter(tmp_path, pathology_dir):
    """``folders`` on the Kather 2016 class folders, then the 8-class overlay: TIFF, Macenko, 8 outputs."""
    bundle = copy_bundle("pathology", tmp_path)
    dataset = tmp_path / "kather2016"
    run_module(["monai_danil.data", "folders", "--root", str(pathology_dir / "kather2016_samples"),
                "--out", str(dataset)], cwd=tmp_path)
    run_module(
        ["monai.bundle", "run", "training", "--config_file",
         "['bundles/pathology/configs/train.json','bundles/pathology/configs/kather2016.json']",
         "--dataset_dir", str(dataset), "--epochs", "1", "--image_size", "32", "--batch_size", "8"],
        cwd=tmp_path,
    )
    net = plain_network(bundle, bundle / "models" / "model.pt", len(KATHER2016_FOLDERS))
    with torch.no_grad():
        assert net(torch.rand(1, 3, 32, 32)).shape == (1, len(KATHER2016_FOLDERS))


def test_unknown_label_stops_the_run_naming_row_and_value(tmp_path, pathology_dir):
    copy_bundle("pathology", tmp_path)
    tiles = sorted((pathology_dir / "pathmnist_train_first1000" / "images").glob("*.png"))[:3]
    manifest = write_manifest(
        tmp_path / "manifest.csv",
        [(str(tiles[0]), "ADI", "train"), (str(tiles[1]), "3", "val"), (str(tiles[2]), "01_TUMOR", "train")],
    )
    result = run_module(
        ["monai.bundle", "run", "training", "--config_file", "bundles/pathology/train.json",
         "--dataset_dir", str(tmp_path), "--epochs", "1"],
        cwd=tmp_path,
        check=False,
    )
    assert result.returncode != 0
    assert f"{manifest}, line 4: unknown label '01_TUMOR'" in result.stderr, result.stderr[-3000:]
