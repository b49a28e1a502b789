"""The skin bundle, run by the literal MONAI command, on the real HAM10000 images (CC BY-NC 4.0)."""

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

from monai_danil.transforms import HairRemovald, ShadesOfGrayd

BUNDLE = BUNDLES / "skin"
CLASSES = ["akiec", "bcc", "bkl", "df", "mel", "nv", "vasc"]
VAL_METRICS = ("val_balanced_accuracy", "val_accuracy", "val_macro_f1", "val_auc")
TRAIN_IMAGES, VAL_IMAGES, CI_SIZE = 7263, 1252, 32


@pytest.fixture(scope="module")
def trained(tmp_path_factory, skin_dir):
    """One epoch of the literal command (the README's) on the real skin data."""
    root = tmp_path_factory.mktemp("skin")
    bundle = copy_bundle("skin", root)
    result = run_module(
        ["monai.bundle", "run", "training", "--config_file", "bundles/skin/train.json",
         "--dataset_dir", str(skin_dir), "--epochs", "1", "--image_size", str(CI_SIZE)],
        cwd=root,
    )
    return root, bundle, result.stdout + result.stderr


def test_layout_links_configs_without_duplicates():
    for name in ("train.json", "metadata.json", "logging.conf"):
        link = BUNDLE / name
        assert link.is_symlink() and link.resolve() == (BUNDLE / "configs" / name).resolve()
    assert (BUNDLE / "LICENSE").resolve() == (BUNDLE.parents[1] / "LICENSE").resolve()
    for name in ("configs/inference.json", "docs/README.md"):
        assert (BUNDLE / name).is_file()


def test_metadata_verifies_offline_against_monai_schema(tmp_path):
    verify_metadata(BUNDLE / "configs" / "metadata.json", tmp_path)


def test_class_names_are_defined_once_in_metadata():
    assert class_names(BUNDLE) == CLASSES
    meta = json.loads((BUNDLE / "configs" / "metadata.json").read_text())["network_data_format"]
    assert meta["post_processed_outputs"]["pred"]["channel_def"] == meta["outputs"]["pred"]["channel_def"]
    assert meta["outputs"]["pred"]["num_channels"] == len(CLASSES)
    for config in ("train.json", "inference.json"):
        assert parse_config(BUNDLE, config).get_parsed_content("class_names") == CLASSES


def test_config_wires_danil_in_plain_sight():
    config = json.loads((BUNDLE / "configs" / "train.json").read_text())
    assert config["loss"]["_target_"] == "monai_danil.losses.DistractorAwareLoss"
    assert config["miner"]["_target_"] == "monai_danil.mining.DistractorMiner"
    assert config["danil"]["_target_"] == "monai_danil.handlers.DistractorMiningHandler"
    assert {"_target_": "monai_danil.handlers.SharedHandler", "handler": "@danil"} in config["train"]["handlers"]
    assert config["train"]["trainer"]["max_epochs"] == "@epochs"
    assert config["train"]["dataloader"]["drop_last"] is True
    assert "val_balanced_accuracy" in config["validate"]["key_metric"]
    for section in ("train", "validate"):
        assert "read_manifest" in config[section]["dataset"]["data"]
        assert "@label_aliases" in config[section]["dataset"]["data"]
    assert {"training", "run", "resume", "finalize"} <= set(config)


def test_inference_preprocessing_matches_validation(skin_dir):
    for hair_removal in ("none", "dullrazor"):
        train = parse_config(BUNDLE, "train.json", hair_removal=hair_removal)
        infer = parse_config(BUNDLE, "inference.json", hair_removal=hair_removal)
        validate = [type(t).__name__ for t in train.get_parsed_content("validate#preprocessing").transforms]
        inference = [type(t).__name__ for t in infer.get_parsed_content("preprocessing").transforms]
        assert validate == inference + ["EnsureTyped"]
    image = str(skin_dir / "images" / "ISIC_0024306.jpg")
    out = train.get_parsed_content("validate#preprocessing")({"image": image, "label": 5})
    assert tuple(out["image"].shape) == (3, 112, 112) and 0.0 <= float(out["image"].min()) <= float(out["image"].max()) <= 1.0


def test_hair_removal_switch_and_colour_constancy_in_pipeline():
    def transforms(**override):
        return [type(t) for t in parse_config(BUNDLE, **override).get_parsed_content("train#preprocessing").transforms]

    default = transforms()
    assert ShadesOfGrayd in default and HairRemovald not in default and Identityd in default
    with_hair = transforms(hair_removal="dullrazor")
    assert with_hair.index(HairRemovald) < with_hair.index(ShadesOfGrayd)
    # the remover's parameters are for 200x150 pictures; the original 600x450 ones override it whole
    custom = "$monai_danil.transforms.HairRemovald(keys='image', kernel_size=19, min_area=450)"
    for config, key in (("train.json", "validate#preprocessing"), ("inference.json", "preprocessing")):
        pipeline = parse_config(BUNDLE, config, hair_remover=custom).get_parsed_content(key).transforms
        (remover,) = [t for t in pipeline if isinstance(t, HairRemovald)]
        assert (remover.remover.kernel_size, remover.remover.min_area) == (19, 450)
    with pytest.raises(RuntimeError) as error:  # a typo, or a boolean spelt as the command line passes it
        transforms(hair_removal="false")
    assert "Unsupported option 'false'" in str(error.value.__cause__)


