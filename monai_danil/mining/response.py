"""The paper's second reading: the network's response to the true and to the most confusing class (torch only).

METHOD.md records a reading in which the distractor-aware loss compares the network's own response to
an image's true class ``y`` with its response to the class ``c`` it finds most plausible among the
wrong ones, and pushes the two apart with a margin. The distractor is then a *class*, not another
image, and no memory bank is needed. :class:`ResponseMapMiner` builds the two maps in one of two forms
(project readings; the paper's text is not available here):

- ``reading="response_map"`` (cheap): class response maps of the last convolutional block, ``M_k =
  sum_d W[k, d] * A_d`` (class activation maps), from the block's activations ``A`` (B, D, H, W) and the
  classifier weight ``W`` (detached: the maps train the neurons, not the head); the maps compared are
  ``relu(M_y)`` and ``relu(M_c)``, each L2-normalised over the positions. For a global-average-pooling
  plus linear head the spatial mean of ``M_y - M_c`` is ``z_y - z_c - (b_y - b_c)``; normalising the maps
  keeps the loss from being satisfied by changing the logits (by making ``c`` win). Why not gradients at
  the last block: for such a head, ``d z_k / d A`` is ``W[k] / (H * W)`` at every position, the same for
  every input, and carries no spatial information.
- ``reading="input_gradient"``: saliency maps ``|d z_k / d x|`` summed over the input channels, for
  ``k = y`` and ``k = c``, L1-normalised over the pixels and compared by their L1 distance (in [0, 2]).
  The gradients are taken with ``create_graph=True``, so the loss back-propagates through them: a second
  backward pass (double back-propagation). Since ``d CE(y) / dx - d CE(c) / dx = d (z_c - z_y) / dx``, a
  margin on the two saliency maps rewards the network for grounding its true class and its most
  confusing class on different pixels. Under training-mode BatchNorm the batch's samples interact, so
  the per-sample gradients of the summed logits are those of the batch, not of each image alone.

The loss (:class:`~monai_danil.losses.DistractorAwareLoss`) applies its usual hinge, ``max(0, margin -
d) ** p``, with ``d`` the distance of the two normalised maps, averaged over the batch.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

__all__ = ["RESPONSE_READINGS", "ResponseMapBatch", "ResponseMapMiner", "class_response_maps"]

RESPONSE_READINGS = ("response_map", "input_gradient")
_EPS = 1e-12


@dataclass
class ResponseMapBatch:
    """The two response maps of every anchor, as the loss needs them.

    Attributes:
        true_maps: (B, P) the response to the true class over P positions, non-negative, in the graph.
        distractor_maps: (B, P) the response to the distractor class.
        normalization: ``"l2"`` (maps compared as unit vectors, Euclidean distance in [0, sqrt(2)]) or
            ``"l1"`` (as distributions over the positions, L1 distance in [0, 2]).
        has_distractor: (B,) bool: a wrong class exists (more than one class).
        distractor_class: (B,) ``c``, -1 where none.
        labels: (B,) the anchors' labels.
    """

    true_maps: torch.Tensor
    distractor_maps: torch.Tensor
    normalization: str
    has_distractor: torch.Tensor
    distractor_class: torch.Tensor
    labels: torch.Tensor

    @property
    def batch_size(self) -> int:
        return self.true_maps.shape[0]

    @property
    def distractor_id(self) -> torch.Tensor:
        """(B,) -1: the distractor is a class, not a sample (kept so the pair views can read any batch)."""
        return torch.full_like(self.labels, -1)

    @property
    def from_bank(self) -> torch.Tensor:
        """(B,) ``False``: this reading has no memory bank."""
        return torch.zeros_like(self.has_distractor)

    @property
    def similarity(self) -> torch.Tensor:
        """(B,) ``1 - d**2 / 2`` of the normalised maps (their cosine for ``"l2"``), 0 where none."""
        distance = self.distances().detach()
        return torch.where(self.has_distractor, 1.0 - distance.pow(2) / 2.0, torch.zeros_like(distance))

    def distances(self, eps: float = 0.0) -> torch.Tensor:
        """(B,) the distance of the two normalised maps (``sqrt(||u - v||^2 + eps)`` for ``"l2"``)."""
        if self.normalization == "l2":
            u = F.normalize(self.true_maps.float(), dim=1, eps=_EPS)
            v = F.normalize(self.distractor_maps.float(), dim=1, eps=_EPS)
            return ((u - v).pow(2).sum(dim=1) + eps).sqrt()
        u = F.normalize(self.true_maps.float(), p=1, dim=1, eps=_EPS)
        v = F.normalize(self.distractor_maps.float(), p=1, dim=1, eps=_EPS)
        return (u - v).abs().sum(dim=1)

    def figures(self) -> dict[str, torch.Tensor]:
        """Detached 0-d summaries for logging, computed on the device (no sync)."""
        has = self.has_distractor.float()
        count = has.sum().clamp_min(1.0)
        return {
            "distance": (self.distances().detach() * has).sum() / count,
            "fraction": has.mean(),
            "from_bank": torch.zeros_like(has.mean()),
        }


def class_response_maps(activations: torch.Tensor, weight: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
    """(B, P) class activation maps ``M_k = sum_d W[k, d] * A_d`` of one class per sample, not rectified.

    Args:
        activations: (B, D, H, W) the activations that the classifier's global pooling averages.
        weight: (C, D) the classifier's weight.
        classes: (B,) the class whose map each sample gets.

    Raises:
        ValueError: when the weight does not match the activations' channels.

    Example:
        >>> maps = class_response_maps(torch.ones(1, 2, 3, 3), torch.tensor([[1.0, 2.0]]), torch.tensor([0]))
        >>> maps.shape, float(maps[0, 0])
        (torch.Size([1, 9]), 3.0)
    """
    if weight.ndim != 2 or activations.ndim < 3 or weight.shape[1] != activations.shape[1]:
        raise ValueError(
            f"classifier weight {tuple(weight.shape)} does not match the activations {tuple(activations.shape)}: "
            "the tapped layer must be the one the classifier pools."
        )
    return torch.einsum("bd,bdp->bp", weight.to(activations.dtype)[classes], activations.flatten(2))


class ResponseMapMiner:
    """Builds the response maps of the true class and of the most confusing wrong class (see the module).

    :class:`~monai_danil.handlers.DistractorMiningHandler` feeds it what :attr:`source` names: the
    activations of the layer that the classifier pools (``"feature_map"``) or the network's input, made
    to require grad (``"input"``). It keeps no state (no memory bank).

    Args:
        reading: ``"response_map"`` or ``"input_gradient"``. Default ``"response_map"``.

    Raises:
        ValueError: for an unknown reading.

    Example:
        >>> miner = ResponseMapMiner()
        >>> maps, logits = torch.rand(2, 8, 4, 4, requires_grad=True), torch.randn(2, 3)
        >>> batch = miner.mine(maps, logits, torch.tensor([0, 2]), classifier_weight=torch.randn(3, 8))
        >>> batch.true_maps.shape
        torch.Size([2, 16])
    """

    def __init__(self, reading: str = "response_map") -> None:
        if reading not in RESPONSE_READINGS:
            raise ValueError(f"reading must be one of {RESPONSE_READINGS}, got {reading!r}.")
        self.reading = reading

    @property
    def source(self) -> str:
        """What the miner reads from the network: ``"feature_map"`` or ``"input"``."""
        return "feature_map" if self.reading == "response_map" else "input"

    @property
    def bank_size(self) -> int:
        return 0

    def state_dict(self) -> dict:
        """Nothing to keep (no bank); present so checkpoints treat both miners alike."""
        return {}

    def load_state_dict(self, state: dict) -> None:
        """Nothing to restore."""

    def mine(
        self,
        source: torch.Tensor,
        logits: torch.Tensor,
        labels: torch.Tensor,
        classifier_weight: torch.Tensor | None = None,
        ids: torch.Tensor | None = None,
    ) -> ResponseMapBatch:
        """The two maps of every sample.

        Args:
            source: ``"response_map"``: the pooled layer's activations (B, D, H, W); ``"input_gradient"``:
                the network's input (B, C_in, H, W), requiring grad, from which ``logits`` were computed.
            logits: (B, C) classifier outputs (in the graph for ``"input_gradient"``).
            labels: (B,) or (B, 1) class indices.
            classifier_weight: (C, D), needed by ``"response_map"``.
            ids: unused (the interface of :class:`~monai_danil.mining.DistractorMiner`).

        Raises:
            ValueError: on shapes that do not fit, a missing classifier weight, or an input without grad.
        """
        labels = labels.reshape(-1).to(device=logits.device, dtype=torch.long)
        if logits.ndim != 2 or source.ndim < 3 or source.shape[0] != logits.shape[0] or labels.shape[0] != logits.shape[0]:
            raise ValueError(
                f"mine needs a spatial source (B, D, ...), logits (B, C) and labels (B,); got {tuple(source.shape)}, "
                f"{tuple(logits.shape)}, {tuple(labels.shape)}."
            )
        num_classes = logits.shape[1]
        own = F.one_hot(labels.clamp(0, num_classes - 1), num_classes).bool()
        distractor = logits.detach().float().masked_fill(own, float("-inf")).argmax(dim=1)
        has = torch.full_like(labels, num_classes > 1, dtype=torch.bool)
        if self.reading == "response_map":
            true_maps, distractor_maps = self._class_maps(source, classifier_weight, labels, distractor)
            normalization = "l2"
        else:
            true_maps, distractor_maps = self._saliency(source, logits, labels, distractor)
            normalization = "l1"
        return ResponseMapBatch(
            true_maps=true_maps,
            distractor_maps=distractor_maps,
            normalization=normalization,
            has_distractor=has,
            distractor_class=torch.where(has, distractor, torch.full_like(distractor, -1)),
            labels=labels,
        )

    @staticmethod
    def _class_maps(
        activations: torch.Tensor, classifier_weight: torch.Tensor | None, labels: torch.Tensor, distractor: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if classifier_weight is None:
            raise ValueError("reading='response_map' needs the classifier's weight (C, D): name the classifier layer.")
        weight = classifier_weight.detach()
        true_maps = class_response_maps(activations, weight, labels)
        distractor_maps = class_response_maps(activations, weight, distractor)
        return F.relu(true_maps), F.relu(distractor_maps)

    @staticmethod
    def _saliency(
        inputs: torch.Tensor, logits: torch.Tensor, labels: torch.Tensor, distractor: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if not inputs.requires_grad or not logits.requires_grad:
            raise ValueError(
                "reading='input_gradient' needs the network input to require grad and the logits in its graph "
                "(the handler's input tap does this in training; it cannot run under torch.no_grad)."
            )
        maps = []
        for classes in (labels, distractor):
            (grad,) = torch.autograd.grad(
                logits.gather(1, classes.unsqueeze(1)).sum(), inputs, create_graph=True, retain_graph=True
            )
            maps.append(grad.abs().sum(dim=1).flatten(1))
        return maps[0], maps[1]
