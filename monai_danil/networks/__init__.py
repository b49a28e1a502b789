"""Networks: reading a classifier's neurons, building MONAI classifiers offline, preparing them for DDP."""

from __future__ import annotations

from .distributed import sync_batchnorm
from .factory import NETWORK_NAMES, create_network, load_local_weights
from .neurons import TAP_SOURCES, NeuronTap, default_layers, unwrap_network

__all__ = [
    "NETWORK_NAMES",
    "TAP_SOURCES",
    "NeuronTap",
    "create_network",
    "default_layers",
    "load_local_weights",
    "sync_batchnorm",
    "unwrap_network",
]
