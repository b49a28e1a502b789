"""The TensorBoard handlers after a short real training on HAM10000 JPEGs, read back with TensorBoard's reader."""

from __future__ import annotations

import io
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from monai.data import DataLoader, Dataset
from monai.engines import SupervisedEvaluator, SupervisedTrainer
from ignite.metrics import ConfusionMatrix
from monai.handlers import LrScheduleHandler, TensorBoardStatsHandler, ValidationHandler, from_engine
from monai.transforms import Compose, EnsureTyped, LoadImaged, Resized, ScaleIntensityRanged
from PIL import Image
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from torch.utils.tensorboard import SummaryWriter

import monai_danil.handlers.utils as handler_utils
from conftest import REPO_ROOT
from monai_danil.data import read_manifest, write_manifest
from monai_danil.handlers import (
    MINING_FIGURES,
    ConfusionMatrixTensorBoardHandler,
    DistractorMiningHandler,
    DistractorPairsHandler,
    EmbeddingProjectorHandler,
    LearningRateTensorBoardHandler,
    from_engine_batched,
    from_engine_dict,
)
from monai_danil.handlers.figures import confusion_figure, fit_tile, load_display_image, square_thumbnail
from monai_danil.losses import DistractorAwareLoss
from monai_danil.metrics import ClassificationMetricHandler
from monai_danil.mining import DistractorMiner
from monai_danil.networks import create_network

SKIN_CLASSES = ["akiec", "bcc", "bkl", "df", "mel", "nv", "vasc"]
VAL_METRICS = ("val_accuracy", "val_balanced_accuracy", "val_macro_f1", "val_auc", "val_kappa")
EPOCHS, BATCH, LR = 2, 8, 1e-3


def _per_class(datalist: list[dict], per_class: int) -> list[dict]:
    """The first ``per_class`` images of every class, so every class can be a distractor."""
    picked: list[dict] = []
    for label in range(len(SKIN_CLASSES)):
        picked += [item for item in datalist if item["label"] == label][:per_class]
    return picked


def _transform() -> Compose:
    return Compose(
        [
            LoadImaged("image", reader="PILReader", reverse_indexing=False, ensure_channel_first=True, image_only=True),
            Resized("image", spatial_size=(32, 32), mode="area"),
            ScaleIntensityRanged("image", a_min=0, a_max=255, b_min=0.0, b_max=1.0),
            EnsureTyped(["image", "label"], track_meta=False),
        ]
    )


def _decode(event) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(event.encoded_image_string)).convert("RGB"))


def _text(events: EventAccumulator, tag: str) -> list[str]:
    # torch's add_text stores its text under "<tag>/text_summary"
    return [e.tensor_proto.string_val[0].decode() for e in events.Tensors(f"{tag}/text_summary")]


