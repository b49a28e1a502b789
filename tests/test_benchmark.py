"""The benchmark tooling: statistics on hand-made numbers, method configs, and both commands end to end."""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from monai.bundle import ConfigParser

from conftest import REPO_ROOT
from monai_danil.benchmark import (
    AccuracyBenchmark,
    bootstrap_weights,
    metrics_from_weights,
    paired_bootstrap_ci,
    paired_mean_difference,
    parse_overrides,
    summarize,
)
from monai_danil.benchmark.accuracy import bundle_dir
from monai_danil.metrics import METRIC_NAMES, classification_report
from monai_danil.mining import DistractorMiner

RETINA = REPO_ROOT / "bundles" / "retina"
# the test_metrics toy set: 3 of 6 correct, balanced accuracy 7/18, macro-F1 16/45, AUC 95/108, kappa 2/5
TOY_LABELS = np.array([0, 0, 0, 1, 1, 2])
TOY_PROBS = np.array(
    [[0.7, 0.2, 0.1], [0.6, 0.3, 0.1], [0.3, 0.5, 0.2], [0.2, 0.6, 0.2], [0.5, 0.4, 0.1], [0.1, 0.5, 0.4]]
)
TOY_EXPECTED = {"accuracy": 1 / 2, "balanced_accuracy": 7 / 18, "macro_f1": 16 / 45, "auc": 95 / 108, "kappa": 2 / 5}


# ---------------------------------------------------------------- statistics, hand-made numbers


def test_summarize_is_population_std_over_defined_values():
    assert summarize([0.5, None, 0.7]) == pytest.approx((0.6, 0.1))
    assert summarize([0.3]) == (0.3, 0.0)
    assert summarize([None, float("nan")]) == (None, None)


def test_paired_mean_difference_pairs_by_seed_and_skips_undefined():
    runs = {0: {"accuracy": 0.6, "kappa": None}, 1: {"accuracy": 0.7, "kappa": 0.5}, 2: {"accuracy": 0.9}}
    base = {0: {"accuracy": 0.5, "kappa": 0.1}, 1: {"accuracy": 0.8, "kappa": 0.2}}
    diff = paired_mean_difference(runs, base, keys=["accuracy", "kappa"])
    assert diff["accuracy"] == pytest.approx((0.1 - 0.1) / 2)  # seed 2 has no ce run: not a pair
    assert diff["kappa"] == pytest.approx(0.3)  # seed 0 undefined on one side
    assert paired_mean_difference({3: {"auc": 0.5}}, {4: {"auc": 0.5}}, keys=["auc"]) == {"auc": None}


def test_weighted_metrics_match_hand_computed_toy_set():
    values = metrics_from_weights(TOY_LABELS, TOY_PROBS, np.ones((1, 6)), num_classes=3)
    for name, expected in TOY_EXPECTED.items():
        assert values[name][0] == pytest.approx(expected)
    # counting sample 0 twice is scoring the set with a copy of it
    doubled = metrics_from_weights(TOY_LABELS, TOY_PROBS, np.array([[2, 1, 1, 1, 1, 1]]), num_classes=3)
    reference = classification_report(np.r_[TOY_LABELS, 0], np.r_[TOY_PROBS, TOY_PROBS[:1]], 3)
    for name in METRIC_NAMES:
        assert doubled[name][0] == pytest.approx(reference[name])


def test_weighted_metrics_match_classification_report_on_resamples_with_ties():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 5, 60)
    probs = np.round(rng.dirichlet(np.ones(5), 60), 1)  # many tied scores
    weights = bootstrap_weights(60, 20, seed=1)
    values = metrics_from_weights(labels, probs, weights, num_classes=5)
    for r, counts in enumerate(weights.astype(int)):
        index = np.repeat(np.arange(60), counts)
        reference = classification_report(labels[index], probs[index], 5)
        for name in METRIC_NAMES:
            if reference[name] is None:
                assert np.isnan(values[name][r])
            else:
                assert values[name][r] == pytest.approx(reference[name], abs=1e-12)


def test_bootstrap_weights_are_reproducible_resamples():
    weights = bootstrap_weights(7, 50, seed=3)
    assert weights.shape == (50, 7) and (weights.sum(axis=1) == 7).all()
    assert np.array_equal(weights, bootstrap_weights(7, 50, seed=3))


