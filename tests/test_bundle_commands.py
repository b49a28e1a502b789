"""Every "MONAI Bundle Commands" line of the three bundle READMEs, run as written, on tiny real datasets.

For each bundle a copy of the repository's ``bundles/<task>`` is made under ``tmp_path`` (``repo/``)
beside two folders of real images from ``../shared/data``: ``DIR`` (64 ``train``, 16 ``val`` and 16
more ``val`` images relabelled ``test``, with their manifest) and ``IMAGES`` (a few images in nested
folders, with other extensions, a hidden file and a text file, no manifest). Each README command
runs as a subprocess from ``repo/`` with ``DIR`` and ``IMAGES`` replaced by those folders,
``python`` by this interpreter and ``torchrun`` by ``python -m torch.distributed.run`` (its entry
point); training commands get ``--epochs`` and ``--batch_size`` added, nothing else is changed
except where a test says so. What each command wrote is then checked against an independent
computation: scikit-learn for the metrics, the plain MONAI network for the probabilities and the
TorchScript export.

The three READMEs list the same commands but for the bundle's name (checked below). Every command
runs for retina; for skin and pathology the commands whose configs differ between bundles run
(training, evaluation, inference on a folder; export from the root, since neither ``network_def`` is
retina's: skin's has another stem, pathology's no max-pooling, checked below). The others are the same text
on overlays that are the same file (``multi_gpu_evaluate.json`` in all three, ``multi_gpu_train.json``
in retina and pathology; skin's differs only in its sampler, built by the last test under a real
gloo group). The inference command on a labelled manifest (``--dataset_dir DIR``) is run as
written, on the full real ``val`` split, by ``test_bundle_<task>.py`` of each bundle. Skin's
commands get ``--image_size 32`` (its 112 px default is slow on a CPU), as in ``test_bundle_skin.py``.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from bundle_helpers import BUNDLES, class_names, copy_bundle, parse_config, plain_network
from PIL import Image
from sklearn.metrics import (
    accuracy_score,
    balanced_accuracy_score,
    cohen_kappa_score,
    confusion_matrix,
    f1_score,
    precision_recall_fscore_support,
    roc_auc_score,
)

pytestmark = pytest.mark.data

TASKS = ("retina", "skin", "pathology")
SECTION = "## MONAI Bundle Commands"
KINDS = (
    "train", "multi_gpu_train", "resume", "evaluate", "multi_gpu_evaluate", "infer_images", "infer_manifest",
    "export_root", "export_bundle",
)
TRAIN, VAL, TEST = 64, 16, 16
TRAINING = ("--epochs", "1", "--batch_size", "16")


def readme_commands(task: str) -> dict[str, list[str]]:
    """The section's commands by what they do, each with the ``cd`` lines of its code block before it."""
    text = (BUNDLES / task / "docs" / "README.md").read_text()
    section = text[text.index(SECTION):]
    section = section[: section.index("\n## ", 1)] if "\n## " in section[1:] else section
    commands: dict[str, list[str]] = {}
    for block in re.findall(r"```\n(.*?)```", section, flags=re.S):
        lines = [line for line in block.splitlines() if line.strip()]
        cd = [line for line in lines if line.startswith("cd ")]
        for line in lines:
            if line.startswith("cd "):
                continue
            if "ckpt_export" in line:
                kind = "export_bundle" if cd else "export_root"
            elif "multi_gpu_train.json" in line:
                kind = "multi_gpu_train"
            elif "multi_gpu_evaluate.json" in line:
                kind = "multi_gpu_evaluate"
            elif "evaluate.json" in line:
                kind = "evaluate"
            elif " run resume " in line:
                kind = "resume"
            elif "inference.json" in line:
                kind = "infer_images" if "IMAGES" in line else "infer_manifest"
            elif "train.json" in line:
                kind = "train"
            else:
                raise AssertionError(f"{task} README: a command of no known kind: {line}")
            assert kind not in commands, f"{task} README: two {kind} commands"
            commands[kind] = [*cd, line]
    return commands


