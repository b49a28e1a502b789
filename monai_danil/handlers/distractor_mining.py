"""The ignite handler that runs DANIL's mining inside a MONAI ``SupervisedTrainer``."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
from monai.engines.utils import IterationEvents
from monai.utils import CommonKeys, IgniteInfo, min_version, optional_import
from torch import nn

from monai_danil.losses import DistractorAwareLoss
from monai_danil.mining import DistractorBatch, DistractorMiner, ResponseMapBatch, ResponseMapMiner
from monai_danil.networks import NeuronTap

if TYPE_CHECKING:
    from ignite.engine import Engine
else:
    Engine, _ = optional_import(
        "ignite.engine", IgniteInfo.OPT_IMPORT_VERSION, min_version, "Engine", as_type="decorator"
    )

__all__ = ["DistractorMiningHandler", "MINING_FIGURES"]

# the keys the handler writes into ``engine.state.output`` before MONAI decollates it
MINING_FIGURES = ("danil_distance", "danil_fraction", "danil_from_bank", "danil_lambda", "danil_ce", "danil_da")


class DistractorMiningHandler:
    """Mines each training batch's distractors and feeds them to the :class:`DistractorAwareLoss`.

    Attached to a MONAI ``SupervisedTrainer`` (no subclass), it does per iteration:

    - ``FORWARD_COMPLETED``: reads the tapped neurons (a :class:`~monai_danil.networks.NeuronTap`
      it installs on ``network``), mines with its :class:`~monai_danil.mining.DistractorMiner`, and
      hands the result and the current ``lambda`` to the loss, which the trainer calls next;
    - ``LOSS_COMPLETED``: adds the batch to the memory bank (after the loss, so a batch is never
      its own bank candidate; rows with a NaN or Inf, and every row of a batch whose loss is not
      finite, are kept out of the candidates) and publishes the mining figures.

    The figures go into ``engine.state.output`` as detached 0-d tensors under
    ``danil_distance`` (mean distance to the distractor), ``danil_fraction`` (part of the batch
    with a distractor), ``danil_from_bank``, ``danil_lambda``, ``danil_ce`` and ``danil_da`` (the
    two parts of the loss). They are written before MONAI decollates the output at
    ``MODEL_COMPLETED``, so ``StatsHandler``/``TensorBoardStatsHandler`` read them with
    ``output_transform=from_engine_dict(["loss", "danil_distance", ...])``. The mining and this
    handler never wait for the device (no ``.item()``, no Python loop over samples); the loggers
    do: MONAI converts each logged 0-d tensor with ``.item()`` at ``ITERATION_COMPLETED``, so the
    bundles' ``loss`` and six figures are seven small device-to-host copies per iteration, of which
    the first (``loss``, logged without DANIL too) waits for the step to finish and the other six
    copy 4 bytes each from a finished step. Log fewer keys (or set the loggers'
    ``iteration_log`` to an interval) to drop them.

    ``lambda`` ramps linearly from 0 to ``lambda_max`` over the first ``warmup_epochs`` epochs
    (counted in iterations; 0 means no ramp): features of an untrained network carry no meaning.

    The handler is stateful: give it to ``CheckpointSaver``/``CheckpointLoader`` in ``save_dict``/
    ``load_dict`` to keep the memory bank (tensors and plain integers only).

    Args:
        network: the trained network (the trainer's ``network``, possibly DDP-wrapped).
        loss: the trainer's loss function, a :class:`DistractorAwareLoss`.
        miner: the miner (and its bank); default ``DistractorMiner()`` with its defaults. A
            :class:`~monai_danil.mining.ResponseMapMiner` selects the paper's second reading (the
            responses to the true and the most confusing class; the tap then reads the activation map
            or the input, and there is no bank).
        layer: module name of the tapped neurons; default: the pooled features of a known MONAI
            network (see :class:`~monai_danil.networks.NeuronTap`).
        classifier: module name of the final ``nn.Linear``; default: the known MONAI head.
        lambda_max: weight of the distractor-aware term after warm-up. Default 0.5.
        warmup_epochs: length of the linear ramp, in epochs (fractions allowed). Default 0.
        id_key: batch key holding integer sample ids (e.g. the manifest row), so a distractor from
            the bank can be traced to its image; missing key: ids are -1. Default ``"id"``.

    Raises:
        TypeError: when ``loss`` is not a ``DistractorAwareLoss``.
        ValueError: for a negative ``lambda_max`` or ``warmup_epochs``.

    Example:
        >>> import torch
        >>> from monai.data import DataLoader
        >>> from monai.engines import SupervisedTrainer
        >>> from monai.networks.nets import DenseNet121
        >>> net = DenseNet121(spatial_dims=2, in_channels=3, out_channels=2)
        >>> loss = DistractorAwareLoss()
        >>> handler = DistractorMiningHandler(network=net, loss=loss, lambda_max=0.5, warmup_epochs=2)
        >>> data = [{"image": torch.rand(3, 32, 32), "label": i % 2, "id": i} for i in range(8)]
        >>> trainer = SupervisedTrainer(
        ...     device=torch.device("cpu"), max_epochs=1, train_data_loader=DataLoader(data, batch_size=4),
        ...     network=net, optimizer=torch.optim.SGD(net.parameters(), lr=0.01), loss_function=loss,
        ...     train_handlers=[handler])  # or handler.attach(trainer)
        >>> trainer.run()
        >>> handler.miner.bank.count  # both batches' features are in the memory bank
        8
    """

    def __init__(
        self,
        network: nn.Module,
        loss: DistractorAwareLoss,
        miner: DistractorMiner | ResponseMapMiner | None = None,
        layer: str | None = None,
        classifier: str | None = None,
        lambda_max: float = 0.5,
        warmup_epochs: float = 0.0,
        id_key: str | None = "id",
    ) -> None:
        if not isinstance(loss, DistractorAwareLoss):
            raise TypeError(f"loss must be a DistractorAwareLoss, got {type(loss).__name__}.")
        if lambda_max < 0:
            raise ValueError(f"lambda_max must be >= 0, got {lambda_max}.")
        if warmup_epochs < 0:
            raise ValueError(f"warmup_epochs must be >= 0, got {warmup_epochs}.")
        self.loss = loss
        self.miner = miner if miner is not None else DistractorMiner()
        # the response-map reading reads the pooled activation map or the input, not the pooled features
        source = self.miner.source if isinstance(self.miner, ResponseMapMiner) else "features"
        self.tap = NeuronTap(network, layer=layer, classifier=classifier, source=source)
        self.lambda_max = float(lambda_max)
        self.warmup_epochs = float(warmup_epochs)
        self.id_key = id_key
        self.last_batch: DistractorBatch | ResponseMapBatch | None = None
        self._pending: tuple[torch.Tensor, torch.Tensor, torch.Tensor | None] | None = None

    def attach(self, engine: Engine) -> None:
        """Install the neuron tap and register on the trainer's iteration events (idempotent)."""
        self.tap.attach()
        if not engine.has_event_handler(self.mine, IterationEvents.FORWARD_COMPLETED):
            engine.add_event_handler(IterationEvents.FORWARD_COMPLETED, self.mine)
        if not engine.has_event_handler(self.update, IterationEvents.LOSS_COMPLETED):
            engine.add_event_handler(IterationEvents.LOSS_COMPLETED, self.update)

    def lambda_at(self, engine: Engine) -> float:
        """``lambda`` for the current iteration (host arithmetic on ignite's counters)."""
        if self.warmup_epochs <= 0:
            return self.lambda_max
        epoch_length = engine.state.epoch_length or 1
        progress = engine.state.iteration / (self.warmup_epochs * epoch_length)
        return self.lambda_max * min(1.0, progress)

    def _ids(self, engine: Engine, batch_size: int, device: torch.device) -> torch.Tensor | None:
        batch = engine.state.batch
        if self.id_key is None or not isinstance(batch, dict) or self.id_key not in batch:
            return None
        ids = torch.as_tensor(batch[self.id_key])
        if ids.numel() != batch_size or ids.is_floating_point():
            raise ValueError(
                f"batch key {self.id_key!r} must hold one integer id per sample, got {tuple(ids.shape)} "
                f"{ids.dtype} for a batch of {batch_size}."
            )
        return ids.reshape(-1).to(device, non_blocking=True)

    def mine(self, engine: Engine) -> None:
        """``FORWARD_COMPLETED``: mine and hand the distractors to the loss."""
        features = self.tap.pop()
        if features is None:
            raise RuntimeError(
                f"the tapped layer {self.tap.layer!r} did not run in this forward pass: is it part of the "
                "trainer's network?"
            )
        output = engine.state.output
        logits, labels = output[CommonKeys.PRED], output[CommonKeys.LABEL]
        if labels.ndim == 2 and labels.shape[1] > 1:  # one-hot labels
            labels = labels.argmax(dim=1)
        labels = labels.reshape(-1)
        ids = self._ids(engine, features.shape[0], features.device)
        batch = self.miner.mine(features, logits, labels, self.tap.classifier_weight, ids)
        lambda_da = self.lambda_at(engine)
        self.loss.set_distractors(batch, lambda_da)
        self.last_batch = batch
        if isinstance(self.miner, DistractorMiner):  # the response maps keep no bank
            self._pending = (features.detach(), batch.labels, ids)
        for name, value in batch.figures().items():
            output[f"danil_{name}"] = value
        output["danil_lambda"] = torch.tensor(lambda_da)

    def update(self, engine: Engine) -> None:
        """``LOSS_COMPLETED``: publish the loss parts and add the batch to the memory bank.

        A batch whose loss is not finite (the step AMP's ``GradScaler`` skips) enters the bank as
        invalid rows, never candidates; the check is a device tensor, not a host sync.
        """
        output = engine.state.output
        for name, value in self.loss.last_components.items():
            output[f"danil_{name}"] = value.mean() if value.ndim else value
        if self._pending is None:
            return
        features, labels, ids = self._pending
        self._pending = None
        loss = output.get(CommonKeys.LOSS) if isinstance(output, dict) else None
        valid = torch.isfinite(loss.detach()).all() if isinstance(loss, torch.Tensor) else None
        self.miner.update(features, labels, ids, valid)

    def state_dict(self) -> dict[str, Any]:
        """The miner's bank (tensors and plain integers)."""
        return {"miner": self.miner.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore the bank as saved; it is not reallocated at the next step."""
        self.miner.load_state_dict(state["miner"])

