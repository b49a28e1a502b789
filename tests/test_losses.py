"""DistractorAwareLoss and distractor_aware_loss on hand-computed cases."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from monai_danil.losses import DistractorAwareLoss, distractor_aware_loss
from monai_danil.mining import DistractorBatch, DistractorMiner


def _batch(features, distractors, weights=None, has=None, labels=None) -> DistractorBatch:
    b = features.shape[0]
    return DistractorBatch(
        features=features,
        distractor_features=distractors,
        neuron_weights=torch.ones_like(features) if weights is None else weights,
        has_distractor=torch.ones(b, dtype=torch.bool) if has is None else has,
        distractor_class=torch.zeros(b, dtype=torch.long),
        distractor_id=torch.full((b,), -1),
        from_bank=torch.zeros(b, dtype=torch.bool),
        similarity=torch.zeros(b),
        labels=torch.zeros(b, dtype=torch.long) if labels is None else labels,
    )


def test_margin_hinge_and_p_by_hand():
    # anchor (1, 0) and distractor (1, 1): cosine 1/sqrt(2), d = sqrt(2 - sqrt(2)) = 0.765367
    f = torch.tensor([[1.0, 0.0]])
    g = torch.tensor([[1.0, 1.0]])
    d = math.sqrt(2 - math.sqrt(2))
    has = torch.tensor([True])
    w = torch.ones(1, 2)
    got = distractor_aware_loss(f, g, w, has, margin=1.0, p=1, eps=0.0)
    assert got.item() == pytest.approx(1.0 - d, abs=1e-6)
    got2 = distractor_aware_loss(f, g, w, has, margin=1.0, p=2, eps=0.0)
    assert got2.item() == pytest.approx((1.0 - d) ** 2, abs=1e-6)
    # the hinge is inactive once d exceeds the margin
    assert distractor_aware_loss(f, g, w, has, margin=0.5, eps=0.0).item() == 0.0
    # orthogonal features: d = sqrt(2), so only a margin above sqrt(2) is active
    o = torch.tensor([[0.0, 1.0]])
    assert distractor_aware_loss(f, o, w, has, margin=1.4, eps=0.0).item() == 0.0
    assert distractor_aware_loss(f, o, w, has, margin=1.5, eps=0.0).item() == pytest.approx(1.5 - math.sqrt(2))


def test_neuron_weighting_changes_the_distance():
    # with weights (1, 0) only the first neuron counts: (1, 0) vs (1, 1) become identical, d = sqrt(eps)
    f = torch.tensor([[1.0, 0.0]])
    g = torch.tensor([[1.0, 1.0]])
    w = torch.tensor([[1.0, 0.0]])
    got = distractor_aware_loss(f, g, w, torch.tensor([True]), margin=1.0, eps=1e-8)
    assert got.item() == pytest.approx(1.0 - 1e-4, abs=1e-6)
    # weights matter only up to scale
    assert distractor_aware_loss(f, g, 7 * w, torch.tensor([True])).item() == pytest.approx(got.item())


def test_reduction_counts_only_samples_with_a_distractor():
    f = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    g = torch.tensor([[1.0, 1.0], [1.0, 0.0], [1.0, 1.0]])
    has = torch.tensor([True, True, False])
    w = torch.ones(3, 2)
    per = distractor_aware_loss(f, g, w, has, margin=1.0, eps=0.0, reduction="none")
    d0 = math.sqrt(2 - math.sqrt(2))
    assert per.tolist() == pytest.approx([1 - d0, 1.0, 0.0], abs=1e-6)
    assert distractor_aware_loss(f, g, w, has, eps=0.0, reduction="sum").item() == pytest.approx(2 - d0, abs=1e-6)
    assert distractor_aware_loss(f, g, w, has, eps=0.0, reduction="mean").item() == pytest.approx((2 - d0) / 2, abs=1e-6)
    with pytest.raises(ValueError, match="reduction"):
        distractor_aware_loss(f, g, w, has, reduction="max")


def test_no_distractor_gives_zero_with_a_valid_graph():
    f = torch.rand(4, 8, requires_grad=True)
    loss = distractor_aware_loss(f, f.detach().flip(0), torch.ones(4, 8), torch.zeros(4, dtype=torch.bool))
    assert loss.item() == 0.0
    loss.backward()
    assert f.grad is not None and torch.equal(f.grad, torch.zeros_like(f))


def test_identical_features_are_not_nan():
    f = torch.rand(3, 5, requires_grad=True)
    loss = distractor_aware_loss(f, f, torch.ones(3, 5), torch.ones(3, dtype=torch.bool))
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(f.grad).all()
    zero = torch.zeros(2, 5, requires_grad=True)
    loss = distractor_aware_loss(zero, zero, torch.ones(2, 5), torch.ones(2, dtype=torch.bool))
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(zero.grad).all()


def test_gradient_reaches_features_and_in_batch_distractor():
    f = torch.tensor([[1.0, 0.2, 0.0], [0.9, 0.3, 0.1]], requires_grad=True)
    # the second sample is the first one's distractor, taken from the batch (graph kept)
    distractors = torch.stack([f[1], f[0].detach()])
    loss = distractor_aware_loss(f, distractors, torch.ones(2, 3), torch.tensor([True, False]))
    loss.backward()
    assert f.grad[0].abs().sum() > 0 and f.grad[1].abs().sum() > 0
    # minimising the loss moves the anchor away from its distractor
    with torch.no_grad():
        before = F.cosine_similarity(f[0:1], f[1:2]).item()
        moved = f - 0.1 * f.grad
        after = F.cosine_similarity(moved[0:1], moved[1:2]).item()
    assert after < before


def test_module_combines_ce_and_lambda_times_da():
    torch.manual_seed(0)
    logits = torch.randn(4, 3, requires_grad=True)
    target = torch.tensor([0, 1, 2, 1])
    f = torch.rand(4, 6, requires_grad=True)
    batch = _batch(f, f.detach().roll(1, 0))
    loss_fn = DistractorAwareLoss(margin=1.2, p=2)
    da = distractor_aware_loss(f, f.detach().roll(1, 0), torch.ones(4, 6), torch.ones(4, dtype=torch.bool), 1.2, 2)
    ce = F.cross_entropy(logits, target)
    got = loss_fn(logits, target, distractors=batch, lambda_da=0.3)
    assert got.item() == pytest.approx(ce.item() + 0.3 * da.item(), rel=1e-6)
    assert loss_fn.last_components["ce"].item() == pytest.approx(ce.item())
    assert loss_fn.last_components["da"].item() == pytest.approx(da.item())
    # no mining context: plain cross-entropy
    assert loss_fn(logits, target).item() == pytest.approx(ce.item())


def test_handed_over_distractors_are_used_once():
    logits = torch.randn(3, 2)
    target = torch.tensor([0, 1, 0])
    f = torch.rand(3, 4)
    loss_fn = DistractorAwareLoss()
    loss_fn.set_distractors(_batch(f, f.roll(1, 0)), lambda_da=2.0)
    with_da = loss_fn(logits, target)
    plain = loss_fn(logits, target)
    assert with_da.item() > plain.item()
    assert plain.item() == pytest.approx(F.cross_entropy(logits, target).item())


def test_lambda_zero_is_cross_entropy():
    logits, target, f = torch.randn(3, 2), torch.tensor([0, 1, 1]), torch.rand(3, 4)
    loss_fn = DistractorAwareLoss()
    got = loss_fn(logits, target, distractors=_batch(f, f.roll(1, 0)), lambda_da=0.0)
    assert got.item() == pytest.approx(F.cross_entropy(logits, target).item())


def test_class_weights_label_smoothing_and_reduction_none():
    logits = torch.randn(5, 3)
    target = torch.tensor([[0], [1], [2], [1], [1]])
    w = [1.0, 2.0, 0.5]
    loss_fn = DistractorAwareLoss(weight=w, label_smoothing=0.1, reduction="none")
    ref = F.cross_entropy(logits, target[:, 0], weight=torch.tensor(w), label_smoothing=0.1, reduction="none")
    assert torch.allclose(loss_fn(logits, target), ref)
    assert loss_fn.class_weight is not None and "class_weight" in dict(loss_fn.named_buffers())
    f = torch.rand(5, 4)
    per = loss_fn(logits, target, distractors=_batch(f, f.roll(1, 0)), lambda_da=1.0)
    assert per.shape == (5,)


@pytest.mark.parametrize("batch_size", [1, 2])
def test_batch_of_one_and_single_class_batch_with_miner(batch_size):
    miner = DistractorMiner(bank_size=0)
    head = torch.nn.Linear(6, 3)
    f = torch.rand(batch_size, 6, requires_grad=True)
    logits = head(f)
    y = torch.zeros(batch_size, dtype=torch.long)  # one class only: nobody has a distractor
    batch = miner.mine(f, logits, y, classifier_weight=head.weight)
    loss = DistractorAwareLoss()(logits, y, distractors=batch)
    loss.backward()
    assert torch.isfinite(loss)
    assert not batch.has_distractor.any()
    assert loss.item() == pytest.approx(F.cross_entropy(logits, y).item())


def test_bad_inputs_raise_value_error():
    loss_fn = DistractorAwareLoss()
    with pytest.raises(ValueError, match=r"\(B, C\)"):
        loss_fn(torch.randn(4), torch.zeros(4, dtype=torch.long))
    with pytest.raises(ValueError, match="label 3 out of range for 3 classes"):
        loss_fn(torch.randn(2, 3), torch.tensor([0, 3]))
    with pytest.raises(ValueError, match="label -1 out of range"):
        loss_fn(torch.randn(2, 3), torch.tensor([-1, 0]))
    with pytest.raises(ValueError, match="target must be"):
        loss_fn(torch.randn(2, 3), torch.zeros(2, 2, 2))
    with pytest.raises(ValueError, match="distractors for a batch of 3"):
        f = torch.rand(3, 4)
        loss_fn(torch.randn(2, 3), torch.tensor([0, 1]), distractors=_batch(f, f))
    with pytest.raises(ValueError, match="class weights"):
        DistractorAwareLoss(weight=[1.0, 1.0])(torch.randn(2, 3), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="p must be 1 or 2"):
        DistractorAwareLoss(p=3)
    with pytest.raises(ValueError, match="reduction"):
        DistractorAwareLoss(reduction="median")


def test_one_hot_targets():
    logits = torch.randn(3, 4)
    idx = torch.tensor([3, 0, 2])
    one_hot = F.one_hot(idx, 4).float()
    loss_fn = DistractorAwareLoss()
    assert loss_fn(logits, one_hot).item() == pytest.approx(loss_fn(logits, idx).item(), rel=1e-6)


def test_ordinal_margin_matrix_grows_with_grade_distance():
    from monai_danil.losses import ordinal_margins

    m = ordinal_margins(5, margin=1.0)
    assert m[0] == [0.0, 0.25, 0.5, 0.75, 1.0] and m[3][1] == 0.5
    assert ordinal_margins(3, margin=1.2, power=2)[0][1] == pytest.approx(0.3)
    with pytest.raises(ValueError):
        ordinal_margins(1)
    # anchor (1, 0) vs distractor (1, 1): d = 0.765; only the margin for |y - c| = 4 (1.0) is active
    f = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    g = torch.tensor([[1.0, 1.0], [1.0, 1.0]])
    batch = _batch(f, g, labels=torch.tensor([0, 0]))
    batch.distractor_class = torch.tensor([1, 4])
    loss_fn = DistractorAwareLoss(margin=m, eps=0.0, reduction="none")
    assert "margin" in dict(loss_fn.named_buffers())
    per = loss_fn(torch.zeros(2, 5), torch.tensor([0, 0]), distractors=batch, lambda_da=1.0)
    ce = F.cross_entropy(torch.zeros(2, 5), torch.tensor([0, 0]), reduction="none")
    d = math.sqrt(2 - math.sqrt(2))
    assert (per - ce).tolist() == pytest.approx([0.0, 1.0 - d], abs=1e-6)
    with pytest.raises(ValueError, match="5-class margin matrix for 3 classes"):
        loss_fn(torch.zeros(2, 3), torch.tensor([0, 0]), distractors=batch)
    with pytest.raises(ValueError, match=r"\(C, C\) matrix"):
        DistractorAwareLoss(margin=[1.0, 2.0])
    with pytest.raises(ValueError, match="margins must be >= 0"):
        DistractorAwareLoss(margin=-0.1)


def test_buffers_follow_the_input_device():
    """Bundles build the loss on the CPU and never move it: the margin matrix and the class weights must
    meet inputs on another device (CUDA in training; the meta device here, which has no CPU fallback)."""
    from monai_danil.losses import ordinal_margins

    meta = torch.device("meta")
    features = torch.rand(4, 3, device=meta)
    batch = _batch(features, torch.rand(4, 3, device=meta), labels=torch.tensor([0, 1, 2, 3], device=meta))
    batch.has_distractor = torch.ones(4, dtype=torch.bool, device=meta)
    batch.distractor_class = torch.tensor([1, 0, 3, 2], device=meta)
    batch.neuron_weights = torch.ones(4, 3, device=meta)
    loss_fn = DistractorAwareLoss(margin=ordinal_margins(4), weight=[1.0, 2.0, 1.0, 0.5])
    assert loss_fn.margin.device.type == "cpu" and loss_fn.class_weight.device.type == "cpu"
    # (the meta device cannot autocast, so the margins are checked where the loss looks them up)
    assert loss_fn._margins(batch, 4).device == meta
    out = loss_fn(torch.rand(4, 4, device=meta), torch.tensor([0, 1, 2, 3], device=meta))  # weighted CE
    assert out.device == meta and out.shape == ()


def test_the_device_side_label_check_exists_in_this_torch():
    # on an accelerator the loss checks labels with torch's private torch._assert_async(tensor, message):
    # a torch release that drops or changes it fails here, on the CPU, not in a GPU training
    torch._assert_async(torch.tensor(True), "label out of range")
    with pytest.raises(RuntimeError, match="label out of range"):
        torch._assert_async(torch.tensor(False), "label out of range")