def test_paired_bootstrap_interval_on_hand_made_predictions():
    labels = np.array([0, 1] * 5)
    right = np.eye(2)[labels] * 0.8 + 0.1  # confident and correct
    wrong = right[:, ::-1]
    baseline = right.copy()
    baseline[:2] = wrong[:2]  # ce misses the first two images
    method = right  # the method gets every image: +0.2 accuracy
    weights = bootstrap_weights(10, 1000, seed=0)
    same = paired_bootstrap_ci(labels, {0: baseline}, {0: baseline}, 2, weights)
    assert same["accuracy"] == [0.0, 0.0] and same["auc"] == [0.0, 0.0]
    ci = paired_bootstrap_ci(labels, {0: method}, {0: baseline}, 2, weights)
    low, high = ci["accuracy"]
    # per resample the gain is (draws of images 0 and 1) / 10: never negative, 0.2 on average
    assert 0.0 <= low < 0.2 < high <= 0.6
    assert paired_mean_difference({0: classification_report(labels, method, 2)},
                                  {0: classification_report(labels, baseline, 2)})["accuracy"] == pytest.approx(0.2)
    # one class only: kappa and AUC are undefined in every resample, so no interval (None, not NaN)
    single = paired_bootstrap_ci(np.zeros(4, int), {0: np.tile([0.9, 0.1], (4, 1))},
                                 {0: np.tile([0.8, 0.2], (4, 1))}, 2, bootstrap_weights(4, 10))
    assert single["kappa"] is None and single["auc"] is None and single["accuracy"] == [0.0, 0.0]


# ---------------------------------------------------------------- config of each method


