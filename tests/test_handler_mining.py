"""DistractorMiningHandler inside a real MONAI SupervisedTrainer on tiny data."""

from __future__ import annotations

import pytest
import torch
from monai.data import DataLoader
from monai.engines import SupervisedTrainer
from monai.handlers import CheckpointLoader, CheckpointSaver, StatsHandler, TensorBoardStatsHandler
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from monai_danil.handlers import MINING_FIGURES, DistractorMiningHandler, from_engine_dict
from monai_danil.losses import DistractorAwareLoss
from monai_danil.mining import DistractorMiner
from monai_danil.networks import create_network

BATCH = 8


class RecordingLoss(DistractorAwareLoss):
    """The real loss, remembering what it was given (to check the trainer's call sees the mining)."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.seen: list[tuple[int, float, torch.Tensor]] = []

    def forward(self, input, target, distractors=None, lambda_da=1.0):
        if self._pending is not None:
            batch, lam = self._pending
            self.seen.append((batch.batch_size, lam, batch.distractor_id.clone()))
        return super().forward(input, target, distractors, lambda_da)


def _loader(n: int = 32, seed: int = 0) -> DataLoader:
    g = torch.Generator().manual_seed(seed)
    data = [
        {"image": torch.rand(3, 16, 16, generator=g) + 0.3 * (i % 3), "label": torch.tensor(i % 3), "id": i}
        for i in range(n)
    ]
    return DataLoader(data, batch_size=BATCH, shuffle=True, drop_last=True, generator=g)


def _trainer(handler_kwargs=None, loss=None, epochs=2, extra_handlers=(), net=None):
    torch.manual_seed(0)
    net = net or create_network("resnet18", 3)
    loss = loss or RecordingLoss(margin=1.2)
    miner = DistractorMiner(bank_size=16)
    handler = DistractorMiningHandler(net, loss, miner, **(handler_kwargs or {}))
    trainer = SupervisedTrainer(
        device=torch.device("cpu"),
        max_epochs=epochs,
        train_data_loader=_loader(),
        network=net,
        optimizer=torch.optim.Adam(net.parameters(), 1e-3),
        loss_function=loss,
        train_handlers=[handler, *extra_handlers],
    )
    return trainer, handler, loss, net


def test_loss_sees_mined_distractors_and_bank_fills():
    trainer, handler, loss, _ = _trainer({"lambda_max": 0.5, "warmup_epochs": 1})
    trainer.run()
    iterations = trainer.state.iteration
    assert iterations == 8 and len(loss.seen) == iterations
    # lambda ramps linearly over the first epoch (4 iterations), then stays at lambda_max
    assert [round(s[1], 4) for s in loss.seen] == [0.125, 0.25, 0.375, 0.5, 0.5, 0.5, 0.5, 0.5]
    assert all(s[0] == BATCH for s in loss.seen)
    # dataset ids flow through the miner: distractors are real sample ids, bank ones from earlier batches
    assert all(((s[2] >= 0) & (s[2] < 32)).all() for s in loss.seen)
    assert handler.miner.bank.count == 16
    assert set(handler.miner.bank.entries()[2].tolist()) <= set(range(32))
    assert handler.last_batch.from_bank.any()


def test_figures_reach_stats_and_tensorboard(tmp_path, capsys):
    tb = TensorBoardStatsHandler(
        log_dir=str(tmp_path), tag_name="train", output_transform=from_engine_dict(["loss", *MINING_FIGURES])
    )
    stats = StatsHandler(name="mining_test", output_transform=from_engine_dict(["loss", *MINING_FIGURES]))
    trainer, _, _, _ = _trainer({"lambda_max": 0.3}, extra_handlers=[stats, tb])
    trainer.run()
    printed = capsys.readouterr()
    assert "danil_distance: " in printed.out + printed.err and "danil_lambda: 0.3000" in printed.out + printed.err
    acc = EventAccumulator(str(tmp_path))
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    assert {"loss", *MINING_FIGURES} <= tags
    fraction = [e.value for e in acc.Scalars("danil_fraction")]
    assert len(fraction) == trainer.state.iteration and all(0.0 <= v <= 1.0 for v in fraction)
    assert all(0.0 <= e.value <= 2**0.5 + 1e-6 for e in acc.Scalars("danil_distance"))
    # the logged loss is the sum of its logged parts
    for total, ce, da in zip(acc.Scalars("loss"), acc.Scalars("danil_ce"), acc.Scalars("danil_da")):
        assert total.value == pytest.approx(ce.value + 0.3 * da.value, rel=1e-4, abs=1e-6)


def test_checkpoint_restores_the_handler(tmp_path):
    trainer, handler, _, net = _trainer(epochs=1)
    saver = CheckpointSaver(
        save_dir=str(tmp_path), save_dict={"network": net, "danil": handler}, save_final=True, final_filename="ckpt.pt"
    )
    saver.attach(trainer)
    trainer.run()
    saved_features = handler.miner.bank.features.clone()
    saved_ids = handler.miner.bank.ids.clone()

    restored_trainer, restored_handler, _, restored_net = _trainer(epochs=1)
    assert restored_handler.miner.bank.entries() is None
    loader = CheckpointLoader(
        load_path=str(tmp_path / "ckpt.pt"), load_dict={"network": restored_net, "danil": restored_handler}
    )
    loader(restored_trainer)  # what CheckpointLoader does at STARTED (checkpoints load with weights_only=True)
    bank = restored_handler.miner.bank
    assert bank.count == 16 and torch.equal(bank.features, saved_features) and torch.equal(bank.ids, saved_ids)
    storage = bank.features.data_ptr()
    restored_trainer.run()
    assert restored_handler.miner.bank.features.data_ptr() == storage  # not reallocated after the restore


def test_attach_twice_registers_once_and_bad_setup_is_clear():
    trainer, handler, loss, _ = _trainer(epochs=1)
    handler.attach(trainer)
    trainer.run()
    assert len(loss.seen) == trainer.state.iteration
    with pytest.raises(TypeError, match="DistractorAwareLoss"):
        DistractorMiningHandler(create_network("resnet18", 2), torch.nn.CrossEntropyLoss())
    with pytest.raises(ValueError, match="lambda_max"):
        DistractorMiningHandler(create_network("resnet18", 2), DistractorAwareLoss(), lambda_max=-1)


def test_a_step_that_amp_skips_leaves_no_candidate_in_the_bank():
    """A forced non-finite loss under AMP on the CPU: GradScaler skips the step, and its batch never mines."""
    from ignite.engine import Events

    torch.manual_seed(0)
    net = create_network("resnet18", 3)
    loss = RecordingLoss(margin=1.2)
    handler = DistractorMiningHandler(net, loss, DistractorMiner(bank_size=16))
    poisoned = 3

    def loss_function(pred, label):
        value = loss(pred, label)
        return value * float("inf") if trainer.state.iteration == poisoned else value

    trainer = SupervisedTrainer(
        device=torch.device("cpu"), max_epochs=1, train_data_loader=_loader(), network=net,
        optimizer=torch.optim.Adam(net.parameters(), 1e-3), loss_function=loss_function, amp=True,
        train_handlers=[handler],
    )
    seen: dict[int, dict] = {}

    @trainer.on(Events.STARTED)
    def _cpu_scaler(engine):
        # Trainer.run builds a CUDA GradScaler for amp=True, which disables itself without CUDA; the CPU one is real
        engine.scaler = torch.amp.GradScaler("cpu")

    @trainer.on(Events.ITERATION_STARTED)
    def _before(engine):
        seen[engine.state.iteration] = {
            "weights": [p.detach().clone() for p in net.parameters()], "ids": engine.state.batch["id"].tolist()
        }

    @trainer.on(Events.ITERATION_COMPLETED)
    def _after(engine):
        record = seen[engine.state.iteration]
        record["loss"] = engine.state.output[0]["loss"]  # decollated: one dict per sample
        record["stepped"] = any(not torch.equal(a, b) for a, b in zip(record["weights"], net.parameters()))
        record["mask"] = handler.miner.bank.entry_mask().tolist()

    trainer.run()
    assert trainer.state.iteration == 4
    assert not seen[poisoned]["stepped"] and seen[poisoned - 1]["stepped"]  # the GradScaler skipped that step
    assert trainer.scaler.get_scale() < 65536.0  # and lowered its scale, as on a GPU
    assert seen[poisoned]["mask"] == [False] * 8 + [True] * 8  # iteration 3 took slots 0-7 (the ring), all invalid
    # the next step mines: none of the skipped batch's images is a distractor, its loss is finite
    last_ids = loss.seen[poisoned][2].tolist()
    assert not set(last_ids) & set(seen[poisoned]["ids"]) and all(i >= 0 for i in last_ids)
    assert seen[poisoned]["loss"] == float("inf") and torch.isfinite(torch.tensor(seen[poisoned + 1]["loss"]))
