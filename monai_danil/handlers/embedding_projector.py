"""Validation features, labels and thumbnails for TensorBoard's embedding projector, read during validation."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from monai.engines.utils import IterationEvents
from monai.utils import CommonKeys, IgniteInfo, convert_to_tensor, min_version, optional_import
from torch import nn

from monai_danil.metrics import class_indices
from monai_danil.networks import NeuronTap

from .figures import load_display_image, square_thumbnail
from .summary_writer import LazyTensorBoardHandler
from .utils import attach_once, attach_round, check_class_names, check_int, datalist_sources, is_rank_zero

Events, _ = optional_import("ignite.engine", IgniteInfo.OPT_IMPORT_VERSION, min_version, "Events")
if TYPE_CHECKING:  # annotations only
    from ignite.engine import Engine
    from torch.utils.tensorboard import SummaryWriter

__all__ = ["EmbeddingProjectorHandler"]


def _tensor_thumbnails(images: torch.Tensor, size: int) -> list[np.ndarray]:
    """``(size, size, 3)`` uint8 thumbnails of network inputs ``(B, C, H, W)``, each scaled to its own range."""
    images = images.detach().float()
    images = images[:, :3] if images.shape[1] >= 3 else images[:, :1].expand(-1, 3, -1, -1)
    low = images.amin(dim=(1, 2, 3), keepdim=True)
    span = images.amax(dim=(1, 2, 3), keepdim=True) - low
    # a constant image has span 0 and becomes black, with no branch that would wait for the device
    scaled = (images - low) / span.clamp_min(torch.finfo(images.dtype).tiny)
    pixels = (scaled * 255.0).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
    return [square_thumbnail(np.ascontiguousarray(image), size) for image in pixels]


class EmbeddingProjectorHandler(LazyTensorBoardHandler):
    """Writes validation features, labels and thumbnails for TensorBoard's embedding projector.

    During the evaluator's own validation pass (no second pass over the data) it reads the neurons
    DANIL mines in with a :class:`~monai_danil.networks.NeuronTap`, hooked on the network only
    while the evaluator runs, and keeps, at ``FORWARD_COMPLETED``, the features, labels and
    predicted classes of the round's first ``max_samples`` images on their device. It writes
    ``SummaryWriter.add_embedding`` with per-sample metadata (true class, predicted class, id) and
    thumbnails: at the end of training (the attached engine's ``COMPLETED``, the latest round) and,
    if ``interval > 0``, after every round whose epoch (the trainer's, as MONAI's
    ``ValidationHandler`` passes it) is a multiple of ``interval``. This writes
    ``projector_config.pbtxt`` into the log folder and the tensors, ``metadata.tsv`` and
    ``sprite.png`` into ``{step:05d}/{tag}/`` beside it.

    Thumbnails are read from the files of ``datalist`` by the batch's sample id, in their true
    colours and orientation (when writing); an image without one is shown as the network's input,
    scaled to its own range (copied to the host as it is collected; it may look transposed if the
    pipeline transposes). Under ``torch.distributed`` only rank 0 collects and writes, its own
    share of the validation images.

    Args:
        network: the trained classifier (possibly DDP-wrapped), the evaluator's network.
        class_names: class names, index = class number.
        evaluator: the evaluator whose rounds are read, when the handler is attached to the trainer
            (``train#handlers``: it then also writes at the end of training). Default ``None``: the
            engine it is attached to, which is then the evaluator.
        datalist: the validation datalist (image path and integer id per dict) for thumbnails.
            Default ``None``: thumbnails from the network's inputs.
        summary_writer: a shared ``SummaryWriter``; default ``None``: one of this handler's own.
        log_dir: where its own writer writes. Default ``"./runs"``.
        interval: also write every ``interval`` epochs; 0 writes at the end only. Default 0.
        layer: module name of the neurons; default: the pooled features of a known MONAI network,
            as the mining uses (see :class:`~monai_danil.networks.NeuronTap`).
        max_samples: at most this many samples per round (the loader's first). Default 2000.
        thumbnail_size: side of the square thumbnails. Default 32.
        image_key: datalist key of the image path. Default ``"image"``.
        id_key: key of the sample id, in the batch and in the datalist. Default ``"id"``.
        loader: ``source -> (H, W, 3) uint8`` for datalist entries that are not image files.
            Default ``None``: :func:`~monai_danil.handlers.figures.load_display_image`.
        tag: the embedding's name in the projector. Default ``"val_features"``.

    Raises:
        ValueError: for a bad ``interval``/``max_samples``/``thumbnail_size``, fewer than two class
            names, a datalist row without the keys, or an unknown ``layer``; when writing, for a
            label that is not a class index.

    Example:
        >>> projector = EmbeddingProjectorHandler(net, names, evaluator, datalist=val_files, summary_writer=writer)
        >>> projector.attach(trainer)
    """

    def __init__(
        self,
        network: nn.Module,
        class_names: Sequence[str],
        evaluator: Engine | None = None,
        datalist: Sequence[Mapping[str, Any]] | None = None,
        summary_writer: SummaryWriter | None = None,
        log_dir: str = "./runs",
        interval: int = 0,
        layer: str | None = None,
        max_samples: int = 2000,
        thumbnail_size: int = 32,
        image_key: str = "image",
        id_key: str = "id",
        loader: Callable[[Any], np.ndarray] | None = None,
        tag: str = "val_features",
    ) -> None:
        super().__init__(summary_writer, log_dir)
        self.class_names = check_class_names(class_names)
        self.evaluator = evaluator
        self.sources = datalist_sources(datalist, image_key, id_key) if datalist is not None else None
        self.interval = check_int(interval, "interval", minimum=0)
        self.tap = NeuronTap(network, layer=layer)
        self.max_samples = check_int(max_samples, "max_samples")
        self.thumbnail_size = check_int(thumbnail_size, "thumbnail_size")
        self.id_key = id_key
        self.loader = loader or load_display_image
        self.tag = tag
        self.written_steps: list[int] = []
        self.last_round: dict[str, Any] | None = None
        self._round: dict[str, Any] | None = None

    def attach(self, engine: Engine) -> None:
        """Collect during the evaluator's rounds, write at ``engine``'s ``COMPLETED`` (idempotent)."""
        evaluator = self.evaluator if self.evaluator is not None else engine
        attach_round(evaluator, self.start_round, self.collect, self.end_round, IterationEvents.FORWARD_COMPLETED)
        attach_once(engine, [(Events.COMPLETED, self.write_last)])

    def start_round(self, engine: Engine) -> None:
        """Evaluator's ``EPOCH_STARTED``: hook the network (rank 0) and start an empty round."""
        self._round = None
        if is_rank_zero():
            self.tap.attach()
            self._round = {"epoch": engine.state.epoch, "features": [], "labels": [], "predictions": [],
                           "ids": [], "thumbnails": []}

    def collect(self, engine: Engine) -> None:
        """Evaluator's ``FORWARD_COMPLETED``: keep the batch's features, labels and predictions (no sync)."""
        features = self.tap.pop()
        round_ = self._round
        if round_ is None or features is None:
            return
        room = self.max_samples - len(round_["ids"])
        if room <= 0:
            return
        output = engine.state.output
        take = min(room, features.shape[0])
        round_["features"].append(features[:take].detach().float())
        logits = convert_to_tensor(output[CommonKeys.PRED], track_meta=False)
        round_["predictions"].append(logits[:take].argmax(dim=1))
        round_["labels"].append(convert_to_tensor(output[CommonKeys.LABEL], track_meta=False)[:take])
        batch = engine.state.batch
        ids: list[int | None] = (
            [int(i) for i in torch.as_tensor(batch[self.id_key]).reshape(-1)[:take]]
            if isinstance(batch, Mapping) and self.id_key in batch
            else [None] * take
        )
        round_["ids"] += ids
        from_files = [self.sources is not None and i in self.sources for i in ids]
        if all(from_files):
            round_["thumbnails"] += [None] * take
            return
        inputs = convert_to_tensor(output[CommonKeys.IMAGE], track_meta=False)[:take]
        drawn = _tensor_thumbnails(inputs, self.thumbnail_size)
        round_["thumbnails"] += [None if file else image for file, image in zip(from_files, drawn)]

    def end_round(self, engine: Engine) -> None:
        """Evaluator's ``EPOCH_COMPLETED``: unhook, keep the round, and write it every ``interval`` epochs."""
        self.tap.detach()
        if self._round is None or not self._round["ids"]:
            return
        self.last_round, self._round = self._round, None
        if self.interval and self.last_round["epoch"] % self.interval == 0:
            self.write(self.last_round)

    def write_last(self, engine: Engine) -> None:
        """``COMPLETED``: write the latest round, unless it was written already."""
        if self.last_round is not None:
            self.write(self.last_round)

    def write(self, round_: Mapping[str, Any]) -> None:
        """Write one collected round as the embedding of its epoch (rank 0; each epoch once)."""
        step = round_["epoch"]
        if not is_rank_zero() or step in self.written_steps:
            return
        num_classes = len(self.class_names)
        labels = class_indices(torch.cat(round_["labels"]), num_classes).tolist()
        predictions = torch.cat(round_["predictions"]).tolist()
        size = self.thumbnail_size
        thumbnails = [
            square_thumbnail(self.loader(self.sources[i]), size) if image is None else image
            for i, image in zip(round_["ids"], round_["thumbnails"])
        ]
        metadata = [
            [self.class_names[y], self.class_names[p], "" if i is None else i]
            for y, p, i in zip(labels, predictions, round_["ids"])
        ]
        self.writer.add_embedding(
            torch.cat(round_["features"]).cpu(),
            metadata=metadata,
            label_img=torch.from_numpy(np.stack(thumbnails)).permute(0, 3, 1, 2).float() / 255.0,
            global_step=step,
            tag=self.tag,
            metadata_header=["class", "predicted", "id"],
        )
        self.writer.flush()
        self.written_steps.append(step)
