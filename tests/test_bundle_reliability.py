"""A killed bundle training resumes to the same result; the same seed gives the same run; too little data stops early.

The retina bundle is trained as a user runs it, ``python -m monai.bundle run ...`` in a subprocess, on 160
real RetinaMNIST training and 40 validation images at 28 px, batch 16 (10 iterations per epoch), 3 epochs,
seed 0, on the CPU. One run goes through uninterrupted; another is killed with SIGKILL in the middle of
epoch 2, after the checkpoint of epoch 1, and resumed with the documented ``resume`` run id. On the CPU,
with one thread, the same operations on the same data in the same order give the same bits, so the
comparison is exact (no tolerance): metrics, ``model.pt`` and every tensor of ``checkpoint.pt``.
"""

from __future__ import annotations

import ast
import csv
import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from bundle_helpers import BUNDLES, copy_bundle, parse_config, run_module, write_manifest

from conftest import REPO_ROOT

TASKS = ("retina", "skin", "pathology")
TRAIN = ["--epochs", "3", "--batch_size", "16", "--seed", "0"]
METRICS_LINE = re.compile(r"Epoch\[(\d+)\] Metrics -- (.*)")
ITERATION_LINE = re.compile(r"Epoch: (\d+)/\d+, Iter: (\d+)/\d+ -- (.*)")


