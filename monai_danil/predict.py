"""Running a trained network over a data loader: softmax probabilities in loader order."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

__all__ = ["Predictions", "predict"]


@dataclass
class Predictions:
    """What :func:`predict` returns, one row per image in loader order.

    Attributes:
        ids: (N,) the batches' integer ``id`` (the manifest row), -1 where a batch had none.
        labels: (N,) class indices, or ``None`` when the batches carried no labels.
        probs: (N, C) softmax probabilities, float64.
    """

    ids: np.ndarray
    labels: np.ndarray | None
    probs: np.ndarray


@torch.no_grad()
def predict(
    network: torch.nn.Module,
    loader: Iterable[Mapping[str, Any]],
    device: torch.device | str,
    inferer: Callable[[torch.Tensor, torch.nn.Module], torch.Tensor] | None = None,
    image_key: str = "image",
    label_key: str = "label",
    id_key: str = "id",
) -> Predictions:
    """Softmax probabilities of ``network`` over every batch of ``loader``, in eval mode.

    Args:
        network: the classifier; put in eval mode here.
        loader: yields dict batches holding ``image_key`` and, optionally, ``label_key`` and ``id_key``.
        device: where the images go.
        inferer: a MONAI inferer called as ``inferer(images, network)``. Default ``None``: ``network(images)``.
        image_key: batch key of the images. Default ``"image"``.
        label_key: batch key of the class indices; labels are returned only if every batch has them.
            Default ``"label"``.
        id_key: batch key of the integer sample ids. Default ``"id"``.

    Returns:
        :class:`Predictions`.

    Raises:
        ValueError: when the loader yields no batch.

    Example:
        >>> net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 3))
        >>> out = predict(net, [{"image": torch.rand(2, 1, 2, 2), "label": torch.tensor([0, 2])}], "cpu")
        >>> out.probs.shape, out.labels.tolist()
        ((2, 3), [0, 2])
    """
    network.eval()
    ids, labels, probs = [], [], []
    with_labels = True
    for batch in loader:
        images = batch[image_key].to(device)
        logits = inferer(images, network) if inferer is not None else network(images)
        probs.append(torch.softmax(logits.float(), dim=1).cpu())
        count = len(logits)
        ids.append(torch.as_tensor(batch[id_key]).reshape(-1).cpu() if id_key in batch else torch.full((count,), -1))
        if with_labels and label_key in batch:
            labels.append(torch.as_tensor(batch[label_key]).reshape(-1).cpu())
        else:
            with_labels = False
    if not probs:
        raise ValueError("the data loader yielded no batch: nothing to predict.")
    return Predictions(
        ids=torch.cat(ids).long().numpy(),
        labels=torch.cat(labels).long().numpy() if with_labels else None,
        probs=torch.cat(probs).double().numpy(),
    )