def _subset(tmp_path: Path, retina_dir: Path, train: int, val: int) -> Path:
    """A manifest of some real RetinaMNIST images by absolute path (no image is copied)."""
    with open(retina_dir / "manifest.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    chosen = [r for r in rows if r["split"] == "train"][:train] + [r for r in rows if r["split"] == "val"][:val]
    folder = tmp_path / "retina_subset"
    folder.mkdir()
    with open(folder / "manifest.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["relative_path", "label", "split"])
        for r in chosen:
            writer.writerow([str(retina_dir / r["relative_path"]), r["label"], r["split"]])
    return folder


def _uses_mining(config, parser: ConfigParser) -> bool:
    """Whether ``config`` refers to the mining handler, or to a top-level entry that does."""
    users = {k for k, v in parser.get().items() if k not in ("resume", "train", "validate") and "@danil" in json.dumps(v)}
    return bool(set(re.findall(r"@(\w+)", json.dumps(config))) & (users | {"danil"}))


def test_methods_are_built_from_the_bundle_config(tmp_path, retina_dir):
    data = _subset(tmp_path, retina_dir, 8, 4)
    bench = AccuracyBenchmark("retina", data, ["ce", "danil", "random", "focal"], [0], "cpu", tmp_path / "work",
                              overrides={"danil#lambda_max": 1.0}, progress=False)
    assert bench.method_edits["danil"] == {}
    # retina mines its two most confusing grades: the random control draws one random class, and builds
    assert bench.method_edits["random"] == {"miner#distractor_class": "random", "miner#distractor_classes": 1}
    single = AccuracyBenchmark("retina", data, ["random"], [0], "cpu", tmp_path / "work2",
                               overrides={"miner#distractor_classes": 1}, progress=False)
    assert single.method_edits["random"] == {"miner#distractor_class": "random"}
    parser = ConfigParser()
    parser.read_config(str(RETINA / "configs" / "train.json"))
    assert parser["miner#distractor_classes"] == 2
    parser.update(bench.method_edits["random"])
    kwargs = {k: v for k, v in parser["miner"].items() if k not in ("_target_", "bank_size")}
    assert DistractorMiner(**kwargs).distractor_class == "random"
    with pytest.raises(ValueError, match="distractor_classes"):
        DistractorMiner(**{**kwargs, "distractor_classes": 2})
    for method in ("ce", "focal"):
        parser = ConfigParser()
        parser.read_config(str(RETINA / "configs" / "train.json"))
        parser.update(bench.method_edits[method])
        assert not _uses_mining(parser.get("train"), parser) and not _uses_mining(parser.get("validate"), parser)
        assert parser["train#trainer#loss_function"] == "@loss"
    ce = bench.run_overrides("ce", 2)
    assert ce["danil#lambda_max"] == 1.0 and ce["seed"] == 2 and ce["image_size"] == 28
    assert Path(ce["bundle_root"]).parent.parent == bench.root and str(tmp_path / "work") in ce["bundle_root"]
    # focal: MONAI's FocalLoss on (B, C) logits and (B,) labels, as the trainer calls it
    parser = ConfigParser({"loss": {}, **{k: v for k, v in bench.method_edits["focal"].items() if "#" not in k}})
    loss_fn = parser.get_parsed_content("loss")
    logits = torch.randn(4, 5, requires_grad=True)
    loss = loss_fn(logits, torch.tensor([0, 1, 4, 2]))
    loss.backward()
    assert loss.ndim == 0 and torch.isfinite(loss) and logits.grad is not None
    assert parser.get_parsed_content("focal_loss").use_softmax and parser["focal_loss#gamma"] == 2.0


def test_overrides_that_cannot_apply_are_refused(tmp_path, retina_dir):
    data = _subset(tmp_path, retina_dir, 8, 4)
    assert parse_overrides(["a#b=1.5", "m=topk", "w=[1, 2]", "n=null"]) == {"a#b": 1.5, "m": "topk", "w": [1, 2],
                                                                          "n": None}
    with pytest.raises(ValueError, match="key=value"):
        parse_overrides(["epochs"])
    with pytest.raises(ValueError, match="lamda"):
        AccuracyBenchmark("retina", data, ["danil"], [0], "cpu", tmp_path / "w", {"lamda#max": 1}, progress=False)
    with pytest.raises(ValueError, match="seed"):
        AccuracyBenchmark("retina", data, ["danil"], [0], "cpu", tmp_path / "w", {"seed": 3}, progress=False)
    with pytest.raises(ValueError, match="never writes into a bundle"):
        AccuracyBenchmark("retina", data, ["ce"], [0], "cpu", bundle_dir("retina") / "runs", progress=False)


# ---------------------------------------------------------------- the commands, end to end


def _cli(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1")
    result = subprocess.run(
        [sys.executable, "-m", "monai_danil.benchmark", "--threads", "1", *args],
        cwd=cwd, env=env, capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, f"{args} failed:\n{result.stdout[-2000:]}\n{result.stderr[-5000:]}"
    return result


def _strict_json(path: Path) -> dict:
    def _reject(constant: str):
        raise AssertionError(f"{path} holds {constant}; metrics must be null when undefined")

    return json.loads(path.read_text(), parse_constant=_reject)


def _files(root: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(root)): (p.stat().st_mtime_ns, p.stat().st_size) for p in root.rglob("*") if p.is_file()}


def _check_metrics(values: dict) -> None:
    for name in METRIC_NAMES:
        low = -1.0 if name == "kappa" else 0.0  # Cohen's kappa is negative for agreement below chance
        assert values[name] is None or low <= values[name] <= 1.0, (name, values[name])


def test_accuracy_command_on_real_retina_with_a_test_manifest(tmp_path, retina_dir):
    bundle = tmp_path / "bundles" / "retina"
    shutil.copytree(RETINA / "configs", bundle / "configs")
    with open(retina_dir / "manifest.csv", newline="") as handle:
        val_rows = [r for r in csv.DictReader(handle) if r["split"] == "val"][:40]
    test_manifest = tmp_path / "lists" / "test.csv"
    test_manifest.parent.mkdir()
    with open(test_manifest, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["relative_path", "label"])
        writer.writerows([r["relative_path"], r["label"]] for r in val_rows)
    before = _files(tmp_path)
    out = tmp_path / "results" / "retina.json"
    result = _cli(
        ["accuracy", "--task", "retina", "--data-dir", str(retina_dir), "--methods", "ce,danil", "--seeds", "0",
         "--profile", "cpu", "--set", "epochs=1", "--set", "image_size=16", "--bundle-dir", str(bundle),
         "--test-manifest", str(test_manifest), "--test-dir", str(retina_dir),
         "--work-dir", str(tmp_path / "work"), "--out", str(out)],
        cwd=tmp_path,
    )
    # stdout is the Markdown table alone; logs and the progress bar are on stderr
    assert result.stdout.startswith("### retina, profile cpu: test split (40 images)")
    assert "| ce | " in result.stdout and "| danil | " in result.stdout and "Epoch" not in result.stdout
    assert "retina/cpu" in result.stderr
    report = _strict_json(out)
    key_metric = next(iter(json.loads((RETINA / "configs" / "train.json").read_text())["validate"]["key_metric"]))
    assert report["task"] == "retina" and report["profile"] == "cpu" and report["split"] == "test"
    assert report["selection_metric"] == key_metric and report["n_images"] == 40 and report["complete"]
    assert {"torch", "monai", "monai-danil"} <= set(report["versions"]) and "git_sha" in report
    assert report["started"] <= report["date"]  # the commit is read when the benchmark starts
    assert report["config"]["overrides"] == {"epochs": 1, "image_size": 16}
    assert report["config"]["test_dir"] == str(retina_dir.resolve())
    assert set(report["methods"]) == {"ce", "danil"}
    for method, entry in report["methods"].items():
        assert set(entry) >= {"mean", "std", "runs", "vs_ce"}
        assert set(entry["mean"]) >= set(METRIC_NAMES) and set(entry["std"]) >= set(METRIC_NAMES)
        _check_metrics(entry["mean"])
        assert all(entry["std"][k] in (0.0, None) for k in METRIC_NAMES)  # one seed
        (run,) = entry["runs"]
        _check_metrics(run)
        assert run["seed"] == 0 and run["seconds"] > 0 and run["best_epoch"] == 1
        assert Path(run["run_dir"]).is_relative_to(tmp_path / "work")
        with open(Path(run["run_dir"]) / "predictions.csv") as handle:
            assert len(list(csv.DictReader(handle))) == 40
    assert report["methods"]["ce"]["vs_ce"] is None
    vs = report["methods"]["danil"]["vs_ce"]
    assert set(vs["mean_diff"]) == set(METRIC_NAMES) and set(vs["ci95"]) == set(METRIC_NAMES)
    for key, interval in vs["ci95"].items():
        assert interval is None or (len(interval) == 2 and -1.0 <= interval[0] <= interval[1] <= 1.0)
    # written: the JSON and the work folder, nothing else; the bundle copy untouched
    after = _files(tmp_path)
    new = {p for p in after if p not in before}
    assert all(p.startswith("work/") for p in new - {"results/retina.json"})
    assert {p: after[p] for p in before} == before


def test_accuracy_command_scores_val_without_a_test_manifest(tmp_path, retina_dir):
    data = _subset(tmp_path, retina_dir, 64, 32)
    out = tmp_path / "val.json"
    result = _cli(
        ["accuracy", "--task", "retina", "--data-dir", str(data), "--methods", "ce,random", "--seeds", "0,1",
         "--set", "epochs=1", "--set", "image_size=16", "--set", "batch_size=32",
         "--work-dir", str(tmp_path / "work"), "--out", str(out)],
        cwd=tmp_path,
    )
    report = _strict_json(out)
    assert report["split"] == "val" and report["n_images"] == 32
    assert any("scored on val" in note for note in report["notes"])
    assert "val split (32 images)" in result.stdout
    assert report["config"]["method_overrides"]["random"] == {"miner#distractor_class": "random",
                                                              "miner#distractor_classes": 1}
    random = report["methods"]["random"]
    assert [r["seed"] for r in random["runs"]] == [0, 1] and random["vs_ce"]["seeds"] == [0, 1]
    for key in METRIC_NAMES:
        values = [r[key] for r in random["runs"] if r[key] is not None]
        if values:
            assert random["mean"][key] == pytest.approx(np.mean(values))
            assert random["std"][key] == pytest.approx(np.std(values))


def test_speed_command_on_cpu(tmp_path, retina_dir):
    out = tmp_path / "speed.json"
    result = _cli(
        ["speed", "--net", "resnet18", "--image-size", "16", "--batch-size", "4", "--iterations", "2",
         "--repeats", "2", "--warmup", "1", "--bank-size", "32", "--amp", "bf16",
         "--data-dir", str(retina_dir), "--max-images", "16", "--out", str(out)],
        cwd=tmp_path,
    )
    report = _strict_json(out)
    assert report["device"] == "cpu" and report["amp"] == "none"  # MONAI autocasts on CUDA only
    assert "needs CUDA" in result.stderr
    assert report["ce_img_per_s"] > 0 and report["danil_img_per_s"] > 0
    assert report["ratio"] == pytest.approx(report["danil_img_per_s"] / report["ce_img_per_s"])
    assert report["paired_ratio_median"] > 0
    assert report["peak_gib"]["ce"] > 0 and report["peak_gib"]["danil"] > 0
    assert len(report["repeats"]["ce_img_per_s"]) == 2 and report["config"]["bank_filled"] == 32
    assert report["data"]["images"] == 16 and report["data"]["limit"] in ("data loading", "model")
    assert result.stdout.startswith("| device | net |") and "| cpu | resnet18 | 16 | 4 | none | feature |" in result.stdout


@pytest.mark.parametrize("reading, options", [("response_map", []), ("feature", ["--miner-option", "distractor_sample=soft",
                                                                             "--miner-option", "k=3"])])
def test_speed_command_times_the_other_readings_and_miner_options(tmp_path, reading, options):
    out = tmp_path / "speed.json"
    result = _cli(
        ["speed", "--net", "resnet18", "--image-size", "16", "--batch-size", "4", "--iterations", "2", "--repeats", "1",
         "--warmup", "1", "--bank-size", "16", "--reading", reading, *options, "--out", str(out)],
        cwd=tmp_path,
    )
    report = _strict_json(out)
    assert report["config"]["reading"] == reading and report["danil_img_per_s"] > 0
    if reading == "response_map":
        assert report["config"]["bank_size"] == 0 and report["config"]["bank_filled"] == 0
    else:
        assert report["config"]["miner_options"] == {"distractor_sample": "soft", "k": 3}
        assert report["config"]["bank_filled"] == 16 and "feature (distractor_sample=soft, k=3)" in result.stdout


def test_parallel_jobs_give_the_same_runs_as_one_after_the_other(tmp_path, retina_dir):
    """``--jobs``: each run in its own spawned process, same seeds, same results, reported in run order."""
    data = _subset(tmp_path, retina_dir, 64, 32)
    overrides = {"epochs": 1, "image_size": 16, "batch_size": 32}
    reports = {}
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as each job process (threads=1): the same float summation order
    try:
        for jobs in (1, 2):
            bench = AccuracyBenchmark("retina", data, ["ce", "danil"], [0], "cpu", tmp_path / f"work{jobs}",
                                      overrides, progress=False)
            reports[jobs] = bench.run(out=tmp_path / f"jobs{jobs}.json", jobs=jobs, threads=1)
    finally:
        torch.set_num_threads(threads)
    for method in ("ce", "danil"):
        (serial,), (parallel,) = reports[1]["methods"][method]["runs"], reports[2]["methods"][method]["runs"]
        assert Path(parallel["run_dir"]).is_relative_to(tmp_path / "work2")
        for key in (*METRIC_NAMES, "best_epoch", "val_curve"):
            assert parallel[key] == pytest.approx(serial[key]), (method, key)
    assert list(reports[2]["methods"]) == ["ce", "danil"] and reports[2]["complete"]
    assert reports[2]["methods"]["danil"]["vs_ce"]["mean_diff"] == pytest.approx(
        reports[1]["methods"]["danil"]["vs_ce"]["mean_diff"])
    with pytest.raises(ValueError, match="jobs"):
        AccuracyBenchmark("retina", data, ["ce"], [0], "cpu", tmp_path / "w", overrides, progress=False).run(jobs=0)
    # a run that fails in its job process fails the benchmark with the run's own error (MONAI's, here)
    broken = {**overrides, "miner#neuron_weighting": "bogus"}
    bench = AccuracyBenchmark("retina", data, ["danil"], [0, 1, 2], "cpu", tmp_path / "w", broken, progress=False)
    with pytest.raises(RuntimeError, match="Failed to instantiate component 'monai_danil.mining.DistractorMiner'"):
        bench.run(jobs=2, threads=1)


# ---------------------------------------------------------------- cross-validation


def test_near_duplicates_and_lesions_are_grouped(tmp_path, retina_dir, skin_dir):
    from PIL import Image

    from monai_danil.benchmark.folds import _join, near_duplicate_groups

    with open(retina_dir / "manifest.csv", newline="") as handle:
        paths = [str(retina_dir / r["relative_path"]) for r in list(csv.DictReader(handle))[:6]]
    # a copy made brighter and re-encoded is still the same picture; a mirrored one is another
    pixels = np.asarray(Image.open(paths[0]).convert("RGB"), dtype=np.int32)
    Image.fromarray(np.clip(pixels + 12, 0, 255).astype(np.uint8)).save(tmp_path / "brighter.png")
    Image.fromarray(pixels[:, ::-1].astype(np.uint8)).save(tmp_path / "mirrored.png")
    groups = near_duplicate_groups([*paths, str(tmp_path / "brighter.png"), str(tmp_path / "mirrored.png")])
    assert groups[0] == groups[6] and len(set(groups[:6])) == 6 and groups[7] not in groups[:6]
    assert list(_join(np.array([0, 0, 1, 2, 3]), np.array([5, 6, 6, 7, 8]))) == [0, 0, 0, 1, 2]
    with open(skin_dir / "manifest.csv", newline="") as handle:
        lesions = [r["lesion_id"] for r in list(csv.DictReader(handle))[:200]]
    from monai_danil.benchmark.folds import read_groups

    by_column = read_groups(skin_dir / "manifest.csv", "lesion_id", list(range(200)))
    assert all((by_column[i] == by_column[j]) == (lesions[i] == lesions[j]) for i in range(200) for j in range(i))
    assert read_groups(retina_dir / "manifest.csv", "lesion_id", [0, 1]) is None


def test_folds_are_stratified_grouped_and_never_selected_on(retina_dir):
    from monai_danil.benchmark.folds import build_cross_validation
    from monai_danil.data import read_manifest

    manifest = retina_dir / "manifest.csv"
    rows = read_manifest(manifest)
    with open(manifest, newline="") as handle:
        splits = [r["split"] for r in csv.DictReader(handle)]
    cv = build_cross_validation(manifest, rows, splits, k=5, seed=0)
    again = build_cross_validation(manifest, rows, splits, k=5, seed=0)
    assert np.array_equal(cv.fold, again.fold) and cv.record()["inner_val_ids"] == again.record()["inner_val_ids"]
    assert not np.array_equal(cv.fold, build_cross_validation(manifest, rows, splits, k=5, seed=1).fold)
    counts = np.bincount(cv.labels)
    assert sorted(np.bincount(cv.fold)) == [240] * 5 and cv.record()["grouped_images"] > 0
    for fold in range(5):
        split = cv.split_of(fold)
        scored, val, train = (set(np.flatnonzero(split == s)) for s in ("test", "val", "train"))
        assert scored | val | train == set(range(len(rows))) and not scored & (val | train) and not val & train
        # no group on two sides: a near-copy of a scored image is never trained or selected on
        assert not set(cv.groups[list(scored)]) & set(cv.groups[list(val | train)])
        assert not set(cv.groups[list(val)]) & set(cv.groups[list(train)])
        # stratified: each fold holds every grade, in about the dataset's proportions
        in_fold = np.bincount(cv.labels[list(scored)], minlength=5)
        assert np.all(np.abs(in_fold - counts / 5) <= 0.15 * counts / 5 + 2), in_fold
        assert 0.08 * len(train | val) <= len(val) <= 0.12 * len(train | val)  # val is 10% of train+val here


def test_cross_validation_command_pools_folds_and_compares_with_random(tmp_path, retina_dir):
    data = _subset(tmp_path, retina_dir, 48, 12)
    out = tmp_path / "cv.json"
    result = _cli(
        ["accuracy", "--task", "retina", "--data-dir", str(data), "--cv", "2", "--cv-seed", "3",
         "--methods", "ce,danil,random", "--seeds", "0", "--set", "epochs=1", "--set", "image_size=16",
         "--set", "batch_size=8", "--work-dir", str(tmp_path / "work"), "--out", str(out)],
        cwd=tmp_path,
    )
    report = _strict_json(out)
    assert report["split"] == "cv" and report["n_images"] == 60 and report["complete"]
    assert "2-fold cross-validation of train+val (cv-seed 3, 60 images pooled)" in result.stdout
    assert "| vs random: mean paired diff." in result.stdout
    cv = report["cross_validation"]
    assert cv["k"] == 2 and cv["cv_seed"] == 3 and sum(cv["fold_sizes"]) == 60 and sorted(cv["ids"]) == list(range(60))
    danil = report["methods"]["danil"]
    assert danil["vs_ce"] is not None and danil["vs_random"] is not None
    assert report["methods"]["random"]["vs_random"] is None and report["methods"]["ce"]["vs_ce"] is None
    (run,) = danil["runs"]
    assert [f["fold"] for f in run["folds"]] == [0, 1] and sum(f["n_images"] for f in run["folds"]) == 60
    pooled_labels, pooled_probs = [], []
    for fold in run["folds"]:
        # the fold's predictions are exactly its scored images, none of which its training or selection saw
        with open(Path(fold["run_dir"]) / "predictions.csv", newline="") as handle:
            rows = list(csv.DictReader(handle))
        predicted = {int(r["id"]) for r in rows}
        pooled_labels += [int(r["label"]) for r in rows]
        pooled_probs += [[float(r[f"prob_{k}"]) for k in range(5)] for r in rows]
        assigned = {i for i, f in zip(cv["ids"], cv["fold"]) if f == fold["fold"]}
        assert predicted == assigned
        with open(Path(report["config"]["work_dir"]) / "folds" / f"fold{fold['fold']}" / "manifest.csv") as handle:
            manifest = list(csv.DictReader(handle))
        seen = {r["relative_path"] for r in manifest if r["split"] in ("train", "val")}
        scored = {r["relative_path"] for r in manifest if r["split"] == "test"}
        assert len(scored) == len(assigned) and not seen & scored
        assert {i for i, r in enumerate(manifest) if r["split"] == "val"} == set(cv["inner_val_ids"][fold["fold"]])
    _check_compare(tmp_path, out, report)
    # the run's metrics are those of the pooled folds, scored as one set (the CSV rounds probabilities to 6
    # digits, which can tie scores of a barely trained network and move AUC in the 4th digit)
    expected = classification_report(np.array(pooled_labels), np.array(pooled_probs), 5)
    for key in METRIC_NAMES:
        assert run[key] == pytest.approx(expected[key], abs=2e-3), key


def test_variants_are_named_methods_on_a_base_method(tmp_path, retina_dir):
    from monai_danil.benchmark.__main__ import _variant

    data = _subset(tmp_path, retina_dir, 8, 4)
    assert _variant("semi=danil miner#distractor_sample=semi_hard miner#k=2") == (
        "semi", "danil", ["miner#distractor_sample=semi_hard", "miner#k=2"])
    variants = {"semi": ("danil", {"miner#distractor_sample": "semi_hard"}), "ce_ls": ("ce", {"loss#label_smoothing": 0.1})}
    bench = AccuracyBenchmark("retina", data, ["ce", "semi", "ce_ls"], [0], "cpu", tmp_path / "w", variants=variants,
                              progress=False)
    assert bench.method_edits["semi"] == {"miner#distractor_sample": "semi_hard"}
    assert bench.method_edits["ce_ls"] == {**bench.method_edits["ce"], "loss#label_smoothing": 0.1}
    for bad in ({"ce": ("danil", {})}, {"x": ("nope", {})}, {"x": ("danil", {"minr#k": 2})}):
        with pytest.raises(ValueError):
            AccuracyBenchmark("retina", data, ["ce", *bad], [0], "cpu", tmp_path / "w", variants=bad, progress=False)
    with pytest.raises(ValueError, match="methods"):
        AccuracyBenchmark("retina", data, ["ce", "semi"], [0], "cpu", tmp_path / "w", progress=False)


def _check_compare(tmp_path: Path, out: Path, report: dict) -> None:
    """``compare``: the same file twice pairs up as itself; a method configured otherwise is kept apart."""
    other = json.loads(out.read_text())
    other["config"]["method_overrides"]["danil"] = {"danil#lambda_max": 0.5}
    copy = tmp_path / "copy.json"
    copy.write_text(json.dumps(other))
    merged_out = tmp_path / "merged.json"
    result = _cli(["compare", str(out), str(copy), "--out", str(merged_out)], cwd=tmp_path)
    merged = _strict_json(merged_out)
    assert set(merged["methods"]) == {"ce", "danil", "random", "danil@copy"}
    for key in METRIC_NAMES:
        assert merged["methods"]["danil"]["vs_random"]["mean_diff"][key] == pytest.approx(
            report["methods"]["danil"]["vs_random"]["mean_diff"][key], abs=1e-4)
    assert merged["methods"]["danil@copy"]["vs_ce"]["mean_diff"] == pytest.approx(
        merged["methods"]["danil"]["vs_ce"]["mean_diff"])
    assert "| danil@copy |" in result.stdout and [s["file"] for s in merged["config"]["sources"]] == ["cv", "copy"]
    # the same edits of another train.json (a bundle version that changed a default) do not pool either,
    # while a file of a commit that did not record its train.json is compared on its edits alone
    assert re.fullmatch(r"[0-9a-f]{64}", report["config"]["train_config_sha256"])
    for digest, expected in (("0" * 64, {"ce", "danil", "random", "ce@bumped", "danil@bumped", "random@bumped"}),
                             (None, {"ce", "danil", "random"})):
        other = json.loads(out.read_text())
        other["config"]["train_config_sha256"] = digest
        (tmp_path / "bumped.json").write_text(json.dumps(other))
        _cli(["compare", str(out), str(tmp_path / "bumped.json"), "--out", str(merged_out)], cwd=tmp_path)
        assert set(_strict_json(merged_out)["methods"]) == expected
    # another control: random against danil is danil against random, negated
    result = _cli(["compare", str(out), "--control", "danil", "--out", str(merged_out)], cwd=tmp_path)
    merged = _strict_json(merged_out)
    assert "| vs danil: mean paired diff." in result.stdout and "| vs random:" not in result.stdout
    assert merged["methods"]["danil"]["vs_danil"] is None and merged["methods"]["ce"]["vs_danil"] is None
    assert any("vs_ce.mean_diff and vs_danil.mean_diff are" in note for note in merged["notes"])
    assert not any("vs_random" in note for note in merged["notes"])
    for key in METRIC_NAMES:
        assert merged["methods"]["random"]["vs_danil"]["mean_diff"][key] == pytest.approx(
            -report["methods"]["danil"]["vs_random"]["mean_diff"][key], abs=1e-4)
    failed = subprocess.run([sys.executable, "-m", "monai_danil.benchmark", "compare", str(out), "--control", "pr",
                             "--out", str(tmp_path / "no.json")], cwd=tmp_path, capture_output=True, text=True)
    assert failed.returncode == 2 and "no method 'pr'" in failed.stderr
    # a file of an earlier commit (the scored images in every run's "predictions", no "scored") pairs as itself
    older = json.loads(out.read_text())
    scored = older.pop("scored")
    for entry in older["methods"].values():
        for record in entry["runs"]:
            record["predictions"] = {**scored, "probs": record.pop("probs")}
    old_file = tmp_path / "older.json"
    old_file.write_text(json.dumps(older))
    _cli(["compare", str(out), str(old_file), "--out", str(merged_out)], cwd=tmp_path)
    assert set(_strict_json(merged_out)["methods"]) == {"ce", "danil", "random"}
    older["methods"]["danil"]["runs"][0]["predictions"]["ids"] = scored["ids"][::-1]
    old_file.write_text(json.dumps(older))
    failed = subprocess.run([sys.executable, "-m", "monai_danil.benchmark", "compare", str(old_file), "--out",
                             str(tmp_path / "no.json")], cwd=tmp_path, capture_output=True, text=True)
    assert failed.returncode == 2 and "older: danil seed 0 scored other images" in failed.stderr
    other["cross_validation"]["fold"] = other["cross_validation"]["fold"][::-1]
    copy.write_text(json.dumps(other))
    failed = subprocess.run([sys.executable, "-m", "monai_danil.benchmark", "compare", str(out), str(copy), "--out",
                             str(tmp_path / "no.json")], cwd=tmp_path, capture_output=True, text=True)
    assert failed.returncode == 2 and "folds differ" in failed.stderr
