"""NeuronTap and create_network: the tap reads neurons without changing the network."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from monai_danil.networks import NETWORK_NAMES, NeuronTap, create_network, load_local_weights


@pytest.mark.parametrize(
    "name, dim",
    [("densenet121", 1024), ("resnet18", 512), ("resnet34", 512), ("resnet50", 2048), ("seresnet50", 2048),
     ("efficientnet-b0", 1280)],
)
def test_default_tap_reads_pooled_features_and_changes_nothing(name, dim):
    torch.manual_seed(0)
    net = create_network(name, num_classes=4).eval()
    keys = list(net.state_dict())
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        before = net(x)
    tap = NeuronTap(net).attach()
    with torch.no_grad():
        after = net(x)
    features = tap.pop()
    assert torch.equal(before, after)
    assert list(net.state_dict()) == keys
    assert features.shape == (2, dim)
    assert tap.classifier_weight.shape == (4, dim)
    # the tapped neurons are what the classifier sees (before any dropout, identity in eval)
    head = net.get_submodule(tap.classifier)
    assert torch.allclose(head(features), after, atol=1e-5)
    assert tap.pop() is None  # handed over once
    tap.detach()
    net(x)
    assert tap.pop() is None


def test_tap_before_dropout_in_training_mode():
    net = create_network("efficientnet-b0", num_classes=3).train()
    net._dropout.p = 0.9
    tap = NeuronTap(net).attach()
    net(torch.rand(2, 3, 32, 32))
    features = tap.pop()
    # with 90% dropout after pooling, a post-dropout tap would be mostly zeros
    assert (features == 0).float().mean() < 0.5
    assert features.requires_grad


def test_generic_module_by_name_and_spatial_pooling():
    net = nn.Sequential()
    net.add_module("body", nn.Conv2d(3, 8, 3, padding=1))
    net.add_module("pool", nn.AdaptiveAvgPool2d(1))
    net.add_module("flat", nn.Flatten())
    net.add_module("fc", nn.Linear(8, 2))
    tap = NeuronTap(net, layer="body", classifier="fc").attach()
    x = torch.rand(2, 3, 5, 5)
    net(x)
    assert torch.allclose(tap.pop(), net.body(x).mean(dim=(2, 3)))
    with pytest.raises(ValueError, match="no default neuron layer"):
        NeuronTap(net)
    with pytest.raises(ValueError, match="no layer module named 'bdy'.*'body'"):
        NeuronTap(net, layer="bdy")
    with pytest.raises(ValueError, match="must be an nn.Linear"):
        NeuronTap(net, layer="pool", classifier="body")


def test_data_parallel_wrapper_is_unwrapped():
    net = create_network("resnet18", num_classes=2)
    tap = NeuronTap(nn.DataParallel(net)).attach()
    net(torch.rand(2, 3, 16, 16))
    assert tap.pop().shape == (2, 512)


def test_create_network_never_downloads_and_loads_local_weights(tmp_path):
    assert "efficientnet-b0" in NETWORK_NAMES
    with pytest.raises(ValueError, match="unknown network"):
        create_network("vgg16", 2)
    source = create_network("resnet18", num_classes=10)
    path = tmp_path / "weights.pt"
    torch.save(source.state_dict(), path)
    target = create_network("resnet18", num_classes=3, weights=path)
    assert torch.equal(target.conv1.weight, source.conv1.weight)
    assert target.fc.weight.shape == (3, 512)  # the head of another class count stays initialised
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        create_network("resnet18", num_classes=3, weights=tmp_path / "missing.pt")
    torch.save(create_network("densenet121", 3).state_dict(), tmp_path / "dense.pt")
    with pytest.raises(ValueError, match="filled only"):
        load_local_weights(create_network("resnet18", 3), tmp_path / "dense.pt")
