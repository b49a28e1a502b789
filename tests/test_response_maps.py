"""The paper's second reading: class response maps and input-gradient maps, on a real MONAI ResNet."""

from __future__ import annotations

import pytest
import torch
from monai.networks.nets import resnet18

from monai_danil.handlers import DistractorMiningHandler
from monai_danil.losses import DistractorAwareLoss, response_map_loss
from monai_danil.mining import ResponseMapMiner, class_response_maps
from monai_danil.networks import NeuronTap


def _net() -> torch.nn.Module:
    torch.manual_seed(0)
    return resnet18(spatial_dims=2, n_input_channels=3, num_classes=4, conv1_t_size=3, conv1_t_stride=1)


def test_spatial_mean_of_the_map_difference_is_the_logit_margin():
    net = _net().eval()
    tap = NeuronTap(net, source="feature_map").attach()
    logits = net(torch.rand(3, 3, 28, 28))
    activations = tap.pop()
    assert activations.shape == (3, 512, 2, 2)  # 28 px: the last block is 2 x 2 with the max-pool stem
    y, c = torch.tensor([0, 1, 2]), torch.tensor([3, 0, 1])
    margin = class_response_maps(activations, net.fc.weight, y) - class_response_maps(activations, net.fc.weight, c)
    expected = logits.gather(1, y[:, None]) - logits.gather(1, c[:, None]) - (net.fc.bias[y] - net.fc.bias[c])[:, None]
    assert torch.allclose(margin.mean(dim=1, keepdim=True), expected, atol=1e-5)


def test_response_maps_are_of_the_true_and_the_most_confusing_class():
    activations = torch.zeros(2, 2, 1, 3)
    activations[:, 0, 0] = torch.tensor([1.0, 0.0, 0.0])  # channel 0 fires on the left
    activations[:, 1, 0] = torch.tensor([0.0, 0.0, 1.0])  # channel 1 on the right
    weight = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, -1.0]])
    logits = torch.tensor([[5.0, 1.0, 2.0], [1.0, 5.0, 0.0]])  # sample 0: confused with class 2; 1 with class 0
    batch = ResponseMapMiner().mine(activations, logits, torch.tensor([0, 1]), weight)
    assert batch.distractor_class.tolist() == [2, 0]
    assert batch.true_maps[0].tolist() == [1.0, 0.0, 0.0] and batch.distractor_maps[0].tolist() == [1.0, 0.0, 0.0]
    assert batch.true_maps[1].tolist() == [0.0, 0.0, 1.0] and batch.distractor_maps[1].tolist() == [1.0, 0.0, 0.0]
    # identical maps: distance 0, the full margin; disjoint maps: distance sqrt(2), no loss at margin 1
    per_sample = response_map_loss(batch, margin=1.0, reduction="none")
    assert per_sample[0].item() == pytest.approx(1.0, abs=1e-3) and per_sample[1].item() == 0.0
    # a single class: no distractor, zero loss with a valid graph
    single = ResponseMapMiner().mine(activations.requires_grad_(True), logits[:, :1], torch.tensor([0, 0]), weight[:1])
    loss = response_map_loss(single)
    loss.backward()
    assert loss.item() == 0.0 and not single.has_distractor.any()


def test_input_gradient_maps_need_grad_and_train_through_a_second_backward():
    net = _net().train()
    loss_fn = DistractorAwareLoss(margin=1.0)
    tap = NeuronTap(net, source="input").attach()
    images, labels = torch.rand(4, 3, 16, 16), torch.tensor([0, 1, 2, 3])
    logits = net(images)
    inputs = tap.pop()
    assert inputs is images and inputs.requires_grad
    batch = ResponseMapMiner("input_gradient").mine(inputs, logits, labels)
    assert batch.true_maps.shape == (4, 256) and (batch.true_maps >= 0).all()
    loss = loss_fn(logits, labels, distractors=batch, lambda_da=1.0)
    assert torch.isfinite(loss_fn.last_components["da"])
    loss.backward()
    grads = [p.grad for p in net.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
    with torch.no_grad(), pytest.raises(ValueError, match="require grad"):
        ResponseMapMiner("input_gradient").mine(torch.rand(2, 3, 4, 4), torch.rand(2, 4), labels[:2])
    with pytest.raises(ValueError, match="reading"):
        ResponseMapMiner("gradcam")


@pytest.mark.parametrize("reading", ["response_map", "input_gradient"])
def test_the_handler_trains_either_reading_in_a_monai_trainer(reading):
    from monai.engines import SupervisedTrainer

    net = _net()
    loss = DistractorAwareLoss(margin=1.0)
    handler = DistractorMiningHandler(net, loss, miner=ResponseMapMiner(reading), lambda_max=1.0)
    data = [{"image": torch.rand(4, 3, 16, 16), "label": torch.tensor([0, 1, 2, 3])} for _ in range(2)]
    trainer = SupervisedTrainer(
        device=torch.device("cpu"), max_epochs=1, train_data_loader=data, network=net,
        optimizer=torch.optim.SGD(net.parameters(), lr=0.01), loss_function=loss, train_handlers=[handler],
    )
    trainer.run()
    assert handler.miner.bank_size == 0 and handler.state_dict() == {"miner": {}}
    assert torch.isfinite(loss.last_components["da"]) and handler.last_batch.true_maps.shape[0] == 4
    output = trainer.state.output[0]
    assert 0.0 <= output["danil_distance"] <= 2.0 and output["danil_fraction"] == 1.0