@pytest.fixture(scope="module")
def run(tmp_path_factory, skin_dir):
    """Two epochs of DANIL on 28 HAM10000 training images, validated on 14, every handler attached."""
    log_dir = tmp_path_factory.mktemp("tb")
    train_files = _per_class(read_manifest(skin_dir, "train", SKIN_CLASSES), 4)
    val_files = _per_class(read_manifest(skin_dir, "val", SKIN_CLASSES), 2)
    torch.manual_seed(0)
    generator = torch.Generator().manual_seed(0)
    net = create_network("resnet18", len(SKIN_CLASSES), conv1_t_size=3, conv1_t_stride=1)
    loss = DistractorAwareLoss()
    optimizer = torch.optim.Adam(net.parameters(), LR)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.5)
    writer = SummaryWriter(str(log_dir))
    val_loader = DataLoader(Dataset(val_files, _transform()), batch_size=BATCH)
    mining = DistractorMiningHandler(net, loss, DistractorMiner(bank_size=12), lambda_max=0.5)
    pairs = DistractorPairsHandler(
        mining, train_files, SKIN_CLASSES, summary_writer=writer, interval=2, num_pairs=6, columns=3
    )
    counted = ConfusionMatrix(len(SKIN_CLASSES), output_transform=from_engine_batched(["pred", "label"]))
    confusion = ConfusionMatrixTensorBoardHandler(SKIN_CLASSES, counted, summary_writer=writer, distractor_pairs=pairs)
    metric = lambda name: ClassificationMetricHandler(  # noqa: E731
        metric_name=name, num_classes=len(SKIN_CLASSES), output_transform=from_engine(["pred", "label"])
    )
    evaluator = SupervisedEvaluator(
        device=torch.device("cpu"),
        val_data_loader=val_loader,
        network=net,
        key_val_metric={"val_accuracy": metric("accuracy")},
        additional_metrics={name: metric(name[4:]) for name in VAL_METRICS[1:]},
        val_handlers=[TensorBoardStatsHandler(summary_writer=writer, iteration_log=False), confusion],
    )
    projector = EmbeddingProjectorHandler(net, SKIN_CLASSES, evaluator, datalist=val_files, summary_writer=writer)
    trainer = SupervisedTrainer(
        device=torch.device("cpu"),
        max_epochs=EPOCHS,
        train_data_loader=DataLoader(
            Dataset(train_files, _transform()), batch_size=BATCH, shuffle=True, drop_last=True, generator=generator
        ),
        network=net,
        optimizer=optimizer,
        loss_function=loss,
        train_handlers=[
            LrScheduleHandler(scheduler, print_lr=False),
            ValidationHandler(validator=evaluator, epoch_level=True, interval=1),
            mining,
            TensorBoardStatsHandler(
                summary_writer=writer, tag_name="loss", output_transform=from_engine_dict(["loss", *MINING_FIGURES])
            ),
            LearningRateTensorBoardHandler(optimizer, summary_writer=writer),
            pairs,
            projector,
        ],
    )
    forward_passes: list[int] = []
    net.register_forward_hook(lambda *args: forward_passes.append(1))
    trainer.run()
    writer.close()
    events = EventAccumulator(str(log_dir), size_guidance={"images": 0, "scalars": 0, "tensors": 0})
    events.Reload()
    return {
        "log_dir": Path(log_dir), "events": events, "trainer": trainer, "net": net, "mining": mining,
        "pairs": pairs, "confusion": confusion, "train_files": train_files, "val_files": val_files,
        "val_loader": val_loader, "forward_passes": len(forward_passes),
        "train_batches": len(trainer.data_loader),
    }


def test_every_scalar_is_logged_with_plausible_values(run):
    events, iterations = run["events"], run["trainer"].state.iteration
    scalars = set(events.Tags()["scalars"])
    assert {"loss", *MINING_FIGURES, *VAL_METRICS, "lr"} <= scalars
    for tag in ("loss", *MINING_FIGURES):
        assert len(events.Scalars(tag)) == iterations == EPOCHS * 3
    assert all(0.0 <= e.value <= 1.0 for e in events.Scalars("danil_fraction"))
    assert all(0.0 <= e.value <= 2**0.5 + 1e-6 for e in events.Scalars("danil_distance"))
    assert all(e.value == pytest.approx(0.5) for e in events.Scalars("danil_lambda"))
    for total, ce, da in zip(events.Scalars("loss"), events.Scalars("danil_ce"), events.Scalars("danil_da")):
        assert total.value == pytest.approx(ce.value + 0.5 * da.value, rel=1e-4, abs=1e-6)
    for tag in VAL_METRICS:
        values = [e.value for e in events.Scalars(tag)]
        assert len(values) == EPOCHS and all(-1.0 <= v <= 1.0 for v in values), (tag, values)
    # StepLR halves after each epoch; the logged rate is the one each epoch trained with
    assert [(e.step, e.value) for e in events.Scalars("lr")] == [(1, pytest.approx(LR)), (2, pytest.approx(LR / 2))]


