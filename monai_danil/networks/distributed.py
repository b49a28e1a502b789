"""Preparing a network for ``DistributedDataParallel``: batch norms synchronised across ranks, on request."""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["sync_batchnorm"]


def sync_batchnorm(network: nn.Module, enabled: bool, device: torch.device | str) -> nn.Module:
    """``network`` with its batch norms converted to ``torch.nn.SyncBatchNorm`` when ``enabled``.

    With small per-rank batches each rank's batch statistics are noisy; ``SyncBatchNorm`` computes
    them over the global batch. PyTorch supports it on CUDA only (``DistributedDataParallel`` refuses
    it on CPU modules), so asking for it elsewhere is an error, raised here before any work.

    Args:
        network: the network, before it is moved and wrapped.
        enabled: convert (``True``) or return ``network`` unchanged (``False``).
        device: the device the network will run on.

    Returns:
        The converted network (a new module tree sharing the weights) or ``network``.

    Raises:
        ValueError: when ``enabled`` and ``device`` is not a CUDA device.

    Example:
        >>> net = sync_batchnorm(net, enabled=True, device="cuda:0")  # doctest: +SKIP
    """
    if not enabled:
        return network
    if torch.device(device).type != "cuda":
        raise ValueError(
            f"sync_batchnorm needs CUDA devices (the nccl backend); this run is on {torch.device(device)}. "
            "Leave it false on the CPU."
        )
    return nn.SyncBatchNorm.convert_sync_batchnorm(network)
