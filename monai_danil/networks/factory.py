"""Building MONAI classifiers offline, with pretrained weights only from a local file."""

from __future__ import annotations

import logging
import os

import torch
from monai.networks import nets
from monai.networks.utils import copy_model_state
from torch import nn

__all__ = ["create_network", "load_local_weights", "NETWORK_NAMES"]

logger = logging.getLogger(__name__)

_EFFICIENTNETS = tuple(f"efficientnet-b{i}" for i in range(8))
NETWORK_NAMES: tuple[str, ...] = ("densenet121", "resnet18", "resnet34", "resnet50", "seresnet50") + _EFFICIENTNETS


def load_local_weights(network: nn.Module, weights: str | os.PathLike, strict_backbone: bool = True) -> nn.Module:
    """Copy the tensors of a local state-dict file into ``network`` where names and shapes match.

    A classification head of another class count (an ImageNet checkpoint for a 5-class task) is
    left as initialised. Nothing is ever downloaded.

    Args:
        network: the network to fill in place.
        weights: path of a file saved with ``torch.save(state_dict)`` (or a dict holding one under
            ``"state_dict"``, ``"model"`` or ``"network"``); loaded with ``weights_only=True``.
        strict_backbone: raise when fewer than half of the network's tensors were filled, a sign of
            a checkpoint of another architecture. Default ``True``.

    Raises:
        FileNotFoundError: when ``weights`` does not exist.
        ValueError: when the file holds no state dict, or (``strict_backbone``) matches too little.
    """
    path = os.fspath(weights)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"pretrained weights file not found: {path}")
    state = torch.load(path, map_location="cpu", weights_only=True)
    for key in ("state_dict", "model", "network"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{path} does not hold a state dict of tensors.")
    _, updated, unchanged = copy_model_state(network, state, inplace=True)
    total = len(updated) + len(unchanged)
    if strict_backbone and len(updated) < total / 2:
        raise ValueError(
            f"{path} filled only {len(updated)} of {total} tensors of {type(network).__name__}: "
            "is it a checkpoint of this architecture?"
        )
    logger.info("loaded %d of %d tensors from %s; kept as initialised: %s", len(updated), total, path, unchanged)
    return network


def create_network(
    name: str,
    num_classes: int,
    in_channels: int = 3,
    spatial_dims: int = 2,
    weights: str | os.PathLike | None = None,
    **kwargs: object,
) -> nn.Module:
    """A MONAI classifier by name, never downloading weights.

    MONAI's ``EfficientNetBN`` defaults to ``pretrained=True`` (an internet download); here every
    network is built with ``pretrained=False`` and, if ``weights`` is given, filled from that file.

    Args:
        name: one of :data:`NETWORK_NAMES`.
        num_classes: number of output classes.
        in_channels: input channels (3 for RGB). Default 3.
        spatial_dims: 2 for images. Default 2.
        weights: optional local state-dict file (see :func:`load_local_weights`). Default ``None``.
        kwargs: passed to the MONAI constructor (e.g. ``conv1_t_stride=1`` for small ResNet inputs).

    Raises:
        ValueError: for an unknown ``name``.

    Example:
        >>> net = create_network("resnet18", num_classes=5)
        >>> net(torch.rand(2, 3, 32, 32)).shape
        torch.Size([2, 5])
    """
    key = name.lower()
    if key == "densenet121":
        network = nets.DenseNet121(
            spatial_dims=spatial_dims, in_channels=in_channels, out_channels=num_classes, pretrained=False, **kwargs
        )
    elif key in ("resnet18", "resnet34", "resnet50"):
        network = getattr(nets, key)(
            spatial_dims=spatial_dims, n_input_channels=in_channels, num_classes=num_classes, pretrained=False, **kwargs
        )
    elif key == "seresnet50":
        network = nets.SEResNet50(
            spatial_dims=spatial_dims, in_channels=in_channels, num_classes=num_classes, pretrained=False, **kwargs
        )
    elif key in _EFFICIENTNETS:
        network = nets.EfficientNetBN(
            key, spatial_dims=spatial_dims, in_channels=in_channels, num_classes=num_classes, pretrained=False, **kwargs
        )
    else:
        raise ValueError(f"unknown network {name!r}; choose one of {', '.join(NETWORK_NAMES)}.")
    if weights is not None:
        load_local_weights(network, weights)
    return network
