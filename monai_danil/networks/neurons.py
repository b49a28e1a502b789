"""Reading the neurons of a classifier: the feature vector that DANIL mines in.

DANIL works in the network's own feature space. :class:`NeuronTap` reads the activations of one
layer on every forward pass through a forward hook, so the network itself is untouched: its
outputs, its ``state_dict`` keys and its ``eval()`` behaviour stay those of the plain network, and
a ``model.pt`` trained with DANIL loads into the plain MONAI class.

The default layer is the globally pooled feature vector that feeds the classifier, taken *before*
any dropout (EfficientNetBN and SENet apply dropout between pooling and the last ``nn.Linear``;
a mined feature must not be randomly masked).
"""

from __future__ import annotations

import difflib
from typing import Any

import torch
from torch import nn

__all__ = ["TAP_SOURCES", "NeuronTap", "default_layers", "unwrap_network"]

# (tapped layer, classifier) of the MONAI classification networks, by class name. The tapped
# layer is the global pooling (or the flatten just after it), never the dropout that may follow.
_MONAI_DEFAULT_LAYERS: dict[str, tuple[str, str]] = {
    "DenseNet": ("class_layers.flatten", "class_layers.out"),
    "DenseNet121": ("class_layers.flatten", "class_layers.out"),
    "DenseNet169": ("class_layers.flatten", "class_layers.out"),
    "DenseNet201": ("class_layers.flatten", "class_layers.out"),
    "DenseNet264": ("class_layers.flatten", "class_layers.out"),
    "ResNet": ("avgpool", "fc"),
    "SENet": ("adaptive_avg_pool", "last_linear"),
    "SEResNet50": ("adaptive_avg_pool", "last_linear"),
    "SEResNet101": ("adaptive_avg_pool", "last_linear"),
    "SEResNet152": ("adaptive_avg_pool", "last_linear"),
    "SEResNext50": ("adaptive_avg_pool", "last_linear"),
    "SEResNext101": ("adaptive_avg_pool", "last_linear"),
    "SENet154": ("adaptive_avg_pool", "last_linear"),
    "EfficientNet": ("_avg_pooling", "_fc"),
    "EfficientNetBN": ("_avg_pooling", "_fc"),
}


# the global pooling whose *input* is the last block's activation map (B, D, H, W), by class name:
# what the tap reads with source="feature_map" (the response-map reading)
_MONAI_POOLING_LAYERS: dict[str, str] = {
    "DenseNet": "class_layers.pool",
    "ResNet": "avgpool",
    "SENet": "adaptive_avg_pool",
    "EfficientNet": "_avg_pooling",
}

TAP_SOURCES = ("features", "feature_map", "input")


def unwrap_network(network: nn.Module) -> nn.Module:
    """Return the wrapped module of ``DistributedDataParallel``/``DataParallel``, else ``network``."""
    while isinstance(network, (nn.parallel.DistributedDataParallel, nn.DataParallel)):
        network = network.module
    return network


def default_layers(network: nn.Module) -> tuple[str, str] | None:
    """The default ``(layer, classifier)`` module names for a known MONAI network, else ``None``.

    Args:
        network: a MONAI DenseNet, ResNet, SENet/SEResNet or EfficientNetBN (optionally wrapped
            in DDP/DataParallel).
    """
    return _known(unwrap_network(network), _MONAI_DEFAULT_LAYERS)


def _known(network: nn.Module, table: dict) -> Any:
    """The entry of ``table`` for the network's class or its nearest MONAI base class, else ``None``."""
    for cls in type(network).__mro__:
        if cls.__name__ in table:
            return table[cls.__name__]
    return None


def _submodule(network: nn.Module, name: str, role: str) -> nn.Module:
    try:
        return network.get_submodule(name)
    except AttributeError:
        names = [n for n, _ in network.named_modules() if n]
        close = difflib.get_close_matches(name, names, n=5)
        hint = f" Close matches: {close}." if close else f" Modules: {names[:20]}{' ...' if len(names) > 20 else ''}."
        raise ValueError(f"{type(network).__name__} has no {role} module named {name!r}.{hint}") from None


def _pooled(activation: torch.Tensor) -> torch.Tensor:
    """(B, D) from a layer's output: flatten a pooled map, globally average a spatial one."""
    if activation.ndim == 2:
        return activation
    if activation.ndim < 2:
        raise ValueError(f"a tapped layer must output at least (B, D), got shape {tuple(activation.shape)}.")
    if all(s == 1 for s in activation.shape[2:]):
        return activation.flatten(1)
    return activation.flatten(2).mean(dim=2)