def test_distractor_pairs_show_the_source_images_at_native_size(run):
    events, pairs, files = run["events"], run["pairs"], run["train_files"]
    (grid_event,) = events.Images("train_distractor_pairs")  # interval 2: epoch 2 only
    assert grid_event.step == 2
    grid = _decode(grid_event)
    assert (grid_event.height, grid_event.width) == grid.shape[:2]
    by_id = {item["id"]: item for item in files}
    shown = pairs.last_pairs
    assert len(shown) == 6 and len({p["label"] for p in shown}) >= 3  # one true class after another
    assert any(p["from_bank"] for p in shown), "no bank distractor among the pairs shown"
    for pair in shown:
        for role, sample_id in (("anchor", pair["anchor_id"]), ("distractor", pair["distractor_id"])):
            truth = np.asarray(Image.open(by_id[sample_id]["image"]))
            assert truth.shape == (150, 200, 3)  # landscape: a transposed tile could not fit the box
            left, top, right, bottom = pair[f"{role}_box"]
            assert np.array_equal(grid[top:bottom, left:right], truth), f"{role} {sample_id} differs from its file"
        # the distractor's class is the one its own file is labelled with, never the anchor's
        assert by_id[pair["distractor_id"]]["label"] == pair["distractor_class"] != pair["label"]
        assert by_id[pair["anchor_id"]]["label"] == pair["label"]
    (table,) = _text(events, "train_distractor_pairs_table")
    rows = [line for line in table.splitlines() if re.match(r"\| \d+ \|", line)]
    assert len(rows) == 6
    for line, pair in zip(rows, shown):
        cells = [c.strip() for c in line.strip("|").split("|")]
        assert cells[1:5] == [
            SKIN_CLASSES[pair["label"]], str(pair["anchor_id"]),
            SKIN_CLASSES[pair["distractor_class"]], str(pair["distractor_id"]),
        ]
        assert 0.0 <= float(cells[6]) <= 2**0.5


def test_confusion_matrix_matches_the_final_network(run):
    events, confusion, net = run["events"], run["confusion"], run["net"].eval()
    images = events.Images("val_confusion_matrix")
    assert [e.step for e in images] == [1, 2]
    figure = _decode(images[-1])
    assert figure.shape[0] > 7 * 30 and figure.shape[1] > 7 * 30
    expected = np.zeros((7, 7), dtype=np.int64)
    with torch.no_grad():
        for batch in run["val_loader"]:
            for y, p in zip(batch["label"], net(batch["image"]).argmax(1)):
                expected[int(y), int(p)] += 1
    assert np.array_equal(confusion.matrix, expected) and expected.sum() == len(run["val_files"])
    # the logged figure is the one drawn from that matrix
    assert np.array_equal(figure, confusion_figure(expected, SKIN_CLASSES, _title(expected, 2)))
    tables = _text(events, "val_confusion_matrix_pairs")
    assert len(tables) == 2 and "training epoch 2" in tables[-1]
    counts = run["pairs"].counts()
    t, c = np.unravel_index(np.argmax(counts), counts.shape)
    first_row = [line for line in tables[-1].splitlines() if line.startswith("| ") and "true class" not in line][0]
    assert first_row.startswith(f"| {SKIN_CLASSES[t]} | {SKIN_CLASSES[c]} | {counts[t, c]} |")
    assert np.trace(counts) == 0 and 0 < counts.sum() <= 3 * BATCH


def _title(matrix: np.ndarray, epoch: int) -> str:
    return f"validation, epoch {epoch}: {matrix.sum()} images, accuracy {np.trace(matrix) / matrix.sum():.3f}"


def test_projector_files_hold_every_validation_image(run):
    log_dir, n = run["log_dir"], len(run["val_files"])
    config = (log_dir / "projector_config.pbtxt").read_text()
    folder = log_dir / f"{EPOCHS:05d}" / "val_features"
    assert 'tensor_name: "val_features' in config and "sprite" in config
    rows = (folder / "tensors.tsv").read_text().splitlines()
    assert len(rows) == n and all(len(r.split("\t")) == 512 for r in rows)
    metadata = (folder / "metadata.tsv").read_text().splitlines()
    assert metadata[0].split("\t") == ["class", "predicted", "id"] and len(metadata) == n + 1
    assert [m.split("\t")[0] for m in metadata[1:]] == [SKIN_CLASSES[item["label"]] for item in run["val_files"]]
    sprite = np.asarray(Image.open(folder / "sprite.png"))
    side = int(np.ceil(np.sqrt(n))) * 32
    assert sprite.shape == (side, side, 3)
    # the first thumbnail is the first validation file, padded into a square, in its own colours
    first = np.asarray(Image.open(run["val_files"][0]["image"]).resize((32, 24), Image.Resampling.LANCZOS))
    assert np.abs(sprite[4:28, :32].astype(int) - first.astype(int)).mean() < 3.0
    # read during the evaluator's own pass: no forward pass beyond training's and validation's
    assert run["forward_passes"] == EPOCHS * (run["train_batches"] + len(run["val_loader"]))


