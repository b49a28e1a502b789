"""Networks: reading a classifier's neurons, and building MONAI classifiers offline."""

from __future__ import annotations

from .factory import NETWORK_NAMES, create_network, load_local_weights
from .neurons import TAP_SOURCES, NeuronTap, default_layers, unwrap_network

__all__ = ["NETWORK_NAMES", "TAP_SOURCES", "NeuronTap", "create_network", "default_layers", "load_local_weights", "unwrap_network"]