@dataclass
class Workspace:
    task: str
    repo: Path
    bundle: Path
    data: Path
    images: Path
    commands: dict[str, list[str]]
    report: dict | None = None  # the single-process evaluation's metrics.json, once it ran

    @property
    def size(self) -> tuple[str, ...]:
        return ("--image_size", "32") if self.task == "skin" else ()

    def run(self, kind: str, *extra: str, cwd: Path | None = None, env: dict | None = None) -> str:
        """Run a README block with the placeholders replaced; returns its output."""
        cwd = cwd or self.repo
        output = ""
        for line in self.commands[kind]:
            argv = shlex.split(line)
            if argv[0] == "cd":
                cwd = cwd / argv[1]
                continue
            head = [sys.executable] if argv[0] == "python" else [sys.executable, "-m", "torch.distributed.run"]
            args = [{"DIR": str(self.data), "IMAGES": str(self.images)}.get(a, a) for a in argv[1:]]
            if "ckpt_export" not in args:
                args += self.size
            result = subprocess.run(
                [*head, *args, *extra], cwd=cwd, capture_output=True, text=True, timeout=900,
                env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
            )
            output += result.stdout + result.stderr
            assert result.returncode == 0, f"{line} {' '.join(extra)}\n{result.stdout[-3000:]}\n{result.stderr[-5000:]}"
        return output

    def copy(self, name: str) -> Workspace:
        """A second repository with this bundle as trained so far (for commands that change it)."""
        repo = self.repo.parent / name
        shutil.copytree(self.repo, repo, symlinks=True)
        return Workspace(self.task, repo, repo / "bundles" / self.task, self.data, self.images, self.commands, self.report)


