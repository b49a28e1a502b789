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

__all__ = [
    "DistractorBatch",
    "DistractorMiner",
    "DistractorTerms",
    "DISTRACTOR_CLASSES",
    "DISTRACTOR_SAMPLES",
    "NEURON_WEIGHTINGS",
    "SOFT_WEIGHTINGS",
]

DISTRACTOR_CLASSES = ("confusing", "any", "random")
NEURON_WEIGHTINGS = ("none", "margin", "topk")
DISTRACTOR_SAMPLES = ("nearest", "random", "semi_hard", "soft")
SOFT_WEIGHTINGS = ("uniform", "softmax")
_EPS = 1e-12


@dataclass
class DistractorTerms:
    """Several distractors per anchor, K = ``distractor_classes`` x ``k``, each a weighted hinge term.

    Attributes:
        features: (B, K, D) the distractors' neurons (in the graph where they are batch samples).
        neuron_weights: (B, K, D) detached neuron weights of each term's (true, distractor) class pair.
        weights: (B, K) non-negative term weights, 0 where a term has no candidate; each row with a
            distractor sums to 1.
        distractor_class: (B, K) the class of each term's distractor, -1 where none.
    """

    features: torch.Tensor
    neuron_weights: torch.Tensor
    weights: torch.Tensor
    distractor_class: torch.Tensor


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
        terms: with several distractors per anchor (``distractor_sample="soft"`` or
            ``distractor_classes > 1``), all of them; the fields above then describe the term of
            largest weight (the "primary" distractor, what the TensorBoard figures show). ``None``
            with one distractor per anchor.
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
    terms: DistractorTerms | None = None

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

    ``distractor_sample`` picks the sample within the distractor class (project options, not the
    paper's; the paper's "distractor" is read as the nearest):

    - ``"nearest"`` (default): the candidate that confuses the network most;
    - ``"random"``: a candidate of that class drawn uniformly (the class still comes from the
      network's confusion);
    - ``"semi_hard"``: the nearest candidate of that class that is farther from the anchor than the
      anchor's nearest same-class candidate (batch or bank, the anchor itself and its own bank copies
      excluded), as FaceNet's semi-hard negatives; the nearest where there is none. The single hardest
      look-alike is often ambiguous or mislabelled, and pushing against it can be unstable;
    - ``"soft"``: the ``k`` nearest candidates of that class, each a hinge term, weighted uniformly
      (``soft_weighting="uniform"``) or by a softmax of their similarity at ``temperature``.

    ``distractor_classes = N`` (``"confusing"`` only) takes the N most confusing wrong classes by the
    network's own probabilities instead of one; each class's term is weighted by its probability,
    renormalised over the N classes that have a candidate (so ``N = 1`` is the reading above).

    Candidates are the current batch plus the memory bank. Neuron weights (``"confusing"`` only)
    are ``|W_y - W_c|`` from the classifier (``"margin"``), a 0/1 mask of the ``topk`` fraction of
    largest such weights (``"topk"``, at least one neuron), or uniform (``"none"``); a row whose
    weights are all zero (a zero-initialised head) falls back to uniform weights.

    Args:
        distractor_class: ``"confusing"``, ``"any"`` or ``"random"``. Default ``"confusing"``.
        neuron_weighting: ``"margin"``, ``"topk"`` or ``"none"``. Default ``"margin"``.
        topk: fraction in (0, 1] of neurons kept by ``"topk"``. Default 0.25.
        distractor_sample: ``"nearest"``, ``"random"``, ``"semi_hard"`` or ``"soft"``, the sample within
            the distractor class (``distractor_class="random"`` always draws at random). Default ``"nearest"``.
        k: candidates per distractor class for ``"soft"``. Default 4.
        soft_weighting: ``"uniform"`` or ``"softmax"`` (of the similarities divided by ``temperature``),
            the weights of the ``k`` terms of ``"soft"``. Default ``"uniform"``.
        temperature: of ``soft_weighting="softmax"``, > 0. Default 0.1.
        distractor_classes: N most confusing classes (``"confusing"`` only), >= 1. Default 1.
        bank_size: memory-bank slots; 0 mines in the batch only. Keep it at most half an epoch of
            samples, so the bank never holds a stale second copy of the same image. Default 4096.
        gather_distributed: under ``torch.distributed``, put every rank's samples into every
            rank's bank (all_gather; batches must have equal sizes on all ranks). Default ``True``.

    Raises:
        ValueError: for an unknown option, ``topk`` outside (0, 1], ``k`` or ``distractor_classes`` below
            1, a non-positive ``temperature``, or ``distractor_classes > 1`` with another distractor class.

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
        k: int = 4,
        soft_weighting: str = "uniform",
        temperature: float = 0.1,
        distractor_classes: int = 1,
    ) -> None:
        if distractor_class not in DISTRACTOR_CLASSES:
            raise ValueError(f"distractor_class must be one of {DISTRACTOR_CLASSES}, got {distractor_class!r}.")
        if neuron_weighting not in NEURON_WEIGHTINGS:
            raise ValueError(f"neuron_weighting must be one of {NEURON_WEIGHTINGS}, got {neuron_weighting!r}.")
        if not 0.0 < float(topk) <= 1.0:
            raise ValueError(f"topk must be a fraction in (0, 1], got {topk}.")
        if distractor_sample not in DISTRACTOR_SAMPLES:
            raise ValueError(f"distractor_sample must be one of {DISTRACTOR_SAMPLES}, got {distractor_sample!r}.")
        if soft_weighting not in SOFT_WEIGHTINGS:
            raise ValueError(f"soft_weighting must be one of {SOFT_WEIGHTINGS}, got {soft_weighting!r}.")
        if int(k) < 1 or int(distractor_classes) < 1 or float(temperature) <= 0:
            raise ValueError(
                f"k and distractor_classes must be >= 1 and temperature > 0, got {k}, {distractor_classes}, {temperature}."
            )
        if int(distractor_classes) > 1 and distractor_class != "confusing":
            raise ValueError(f"distractor_classes={distractor_classes} ranks confusing classes: it needs "
                             f"distractor_class='confusing', got {distractor_class!r}.")
        self.distractor_sample = distractor_sample
        self.k = int(k) if distractor_sample == "soft" else 1
        self.soft_weighting = soft_weighting
        self.temperature = float(temperature)
        self.distractor_classes = int(distractor_classes)
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
            classes, class_weight = self._classes(scores, labels, valid_anchor)  # (B, N) each, or None
            if classes is None:
                mask = (cand_labels.unsqueeze(0) != labels.unsqueeze(1)).unsqueeze(1)  # (B, 1, B + M)
                weights = None
            else:
                mask = cand_labels.view(1, 1, -1) == classes.unsqueeze(2)  # (B, N, B + M)
                weights = self.neuron_weights(labels.repeat_interleave(classes.shape[1]), classes.reshape(-1),
                                              classifier_weight, dim)
            mask = mask & cand_valid.view(1, 1, -1) & valid_anchor.view(-1, 1, 1)
            # (B, N, B + M); without neuron weights one cosine serves every distractor class. NaN can remain
            # only in masked-out pairs, or where huge finite features overflow the norms
            similarity = self._similarity(weights, anchors, bank).expand(-1, mask.shape[1], -1)
            similarity = similarity.nan_to_num(nan=-1.0, posinf=1.0, neginf=-1.0)
            if self.distractor_sample == "semi_hard":
                mask = self._semi_hard(mask, similarity, labels, ids, cand_labels, cand_ids, cand_valid)
            if self.distractor_class == "random" or self.distractor_sample == "random":
                score = torch.rand_like(similarity)
            else:
                score = similarity
            # the mask decides who has a distractor; -inf only marks non-candidates for the arg-max
            count = min(self.k, mask.shape[2])
            top_score, index = score.masked_fill(~mask, float("-inf")).topk(count, dim=2)  # (B, N, k)
            valid = mask.gather(2, index)
            chosen_similarity = similarity.gather(2, index)
            term_weight = self._term_weights(valid, top_score, class_weight)  # (B, N * k)
        index, valid = index.flatten(1), valid.flatten(1)
        chosen_similarity = chosen_similarity.flatten(1)
        # the distractors' features: from the batch (in the graph) or from the bank (constants)
        distractor_features = features[index.clamp(max=batch_size - 1)]  # (B, K, D)
        if bank is not None:
            from_bank_rows = bank[0][(index - batch_size).clamp(min=0)].to(features.dtype)
            distractor_features = torch.where((index >= batch_size).unsqueeze(2), from_bank_rows, distractor_features)
        # zeros where a term has no distractor: the arg-max of an all -inf row points anywhere, perhaps at a NaN
        # row, and a NaN behind torch.where still turns the gradient into NaN
        distractor_features = torch.where(valid.unsqueeze(2), distractor_features, torch.zeros_like(distractor_features))
        none = torch.full_like(index, -1)
        term_class = torch.where(valid, cand_labels[index], none)
        has = valid.any(dim=1)
        primary = term_weight.argmax(dim=1, keepdim=True)  # the term of largest weight (the first on ties)
        first = index.gather(1, primary).squeeze(1)
        neuron_weights = (
            torch.ones_like(anchors).unsqueeze(1).expand(-1, index.shape[1], -1)
            if weights is None
            else weights.view(batch_size, -1, 1, dim).expand(-1, -1, count, -1).reshape(batch_size, -1, dim)
        )
        terms = None
        if index.shape[1] > 1:
            terms = DistractorTerms(distractor_features, neuron_weights, term_weight, term_class)
        return DistractorBatch(
            features=features,
            distractor_features=distractor_features.gather(
                1, primary.unsqueeze(2).expand(-1, -1, dim)).squeeze(1),
            neuron_weights=neuron_weights.gather(1, primary.unsqueeze(2).expand(-1, -1, dim)).squeeze(1),
            has_distractor=has,
            distractor_class=torch.where(has, term_class.gather(1, primary).squeeze(1), none[:, 0]),
            distractor_id=torch.where(has, cand_ids[first], none[:, 0]),
            from_bank=has & (first >= batch_size),
            similarity=torch.where(has, chosen_similarity.gather(1, primary).squeeze(1),
                                   torch.zeros_like(chosen_similarity[:, 0])),
            labels=labels,
            terms=terms,
        )

    def _classes(
        self, logits: torch.Tensor, labels: torch.Tensor, valid: torch.Tensor
    ) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """The N most confusing wrong classes (B, N) and their probabilities (B, N); ``None`` unless "confusing".

        A row of logits with a NaN or Inf (``valid`` False) gets probabilities 0, never NaN.
        """
        if self.distractor_class != "confusing":
            return None, None
        num_classes = logits.shape[1]
        own = F.one_hot(labels.clamp(0, num_classes - 1), num_classes).bool()
        count = min(self.distractor_classes, num_classes - 1) if num_classes > 1 else 1
        wrong = logits.nan_to_num(nan=float("-inf")).masked_fill(own, float("-inf"))
        classes = wrong.topk(count, dim=1).indices
        clean = torch.where(valid.unsqueeze(1), logits, torch.zeros_like(logits))
        probabilities = torch.softmax(clean, dim=1).gather(1, classes) * valid.unsqueeze(1)
        return classes, probabilities

    def _similarity(
        self, weights: torch.Tensor | None, anchors: torch.Tensor, bank: tuple[torch.Tensor, ...] | None
    ) -> torch.Tensor:
        """(B, N, B + M) neuron-weighted cosines of each anchor, per distractor class, to every candidate."""
        batch_size = anchors.shape[0]
        if weights is None:
            rows = anchors
        else:
            rows = anchors.repeat_interleave(weights.shape[0] // batch_size, dim=0)  # (B * N, D)
        similarity = _weighted_cosine(weights, rows, anchors)
        if bank is not None:
            in_bank = _weighted_cosine(weights, rows, bank[0], self.bank.squared_entries(), unit_candidates=True)
            similarity = torch.cat([similarity, in_bank], dim=1)
        return similarity.view(batch_size, -1, similarity.shape[1])

    @staticmethod
    def _semi_hard(
        mask: torch.Tensor,
        similarity: torch.Tensor,
        labels: torch.Tensor,
        ids: torch.Tensor,
        cand_labels: torch.Tensor,
        cand_ids: torch.Tensor,
        cand_valid: torch.Tensor,
    ) -> torch.Tensor:
        """Keep the candidates farther than the anchor's nearest positive; all of them where none is."""
        batch_size = labels.shape[0]
        position = torch.arange(cand_labels.shape[0], device=labels.device)
        itself = position.unsqueeze(0) == torch.arange(batch_size, device=labels.device).unsqueeze(1)
        own_copy = (cand_ids.unsqueeze(0) == ids.unsqueeze(1)) & (ids.unsqueeze(1) >= 0)
        positive = (cand_labels.unsqueeze(0) == labels.unsqueeze(1)) & ~itself & ~own_copy & cand_valid.unsqueeze(0)
        nearest_positive = similarity.masked_fill(~positive.unsqueeze(1), float("-inf")).amax(dim=2, keepdim=True)
        harder = mask & (similarity < nearest_positive)
        return torch.where(harder.any(dim=2, keepdim=True), harder, mask)

    def _term_weights(
        self, valid: torch.Tensor, score: torch.Tensor, class_weight: torch.Tensor | None
    ) -> torch.Tensor:
        """(B, N * k) weights of the hinge terms: per class, its samples; over classes, their probabilities."""
        valid_f = valid.float()
        if self.distractor_sample == "soft" and self.soft_weighting == "softmax":
            logits = (score / self.temperature).masked_fill(~valid, float("-inf"))
            sample = torch.where(valid, torch.softmax(logits.nan_to_num(neginf=-1e30), dim=2), torch.zeros_like(valid_f))
        else:
            sample = valid_f / valid_f.sum(dim=2, keepdim=True).clamp_min(1.0)
        per_class = class_weight if class_weight is not None else torch.ones_like(valid_f[:, :, 0])
        per_class = per_class * valid.any(dim=2).float()
        per_class = per_class / per_class.sum(dim=1, keepdim=True).clamp_min(_EPS)
        return (per_class.unsqueeze(2) * sample).flatten(1)

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