class NeuronTap:
    """Reads the neurons of one layer of ``network`` on each forward pass, without changing it.

    A forward hook stores the layer's output as a ``(B, D)`` tensor (a spatial map is globally
    averaged, a ``(B, D, 1, 1)`` map flattened), still attached to the autograd graph so a loss on
    it trains the network. ``pop()`` hands the latest features over once, so features of an
    earlier pass (a validation round, say) are never mistaken for the current batch's.

    Args:
        network: the classifier. MONAI's DenseNet, ResNet, SENet/SEResNet and EfficientNetBN have
            defaults; any other ``nn.Module`` (torchvision, timm) needs ``layer``.
        layer: dotted module name whose output is read, e.g. ``"avgpool"`` for a torchvision
            ResNet, ``"global_pool"`` for timm. Default ``None``: the pooled features that feed the
            classifier of a known MONAI network, before any dropout.
        classifier: dotted module name of the final ``nn.Linear`` whose weights drive DANIL's
            neuron weighting (``W_y - W_c``). Default ``None``: the known MONAI head, else none
            (then only ``neuron_weighting="none"`` can be used).
        source: what is read: ``"features"`` (default, the layer's output as ``(B, D)``),
            ``"feature_map"`` (the *input* of the global pooling, the last block's activations
            ``(B, D, H, W)``; ``layer`` then names the pooling module, by default the known MONAI one)
            or ``"input"`` (the network's input, made to require grad by a forward pre-hook while grad
            is enabled, for gradients with respect to the image).

    Raises:
        ValueError: when ``layer`` is ``None`` for an unknown network, a name does not exist, or the
            source is unknown.

    Example:
        >>> from monai.networks.nets import resnet18
        >>> net = resnet18(spatial_dims=2, n_input_channels=3, num_classes=5)
        >>> tap = NeuronTap(net).attach()
        >>> logits = net(torch.rand(2, 3, 32, 32))
        >>> tap.pop().shape
        torch.Size([2, 512])
    """

    def __init__(
        self, network: nn.Module, layer: str | None = None, classifier: str | None = None, source: str = "features"
    ) -> None:
        if source not in TAP_SOURCES:
            raise ValueError(f"source must be one of {TAP_SOURCES}, got {source!r}.")
        self.source = source
        module = unwrap_network(network)
        self._network = module
        defaults = default_layers(module)
        if layer is None and source == "feature_map":
            layer = _known(module, _MONAI_POOLING_LAYERS)
            if layer is None:
                raise ValueError(
                    f"no default pooling layer is known for {type(module).__name__}: pass layer='<module name>' "
                    "(the global pooling whose input is the last block's activations)."
                )
        if layer is None:
            if defaults is None:
                raise ValueError(
                    f"no default neuron layer is known for {type(module).__name__}: pass layer='<module name>' "
                    "(the pooled features that feed the classifier, e.g. 'avgpool' for torchvision ResNets)."
                )
            layer = defaults[0]
        if classifier is None and defaults is not None:
            classifier = defaults[1]
        self.layer = layer
        self.classifier = classifier
        self._layer_module = _submodule(module, layer, "layer")
        self._classifier_module = _submodule(module, classifier, "classifier") if classifier else None
        if self._classifier_module is not None and not isinstance(self._classifier_module, nn.Linear):
            raise ValueError(
                f"classifier {classifier!r} must be an nn.Linear, got {type(self._classifier_module).__name__}."
            )
        self._handle: torch.utils.hooks.RemovableHandle | None = None
        self._features: torch.Tensor | None = None

    @property
    def classifier_weight(self) -> torch.Tensor | None:
        """The classifier's weight ``W`` (C, D), or ``None`` without a classifier."""
        return None if self._classifier_module is None else self._classifier_module.weight

    @property
    def attached(self) -> bool:
        return self._handle is not None

    def attach(self) -> NeuronTap:
        """Start reading (idempotent). Returns ``self``."""
        if self._handle is None:
            if self.source == "input":
                self._handle = self._network.register_forward_pre_hook(self._input_hook)
            else:
                self._handle = self._layer_module.register_forward_hook(self._hook)
        return self

    def detach(self) -> None:
        """Stop reading and drop any held features."""
        if self._handle is not None:
            self._handle.remove()
            self._handle = None
        self._features = None

    def pop(self) -> torch.Tensor | None:
        """What the latest forward pass gave (features, map or input, see ``source``), once; ``None`` if none since."""
        features, self._features = self._features, None
        return features

    def _hook(self, module: nn.Module, args: tuple, output: torch.Tensor | tuple) -> None:
        if self.source == "feature_map":
            self._features = args[0]
            return
        if isinstance(output, (tuple, list)):
            output = output[0]
        self._features = _pooled(output)

    def _input_hook(self, module: nn.Module, args: tuple) -> None:
        if not args or not isinstance(args[0], torch.Tensor):
            return
        inputs = args[0]
        if torch.is_grad_enabled() and inputs.is_floating_point() and not inputs.requires_grad:
            inputs.requires_grad_(True)  # a leaf from the data loader: only its flag changes
        self._features = inputs

    def __enter__(self) -> NeuronTap:
        return self.attach()

    def __exit__(self, *exc: object) -> None:
        self.detach()