def test_class_weighting_is_inverse_frequency_of_the_train_split(skin_dir):
    parser = parse_config(BUNDLE, dataset_dir=str(skin_dir))
    labels = [item["label"] for item in parser.get_parsed_content("train#dataset#data")]
    assert len(labels) == TRAIN_IMAGES
    counts = torch.bincount(torch.tensor(labels), minlength=len(CLASSES)).float()
    expected = len(labels) / (len(CLASSES) * counts)  # scikit-learn's "balanced" class weights
    weights = parser.get_parsed_content("loss").class_weight
    torch.testing.assert_close(weights, expected)
    assert float((weights * counts).sum()) == pytest.approx(len(labels))  # weighted mean keeps the loss scale
    assert weights.argmax() == CLASSES.index("df") and weights.argmin() == CLASSES.index("nv")
    off = parse_config(BUNDLE, dataset_dir=str(skin_dir), class_weighting="none")
    assert off.get_parsed_content("loss").class_weight is None
    with pytest.raises(RuntimeError) as error:
        parse_config(BUNDLE, dataset_dir=str(skin_dir), class_weighting="balanced").get_parsed_content("loss")
    assert "Unsupported option 'balanced'" in str(error.value.__cause__)


def test_class_balanced_sampling_draws_every_class_alike(skin_dir):
    parser = parse_config(BUNDLE, dataset_dir=str(skin_dir), sampling="class_balanced", class_weighting="none",
                          cache_rate=0.0)
    loader = parser.get_parsed_content("train#dataloader")
    assert isinstance(loader.sampler, torch.utils.data.WeightedRandomSampler)
    labels = torch.tensor([item["label"] for item in parser.get_parsed_content("train#dataset#data")])
    per_class = torch.zeros(len(CLASSES)).index_add_(0, labels, loader.sampler.weights.float())
    torch.testing.assert_close(per_class, torch.ones(len(CLASSES)), rtol=1e-4, atol=0)  # each class 1/7 of draws
    default = parse_config(BUNDLE, dataset_dir=str(skin_dir), cache_rate=0.0).get_parsed_content("train#dataloader")
    assert not isinstance(default.sampler, torch.utils.data.WeightedRandomSampler)


@pytest.mark.slow
def test_literal_command_trains_one_epoch_on_real_ham10000(trained):
    _, bundle, log = trained
    for metric in VAL_METRICS:
        assert f"{metric}: " in log, f"{metric} not logged"
    assert "Key metric: val_balanced_accuracy" in log
    assert "danil_distance: " in log and "danil_lambda: " in log
    ckpt_dir = bundle / "models"
    net = plain_network(bundle, ckpt_dir / "model.pt", len(CLASSES))
    with torch.no_grad():
        assert net(torch.rand(2, 3, CI_SIZE, CI_SIZE)).shape == (2, len(CLASSES))
    resume = torch.load(ckpt_dir / "checkpoint.pt", weights_only=True)
    assert {"network", "optimizer", "lr_scheduler", "trainer", "danil"} <= set(resume)
    assert resume["trainer"]["iteration"] == TRAIN_IMAGES // 64  # drop_last: full batches only
    assert resume["danil"]["miner"]["bank"]["count"] == TRAIN_IMAGES // 2  # half an epoch, filled
    check_tensorboard_log(bundle / "logs", VAL_METRICS)


@pytest.mark.slow
def test_inference_config_runs_on_the_trained_model(trained, skin_dir):
    root, bundle, _ = trained
    run_module(
        ["monai.bundle", "run", "--config_file", "bundles/skin/configs/inference.json",
         "--dataset_dir", str(skin_dir), "--image_size", str(CI_SIZE)],
        cwd=root,
    )
    rows = read_predictions(bundle / "eval" / "predictions.csv")
    assert len(rows) == VAL_IMAGES
    for row in rows[:20]:
        assert row[0].endswith(".jpg") and len(row) == 1 + len(CLASSES)
        assert sum(float(p) for p in row[1:]) == pytest.approx(1.0, abs=1e-4)


def test_unknown_label_stops_the_run_naming_row_and_value(tmp_path, skin_dir):
    copy_bundle("skin", tmp_path)
    images = sorted((skin_dir / "images").glob("*.jpg"))[:3]
    manifest = write_manifest(
        tmp_path / "manifest.csv",
        [(str(images[0]), "nv", "train"), (str(images[1]), "melanoma", "train"), (str(images[2]), "MEL", "val")],
    )
    result = run_module(
        ["monai.bundle", "run", "training", "--config_file", "bundles/skin/train.json",
         "--dataset_dir", str(tmp_path), "--epochs", "1", "--image_size", str(CI_SIZE)],
        cwd=tmp_path,
        check=False,
    )
    assert result.returncode != 0
    assert f"{manifest}, line 3: unknown label 'melanoma'" in result.stderr, result.stderr[-3000:]
    assert "'akiec', 'bcc'" in result.stderr  # and what was expected
    assert not (tmp_path / "bundles" / "skin" / "models").exists()
