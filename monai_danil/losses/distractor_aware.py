"""The distractor-aware loss: cross-entropy plus a hinge that pushes each image from its distractor."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from monai.utils import LossReduction
from torch.nn.modules.loss import _Loss

from monai_danil.mining import DistractorBatch, ResponseMapBatch

__all__ = ["DistractorAwareLoss", "distractor_aware_loss", "ordinal_margins", "response_map_loss"]


def ordinal_margins(num_classes: int, margin: float = 1.0, power: float = 1.0) -> list[list[float]]:
    """A (C, C) margin matrix for ordinal classes: ``margin * (|y - c| / (C - 1)) ** power``.

    For ordinal grades (DR 0-4) the most confusing class is nearly always the adjacent grade, and a
    uniform margin pushes adjacent grades as far apart as distant ones, against the ordering that
    quadratic-weighted kappa rewards. With this matrix the push grows with the grade distance: at
    ``margin=1`` adjacent grades of 5 are only pushed apart while their weighted cosine exceeds
    ``1 - 0.25**2 / 2 = 0.97``, grades 0 and 4 while it exceeds 0.5. (A project choice, not the
    paper's; see docs/method.md.)

    Args:
        num_classes: C, at least 2.
        margin: the margin between the first and the last class. Default 1.0.
        power: shape of the growth with the distance. Default 1.0 (linear).

    Raises:
        ValueError: for fewer than 2 classes or a negative margin or power.

    Example:
        >>> ordinal_margins(3)
        [[0.0, 0.5, 1.0], [0.5, 0.0, 0.5], [1.0, 0.5, 0.0]]
    """
    if num_classes < 2 or margin < 0 or power < 0:
        raise ValueError(f"need num_classes >= 2, margin >= 0, power >= 0; got {num_classes}, {margin}, {power}.")
    span = num_classes - 1
    return [[margin * (abs(y - c) / span) ** power for c in range(num_classes)] for y in range(num_classes)]


def _reduction(reduction: LossReduction | str) -> str:
    valid = [r.value for r in LossReduction]
    value = reduction.value if isinstance(reduction, LossReduction) else str(reduction)
    if value not in valid:
        raise ValueError(f"Unsupported reduction: {reduction}, available options are {valid}.")
    return value


def distractor_aware_loss(
    features: torch.Tensor,
    distractor_features: torch.Tensor,
    neuron_weights: torch.Tensor,
    has_distractor: torch.Tensor,
    margin: float | torch.Tensor = 1.0,
    p: int = 1,
    eps: float = 1e-8,
    reduction: LossReduction | str = LossReduction.MEAN,
    term_weights: torch.Tensor | None = None,
) -> torch.Tensor:
    """``L_DA`` of METHOD.md item 4, the pure function.

    With ``u = normalise(w * f)``, ``v = normalise(w * f_d)`` and ``d = sqrt(||u - v||^2 + eps)``,
    each sample with a distractor contributes ``max(0, margin - d) ** p``. With several distractors
    per sample (K terms: ``distractor_features`` (B, K, D) and ``term_weights``), it contributes the
    weighted sum of its terms' hinges.

    Args:
        features: (B, D) anchors' neurons.
        distractor_features: (B, D) their distractors' neurons, or (B, K, D) for K terms each.
        neuron_weights: non-negative weights (only their direction matters), shaped as
            ``distractor_features``.
        has_distractor: (B,) bool; samples without a distractor contribute 0.
        margin: hinge margin on ``d`` in [0, sqrt(2)] for non-negative features; active while the
            weighted cosine similarity exceeds ``1 - margin**2 / 2``. A float, or per-sample margins
            (B,) (or (B, K) with terms; see :func:`ordinal_margins`). Default 1.0.
        p: 1 (hinge) or 2 (squared hinge). Default 1.
        eps: added under the square root so the gradient at ``u == v`` is finite. Default 1e-8.
        reduction: ``"mean"``: sum over samples with a distractor divided by ``max(1, count)``
            (METHOD.md's definition, not a mean over the whole batch); ``"sum"``; ``"none"``: (B,).
        term_weights: (B, K) weights of the terms (0 for a term without a candidate), with (B, K, D)
            distractors. Default ``None``: one term per sample.

    Returns:
        The loss; 0 with a valid graph when no sample has a distractor, never NaN.

    Raises:
        ValueError: for shapes that disagree or an unknown reduction.
    """
    terms = distractor_features.ndim == 3
    expected = (features.shape[0], term_weights.shape[1], features.shape[1]) if terms and term_weights is not None else None
    if (
        features.ndim != 2
        or neuron_weights.shape != distractor_features.shape
        or (not terms and distractor_features.shape != features.shape)
        or (terms and (term_weights is None or distractor_features.shape != expected))
    ):
        raise ValueError(
            "features (B, D) need distractor_features and neuron_weights of one shape, (B, D), or (B, K, D) with "
            f"term_weights (B, K); got {tuple(features.shape)}, {tuple(distractor_features.shape)}, "
            f"{tuple(neuron_weights.shape)}, {None if term_weights is None else tuple(term_weights.shape)}."
        )
    if has_distractor.shape != features.shape[:1]:
        raise ValueError(f"has_distractor must be ({features.shape[0]},), got {tuple(has_distractor.shape)}.")
    with torch.autocast(device_type=features.device.type, enabled=False):
        weights = neuron_weights.detach().float()
        anchors = features.float().unsqueeze(1) if terms else features.float()
        u = F.normalize(weights * anchors, dim=-1, eps=eps)
        v = F.normalize(weights * distractor_features.float(), dim=-1, eps=eps)
        distance = ((u - v).pow(2).sum(dim=-1) + eps).sqrt()
        per_sample = (margin - distance).clamp_min(0.0).pow(p)
        if terms:
            per_sample = (per_sample * term_weights.detach().float()).sum(dim=1)  # type: ignore[union-attr]
        per_sample = torch.where(has_distractor, per_sample, torch.zeros_like(per_sample))
    reduction = _reduction(reduction)
    if reduction == LossReduction.MEAN.value:
        return per_sample.sum() / has_distractor.sum().clamp_min(1).to(per_sample.dtype)
    if reduction == LossReduction.SUM.value:
        return per_sample.sum()
    return per_sample


def response_map_loss(
    maps: ResponseMapBatch,
    margin: float | torch.Tensor = 1.0,
    p: int = 1,
    eps: float = 1e-8,
    reduction: LossReduction | str = LossReduction.MEAN,
) -> torch.Tensor:
    """The second reading's term: ``max(0, margin - d) ** p`` with ``d`` the distance of the two maps.

    ``d`` is that of :meth:`~monai_danil.mining.ResponseMapBatch.distances`: Euclidean between the
    L2-normalised maps (``"response_map"``, in [0, sqrt(2)]) or L1 between the L1-normalised ones
    (``"input_gradient"``, in [0, 2]); see :mod:`monai_danil.mining.response`.

    Args:
        maps: the miner's two maps per sample.
        margin: a float, or per-sample margins (B,). Default 1.0.
        p: 1 or 2. Default 1.
        eps: numerical guard under the square root. Default 1e-8.
        reduction: ``"mean"`` over the samples with a distractor, ``"sum"`` or ``"none"``.

    Returns:
        The loss; 0 with a valid graph when no sample has a distractor.
    """
    with torch.autocast(device_type=maps.true_maps.device.type, enabled=False):
        distance = maps.distances(eps)
        per_sample = (margin - distance).clamp_min(0.0).pow(p)
        per_sample = torch.where(maps.has_distractor, per_sample, torch.zeros_like(per_sample))
    reduction = _reduction(reduction)
    if reduction == LossReduction.MEAN.value:
        return per_sample.sum() / maps.has_distractor.sum().clamp_min(1).to(per_sample.dtype)
    if reduction == LossReduction.SUM.value:
        return per_sample.sum()
    return per_sample


class DistractorAwareLoss(_Loss):
    """``L = L_cls + lambda * L_DA``: cross-entropy plus the distractor-aware term (METHOD.md items 4, 5).

    The loss owns the penalty (``margin``, ``p``, ``eps``, class weights, label smoothing). What the
    distractors are comes from a :class:`~monai_danil.mining.DistractorMiner`, either passed to
    ``forward`` (a plain PyTorch loop) or handed over beforehand with :meth:`set_distractors` (what
    :class:`~monai_danil.handlers.DistractorMiningHandler` does inside a MONAI trainer, which calls
    ``loss_function(pred, label)`` with two arguments). Handed-over distractors are used by the next
    call only. Called without distractors, the loss is plain cross-entropy.

    After each call, :attr:`last_components` holds the detached ``"ce"`` and ``"da"`` parts (0-d
    tensors for ``mean``/``sum``) for logging.

    Args:
        margin: hinge margin, see :func:`distractor_aware_loss`: a float, or a (C, C) matrix of
            margins by (true class, distractor class), e.g. :func:`ordinal_margins` for ordinal
            grades (kept as a buffer). Default 1.0.
        p: 1 or 2. Default 1.
        eps: numerical guard under the square root. Default 1e-8.
        weight: optional per-class weights (C,) of the cross-entropy; kept as a buffer so it
            follows ``.to()``. Default ``None``.
        label_smoothing: cross-entropy label smoothing in [0, 1). Default 0.0.
        reduction: ``"mean"`` (CE mean, torch's weighted mean with ``weight``, plus ``lambda`` times
            ``L_DA`` as defined), ``"sum"`` or ``"none"`` ((B,) per-sample CE plus ``lambda`` times
            each sample's hinge). Default ``"mean"``.

    Raises:
        ValueError: for ``p`` not in {1, 2}, a negative margin, or bad ``label_smoothing``.

    Example:
        >>> from monai_danil.mining import DistractorMiner
        >>> loss_fn, miner = DistractorAwareLoss(margin=1.0), DistractorMiner(bank_size=0)
        >>> f = torch.rand(8, 16, requires_grad=True)
        >>> head = torch.nn.Linear(16, 3)
        >>> logits, y = head(f), torch.arange(8) % 3
        >>> batch = miner.mine(f, logits, y, classifier_weight=head.weight)
        >>> loss = loss_fn(logits, y, distractors=batch, lambda_da=0.5)
        >>> loss.backward()
    """

    def __init__(
        self,
        margin: float | Sequence[Sequence[float]] | torch.Tensor = 1.0,
        p: int = 1,
        eps: float = 1e-8,
        weight: Sequence[float] | torch.Tensor | None = None,
        label_smoothing: float = 0.0,
        reduction: LossReduction | str = LossReduction.MEAN,
    ) -> None:
        super().__init__(reduction=_reduction(reduction))
        if p not in (1, 2):
            raise ValueError(f"p must be 1 or 2, got {p}.")
        margin_tensor = torch.as_tensor(margin, dtype=torch.float)
        if margin_tensor.ndim not in (0, 2) or (margin_tensor.ndim == 2 and margin_tensor.shape[0] != margin_tensor.shape[1]):
            raise ValueError(f"margin must be a number or a (C, C) matrix, got shape {tuple(margin_tensor.shape)}.")
        if (margin_tensor < 0).any():
            raise ValueError(f"margins must be >= 0, got {margin}.")
        if not 0.0 <= label_smoothing < 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing}.")
        self.margin: float | torch.Tensor
        if margin_tensor.ndim == 0:
            self.margin = float(margin_tensor)
        else:
            self.register_buffer("margin", margin_tensor)
        self.p = int(p)
        self.eps = float(eps)
        self.label_smoothing = float(label_smoothing)
        self.class_weight: torch.Tensor | None
        self.register_buffer(
            "class_weight", None if weight is None else torch.as_tensor(weight, dtype=torch.float).reshape(-1)
        )
        self._pending: tuple[DistractorBatch | ResponseMapBatch, float] | None = None
        self.last_components: dict[str, torch.Tensor] = {}

    def set_distractors(self, distractors: DistractorBatch | ResponseMapBatch | None, lambda_da: float = 1.0) -> None:
        """Hand over the distractors (and the current ``lambda``) for the next call only."""
        self._pending = None if distractors is None else (distractors, float(lambda_da))

    def _check(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if input.ndim != 2:
            raise ValueError(f"input must be logits of shape (B, C), got {tuple(input.shape)}.")
        num_classes = input.shape[1]
        if self.class_weight is not None and self.class_weight.numel() != num_classes:
            raise ValueError(f"{self.class_weight.numel()} class weights for {num_classes} classes.")
        if target.shape == input.shape and target.is_floating_point():
            return target  # class probabilities / one-hot, as F.cross_entropy accepts them
        if target.ndim == 2 and target.shape[1] == 1:
            target = target[:, 0]
        if target.shape != input.shape[:1]:
            raise ValueError(
                f"target must be class indices (B,) or (B, 1), or one-hot (B, C); got {tuple(target.shape)} "
                f"for input {tuple(input.shape)}."
            )
        if target.is_floating_point():
            target = target.round()
        target = target.long()
        if target.device.type == "cpu":
            if target.numel() and (target.min() < 0 or target.max() >= num_classes):
                bad = target[(target < 0) | (target >= num_classes)][0].item()
                raise ValueError(f"label {bad} out of range for {num_classes} classes (expected 0..{num_classes - 1}).")
        else:
            # no host sync on an accelerator: a device-side assertion instead of a ValueError. torch has no
            # public one; _assert_async(tensor, message) is checked by tests/test_losses.py (torch 2.13 in CI)
            torch._assert_async(((target >= 0) & (target < num_classes)).all(), "label out of range")
        return target

    def _margins(self, distractors: DistractorBatch | ResponseMapBatch, num_classes: int) -> float | torch.Tensor:
        if not isinstance(self.margin, torch.Tensor):
            return self.margin
        if self.margin.shape[0] != num_classes:
            raise ValueError(f"a {self.margin.shape[0]}-class margin matrix for {num_classes} classes.")
        margin = self._buffer_on("margin", distractors.labels.device)
        if getattr(distractors, "terms", None) is not None:
            return margin[distractors.labels.unsqueeze(1), distractors.terms.distractor_class.clamp_min(0)]
        return margin[distractors.labels, distractors.distractor_class.clamp_min(0)]

    def _buffer_on(self, name: str, device: torch.device) -> torch.Tensor:
        """Buffer ``name`` on ``device``, moved there at the first call and kept there.

        MONAI bundles build the loss on the CPU and never move it; copying a buffer to the GPU at every
        step would be a host-to-device copy (and a host sync) per iteration.
        """
        value = getattr(self, name)
        if value.device != device:
            value = value.to(device)
            setattr(self, name, value)  # still a registered buffer
        return value

    def forward(
        self,
        input: torch.Tensor,
        target: torch.Tensor,
        distractors: DistractorBatch | ResponseMapBatch | None = None,
        lambda_da: float = 1.0,
    ) -> torch.Tensor:
        """
        Args:
            input: logits (B, C).
            target: class indices (B,) or (B, 1), or one-hot/probabilities (B, C).
            distractors: the miner's output for this batch; default: those handed over with
                :meth:`set_distractors`, else none (plain cross-entropy).
            lambda_da: weight of ``L_DA`` when ``distractors`` is given here. Default 1.0.

        Raises:
            ValueError: for bad shapes, labels out of range (checked on the CPU; on an accelerator a
                device-side assertion, to avoid a host sync), or distractors of another batch size.
        """
        target = self._check(input, target)
        if distractors is None and self._pending is not None:
            distractors, lambda_da = self._pending
        self._pending = None
        ce = F.cross_entropy(
            input,
            target,
            weight=None if self.class_weight is None else self._buffer_on("class_weight", input.device),
            reduction=self.reduction,
            label_smoothing=self.label_smoothing,
        )
        if distractors is None:
            da = torch.zeros_like(ce)
        elif isinstance(distractors, ResponseMapBatch):
            if distractors.batch_size != input.shape[0]:
                raise ValueError(f"response maps for a batch of {distractors.batch_size}, logits for {input.shape[0]}.")
            da = response_map_loss(
                distractors, self._margins(distractors, input.shape[1]), self.p, self.eps, self.reduction
            ).to(ce.dtype)
        else:
            if distractors.batch_size != input.shape[0]:
                raise ValueError(f"distractors for a batch of {distractors.batch_size}, logits for {input.shape[0]}.")
            terms = distractors.terms
            da = distractor_aware_loss(
                distractors.features,
                distractors.distractor_features if terms is None else terms.features,
                distractors.neuron_weights if terms is None else terms.neuron_weights,
                distractors.has_distractor,
                margin=self._margins(distractors, input.shape[1]),
                p=self.p,
                eps=self.eps,
                reduction=self.reduction,
                term_weights=None if terms is None else terms.weights,
            ).to(ce.dtype)
        self.last_components = {"ce": ce.detach(), "da": da.detach()}
        return ce + lambda_da * da
