"""DANIL in a plain PyTorch training loop: no ignite, no MONAI engine.

The miner chooses each image's distractor in the network's pooled features, the loss adds
``lambda * L_DA`` to the cross-entropy, and the bank is updated after the backward pass.
Run it: ``python examples/plain_pytorch_loop.py`` (random tensors stand in for a data loader).
"""

from __future__ import annotations

import torch
from monai.networks.nets import resnet18

from monai_danil.losses import DistractorAwareLoss
from monai_danil.mining import DistractorMiner
from monai_danil.networks import NeuronTap

torch.manual_seed(0)
num_classes, epochs, steps_per_epoch, warmup_epochs, lambda_max = 3, 2, 4, 1, 0.5
net = resnet18(spatial_dims=2, n_input_channels=3, num_classes=num_classes)
tap = NeuronTap(net).attach()  # reads the pooled features that feed net.fc
miner = DistractorMiner(distractor_class="confusing", neuron_weighting="margin", bank_size=64)
loss_fn = DistractorAwareLoss(margin=1.0, p=1)
optimizer = torch.optim.AdamW(net.parameters(), lr=1e-3)

for epoch in range(epochs):
    for step in range(steps_per_epoch):
        images = torch.rand(16, 3, 32, 32)
        labels = torch.randint(0, num_classes, (16,))
        ids = torch.arange(16) + 16 * step  # dataset indices, so a distractor can be traced to its image
        logits = net(images)
        features = tap.pop()
        distractors = miner.mine(features, logits, labels, classifier_weight=tap.classifier_weight, ids=ids)
        progress = (epoch * steps_per_epoch + step + 1) / (warmup_epochs * steps_per_epoch)
        loss = loss_fn(logits, labels, distractors=distractors, lambda_da=lambda_max * min(1.0, progress))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        miner.update(features, labels, ids)  # after the step: a batch never mines itself from the bank
    print(f"epoch {epoch + 1}: loss {loss.item():.4f} (ce {loss_fn.last_components['ce']:.4f}, "
          f"distractor {loss_fn.last_components['da']:.4f}), bank {miner.bank.count} samples")
