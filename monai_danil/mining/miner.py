"""Choosing each image's distractor in the network's feature space (torch only).

The miner owns the candidate choice (METHOD.md item 6): which class is the distractor class
(``distractor_class``), which neurons matter when comparing (``neuron_weighting``, ``topk``) and
which recent samples are candidates (``bank_size``). It never computes a loss: that is
:class:`monai_danil.losses.DistractorAwareLoss`'s job, with the :class:`DistractorBatch` it gets.

Everything runs on the features' device with a fixed number of tensor operations per batch: no
Python loop over samples and no host synchronisation. Non-finite values are masked on the device too:
a row of features or logits with a NaN or Inf is never an anchor with a distractor nor a candidate,
in the batch or in the memory bank, and no NaN reaches an arg-max.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F

from .bank import MemoryBank

__all__ = ["DistractorBatch", "DistractorMiner", "DISTRACTOR_CLASSES", "DISTRACTOR_SAMPLES", "NEURON_WEIGHTINGS"]

DISTRACTOR_CLASSES = ("confusing", "any", "random")
NEURON_WEIGHTINGS = ("none", "margin", "topk")
DISTRACTOR_SAMPLES = ("nearest", "random")
_EPS = 1e-12


@dataclass
class DistractorBatch:
    """What the miner found for one batch of B anchors with D neurons each.

    Attributes:
        features: (B, D) the anchors' neurons, still in the autograd graph.
        distractor_features: (B, D) each anchor's distractor; in the graph when the distractor is
            a sample of the current batch, a constant when it came from the memory bank. Rows
            without a distractor hold zeros and are masked by ``has_distractor``.
        neuron_weights: (B, D) non-negative, detached weights of the neurons for each anchor.
        has_distractor: (B,) bool, whether a candidate of the distractor class existed (never for
            an anchor whose features or logits hold a NaN or Inf).
        distractor_class: (B,) class of the distractor, -1 where none.
        distractor_id: (B,) sample id of the distractor (the dataset's id when the batch carried
            one), -1 where none or unknown.
        from_bank: (B,) bool, whether the distractor came from the memory bank.
        similarity: (B,) neuron-weighted cosine similarity to the distractor, 0 where none.
        labels: (B,) the anchors' labels.
    """

    features: torch.Tensor
    distractor_features: torch.Tensor
    neuron_weights: torch.Tensor
    has_distractor: torch.Tensor
    distractor_class: torch.Tensor
    distractor_id: torch.Tensor
    from_bank: torch.Tensor
    similarity: torch.Tensor
    labels: torch.Tensor

    @property
    def batch_size(self) -> int:
        return self.features.shape[0]

    def figures(self) -> dict[str, torch.Tensor]:
        """Detached 0-d summaries for logging, computed on the device (no sync).

        ``distance``: mean distance to the distractor over anchors that have one,
        ``sqrt(2 - 2 * similarity)`` (the loss's ``d`` without its eps); ``fraction``: the part
        of the batch that had a distractor; ``from_bank``: the part of those found in the bank.
        """
        has = self.has_distractor.float()
        count = has.sum().clamp_min(1.0)
        distance = (2.0 - 2.0 * self.similarity.detach().float()).clamp_min(0.0).sqrt()
        return {
            "distance": (distance * has).sum() / count,
            "fraction": has.mean(),
            "from_bank": (self.from_bank.float() * has).sum() / count,
        }


def _weighted_cosine(
    weights: torch.Tensor | None,
    anchors: torch.Tensor,
    candidates: torch.Tensor,
    candidates_squared: torch.Tensor | None = None,
    unit_candidates: bool = False,
) -> torch.Tensor:
    """(B, N) cosine between ``w * f`` and ``w * k`` without a (B, N, D) tensor: two matmuls.

    ``((w**2 * f) @ K.T) / (||w * f|| * sqrt(w**2 @ (K**2).T))`` (METHOD.md, Cost). ``candidates_squared``
    is ``K**2`` when the caller keeps it (the memory bank does), and ``unit_candidates`` says the rows of
    ``K`` are already L2-normalised (unweighted cosine): either spares a (N, D) product per step.
    """
    if weights is None:
        keys = candidates if unit_candidates else F.normalize(candidates, dim=1, eps=_EPS)
        return F.normalize(anchors, dim=1, eps=_EPS) @ keys.T
    w2 = weights * weights
    numerator = (w2 * anchors) @ candidates.T
    anchor_norm = (weights * anchors).norm(dim=1, keepdim=True).clamp_min(_EPS)
    squared = candidates * candidates if candidates_squared is None else candidates_squared
    candidate_norm = (w2 @ squared.T).clamp_min(_EPS * _EPS).sqrt()
    return numerator / (anchor_norm * candidate_norm)


class DistractorMiner:
    """Finds, for each image, the sample that confuses the network most, in its own feature space.

    For an anchor of class ``y`` with logits ``z`` (METHOD.md items 1 to 3):

    - ``distractor_class="confusing"`` (default): the distractor class is
      ``c = argmax_{k != y} z_k`` and the distractor is the candidate of class ``c`` with the
      highest neuron-weighted cosine similarity to the anchor;
    - ``"any"``: the nearest candidate (plain cosine) of any class other than ``y``;
    - ``"random"``: a candidate of another class drawn uniformly (an ablation control).

    ``distractor_sample`` picks the sample within the distractor class: ``"nearest"`` (default, the
    reading above: the candidate that confuses the network most) or ``"random"`` (a candidate of that
    class drawn uniformly; the class still comes from the network's confusion). ``"random"`` avoids
    pushing always against the single hardest, often ambiguous or mislabelled, look-alike, as
    semi-hard negative mining does in metric learning (a project option, not the paper's).

    Candidates are the current batch plus the memory bank. Neuron weights (``"confusing"`` only)
    are ``|W_y - W_c|`` from the classifier (``"margin"``), a 0/1 mask of the ``topk`` fraction of
    largest such weights (``"topk"``, at least one neuron), or uniform (``"none"``); a row whose
    weights are all zero (a zero-initialised head) falls back to uniform weights.

    Args:
        distractor_class: ``"confusing"``, ``"any"`` or ``"random"``. Default ``"confusing"``.
        neuron_weighting: ``"margin"``, ``"topk"`` or ``"none"``. Default ``"margin"``.
        topk: fraction in (0, 1] of neurons kept by ``"topk"``. Default 0.25.
        distractor_sample: ``"nearest"`` or ``"random"``, the sample within the distractor class
            (``distractor_class="random"`` always draws at random). Default ``"nearest"``.
        bank_size: memory-bank slots; 0 mines in the batch only. Keep it at most half an epoch of
            samples, so the bank never holds a stale second copy of the same image. Default 4096.
        gather_distributed: under ``torch.distributed``, put every rank's samples into every
            rank's bank (all_gather; batches must have equal sizes on all ranks). Default ``True``.

    Raises:
        ValueError: for an unknown option or ``topk`` outside (0, 1].

    Example:
        >>> miner = DistractorMiner(bank_size=256)
        >>> f, z, y = torch.rand(8, 16), torch.randn(8, 3), torch.arange(8) % 3
        >>> batch = miner.mine(f, z, y, classifier_weight=torch.randn(3, 16))
        >>> bool(batch.has_distractor.all())
        True
        >>> miner.update(f, y)
    """

    def __init__(
        self,
        distractor_class: str = "confusing",
        neuron_weighting: str = "margin",
        topk: float = 0.25,
        bank_size: int = 4096,
        gather_distributed: bool = True,
        distractor_sample: str = "nearest",
    ) -> None:
        if distractor_class not in DISTRACTOR_CLASSES:
            raise ValueError(f"distractor_class must be one of {DISTRACTOR_CLASSES}, got {distractor_class!r}.")
        if neuron_weighting not in NEURON_WEIGHTINGS:
            raise ValueError(f"neuron_weighting must be one of {NEURON_WEIGHTINGS}, got {neuron_weighting!r}.")
        if not 0.0 < float(topk) <= 1.0:
            raise ValueError(f"topk must be a fraction in (0, 1], got {topk}.")
        if distractor_sample not in DISTRACTOR_SAMPLES:
            raise ValueError(f"distractor_sample must be one of {DISTRACTOR_SAMPLES}, got {distractor_sample!r}.")
        self.distractor_sample = distractor_sample
        self.distractor_class = distractor_class
        self.neuron_weighting = neuron_weighting
        self.topk = float(topk)
        self.gather_distributed = gather_distributed
        self.bank = MemoryBank(bank_size)

    @property
    def bank_size(self) -> int:
        return self.bank.size

    def neuron_weights(
        self, labels: torch.Tensor, distractor_class: torch.Tensor, classifier_weight: torch.Tensor | None, dim: int
    ) -> torch.Tensor | None:
        """(B, D) detached neuron weights, or ``None`` for uniform weights.

        Raises:
            ValueError: when margin/topk weighting has no classifier weight, or one of another size.
        """
        if self.distractor_class != "confusing" or self.neuron_weighting == "none":
            return None
        if classifier_weight is None:
            raise ValueError(
                f"neuron_weighting={self.neuron_weighting!r} needs the classifier's weight (C, D); "
                "name the classifier layer or use neuron_weighting='none'."
            )
        weight = classifier_weight.detach().float()
        if weight.ndim != 2 or weight.shape[1] != dim:
            raise ValueError(
                f"classifier weight of shape {tuple(weight.shape)} does not match {dim} tapped neurons: "
                "the tapped layer must be the input of the classifier for neuron weighting."
            )
        margin = (weight[labels] - weight[distractor_class.clamp_min(0)]).abs()
        all_zero = margin.sum(dim=1, keepdim=True) <= 0
        if self.neuron_weighting == "topk":
            k = max(1, round(self.topk * dim))
            mask = torch.zeros_like(margin)
            margin = mask.scatter_(1, margin.topk(k, dim=1).indices, 1.0)
        return torch.where(all_zero, torch.ones_like(margin), margin)

    def mine(
        self,
        features: torch.Tensor,
        logits: torch.Tensor,
        labels: torch.Tensor,
        classifier_weight: torch.Tensor | None = None,
        ids: torch.Tensor | None = None,
    ) -> DistractorBatch:
        """Choose a distractor for every sample of the batch.

        Args:
            features: (B, D) tapped neurons (keep them in the graph: the loss trains through them).
            logits: (B, C) classifier outputs (used detached).
            labels: (B,) or (B, 1) class indices.
            classifier_weight: (C, D) weight of the final linear layer (for neuron weighting).
            ids: (B,) integer sample ids, kept so a distractor can be traced to its image.

        Raises:
            ValueError: on inconsistent shapes.
        """
        if features.ndim != 2 or logits.ndim != 2 or features.shape[0] != logits.shape[0]:
            raise ValueError(
                f"mine needs features (B, D) and logits (B, C), got {tuple(features.shape)} and {tuple(logits.shape)}."
            )
        labels = labels.reshape(-1).to(device=features.device, dtype=torch.long)
        if labels.shape[0] != features.shape[0]:
            raise ValueError(f"{labels.shape[0]} labels for a batch of {features.shape[0]}.")
        batch_size, dim = features.shape
        ids = self._ids(ids, batch_size, features.device)
        # mining compares directions: float32 even under autocast, so bf16 rounding never flips a choice
        with torch.autocast(device_type=features.device.type, enabled=False):
            anchors = features.detach().float()
            scores = logits.detach().float()
            # a row with a NaN or Inf (an overflow, a corrupt input) is neither an anchor nor a candidate;
            # device-side masks, so no host sync and no NaN ever reaches an arg-max
            finite = torch.isfinite(anchors).all(dim=1)
            valid_anchor = finite & torch.isfinite(scores).all(dim=1)
            bank = self.bank.to(features.device).entries() if self.bank.size else None
            # the batch and the bank are scored as two blocks and never concatenated: no (M, D) copy per step
            if bank is None:
                cand_labels, cand_ids, cand_valid = labels, ids, finite
            else:
                cand_labels = torch.cat([labels, bank[1]])
                cand_ids = torch.cat([ids, bank[2]])
                cand_valid = torch.cat([finite, self.bank.entry_mask()])  # type: ignore[list-item]
            num_classes = logits.shape[1]
            own = F.one_hot(labels.clamp(0, num_classes - 1), num_classes).bool()
            if self.distractor_class == "confusing":
                target_class = scores.nan_to_num(nan=float("-inf")).masked_fill(own, float("-inf")).argmax(dim=1)
                mask = cand_labels.unsqueeze(0) == target_class.unsqueeze(1)
            else:
                target_class = None
                mask = cand_labels.unsqueeze(0) != labels.unsqueeze(1)
            mask = mask & cand_valid.unsqueeze(0) & valid_anchor.unsqueeze(1)
            weights = self.neuron_weights(labels, target_class, classifier_weight, dim) if target_class is not None else None
            similarity = _weighted_cosine(weights, anchors, anchors)
            if bank is not None:
                in_bank = _weighted_cosine(weights, anchors, bank[0], self.bank.squared_entries(), unit_candidates=True)
                similarity = torch.cat([similarity, in_bank], dim=1)
            # NaN can remain only in masked-out pairs, or where huge finite features overflow the norms
            similarity = similarity.nan_to_num(nan=-1.0, posinf=1.0, neginf=-1.0)
            if self.distractor_class == "random" or self.distractor_sample == "random":
                score = torch.rand_like(similarity)
            else:
                score = similarity
            # the mask decides who has a distractor; -inf only marks non-candidates for the arg-max
            has = mask.any(dim=1)
            index = score.masked_fill(~mask, float("-inf")).argmax(dim=1)
            chosen_similarity = similarity.gather(1, index.unsqueeze(1)).squeeze(1)
        # the distractor's features: from the batch (in the graph) or from the bank (constants)
        distractor_features = features[index.clamp(max=batch_size - 1)]
        if bank is not None:
            from_bank_rows = bank[0][(index - batch_size).clamp(min=0)].to(features.dtype)
            distractor_features = torch.where((index >= batch_size).unsqueeze(1), from_bank_rows, distractor_features)
        # zeros where there is no distractor: the arg-max of an all -inf row points anywhere, perhaps at a NaN
        # row, and a NaN behind torch.where still turns the gradient into NaN
        distractor_features = torch.where(has.unsqueeze(1), distractor_features, torch.zeros_like(distractor_features))
        none = torch.full_like(labels, -1)
        return DistractorBatch(
            features=features,
            distractor_features=distractor_features,
            neuron_weights=torch.ones_like(anchors) if weights is None else weights,
            has_distractor=has,
            distractor_class=torch.where(has, cand_labels[index], none),
            distractor_id=torch.where(has, cand_ids[index], none),
            from_bank=has & (index >= batch_size),
            similarity=torch.where(has, chosen_similarity, torch.zeros_like(chosen_similarity)),
            labels=labels,
        )

    @staticmethod
    def _ids(ids: torch.Tensor | None, batch_size: int, device: torch.device) -> torch.Tensor:
        if ids is None:
            return torch.full((batch_size,), -1, dtype=torch.long, device=device)
        ids = torch.as_tensor(ids).reshape(-1).to(device=device, dtype=torch.long)
        if ids.shape[0] != batch_size:
            raise ValueError(f"{ids.shape[0]} sample ids for a batch of {batch_size}.")
        return ids

    @torch.no_grad()
    def update(
        self,
        features: torch.Tensor,
        labels: torch.Tensor,
        ids: torch.Tensor | None = None,
        valid: torch.Tensor | None = None,
    ) -> None:
        """Add a batch to the memory bank (call after the loss, so a batch never mines itself twice).

        Rows with a NaN or Inf, and rows where ``valid`` is False, take their slots but are never
        candidates (see :class:`MemoryBank`). Pass ``valid=torch.isfinite(loss)`` so that a step whose
        loss is not finite (one that AMP's ``GradScaler`` skips) leaves no candidate behind. Under
        ``torch.distributed`` with ``gather_distributed``, every rank's batch is gathered first, so all
        ranks keep the same bank.

        Args:
            features: (B, D) the batch's tapped neurons (stored detached).
            labels: (B,) or (B, 1) class indices.
            ids: (B,) integer sample ids. Default ``None``: -1.
            valid: 0-d or (B,) bool on any device. Default ``None``: every finite row is valid.
        """
        if self.bank.size == 0:
            return
        labels = labels.reshape(-1).to(device=features.device, dtype=torch.long)
        ids = self._ids(ids, features.shape[0], features.device)
        features = features.detach().float()
        rows = torch.ones(features.shape[0], dtype=torch.bool, device=features.device)
        if valid is not None:
            rows = rows & valid.to(device=features.device, dtype=torch.bool)
        if self.gather_distributed and dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            features, labels, ids = (_all_gather(t) for t in (features, labels, ids))
            rows = _all_gather(rows.to(torch.uint8)).bool()  # every backend gathers bytes; not all gather bool
        self.bank.update(features, labels, ids, rows)

    def state_dict(self) -> dict[str, Any]:
        """The bank's tensors and counters (plain values only)."""
        return {"bank": self.bank.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.bank.load_state_dict(state["bank"])


def _all_gather(tensor: torch.Tensor) -> torch.Tensor:
    parts = [torch.empty_like(tensor) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, tensor.contiguous())
    return torch.cat(parts)
