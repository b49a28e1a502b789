"""A memory bank of recent samples' neurons: a preallocated ring buffer (torch only)."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

__all__ = ["MemoryBank"]


class MemoryBank:
    """Detached, L2-normalised features of recent samples, with their labels and sample ids.

    A ring buffer in the manner of pytorch-metric-learning's ``CrossBatchMemory``: tensors are
    allocated once (at the first update, when the feature size is known, or by
    :meth:`load_state_dict`) and written at a moving index modulo ``size``. Slots fill from 0
    upwards, so the filled entries are always the first :attr:`count` rows and an unfilled slot is
    never a candidate. The pointer and count are host integers: reading the bank never synchronises
    with the device.

    A row that is not finite (a NaN or Inf feature, from an overflow under mixed precision) or that
    the caller marks invalid (a batch whose loss was not finite, a step AMP skips) still takes its
    slot, so the pointer moves without reading the device, but it is stored as zeros and
    :meth:`entry_mask` marks it False: the miner never offers it as a candidate.

    Args:
        size: number of slots; 0 disables the bank (in-batch candidates only).

    Raises:
        ValueError: when ``size`` is negative.

    Example:
        >>> bank = MemoryBank(4)
        >>> bank.update(torch.rand(3, 8), torch.tensor([0, 1, 2]), torch.tensor([10, 11, 12]))
        >>> bank.count, bank.features.shape
        (3, torch.Size([4, 8]))
    """

    def __init__(self, size: int) -> None:
        if int(size) < 0:
            raise ValueError(f"bank size must be >= 0, got {size}.")
        self.size = int(size)
        self.features: torch.Tensor | None = None
        self.labels: torch.Tensor | None = None
        self.ids: torch.Tensor | None = None
        # features ** 2, kept beside the features (written with them, not saved) so that mining's
        # neuron-weighted norms need no (size, D) product per step
        self.squared: torch.Tensor | None = None
        self.valid: torch.Tensor | None = None
        self.ptr = 0
        self.count = 0

    def _allocate(self, dim: int, device: torch.device) -> None:
        self.features = torch.zeros(self.size, dim, device=device)
        self.labels = torch.full((self.size,), -1, dtype=torch.long, device=device)
        self.ids = torch.full((self.size,), -1, dtype=torch.long, device=device)
        self.squared = torch.zeros(self.size, dim, device=device)
        self.valid = torch.zeros(self.size, dtype=torch.bool, device=device)

    def to(self, device: torch.device | str) -> MemoryBank:
        """Move the stored tensors (a restored bank arrives on the CPU)."""
        if self.features is not None:
            self.features = self.features.to(device)
            self.labels = self.labels.to(device)  # type: ignore[union-attr]
            self.ids = self.ids.to(device)  # type: ignore[union-attr]
            self.squared = self.squared.to(device)  # type: ignore[union-attr]
            self.valid = self.valid.to(device)  # type: ignore[union-attr]
        return self

    def entries(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None:
        """The filled ``(features, labels, ids)``, or ``None`` while the bank is empty (see :meth:`entry_mask`)."""
        if self.count == 0 or self.features is None:
            return None
        n = self.count
        return self.features[:n], self.labels[:n], self.ids[:n]  # type: ignore[index]

    def squared_entries(self) -> torch.Tensor | None:
        """The filled rows of ``features ** 2`` (kept up to date by :meth:`update`), or ``None`` while empty."""
        if self.count == 0 or self.squared is None:
            return None
        return self.squared[: self.count]

    def entry_mask(self) -> torch.Tensor | None:
        """(count,) bool over :meth:`entries`: False for a row that must never be a candidate, or ``None`` while empty."""
        if self.count == 0 or self.valid is None:
            return None
        return self.valid[: self.count]

    @torch.no_grad()
    def update(
        self, features: torch.Tensor, labels: torch.Tensor, ids: torch.Tensor, valid: torch.Tensor | None = None
    ) -> None:
        """Write a batch into the ring (oldest entries are overwritten first).

        Args:
            features: (N, D); stored detached, L2-normalised, as float32. Rows with a NaN or Inf
                are stored as zeros and marked invalid (on the device, no sync).
            labels: (N,) class indices.
            ids: (N,) integer sample ids (-1 where unknown).
            valid: optional (N,) or 0-d bool: False marks rows that must never be candidates
                (e.g. ``torch.isfinite(loss)`` for a whole batch). Default ``None``: all valid.

        Raises:
            ValueError: on inconsistent shapes or a feature size other than the bank's.
        """
        if self.size == 0:
            return
        if features.ndim != 2 or labels.shape != features.shape[:1] or ids.shape != features.shape[:1]:
            raise ValueError(
                f"bank update needs features (N, D), labels (N,), ids (N,); got {tuple(features.shape)}, "
                f"{tuple(labels.shape)}, {tuple(ids.shape)}."
            )
        finite = torch.isfinite(features).all(dim=1)
        if valid is not None:
            if valid.ndim > 1 or (valid.ndim == 1 and valid.shape != features.shape[:1]):
                raise ValueError(f"valid must be 0-d or ({features.shape[0]},), got {tuple(valid.shape)}.")
            finite = finite & valid.to(device=features.device, dtype=torch.bool)
        if self.features is None:
            self._allocate(features.shape[1], features.device)
        elif features.shape[1] != self.features.shape[1]:
            raise ValueError(f"bank holds {self.features.shape[1]}-d features, got {features.shape[1]}-d.")
        elif features.device != self.features.device:
            self.to(features.device)
        n = features.shape[0]
        if n > self.size:
            features, labels, ids = features[-self.size :], labels[-self.size :], ids[-self.size :]
            finite = finite[-self.size :]
            self.ptr = (self.ptr + n - self.size) % self.size
            n = self.size
        index = (self.ptr + torch.arange(n, device=features.device)) % self.size
        normalized = F.normalize(features.detach().float(), dim=1)
        # zeros, not NaN, in an invalid slot: a NaN would spread through every matmul over the bank
        normalized = torch.where(finite.unsqueeze(1), normalized, torch.zeros_like(normalized))
        self.features[index] = normalized  # type: ignore[index]
        self.squared[index] = normalized * normalized  # type: ignore[index]
        self.labels[index] = labels.to(torch.long)  # type: ignore[index]
        self.ids[index] = ids.to(torch.long)  # type: ignore[index]
        self.valid[index] = finite  # type: ignore[index]
        self.ptr = (self.ptr + n) % self.size
        self.count = min(self.size, self.count + n)

    def reset(self) -> None:
        """Empty the bank, keeping its tensors allocated."""
        self.ptr = 0
        self.count = 0

    def state_dict(self) -> dict[str, Any]:
        """Tensors and plain integers only (loadable with ``torch.load(weights_only=True)``)."""
        return {
            "size": self.size,
            "ptr": self.ptr,
            "count": self.count,
            "features": self.features,
            "labels": self.labels,
            "ids": self.ids,
            "valid": self.valid,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore from :meth:`state_dict`; the restored tensors are kept, never reallocated at a later step.

        A state without ``valid`` (saved before the bank marked invalid rows) counts every finite row
        as valid; a non-finite row is zeroed and marked invalid either way (the one copy made here).

        Raises:
            ValueError: when the saved bank has another size.
        """
        if int(state["size"]) != self.size:
            raise ValueError(f"checkpoint bank has {state['size']} slots, this bank {self.size}.")
        self.ptr, self.count = int(state["ptr"]), int(state["count"])
        self.features, self.labels, self.ids = state["features"], state["labels"], state["ids"]
        if self.features is None:
            self.squared = self.valid = None
            self.ptr = self.count = 0
            return
        finite = torch.isfinite(self.features).all(dim=1)
        saved_valid = state.get("valid")
        self.valid = finite if saved_valid is None else finite & saved_valid.to(torch.bool)
        self.features = torch.where(self.valid.unsqueeze(1), self.features, torch.zeros_like(self.features))
        self.squared = self.features * self.features
