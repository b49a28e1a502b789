"""MONAI's own checks on every bundle: workflow properties, and what MONAI Label parses without metadata."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest
import torch
from bundle_helpers import BUNDLES, class_names, copy_bundle, run_module
from monai.bundle import ConfigParser, ConfigWorkflow

TASKS = ("retina", "skin", "pathology")


def small_dataset(source: Path, root: Path, per_split: int = 6) -> Path:
    """A folder of the first ``per_split`` real train and val images of ``source`` with their manifest."""
    root.mkdir(parents=True, exist_ok=True)
    with open(source / "manifest.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    kept = [r for split in ("train", "val") for r in [r for r in rows if r["split"] == split][:per_split]]
    for row in kept:
        target = root / row["relative_path"]
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(source / row["relative_path"], target)
    with open(root / "manifest.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["relative_path", "label", "split"], extrasaction="ignore")
        writer.writeheader()
        writer.writerows(kept)
    return root


@pytest.mark.parametrize("task", TASKS)
@pytest.mark.parametrize("workflow_type, config", [("train", "train.json"), ("infer", "inference.json")])
def test_check_properties_finds_nothing_missing(task, workflow_type, config, data_root, tmp_path):
    bundle = copy_bundle(task, tmp_path)
    data = small_dataset(data_root / task, tmp_path / "data")
    workflow = ConfigWorkflow(
        config_file=str(bundle / "configs" / config),
        meta_file=str(bundle / "configs" / "metadata.json"),
        workflow_type=workflow_type,
        logging_file=False,
        dataset_dir=str(data),
        split="val",
    )
    workflow.initialize()
    assert workflow.check_properties() == []


@pytest.mark.parametrize("task", TASKS)
def test_verify_net_in_out_passes_on_the_inference_network(task, tmp_path):
    """``monai.bundle verify_net_in_out`` as the model zoo's CI runs it, on a copy of the bundle."""
    bundle = copy_bundle(task, tmp_path)
    result = run_module(
        ["monai.bundle", "verify_net_in_out", "network_def", "--meta_file", "configs/metadata.json",
         "--config_file", "configs/inference.json", "--device", "cpu"],
        cwd=bundle,
    )
    assert "data shape of network is verified with no error" in result.stdout + result.stderr


@pytest.mark.parametrize("task", TASKS)
def test_every_handler_entry_is_a_dict_with_a_target(task):
    config = json.loads((BUNDLES / task / "configs" / "train.json").read_text())
    for section in ("train", "validate"):
        for entry in config[section]["handlers"]:
            assert isinstance(entry, dict) and "_target_" in entry, (section, entry)
    shared = [h["handler"] for h in config["train"]["handlers"] if h["_target_"].endswith("SharedHandler")]
    assert "@danil" in shared


@pytest.mark.parametrize("task", TASKS)
def test_metrics_are_one_target_each_and_data_defaults_inside_the_bundle(task):
    """As the model zoo lists metrics; one ``dataset_dir`` convention, stated in each bundle's README."""
    from ignite.metrics import ConfusionMatrix

    from monai_danil.metrics import ClassificationMetricHandler

    bundle = BUNDLES / task
    for name in ("train.json", "inference.json"):
        text = (bundle / "configs" / name).read_text()
        assert "environ" not in text, name
        parser = ConfigParser()
        parser.read_config(str(bundle / "configs" / name))
        parser.read_meta(str(bundle / "configs" / "metadata.json"))
        parser.config.update({"bundle_root": str(bundle), "device": "cpu"})  # type: ignore[union-attr]
        assert Path(parser.get_parsed_content("dataset_dir")).parent == bundle, name
    validate = json.loads((bundle / "configs" / "train.json").read_text())["validate"]
    assert "metric" not in validate
    metrics = {**validate["key_metric"], **validate["additional_metrics"]}
    assert all(isinstance(entry, dict) and "_target_" in entry for entry in metrics.values())
    parser = ConfigParser()
    parser.read_config(str(bundle / "configs" / "train.json"))
    parser.read_meta(str(bundle / "configs" / "metadata.json"))
    parser.config.update({"device": "cpu"})  # type: ignore[union-attr]
    built = [parser.get_parsed_content(f"validate#{section}#{name}")
             for section in ("key_metric", "additional_metrics") for name in validate[section]]
    assert all(isinstance(metric, ClassificationMetricHandler) for metric in built)
    targets = [handler["_target_"] for handler in validate["handlers"]]
    drawn = targets.index("monai_danil.handlers.ConfusionMatrixTensorBoardHandler")
    assert isinstance(parser.get_parsed_content(f"validate#handlers#{drawn}#metric"), ConfusionMatrix)
    assert "--dataset_dir DIR` is how" in (bundle / "docs" / "README.md").read_text().replace("\n", " ")


@pytest.mark.parametrize("task", TASKS)
def test_inference_config_builds_without_metadata(task):
    """As MONAI Label parses it: a plain ConfigParser, no ``_meta_``, ``bundle_root`` set to the bundle."""
    bundle = BUNDLES / task
    parser = ConfigParser()
    parser.read_config(str(bundle / "configs" / "inference.json"))
    parser.config.update({"bundle_root": str(bundle), "device": "cpu"})  # type: ignore[union-attr]
    assert parser.get_parsed_content("class_names") == class_names(bundle)
    network = parser.get_parsed_content("network_def")
    size = parser.get_parsed_content("image_size")
    with torch.no_grad():
        assert network.eval()(torch.rand(1, 3, size, size)).shape == (1, len(class_names(bundle)))
    for key in ("preprocessing", "inferer", "postprocessing"):
        assert parser.get_parsed_content(key) is not None


def test_inference_without_metadata_names_the_missing_file(tmp_path):
    bundle = copy_bundle("retina", tmp_path)
    (bundle / "metadata.json").unlink()
    (bundle / "configs" / "metadata.json").unlink()
    parser = ConfigParser()
    parser.read_config(str(bundle / "configs" / "inference.json"))
    parser.config.update({"bundle_root": str(bundle)})  # type: ignore[union-attr]
    with pytest.raises(RuntimeError) as info:  # MONAI wraps what the expression raised
        parser.get_parsed_content("class_names")
    assert isinstance(info.value.__cause__, FileNotFoundError)
    assert str(bundle / "configs" / "metadata.json") in str(info.value.__cause__)


def test_retina_classes_are_grade_names_and_numbers_stay_accepted(tmp_path):
    from monai_danil.data import read_manifest

    names = class_names(BUNDLES / "retina")
    assert names == ["no DR", "mild", "moderate", "severe", "proliferative DR"]
    image = tmp_path / "a.png"
    image.write_bytes(b"")
    (tmp_path / "manifest.csv").write_text(
        "relative_path,label,split\n" + "".join(f"a.png,{label},train\n" for label in ("0", "4", "mild", "Severe"))
    )
    assert [d["label"] for d in read_manifest(tmp_path, "train", names)] == [0, 4, 1, 3]