def _subset(root: Path, retina_dir: Path, train: int, val: int, labels: str | None = None) -> Path:
    """A manifest of the first real RetinaMNIST images by absolute path (nothing copied)."""
    with open(retina_dir / "manifest.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    chosen = [r for r in rows if r["split"] == "train"][:train] + [r for r in rows if r["split"] == "val"][:val]
    folder = root / "data"
    folder.mkdir(parents=True)
    write_manifest(
        folder / "manifest.csv",
        [(str(retina_dir / r["relative_path"]), labels or r["label"], r["split"]) for r in chosen],
    )
    return folder


def _command(run_id: str, data: Path, *extra: str) -> list[str]:
    return ["monai.bundle", "run", run_id, "--config_file", "bundles/retina/train.json", "--dataset_dir", str(data),
            *TRAIN, *extra]


def _metrics(log: str) -> dict[int, str]:
    return {int(m.group(1)): m.group(2).strip() for m in METRICS_LINE.finditer(log)}


def _iterations(log: str) -> dict[tuple[int, int], str]:
    return {(int(m.group(1)), int(m.group(2))): m.group(3).strip() for m in ITERATION_LINE.finditer(log)}


def _tensors(state, prefix: str = "") -> dict[str, torch.Tensor]:
    """Every tensor of a (nested) checkpoint, by path."""
    if isinstance(state, torch.Tensor):
        return {prefix: state}
    if isinstance(state, dict):
        return {k: v for key, value in state.items() for k, v in _tensors(value, f"{prefix}/{key}").items()}
    if isinstance(state, (list, tuple)):
        return {k: v for i, value in enumerate(state) for k, v in _tensors(value, f"{prefix}/{i}").items()}
    return {}


def _assert_same(a: Path, b: Path) -> None:
    first, second = torch.load(a, weights_only=True), torch.load(b, weights_only=True)
    ta, tb = _tensors(first), _tensors(second)
    assert ta.keys() == tb.keys() and ta
    different = [k for k in ta if not torch.equal(ta[k], tb[k])]
    assert not different, f"{a.name}: {len(different)} tensors differ, e.g. {different[:5]}"


@pytest.fixture(scope="module")
def runs(tmp_path_factory, retina_dir):
    """The uninterrupted run and the killed-then-resumed run of the same training (seed 0)."""
    root = tmp_path_factory.mktemp("resume")
    data = _subset(root, retina_dir, 160, 40)
    reference_root, interrupted_root = root / "reference", root / "interrupted"
    for folder in (reference_root, interrupted_root):
        copy_bundle("retina", folder)
    env = {"OMP_NUM_THREADS": "1"}  # the same threads in every run: the same floating-point sums
    reference = run_module(_command("training", data), cwd=reference_root, env=env)
    process = subprocess.Popen(
        [sys.executable, "-m", *_command("training", data)], cwd=interrupted_root,
        env=dict(os.environ, PYTHONUNBUFFERED="1", **env), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    killed_log = []
    for line in process.stdout:  # type: ignore[union-attr]
        killed_log.append(line)
        if "Epoch: 2/3, Iter: 4/10 " in line:  # mid-epoch, after the checkpoint of epoch 1
            os.kill(process.pid, signal.SIGKILL)
            break
    process.wait(timeout=120)
    models = interrupted_root / "bundles" / "retina" / "models"
    killed_at = torch.load(models / "checkpoint.pt", weights_only=True)
    resumed = run_module(_command("resume", data), cwd=interrupted_root, env=env)
    return {
        "data": data, "env": env, "killed_returncode": process.returncode, "killed_log": "".join(killed_log),
        "killed_checkpoint": killed_at, "reference": reference.stdout + reference.stderr,
        "resumed": resumed.stdout + resumed.stderr, "reference_models": reference_root / "bundles" / "retina" / "models",
        "models": models, "interrupted_root": interrupted_root,
    }


def test_same_seed_twice_gives_identical_metrics(runs):
    """The killed run, up to its kill, is a second run of the same seed in another process."""
    reference_metrics, killed_metrics = _metrics(runs["reference"]), _metrics(runs["killed_log"])
    assert sorted(reference_metrics) == [1, 2, 3] and list(killed_metrics) == [1]
    assert killed_metrics[1] == reference_metrics[1]
    killed_iterations, reference_iterations = _iterations(runs["killed_log"]), _iterations(runs["reference"])
    assert len(killed_iterations) == 14  # epoch 1 and 4 iterations of epoch 2
    assert all(killed_iterations[k] == reference_iterations[k] for k in killed_iterations)
    # and the run is not constant: the figures move from iteration to iteration
    assert len(set(reference_iterations.values())) == len(reference_iterations)


def test_sigkill_mid_epoch_then_resume_equals_the_uninterrupted_run(runs):
    assert runs["killed_returncode"] == -signal.SIGKILL
    assert runs["killed_checkpoint"]["trainer"]["iteration"] == 10  # the epoch-1 checkpoint, not a later one
    assert "Restored all variables" in runs["resumed"]
    resumed_metrics, reference_metrics = _metrics(runs["resumed"]), _metrics(runs["reference"])
    assert sorted(resumed_metrics) == [2, 3]  # epoch 2 again from its start, then epoch 3
    assert all(resumed_metrics[e] == reference_metrics[e] for e in (2, 3))
    resumed_iterations = _iterations(runs["resumed"])
    assert all(v == _iterations(runs["reference"])[k] for k, v in resumed_iterations.items())
    _assert_same(runs["models"] / "model.pt", runs["reference_models"] / "model.pt")
    # network, optimizer, schedule, counters, memory bank, best score: every tensor and value alike
    _assert_same(runs["models"] / "checkpoint.pt", runs["reference_models"] / "checkpoint.pt")
    final = torch.load(runs["models"] / "checkpoint.pt", weights_only=True)
    reference = torch.load(runs["reference_models"] / "checkpoint.pt", weights_only=True)
    for key in ("trainer", "key_metric", "lr_scheduler"):
        assert final[key] == reference[key], key
    assert final["danil"]["miner"]["bank"]["count"] == reference["danil"]["miner"]["bank"]["count"] == 80
    assert not list(runs["models"].glob(".*.tmp"))


def test_resume_with_more_epochs_replans_the_schedule_and_keeps_the_best_model(runs, tmp_path):
    extended_root = tmp_path / "extended"
    shutil.copytree(runs["interrupted_root"], extended_root, symlinks=True)
    models = extended_root / "bundles" / "retina" / "models"
    before = torch.load(models / "checkpoint.pt", weights_only=True)
    result = run_module(_command("resume", runs["data"], "--epochs", "4"), cwd=extended_root, env=runs["env"])
    log = result.stdout + result.stderr
    # the finished 3-epoch plan (rate 0 at its end) becomes a 4-epoch one: epoch 4 trains at 0.146 x 1e-3
    assert "re-planned from 3 to 4 epochs at epoch 3: learning rate now 0.000146" in log
    after = torch.load(models / "checkpoint.pt", weights_only=True)
    assert after["trainer"]["iteration"] == 40 and after["lr_scheduler"]["last_epoch"] == 4
    # model.pt changes only if epoch 4 beats the best score restored from the checkpoint
    best_before = before["key_metric"]["best_metric"]
    epoch4 = float(re.search(r"val_kappa: (-?[\d.]+)", _metrics(log)[4]).group(1))
    model = torch.load(models / "model.pt", weights_only=True)
    if epoch4 > best_before + 1e-4:
        assert after["key_metric"]["best_metric_epoch"] == 4
        assert all(torch.equal(model[k], after["network"][k]) for k in model)
    else:
        assert after["key_metric"]["best_metric_epoch"] == before["key_metric"]["best_metric_epoch"]
        _assert_same(models / "model.pt", runs["models"] / "model.pt")
        assert f"val_kappa best value: {best_before}" in log


def test_fewer_training_images_than_one_batch_stop_before_training(tmp_path, retina_dir):
    """The issue's case: a one-class manifest whose train rows are fewer than one batch exited 0, untrained."""
    bundle = copy_bundle("retina", tmp_path)
    data = _subset(tmp_path, retina_dir, 10, 5, labels="0")
    result = run_module(
        ["monai.bundle", "run", "training", "--config_file", "bundles/retina/train.json", "--dataset_dir", str(data),
         "--epochs", "1"], cwd=tmp_path, check=False,
    )
    assert result.returncode != 0
    message = result.stderr + result.stdout
    assert "10 training images are fewer than one batch (batch size 64, drop_last=True)" in message
    assert str(data) in message and "--batch_size 10" in message
    assert not (bundle / "models").exists() and "Epoch[" not in message  # nothing trained, nothing written


@pytest.mark.parametrize("task", TASKS)
def test_seed_device_amp_and_local_pretrained_weights(task, tmp_path):
    bundle = BUNDLES / task
    parser = parse_config(bundle, device="cpu", seed=3)
    assert parser.get_parsed_content("amp") is False  # AMP follows the device: never on a CPU
    assert parser["initialize"] == ["$monai.utils.set_determinism(seed=@seed)"]
    assert {"_target_": "monai_danil.handlers.EpochSeedHandler", "seed": "@seed"} in parser["train#handlers"]
    torch.manual_seed(1)
    donor = parse_config(bundle, device="cpu").get_parsed_content("network_def")
    weights = tmp_path / "pretrained.pt"
    torch.save(donor.state_dict(), weights)
    torch.manual_seed(2)
    network = parse_config(bundle, device="cpu", pretrained_path=str(weights)).get_parsed_content("network")
    assert all(torch.equal(v, donor.state_dict()[k]) for k, v in network.state_dict().items())
    torch.manual_seed(2)
    fresh = parse_config(bundle, device="cpu").get_parsed_content("network")
    assert not all(torch.equal(v, donor.state_dict()[k]) for k, v in fresh.state_dict().items())
    with pytest.raises(RuntimeError) as info:  # MONAI wraps what the expression raised
        parse_config(bundle, device="cpu", pretrained_path=str(tmp_path / "missing.pt")).get_parsed_content("network")
    assert str(tmp_path / "missing.pt") in str(info.value.__cause__)


@pytest.mark.parametrize("task", TASKS)
def test_resume_loads_what_the_checkpoint_saves(task):
    parser = parse_config(BUNDLES / task)
    saver = parser["train#checkpoint_saver"]
    assert saver["_target_"] == "monai_danil.handlers.AtomicCheckpointSaver"
    assert saver["save_interval"] == 1 and saver["interval_filename"] == saver["final_filename"] == "checkpoint.pt"
    keys = list(saver["save_dict"])
    assert keys.index("optimizer") < keys.index("lr_scheduler")  # the schedule re-plans after the optimizer loads
    assert {"network", "optimizer", "lr_scheduler", "trainer", "danil", "scaler", "key_metric"} == set(keys)
    assert saver["save_dict"]["key_metric"] == "@validate#checkpoint_saver"
    assert {"_target_": "monai_danil.handlers.SharedHandler", "handler": "@validate#checkpoint_saver"} in parser[
        "validate#handlers"
    ]
    assert parser["validate#checkpoint_saver#key_metric_filename"] == "model.pt"
    assert parser["lr_scheduler#total_epochs"] == "@train#trainer#max_epochs"
    # one definition of what is saved: the resume run id loads the saver's own save_dict
    (loader,) = [step for step in parser["resume"] if "CheckpointLoader" in step]
    assert "load_dict=@train#checkpoint_saver#save_dict" in loader
    assert parser["training"][0] == parser["resume"][0] == "@check_splits"


def test_every_checkpoint_load_is_weights_only():
    """Checkpoints are loaded without unpickling code: ``weights_only=True`` at every load in the package."""
    calls = []
    for path in (REPO_ROOT / "monai_danil").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and ast.unparse(node.func) in ("torch.load", "load"):
                calls.append((path.name, {k.arg: ast.unparse(k.value) for k in node.keywords}))
    assert calls and all(kwargs.get("weights_only") == "True" for _, kwargs in calls), calls
    import inspect

    from monai.handlers import CheckpointLoader

    assert "weights_only=True" in inspect.getsource(CheckpointLoader.__call__)  # the bundles' resume and inference
