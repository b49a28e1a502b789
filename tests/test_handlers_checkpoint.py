"""Resumable checkpoints: atomic writes under SIGKILL, the best score across a resume, the AMP scale, reseeding."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
from ignite.engine import Engine, Events
from monai.data import DataLoader, Dataset
from monai.engines import SupervisedEvaluator, SupervisedTrainer
from monai.handlers import from_engine
from monai.transforms import RandGaussianNoised

from conftest import REPO_ROOT
from monai_danil.handlers import AtomicCheckpointSaver, EpochSeedHandler, GradScalerState, epoch_seed
from monai_danil.metrics import ClassificationMetricHandler

# A child process saving a 16 MiB network at every iteration, each save a different uniform value (the
# iteration) beside the trainer state that names it: a whole file has both parts, and they agree.
_WRITER = textwrap.dedent(
    """
    import sys
    import torch
    from ignite.engine import Engine, Events
    from ignite.handlers import Checkpoint, DiskSaver

    kind, folder = sys.argv[1], sys.argv[2]
    net = torch.nn.Linear(2048, 2048, bias=False)

    def step(engine, batch):
        with torch.no_grad():
            net.weight.fill_(float(engine.state.iteration))

    engine = Engine(step)
    save_dict = {"network": net, "trainer": engine}
    if kind == "atomic":
        from monai_danil.handlers import AtomicCheckpointSaver

        AtomicCheckpointSaver(
            save_dir=folder, save_dict=save_dict, iteration_interval=1, interval_filename="checkpoint.pt"
        ).attach(engine)
    else:  # how MONAI's CheckpointSaver writes a fixed name: ignite's DiskSaver with atomic=False
        saver = DiskSaver(folder, atomic=False, require_empty=False)
        engine.add_event_handler(
            Events.ITERATION_COMPLETED, Checkpoint(save_dict, saver, filename_pattern="checkpoint.pt", n_saved=None)
        )
    engine.run(range(10**6), max_epochs=1)
    """
)


def _complete(path: Path) -> int:
    """The iteration a checkpoint file holds; raises if the file is partial or inconsistent."""
    state = torch.load(path, weights_only=True)
    weight = state["network"]["weight"]
    iteration = state["trainer"]["iteration"]
    assert weight.shape == (2048, 2048) and torch.all(weight == float(iteration)), "mixed or partial contents"
    return iteration


def _kill_while_writing(kind: str, folder: Path) -> tuple[list[int], bool]:
    """Starts the writer, reads the final file while it works, SIGKILLs it during a save (a write under way)."""
    process = subprocess.Popen(
        [sys.executable, "-c", _WRITER, kind, str(folder)],
        env=dict(os.environ, PYTHONPATH=str(REPO_ROOT)), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    final = folder / "checkpoint.pt"
    seen, partial_seen, deadline = [], False, time.monotonic() + 300
    try:
        while process.poll() is None and time.monotonic() < deadline:
            if not final.exists():
                continue
            if kind == "atomic":
                seen.append(_complete(final))  # every read of the final name, at any moment, is whole
                if len(seen) >= 3 and any(folder.glob(".checkpoint.pt.*.tmp")):  # a save under way
                    os.kill(process.pid, signal.SIGKILL)
                    break
            else:
                try:
                    seen.append(_complete(final))
                except Exception:  # truncated or half-written, as MONAI's in-place save leaves it
                    partial_seen = True
                    os.kill(process.pid, signal.SIGKILL)
                    break
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(timeout=60)
    assert process.returncode == -signal.SIGKILL, process.stderr.read().decode()[-3000:]
    return seen, partial_seen


def test_sigkill_during_a_checkpoint_write_never_leaves_a_partial_file(tmp_path):
    for attempt in range(3):
        folder = tmp_path / f"atomic{attempt}"
        folder.mkdir()
        seen, _ = _kill_while_writing("atomic", folder)
        assert len(seen) >= 3 and seen == sorted(seen)
        # the final name holds the last complete version, whenever the kill came
        assert _complete(folder / "checkpoint.pt") >= seen[-1]
        leftovers = list(folder.glob(".checkpoint.pt.*.tmp"))
        if leftovers:  # the kill came during a save, which never reached its rename (else: the rare race, again)
            assert sorted(p.name for p in folder.iterdir()) == sorted(["checkpoint.pt", leftovers[0].name])
            break
    else:
        pytest.fail("three kills in a row missed every save")
    # the same kill with ignite's in-place DiskSaver (MONAI's CheckpointSaver) exposes a partial file
    inplace = tmp_path / "inplace"
    inplace.mkdir()
    _, partial_seen = _kill_while_writing("inplace", inplace)
    assert partial_seen


def _validation(tmp_path: Path, state: dict | None = None):
    """A real SupervisedEvaluator scoring accuracy on two samples, with the key-metric saver of the bundles."""
    net = torch.nn.Linear(1, 2)
    data = [{"image": torch.tensor([1.0]), "label": torch.tensor(1)}, {"image": torch.tensor([-1.0]), "label": torch.tensor(0)}]
    saver = AtomicCheckpointSaver(
        save_dir=str(tmp_path), save_dict={"model": net}, save_key_metric=True, key_metric_filename="model.pt"
    )
    evaluator = SupervisedEvaluator(
        device=torch.device("cpu"),
        val_data_loader=DataLoader(data, batch_size=2),
        network=net,
        key_val_metric={
            "val_accuracy": ClassificationMetricHandler("accuracy", 2, output_transform=from_engine(["pred", "label"]))
        },
        val_handlers=[saver],
    )
    if state is not None:
        saver.load_state_dict(state)
    return net, evaluator, saver


def _epoch(net: torch.nn.Module, evaluator: SupervisedEvaluator, epoch: int, bias: float) -> float:
    # logits [0, x + bias]: bias 0 gets both samples right (accuracy 1.0), bias 2 only the first (0.5)
    with torch.no_grad():
        net.weight.copy_(torch.tensor([[0.0], [1.0]]))
        net.bias.copy_(torch.tensor([0.0, bias]))
    evaluator.run(epoch)
    return evaluator.state.metrics["val_accuracy"]


def test_a_resumed_validation_never_replaces_model_pt_with_a_worse_epoch(tmp_path):
    net, evaluator, saver = _validation(tmp_path)
    assert [_epoch(net, evaluator, 1, 2.0), _epoch(net, evaluator, 2, 0.0)] == [0.5, 1.0]
    best = torch.load(tmp_path / "model.pt", weights_only=True)  # a plain state_dict, the epoch-2 network
    assert set(best) == {"weight", "bias"} and best["bias"].tolist() == [0.0, 0.0]
    buffer = io.BytesIO()
    torch.save(saver.state_dict(), buffer)
    buffer.seek(0)
    state = torch.load(buffer, weights_only=True)
    assert state["best_metric"] == 1.0 and state["best_metric_epoch"] == 2 and len(state["_saved"]) == 1
    # a new process resumes at epoch 3, which scores worse: model.pt stays the epoch-2 network
    net, evaluator, _ = _validation(tmp_path, state)
    assert _epoch(net, evaluator, 3, 2.0) == 0.5
    assert torch.equal(torch.load(tmp_path / "model.pt", weights_only=True)["bias"], best["bias"])
    assert (evaluator.state.best_metric, evaluator.state.best_metric_epoch) == (1.0, 2)  # MONAI's own log line
    # without the restored state, the same worse epoch overwrites it (what the bundles did before)
    net, evaluator, _ = _validation(tmp_path)
    _epoch(net, evaluator, 3, 2.0)
    assert torch.load(tmp_path / "model.pt", weights_only=True)["bias"].tolist() == [0.0, 2.0]
    assert not list(tmp_path.glob(".*.tmp"))


def test_grad_scaler_state_follows_the_scaler_the_trainer_holds():
    def trainer() -> SupervisedTrainer:
        net = torch.nn.Linear(2, 2)
        return SupervisedTrainer(
            device=torch.device("cpu"), max_epochs=1, train_data_loader=DataLoader([]), network=net,
            optimizer=torch.optim.SGD(net.parameters(), 0.1), loss_function=torch.nn.CrossEntropyLoss(),
        )

    source, target = trainer(), trainer()
    assert GradScalerState(source).state_dict() == {}  # no AMP: nothing saved, nothing loaded
    GradScalerState(target).load_state_dict({})
    source.scaler, target.scaler = torch.amp.GradScaler("cpu", init_scale=1024.0), torch.amp.GradScaler("cpu")
    buffer = io.BytesIO()
    torch.save({"scaler": GradScalerState(source).state_dict()}, buffer)
    buffer.seek(0)
    GradScalerState(target).load_state_dict(torch.load(buffer, weights_only=True)["scaler"])
    assert target.scaler.get_scale() == 1024.0


def _noisy_loader() -> DataLoader:
    data = [{"id": i, "x": torch.zeros(3)} for i in range(12)]
    return DataLoader(Dataset(data, RandGaussianNoised(keys="x", prob=1.0)), batch_size=4, shuffle=True)


def _epochs(handler: EpochSeedHandler | None, start_epoch: int = 0, epochs: int = 3) -> dict[int, list]:
    seen: dict[int, list] = {}

    def step(engine, batch):
        seen.setdefault(engine.state.epoch, []).append((batch["id"].tolist(), batch["x"].clone()))
        torch.rand(5)  # the model's own draws (dropout) between batches

    engine = Engine(step)
    if handler is not None:
        handler.attach(engine)
        handler.attach(engine)  # idempotent
    loader = _noisy_loader()
    if start_epoch:
        engine.load_state_dict({"epoch": start_epoch, "max_epochs": epochs, "epoch_length": len(loader)})
    engine.run(loader, max_epochs=epochs)
    return seen


def test_epoch_seed_handler_makes_each_epoch_a_function_of_seed_and_epoch():
    torch.manual_seed(1)
    full = _epochs(EpochSeedHandler(seed=7))
    torch.manual_seed(2)  # a resumed process: other random states before the epoch starts
    _ = torch.rand(100)
    resumed = _epochs(EpochSeedHandler(seed=7), start_epoch=2)
    assert list(resumed) == [3]
    for (ids, x), (ids_r, x_r) in zip(full[3], resumed[3]):
        assert ids == ids_r and torch.equal(x, x_r)  # same order, same random transform draws
    assert [b[0] for b in full[1]] != [b[0] for b in full[2]]  # each epoch its own order
    other = _epochs(EpochSeedHandler(seed=8))
    assert [b[0] for b in other[3]] != [b[0] for b in full[3]]
    # without the handler the resumed epoch does not repeat the uninterrupted one
    torch.manual_seed(1)
    plain = _epochs(None)
    torch.manual_seed(2)
    _ = torch.rand(100)
    plain_resumed = _epochs(None, start_epoch=2)
    assert [b[0] for b in plain_resumed[3]] != [b[0] for b in plain[3]]
    assert epoch_seed(7, 3) != epoch_seed(7, 2) and 0 <= epoch_seed(7, 3) < 2**32
    with pytest.raises(ValueError, match="seed must be"):
        EpochSeedHandler(seed=-1)