def _tiny_dataset(source: Path, root: Path) -> Path:
    with open(source / "manifest.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    train = [r for r in rows if r["split"] == "train"][:TRAIN]
    val = [r for r in rows if r["split"] == "val"]
    kept = train + val[:VAL] + [dict(r, split="test") for r in val[VAL: VAL + TEST]]
    for row in kept:
        target = root / row["relative_path"]
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(source / row["relative_path"], target)
    with open(root / "manifest.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["relative_path", "label", "split"], extrasaction="ignore")
        writer.writeheader()
        writer.writerows(kept)
    return root


def _image_folder(task: str, data_root: Path, root: Path) -> list[str]:
    """A folder of real images without a manifest; returns their paths relative to it, sorted."""
    with open(data_root / task / "manifest.csv", newline="") as handle:
        sources = [data_root / task / r["relative_path"] for r in csv.DictReader(handle) if r["split"] == "val"][-4:]
    if task == "pathology":  # NCT-CRC-HE tiles are TIFF, 224 px
        sources += sorted((data_root / task / "nct_crc_he_samples").glob("*.tif"))[:2]
    names = []
    for index, source in enumerate(sources):
        folder = ("a", "b/c")[index % 2]
        suffix = source.suffix.upper() if index == 0 else source.suffix  # extensions match in any case
        relative = f"{folder}/{index:02d}_{source.stem}{suffix}"
        (root / relative).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(source, root / relative)
        names.append(relative)
    (root / "a" / "notes.txt").write_text("not an image\n")
    (root / ".hidden").mkdir()
    shutil.copy(sources[0], root / ".hidden" / sources[0].name)
    return sorted(names)


@pytest.fixture(scope="module", params=TASKS)
def workspace(request, tmp_path_factory, data_root) -> Workspace:
    """The README's training command, run once per bundle on its tiny dataset."""
    task = request.param
    root = tmp_path_factory.mktemp(task)
    bundle = copy_bundle(task, root / "repo")
    data = _tiny_dataset(data_root / task, root / "DIR")
    images = root / "IMAGES"
    _image_folder(task, data_root, images)
    space = Workspace(task, root / "repo", bundle, data, images, readme_commands(task))
    space.run("train", *TRAINING)
    assert (bundle / "models" / "model.pt").is_file()
    return space


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _csv(path: Path) -> tuple[list[str], list[list[str]]]:
    with open(path, newline="") as handle:
        header, *rows = list(csv.reader(handle))
    return header, rows


def _network_probabilities(space: Workspace, config: str, key: str, items: list[dict]) -> torch.Tensor:
    """Softmax of the plain MONAI network with ``model.pt`` on ``items`` through the config's preprocessing."""
    size = {"image_size": 32} if space.size else {}
    parser = parse_config(space.bundle, config, dataset_dir=str(space.data), **size)
    preprocessing = parser.get_parsed_content(key)
    net = plain_network(space.bundle, space.bundle / "models" / "model.pt", len(class_names(space.bundle)))
    images = torch.stack([torch.as_tensor(preprocessing({"label": 0, **item})["image"]) for item in items])
    with torch.no_grad():
        return torch.softmax(net(images), dim=1)


def test_every_readme_names_the_model_zoo_commands_and_the_same_ones():
    retina = readme_commands("retina")
    assert set(retina) == set(KINDS)
    for task in TASKS:
        assert readme_commands(task) == {
            kind: [line.replace("bundles/retina", f"bundles/{task}") for line in lines] for kind, lines in retina.items()
        }, task
    top = [line.strip() for line in (BUNDLES.parent / "README.md").read_text().splitlines()
           if line.startswith(("    python -m monai.bundle run --config_file \"['bundles/retina/configs/train.json',",
                               "    python -m monai.bundle run --config_file bundles/retina/configs/inference.json"))]
    assert len(top) == 2 and all([line] in retina.values() for line in top)  # the repository README shows the same
    configs = {t: BUNDLES / t / "configs" for t in TASKS}
    network_def = {t: json.loads((configs[t] / "inference.json").read_text())["network_def"] for t in TASKS}
    assert network_def["pathology"] == {**network_def["retina"], "no_max_pool": True}  # pathology 0.3.0
    assert network_def["retina"] != network_def["skin"]
    for task in TASKS:
        assert (configs[task] / "multi_gpu_evaluate.json").read_text() == (configs["retina"] / "multi_gpu_evaluate.json").read_text()
    assert (configs["pathology"] / "multi_gpu_train.json").read_text() == (configs["retina"] / "multi_gpu_train.json").read_text()
    skin, retina_overlay = (json.loads((configs[t] / "multi_gpu_train.json").read_text()) for t in ("skin", "retina"))
    assert {k: v for k, v in skin.items() if k != "train#sampler"} == {
        k: v for k, v in retina_overlay.items() if k != "train#sampler"
    }


ONLY_RETINA = pytest.mark.parametrize("workspace", ["retina"], indirect=True)


def test_evaluate_scores_the_test_split_with_scikit_learn_and_leaves_the_model(workspace):
    space = workspace
    model = space.bundle / "models" / "model.pt"
    before, logs_before = model.read_bytes(), sorted(p.name for p in (space.bundle / "logs").rglob("*"))
    space.run("evaluate")
    assert model.read_bytes() == before  # never written
    assert sorted(p.name for p in (space.bundle / "logs").rglob("*")) == logs_before  # no event file either
    names = class_names(space.bundle)
    report = json.loads((space.bundle / "eval" / "metrics.json").read_text())
    space.report = report
    header, rows = _csv(space.bundle / "eval" / "per_image.csv")
    assert header == ["image", "label", "prediction", *names]
    manifest = [r for r in csv.DictReader(open(space.data / "manifest.csv")) if r["split"] == "test"]
    assert [row[0] for row in rows] == [r["relative_path"] for r in manifest]  # the default split is test
    assert report["data"] == {"manifest": str(space.data.resolve()), "split": "test"}
    assert report["model"]["sha256"] == _sha(model) and report["num_images"] == TEST
    assert report["date"].endswith("+00:00")
    # scikit-learn on the same predictions
    y_true = np.array([names.index(row[1]) for row in rows])
    prob = np.array([[float(p) for p in row[3:]] for row in rows])
    y_pred = prob.argmax(axis=1)
    assert [names[i] for i in y_pred] == [row[2] for row in rows]
    classes = list(range(len(names)))
    present = [c for c in classes if 0 < (y_true == c).sum() < len(y_true)]
    auc = {c: roc_auc_score(y_true == c, prob[:, c]) for c in present}
    expected = {
        "accuracy": accuracy_score(y_true, y_pred),
        "balanced_accuracy": balanced_accuracy_score(y_true, y_pred),
        "macro_f1": f1_score(y_true, y_pred, labels=classes, average="macro", zero_division=0),
        "auc": float(np.mean(list(auc.values()))),
        "kappa": cohen_kappa_score(y_true, y_pred, labels=classes, weights="quadratic"),
    }
    assert report["metrics"] == pytest.approx(expected, abs=1e-12)
    precision, recall, _, support = precision_recall_fscore_support(y_true, y_pred, labels=classes, zero_division=np.nan)
    for c, name in enumerate(names):
        got = report["per_class"][name]
        assert got["support"] == support[c]
        for value, reference in ((got["precision"], precision[c]), (got["recall"], recall[c])):
            assert (value is None) if np.isnan(reference) else value == pytest.approx(reference, abs=1e-12)
        assert got["auc"] == (pytest.approx(auc[c], abs=1e-12) if c in auc else None)
    assert report["confusion_matrix"]["classes"] == names
    assert report["confusion_matrix"]["matrix"] == confusion_matrix(y_true, y_pred, labels=classes).tolist()
    # the probabilities are the plain network's through the validation preprocessing
    items = [{"image": str(space.data / r["relative_path"])} for r in manifest]
    reference = _network_probabilities(space, "train.json", "validate#preprocessing", items)
    torch.testing.assert_close(torch.tensor(prob, dtype=torch.float32), reference, rtol=1e-4, atol=1e-5)


@ONLY_RETINA
def test_two_gloo_processes_evaluate_to_the_same_report(workspace):
    space = workspace
    model = space.bundle / "models" / "model.pt"
    before = model.read_bytes()
    if space.report is None:  # the single-process evaluation of the test above, else run it here
        space.run("evaluate")
        space.report = json.loads((space.bundle / "eval" / "metrics.json").read_text())
    single = space.report
    header, rows = _csv(space.bundle / "eval" / "per_image.csv")
    prob = [[float(p) for p in row[3:]] for row in rows]
    space.run("multi_gpu_evaluate")  # each rank scores half the images
    report = json.loads((space.bundle / "eval" / "metrics.json").read_text())
    assert model.read_bytes() == before
    distributed_header, distributed_rows = _csv(space.bundle / "eval" / "per_image.csv")
    assert distributed_header == header and [r[:3] for r in distributed_rows] == [r[:3] for r in rows]
    distributed = torch.tensor([[float(p) for p in row[3:]] for row in distributed_rows])
    torch.testing.assert_close(distributed, torch.tensor(prob, dtype=torch.float32), rtol=1e-5, atol=1e-6)
    for key in ("num_images", "confusion_matrix", "model", "data"):
        assert report[key] == single[key], key
    assert report["metrics"] == pytest.approx(single["metrics"], abs=1e-6)


def test_inference_on_an_unlabelled_folder_writes_one_row_and_one_gradcam_per_image(workspace):
    space = workspace
    names = class_names(space.bundle)
    found = _image_folder_names(space.images)
    space.run("infer_images")
    header, rows = _csv(space.bundle / "eval" / "predictions.csv")
    assert header == ["image", "prediction", *names]
    assert [row[0] for row in rows] == found  # every image once, nothing else, in path order
    probabilities = torch.tensor([[float(p) for p in row[2:]] for row in rows])
    torch.testing.assert_close(probabilities.sum(dim=1), torch.ones(len(rows)), rtol=0, atol=1e-5)
    assert [row[1] for row in rows] == [names[i] for i in probabilities.argmax(dim=1)]
    reference = _network_probabilities(
        space, "inference.json", "preprocessing", [{"image": str(space.images / n)} for n in found]
    )
    torch.testing.assert_close(probabilities, reference, rtol=1e-4, atol=1e-5)
    size = int(space.size[1]) if space.size else parse_config(space.bundle, "inference.json").get_parsed_content("image_size")
    for name in found:
        overlay = space.bundle / "eval" / "gradcam" / (name if name.lower().endswith(".png") else f"{name}.png")
        with Image.open(overlay) as picture:  # at the network's input size
            assert picture.size == (size, size) and picture.mode == "RGB", name
    assert not list((space.bundle / "eval").glob(".gradcam.tmp-*"))


def _image_folder_names(folder: Path) -> list[str]:
    return sorted(
        p.relative_to(folder).as_posix()
        for p in folder.rglob("*")
        if p.is_file() and p.suffix.lower() != ".txt" and not p.relative_to(folder).parts[0].startswith(".")
    )


def test_export_from_the_root_and_inside_the_bundle_gives_the_checkpoint_outputs(workspace):
    space = workspace.copy("export")
    names = class_names(space.bundle)
    parser = parse_config(space.bundle, "inference.json", dataset_dir=str(space.data))  # any input size: real images
    preprocessing = parser.get_parsed_content("preprocessing")
    items = parser.get_parsed_content("datalist")
    images = torch.stack([torch.as_tensor(preprocessing(dict(item))["image"]) for item in items])
    net = plain_network(space.bundle, space.bundle / "models" / "model.pt", len(names))
    with torch.no_grad():
        expected = net(images)
    for kind in ("export_root", "export_bundle") if space.task == "retina" else ("export_root",):
        exported = space.bundle / "models" / "model.ts"
        exported.unlink(missing_ok=True)
        space.run(kind)
        extra = {"metadata.json": "", "inference.json": ""}
        scripted = torch.jit.load(str(exported), _extra_files=extra)
        with torch.no_grad():
            torch.testing.assert_close(scripted(images), expected, rtol=1e-5, atol=1e-6)
        meta = json.loads(extra["metadata.json"])
        assert list(meta["network_data_format"]["outputs"]["pred"]["channel_def"].values()) == names
        assert json.loads(extra["inference.json"])["network_def"] == parser.config["network_def"]


@ONLY_RETINA
def test_resume_continues_the_checkpoint(workspace):
    space = workspace.copy("resume")
    first = torch.load(space.bundle / "models" / "checkpoint.pt", weights_only=True)
    space.run("resume", "--epochs", "2", "--batch_size", "16")
    resumed = torch.load(space.bundle / "models" / "checkpoint.pt", weights_only=True)
    assert resumed["trainer"]["max_epochs"] == 2 and resumed["trainer"]["iteration"] == 2 * first["trainer"]["iteration"]


BANK_PROBE = {
    "+finalize": [
        "$torch.save({'bank': @danil.miner.bank.state_dict(), 'sampler_epoch': @train#sampler.epoch, "
        "'shard': [@train#dataset#data[i]['id'] for i in @train#sampler]}, "
        "os.path.join(os.environ['BANK_PROBE'], 'rank' + os.environ['RANK'] + '.pt'))"
    ]
}


@ONLY_RETINA
def test_two_gloo_processes_train_and_mine_the_global_batch(workspace, tmp_path):
    """``torchrun`` of the README's multi-GPU command on the CPU: 2 ranks, 32 images and 2 steps each."""
    space = workspace.copy("ddp")
    shutil.rmtree(space.bundle / "models")
    shutil.rmtree(space.bundle / "logs")
    # each rank gets folders of its own, so that a write by rank 1 would show, and records its bank
    extra = [*TRAINING, "--ckpt_dir", "$os.path.join(@bundle_root, 'models', os.environ['RANK'])",
             "--log_dir", "$os.path.join(@bundle_root, 'logs', os.environ['RANK'])"]
    (space.repo / "bank_probe.json").write_text(json.dumps(BANK_PROBE))  # the one addition to the command
    line = space.commands["multi_gpu_train"][0].replace("multi_gpu_train.json']", "multi_gpu_train.json','bank_probe.json']")
    space.commands = {**space.commands, "multi_gpu_train": [line]}
    log = space.run("multi_gpu_train", *extra, env={"BANK_PROBE": str(tmp_path)})
    assert "danil_distance: " in log and "danil_from_bank: " in log  # the handler mined through the DDP wrapper
    assert {p.name for p in (space.bundle / "models").iterdir()} == {"0"}  # rank 1 wrote no checkpoint
    assert {"model.pt", "checkpoint.pt"} <= {p.name for p in (space.bundle / "models" / "0").iterdir()}
    assert {p.name for p in (space.bundle / "logs").iterdir()} == {"0"}  # nor event files
    assert list((space.bundle / "logs" / "0").glob("events.out.tfevents.*"))
    assert not list(space.repo.rglob("runs"))  # no handler fell back to a writer of its own
    steps = (TRAIN // 2) // 16
    assert len(re.findall(r"Epoch: 1/1, Iter: \d+/%d -- " % steps, log)) == steps  # one training log: rank 0's
    checkpoint = torch.load(space.bundle / "models" / "0" / "checkpoint.pt", weights_only=True)
    assert checkpoint["trainer"]["iteration"] == steps
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1)]
    shards = [set(rank["shard"]) for rank in ranks]
    assert not shards[0] & shards[1] and len(shards[0] | shards[1]) == TRAIN  # DistributedSampler, no padding
    assert [rank["sampler_epoch"] for rank in ranks] == [1, 1]  # MONAI's Workflow called set_epoch
    banks = [rank["bank"] for rank in ranks]
    for key in ("ids", "labels", "count", "ptr"):
        assert torch.equal(torch.as_tensor(banks[0][key]), torch.as_tensor(banks[1][key])), key
    torch.testing.assert_close(banks[0]["features"], banks[1]["features"])
    plain_network(space.bundle, space.bundle / "models" / "0" / "model.pt", len(class_names(space.bundle)))  # no DDP keys
    ids = set(banks[0]["ids"][: banks[0]["count"]].tolist())
    assert ids & shards[0] and ids & shards[1]  # every rank's bank holds both ranks' samples
    assert torch.equal(checkpoint["danil"]["miner"]["bank"]["ids"], banks[0]["ids"])


def test_evaluate_and_inference_read_another_manifest(tmp_path, data_root):
    """``--manifest CSV`` and ``--split`` of evaluate.json, and inference on a manifest without labels (parsed)."""
    source = data_root / "pathology"
    rows = [r for r in csv.DictReader(open(source / "manifest.csv")) if r["split"] == "val"][:3]
    labelled = tmp_path / "scored.csv"
    labelled.write_text("relative_path,label\n" + "".join(f"{source / r['relative_path']},{r['label']}\n" for r in rows))
    parser = parse_config(BUNDLES / "pathology", "train.json", ("evaluate.json",), dataset_dir=str(source),
                          manifest=str(labelled))
    assert parser.get_parsed_content("split") is None  # no split column: every row is scored
    data = parser.get_parsed_content("validate#dataset#data")
    assert [(d["relative_path"], d["label"]) for d in data] == [(str(source / r["relative_path"]), int(r["label"])) for r in rows]
    parser = parse_config(BUNDLES / "pathology", "train.json", ("evaluate.json",), dataset_dir=str(source), split="train")
    assert len(parser.get_parsed_content("validate#dataset#data")) == 681
    unlabelled = tmp_path / "unlabelled.csv"
    unlabelled.write_text("relative_path\n" + "".join(f"{source / r['relative_path']}\n" for r in rows))
    parser = parse_config(BUNDLES / "pathology", "inference.json", dataset_dir=str(unlabelled))
    assert [d["relative_path"] for d in parser.get_parsed_content("datalist")] == [str(source / r["relative_path"]) for r in rows]
    assert all("label" not in d for d in parser.get_parsed_content("datalist"))


def _free_port() -> int:
    import socket

    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        return free.getsockname()[1]


DISTRIBUTED_DOC = BUNDLES.parent / "docs" / "distributed.md"


@ONLY_RETINA
def test_the_distributed_doc_commands_run_as_shown(workspace):
    """docs/distributed.md: the one-machine commands are the README's (run above); the two-machine one
    runs here as two ``torchrun`` launchers on this machine, one process each, meeting at 127.0.0.1."""
    commands = [line.strip() for line in DISTRIBUTED_DOC.read_text().splitlines() if line.startswith("    torchrun ")]
    assert len(commands) == 3
    single, multi, evaluate = commands
    assert single == workspace.commands["multi_gpu_train"][0] and evaluate == workspace.commands["multi_gpu_evaluate"][0]
    space = workspace.copy("nodes")
    shutil.rmtree(space.bundle / "models")
    port = str(_free_port())
    launchers = []
    for node in ("0", "1"):
        line = multi.replace("--nproc_per_node=8", "--nproc_per_node=1").replace("--node_rank=0", f"--node_rank={node}")
        argv = [{"DIR": str(space.data)}.get(a, a) for a in shlex.split(line.replace("HOST0:29400", f"127.0.0.1:{port}"))]
        assert argv[0] == "torchrun"
        launchers.append(subprocess.Popen(
            [sys.executable, "-m", "torch.distributed.run", *argv[1:], *TRAINING], cwd=space.repo,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        ))
    outputs = [launcher.communicate(timeout=900)[0] for launcher in launchers]
    assert [launcher.returncode for launcher in launchers] == [0, 0], "\n".join(o[-3000:] for o in outputs)
    checkpoint = torch.load(space.bundle / "models" / "checkpoint.pt", weights_only=True)
    assert checkpoint["trainer"]["iteration"] == (TRAIN // 2) // 16  # two processes shared the epoch


def test_multi_gpu_overlay_builds_ddp_and_distributed_samplers(monkeypatch, data_root):
    """The overlay under a real one-process gloo group: what each rank builds; SyncBatchNorm as an option."""
    import torch.distributed as dist

    from monai_danil.networks import sync_batchnorm

    port = _free_port()
    monkeypatch.setenv("LOCAL_RANK", "0")
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=0, world_size=1)
    try:
        for task, sampling in (("retina", "uniform"), ("skin", "class_balanced")):
            override = {"dataset_dir": str(data_root / task), "train#dataset#cache_rate": 0.0,
                        "validate#dataset#cache_rate": 0.0}
            if task == "skin":
                override["sampling"] = sampling
            parser = parse_config(BUNDLES / task, "train.json", ("multi_gpu_train.json",), **override)
            network = parser.get_parsed_content("network")
            assert isinstance(network, torch.nn.parallel.DistributedDataParallel)
            assert network.device_ids is None and next(network.parameters()).device.type == "cpu"
            loader = parser.get_parsed_content("train#dataloader")
            expected = "DistributedWeightedRandomSampler" if sampling == "class_balanced" else "DistributedSampler"
            assert type(loader.sampler).__name__ == expected and loader.drop_last
            validate = parser.get_parsed_content("validate#dataloader")
            assert type(validate.sampler).__name__ == "DistributedSampler" and not validate.sampler.shuffle
            parser = parse_config(BUNDLES / task, "train.json", ("multi_gpu_train.json",), sync_batchnorm="true")
            with pytest.raises(RuntimeError) as error:  # the command line passes "true" as a string
                parser.get_parsed_content("network")
            assert "sync_batchnorm needs CUDA devices" in repr(error.value.__cause__ or error.value)
    finally:
        dist.destroy_process_group()
    converted = sync_batchnorm(plain_network_def(), True, torch.device("cuda:0"))  # conversion only, no move
    assert any(isinstance(m, torch.nn.SyncBatchNorm) for m in converted.modules())
    assert not any(type(m) is torch.nn.BatchNorm2d for m in converted.modules())


def plain_network_def() -> torch.nn.Module:
    return parse_config(BUNDLES / "retina", "inference.json").get_parsed_content("network_def")