def test_projector_without_datalist_shows_the_network_inputs(tmp_path):
    net = create_network("resnet18", 2)
    data = [{"image": torch.rand(3, 16, 16) * (i + 1), "label": i % 2, "id": i} for i in range(5)]
    loader = DataLoader(data, batch_size=2)
    evaluator = SupervisedEvaluator(device=torch.device("cpu"), val_data_loader=loader, network=net)
    projector = EmbeddingProjectorHandler(net, ["a", "b"], log_dir=str(tmp_path), max_samples=3, thumbnail_size=8)
    projector.attach(evaluator)
    evaluator.run()
    folder = tmp_path / "00001" / "val_features"
    assert len((folder / "tensors.tsv").read_text().splitlines()) == 3
    assert [row.split("\t")[2] for row in (folder / "metadata.tsv").read_text().splitlines()[1:]] == ["0", "1", "2"]
    # the first thumbnail is the first input scaled to its own range (0..255), fitted into 8 x 8
    image = data[0]["image"]
    scaled = ((image - image.min()) / (image.max() - image.min()) * 255).round().to(torch.uint8)
    expected = square_thumbnail(scaled.permute(1, 2, 0).numpy(), 8)
    sprite = np.asarray(Image.open(folder / "sprite.png"))
    assert sprite.shape == (16, 16, 3) and np.abs(sprite[:8, :8].astype(int) - expected.astype(int)).max() <= 1


def test_bank_ids_are_int64_in_a_weights_only_checkpoint(run, tmp_path):
    torch.save({"danil": run["mining"].state_dict()}, tmp_path / "state.pt")
    bank = torch.load(tmp_path / "state.pt", weights_only=True)["danil"]["miner"]["bank"]
    assert bank["ids"].dtype == torch.int64 and bank["count"] == 12
    assert set(bank["ids"].tolist()) <= {item["id"] for item in run["train_files"]}


def test_only_rank_zero_writes(monkeypatch, tmp_path, skin_dir):
    monkeypatch.setattr(handler_utils.idist, "get_rank", lambda: 1)
    files = read_manifest(skin_dir, "train", SKIN_CLASSES)[:8]
    net = create_network("resnet18", len(SKIN_CLASSES))
    loss = DistractorAwareLoss()
    mining = DistractorMiningHandler(net, loss, DistractorMiner(bank_size=4))
    optimizer = torch.optim.SGD(net.parameters(), 0.1)
    data = [
        {"image": torch.rand(3, 16, 16), "label": torch.tensor(i % 7), "id": item["id"]} for i, item in enumerate(files)
    ]
    loader = DataLoader(data, batch_size=4)
    evaluator = SupervisedEvaluator(
        device=torch.device("cpu"), val_data_loader=loader, network=net,
        val_handlers=[ConfusionMatrixTensorBoardHandler(SKIN_CLASSES, log_dir=str(tmp_path))],
    )
    handlers = [
        mining,
        LearningRateTensorBoardHandler(optimizer, log_dir=str(tmp_path)),
        DistractorPairsHandler(mining, files, SKIN_CLASSES, log_dir=str(tmp_path)),
        ValidationHandler(validator=evaluator, epoch_level=True, interval=1),
        EmbeddingProjectorHandler(net, SKIN_CLASSES, evaluator, log_dir=str(tmp_path)),
    ]
    trainer = SupervisedTrainer(
        device=torch.device("cpu"), max_epochs=1, train_data_loader=loader, network=net,
        optimizer=optimizer, loss_function=loss, train_handlers=handlers,
    )
    trainer.run()
    assert not any(tmp_path.iterdir())


def test_attach_twice_registers_once_and_bad_settings_are_clear(skin_dir):
    from ignite.engine import Engine, Events
    from monai.engines.utils import IterationEvents

    files = read_manifest(skin_dir, "val", SKIN_CLASSES)[:4]
    net = create_network("resnet18", len(SKIN_CLASSES))
    mining = DistractorMiningHandler(net, DistractorAwareLoss())
    optimizer = torch.optim.SGD(net.parameters(), 0.1)
    engine = Engine(lambda e, b: None)
    engine.register_events(*IterationEvents, event_to_attr=None)
    handlers = [
        LearningRateTensorBoardHandler(optimizer, interval=2),
        DistractorPairsHandler(mining, files, SKIN_CLASSES),
        ConfusionMatrixTensorBoardHandler(SKIN_CLASSES),
        EmbeddingProjectorHandler(net, SKIN_CLASSES, interval=3),
    ]
    for handler in handlers:
        handler.attach(engine)
    before = {event: len(engine._event_handlers[event]) for event in engine._event_handlers}
    for handler in handlers:
        handler.attach(engine)
    assert {event: len(engine._event_handlers[event]) for event in engine._event_handlers} == before
    assert before[Events.EPOCH_STARTED] == 4 and before[Events.COMPLETED] == 1
    with pytest.raises(ValueError, match="interval"):
        LearningRateTensorBoardHandler(optimizer, interval=0)
    with pytest.raises(ValueError, match="repeats id"):
        DistractorPairsHandler(mining, files + files[:1], SKIN_CLASSES)
    with pytest.raises(ValueError, match="expected 'image' and 'id'"):
        DistractorPairsHandler(mining, [{"image": "a.png"}], SKIN_CLASSES)
    with pytest.raises(TypeError, match="DistractorMiningHandler"):
        DistractorPairsHandler(net, files, SKIN_CLASSES)
    with pytest.raises(ValueError, match="at least 2 classes"):
        ConfusionMatrixTensorBoardHandler(["only"])
    with pytest.raises(ValueError, match="no layer module named 'nope'"):
        EmbeddingProjectorHandler(net, SKIN_CLASSES, layer="nope")
    with pytest.raises(ValueError, match="counts 3 classes but 7 class names"):
        ConfusionMatrixTensorBoardHandler(SKIN_CLASSES, ConfusionMatrix(3))


def test_small_images_are_enlarged_in_whole_pixel_blocks(retina_dir):
    path = read_manifest(retina_dir, "train")[0]["image"]
    image = load_display_image(path)
    assert image.shape == (28, 28, 3)
    tile = fit_tile(image, 224)
    assert tile.shape == (224, 224, 3) and np.array_equal(tile[::8, ::8], image)
    big = fit_tile(np.zeros((300, 600, 3), dtype=np.uint8), 224)
    assert big.shape == (112, 224, 3)


def test_retina_bundle_logs_every_tag_by_the_literal_command(tmp_path, retina_dir):
    """The handlers as wired in the bundle's train.json, on 42 real RetinaMNIST images, in a copy of the bundle."""
    bundle = tmp_path / "retina"
    shutil.copytree(REPO_ROOT / "bundles" / "retina" / "configs", bundle / "configs")
    rows = []
    for split, count in (("train", 32), ("val", 10)):
        for item in read_manifest(retina_dir, split)[:count]:
            rows.append({"relative_path": item["image"], "label": item["label"], "split": split})
    data = tmp_path / "data"
    data.mkdir()
    write_manifest(data / "manifest.csv", rows)
    result = subprocess.run(
        [sys.executable, "-m", "monai.bundle", "run", "training", "--config_file", "configs/train.json",
         "--dataset_dir", str(data), "--epochs", "2", "--batch_size", "8"],
        cwd=bundle, capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stderr[-5000:]
    events = EventAccumulator(str(bundle / "logs"), size_guidance={"images": 0, "scalars": 0, "tensors": 0})
    events.Reload()
    tags = events.Tags()
    assert {"loss", *MINING_FIGURES, "val_accuracy", "val_balanced_accuracy", "val_macro_f1", "val_auc",
            "val_kappa", "lr"} <= set(tags["scalars"])
    assert [e.step for e in events.Images("train_distractor_pairs")] == [1, 2]
    assert [e.step for e in events.Images("val_confusion_matrix")] == [1, 2]
    assert {"train_distractor_pairs_table/text_summary", "val_confusion_matrix_pairs/text_summary"} <= set(
        tags["tensors"]
    )
    grid = _decode(events.Images("train_distractor_pairs")[-1])
    # 28 x 28 images are shown in 8 x 8 pixel blocks: 224 px tiles
    assert grid.shape[0] >= 224 and grid.shape[1] >= 2 * 224
    folder = bundle / "logs" / "00002" / "val_features"
    assert (bundle / "logs" / "projector_config.pbtxt").is_file()
    assert len((folder / "tensors.tsv").read_text().splitlines()) == 10
    assert (folder / "sprite.png").is_file() and (folder / "metadata.tsv").is_file()
