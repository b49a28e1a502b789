"""DistractorMiner and MemoryBank on hand-built features."""

from __future__ import annotations

import io

import pytest
import torch

from monai_danil.mining import DistractorMiner, MemoryBank


def _logits_preferring(labels: torch.Tensor, confusing: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Logits where the true class is highest and ``confusing`` the second."""
    z = torch.zeros(labels.shape[0], num_classes)
    z[torch.arange(labels.shape[0]), labels] = 5.0
    z[torch.arange(labels.shape[0]), confusing] = 2.0
    return z


def test_confusing_class_nearest_sample_is_chosen():
    # anchor 0 (class 0) is most confused with class 2; of the two class-2 samples, #3 is closer
    f = torch.tensor(
        [
            [1.0, 0.0, 0.0],  # 0: class 0, anchor
            [0.9, 0.1, 0.0],  # 1: class 1, nearest overall but not of the confusing class
            [0.0, 0.0, 1.0],  # 2: class 2, far
            [0.7, 0.0, 0.7],  # 3: class 2, nearer
        ]
    )
    y = torch.tensor([0, 1, 2, 2])
    logits = _logits_preferring(y, torch.tensor([2, 0, 0, 0]), 3)
    miner = DistractorMiner(neuron_weighting="none", bank_size=0)
    batch = miner.mine(f, logits, y, ids=torch.tensor([10, 11, 12, 13]))
    assert batch.distractor_class[0].item() == 2
    assert batch.distractor_id[0].item() == 13
    assert torch.equal(batch.distractor_features[0], f[3])
    assert batch.similarity[0].item() == pytest.approx(0.7 / (0.7 * 2**0.5), abs=1e-6)
    # "any" ignores the logits and takes the nearest sample of another class
    any_batch = DistractorMiner(distractor_class="any", bank_size=0).mine(f, logits, y)
    assert torch.equal(any_batch.distractor_features[0], f[1])
    assert any_batch.distractor_class[0].item() == 1


def test_margin_weighting_uses_classifier_rows():
    # W_0 and W_2 differ only in neuron 2, so only neuron 2 decides the distractor of class 2
    w = torch.tensor([[1.0, 1.0, 0.0], [0.0, 0.0, 0.0], [1.0, 1.0, 3.0]])
    f = torch.tensor(
        [
            [1.0, 0.0, 1.0],  # anchor, class 0
            [1.0, 0.0, 0.0],  # class 2: identical on neurons 0-1, zero on neuron 2
            [0.0, 1.0, 1.0],  # class 2: different on 0-1, equal on neuron 2
        ]
    )
    y = torch.tensor([0, 2, 2])
    logits = _logits_preferring(y, torch.tensor([2, 0, 0]), 3)
    plain = DistractorMiner(neuron_weighting="none", bank_size=0).mine(f, logits, y)
    weighted = DistractorMiner(neuron_weighting="margin", bank_size=0).mine(f, logits, y, classifier_weight=w)
    assert torch.equal(plain.distractor_features[0], f[1])  # plain cosine: 1/sqrt(2) vs 1/2
    assert torch.equal(weighted.distractor_features[0], f[2])  # only neuron 2 counts: 1 vs 0
    assert weighted.neuron_weights[0].tolist() == [0.0, 0.0, 3.0]
    assert weighted.similarity[0].item() == pytest.approx(1.0)


def test_topk_mask_and_zero_head_fallback():
    w = torch.tensor([[0.0, 0.0, 0.0, 0.0], [1.0, -2.0, 0.5, 0.0]])
    f = torch.rand(2, 4)
    y = torch.tensor([0, 1])
    logits = _logits_preferring(y, torch.tensor([1, 0]), 2)
    miner = DistractorMiner(neuron_weighting="topk", topk=0.5, bank_size=0)
    batch = miner.mine(f, logits, y, classifier_weight=w)
    # |W_0 - W_1| = (1, 2, 0.5, 0): the top half are neurons 1 and 0
    assert batch.neuron_weights[0].tolist() == [1.0, 1.0, 0.0, 0.0]
    # a zero-initialised head (W_y == W_c) falls back to uniform weights
    zero = DistractorMiner(neuron_weighting="margin", bank_size=0).mine(f, logits, y, classifier_weight=torch.zeros(2, 4))
    assert torch.equal(zero.neuron_weights, torch.ones(2, 4))
    tiny = DistractorMiner(neuron_weighting="topk", topk=0.01, bank_size=0).mine(f, logits, y, classifier_weight=w)
    assert tiny.neuron_weights.sum(dim=1).tolist() == [1.0, 1.0]  # at least one neuron


def test_random_picks_only_other_class_candidates_uniformly():
    torch.manual_seed(0)
    f = torch.rand(6, 4)
    y = torch.tensor([0, 0, 1, 1, 2, 2])
    miner = DistractorMiner(distractor_class="random", bank_size=0)
    chosen = []
    for _ in range(300):
        batch = miner.mine(f, torch.randn(6, 3), y, ids=torch.arange(6))
        assert (batch.distractor_class != y).all() and batch.has_distractor.all()
        chosen.append(batch.distractor_id[0].item())
    counts = torch.bincount(torch.tensor(chosen), minlength=6)
    assert counts[:2].sum() == 0
    assert (counts[2:] > 40).all()  # about 75 each of 4 candidates


def test_random_sample_within_the_confusing_class():
    # anchor 0 (class 0) is confused with class 2; distractor_sample="random" draws either class-2
    # sample (ids 12, 13) about equally, never the nearer class-1 one, and keeps the class choice
    torch.manual_seed(0)
    f = torch.tensor([[1.0, 0.0, 0.0], [0.9, 0.1, 0.0], [0.0, 0.0, 1.0], [0.7, 0.0, 0.7]])
    y = torch.tensor([0, 1, 2, 2])
    logits = _logits_preferring(y, torch.tensor([2, 0, 0, 0]), 3)
    miner = DistractorMiner(neuron_weighting="none", bank_size=0, distractor_sample="random")
    chosen = []
    for _ in range(200):
        batch = miner.mine(f, logits, y, ids=torch.tensor([10, 11, 12, 13]))
        assert batch.distractor_class[0].item() == 2
        chosen.append(batch.distractor_id[0].item())
        # the reported similarity is that of the drawn sample
        drawn = f[batch.distractor_id[0].item() - 10]
        assert batch.similarity[0].item() == pytest.approx(float(f[0] @ drawn / drawn.norm()), abs=1e-6)
    assert set(chosen) == {12, 13} and 60 < chosen.count(12) < 140
    with pytest.raises(ValueError, match="distractor_sample"):
        DistractorMiner(distractor_sample="hardest")


def test_no_candidate_of_the_confusing_class():
    f = torch.rand(3, 4)
    y = torch.tensor([0, 0, 1])
    logits = _logits_preferring(y, torch.tensor([2, 2, 0]), 3)  # class 2 is absent
    batch = DistractorMiner(neuron_weighting="none", bank_size=0).mine(f, logits, y)
    assert batch.has_distractor.tolist() == [False, False, True]
    assert batch.distractor_class.tolist() == [-1, -1, 0]
    assert batch.similarity[:2].tolist() == [0.0, 0.0]
    figures = batch.figures()
    assert figures["fraction"].item() == pytest.approx(1 / 3)
    assert torch.isfinite(figures["distance"])


def test_bank_candidates_and_gradient_only_into_batch():
    miner = DistractorMiner(neuron_weighting="none", bank_size=8)
    bank_f = torch.tensor([[1.0, 0.1], [0.0, 1.0]])
    miner.update(bank_f, torch.tensor([1, 1]), torch.tensor([100, 101]))
    f = torch.tensor([[1.0, 0.0], [0.0, 1.0]], requires_grad=True)
    y = torch.tensor([0, 0])
    batch = miner.mine(f, _logits_preferring(y, torch.tensor([1, 1]), 2), y)
    assert batch.from_bank.tolist() == [True, True]
    assert batch.distractor_id.tolist() == [100, 101]
    assert not batch.distractor_features.requires_grad or batch.distractor_features.grad_fn is not None
    batch.distractor_features.sum().backward()
    assert torch.equal(f.grad, torch.zeros_like(f))  # bank entries are constants


def test_bank_is_fifo_and_never_exposes_unfilled_slots():
    bank = MemoryBank(4)
    assert bank.entries() is None
    bank.update(torch.rand(3, 2), torch.tensor([0, 1, 2]), torch.tensor([0, 1, 2]))
    feats, labels, ids = bank.entries()
    assert feats.shape == (3, 2) and ids.tolist() == [0, 1, 2]
    assert torch.allclose(feats.norm(dim=1), torch.ones(3))
    bank.update(torch.rand(3, 2), torch.tensor([0, 1, 2]), torch.tensor([3, 4, 5]))
    # slots 0 and 1 (ids 0 and 1, the oldest) were overwritten by ids 4 and 5
    assert bank.entries()[2].tolist() == [4, 5, 2, 3]
    assert bank.count == 4 and bank.ptr == 2
    # a batch larger than the bank keeps its newest rows
    bank.update(torch.rand(6, 2), torch.zeros(6, dtype=torch.long), torch.arange(10, 16))
    assert sorted(bank.entries()[2].tolist()) == [12, 13, 14, 15]
    storage = bank.features.data_ptr()
    bank.update(torch.rand(1, 2), torch.zeros(1, dtype=torch.long), torch.tensor([20]))
    assert bank.features.data_ptr() == storage  # preallocated: no reallocation per step


def test_bank_state_dict_round_trip_with_weights_only():
    miner = DistractorMiner(bank_size=5)
    miner.update(torch.rand(3, 4), torch.tensor([0, 1, 0]), torch.tensor([7, 8, 9]))
    buffer = io.BytesIO()
    torch.save(miner.state_dict(), buffer)
    buffer.seek(0)
    restored = DistractorMiner(bank_size=5)
    restored.load_state_dict(torch.load(buffer, weights_only=True))
    assert restored.bank.count == 3 and restored.bank.ptr == 3
    assert torch.equal(restored.bank.features, miner.bank.features)
    assert restored.bank.ids[:3].tolist() == [7, 8, 9]
    storage = restored.bank.features.data_ptr()
    restored.update(torch.rand(1, 4), torch.tensor([1]), torch.tensor([10]))
    assert restored.bank.features.data_ptr() == storage and restored.bank.count == 4
    with pytest.raises(ValueError, match="5 slots, this bank 6"):
        DistractorMiner(bank_size=6).load_state_dict(miner.state_dict())
    empty = DistractorMiner(bank_size=5)
    empty.load_state_dict(DistractorMiner(bank_size=5).state_dict())
    assert empty.bank.entries() is None


def test_invalid_options_and_shapes():
    with pytest.raises(ValueError, match="distractor_class"):
        DistractorMiner(distractor_class="hardest")
    with pytest.raises(ValueError, match="neuron_weighting"):
        DistractorMiner(neuron_weighting="gradient")
    with pytest.raises(ValueError, match="topk"):
        DistractorMiner(topk=0)
    with pytest.raises(ValueError, match="bank size"):
        DistractorMiner(bank_size=-1)
    miner = DistractorMiner(bank_size=0)
    with pytest.raises(ValueError, match="classifier's weight"):
        miner.mine(torch.rand(2, 3), torch.rand(2, 2), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="does not match 3 tapped neurons"):
        miner.mine(torch.rand(2, 3), torch.rand(2, 2), torch.tensor([0, 1]), classifier_weight=torch.rand(2, 5))
    with pytest.raises(ValueError, match="3 labels for a batch of 2"):
        miner.mine(torch.rand(2, 3), torch.rand(2, 2), torch.tensor([0, 1, 1]))


# ---------------------------------------------------------------- sharper distractors (issue: Method II)


def _unit(*rows):
    return torch.nn.functional.normalize(torch.tensor(rows, dtype=torch.float), dim=1)


def test_semi_hard_takes_the_nearest_distractor_farther_than_the_nearest_positive():
    import math

    def at(angle):  # a unit vector at ``angle`` degrees from the anchor, in the first quadrant
        return [math.cos(math.radians(angle)), math.sin(math.radians(angle))]

    f = _unit(at(0), at(30), at(10), at(40), at(60))
    # 0: anchor (class 0); 1: its positive at 30 deg; 2, 3, 4: class 1 at 10, 40 and 60 deg
    y = torch.tensor([0, 0, 1, 1, 1])
    logits = _logits_preferring(y, torch.tensor([1, 1, 0, 0, 0]), 2)
    nearest = DistractorMiner(neuron_weighting="none", bank_size=0).mine(f, logits, y)
    semi = DistractorMiner(neuron_weighting="none", bank_size=0, distractor_sample="semi_hard").mine(f, logits, y)
    assert torch.equal(nearest.distractor_features[0], f[2])  # the hardest, nearer than the positive
    assert torch.equal(semi.distractor_features[0], f[3])  # the nearest beyond the positive (40 > 30 deg)
    # without a positive (sample 1 relabelled), or when every distractor is nearer, the nearest
    alone = DistractorMiner(neuron_weighting="none", bank_size=0, distractor_sample="semi_hard")
    y_alone = torch.tensor([0, 2, 1, 1, 1])
    no_positive = alone.mine(f, _logits_preferring(y_alone, torch.tensor([1, 0, 0, 0, 0]), 3), y_alone)
    assert torch.equal(no_positive.distractor_features[0], f[2])
    far = _unit(at(0), at(70), at(10), at(40), at(60))
    assert torch.equal(alone.mine(far, logits, y).distractor_features[0], far[2])
    # a stale copy of the anchor in the bank is not its positive
    miner = DistractorMiner(neuron_weighting="none", bank_size=8, distractor_sample="semi_hard")
    miner.update(f[:1], y[:1], torch.tensor([7]))
    ids = torch.tensor([7, 1, 2, 3, 4])
    assert torch.equal(miner.mine(f, logits, y, ids=ids).distractor_features[0], f[3])


def test_soft_averages_the_k_nearest_and_softmax_weights_by_similarity():
    from monai_danil.losses import DistractorAwareLoss, distractor_aware_loss

    f = _unit([1.0, 0.0], [0.9, 0.1], [0.8, 0.4], [0.5, 0.5], [0.1, 0.9]).requires_grad_(True)
    y = torch.tensor([0, 1, 1, 1, 1])
    logits = _logits_preferring(y, torch.tensor([1, 0, 0, 0, 0]), 2)
    soft = DistractorMiner(neuron_weighting="none", bank_size=0, distractor_sample="soft", k=3).mine(f, logits, y)
    terms = soft.terms
    assert terms is not None and terms.features.shape == (5, 3, 2)
    assert torch.equal(terms.features[0], f[1:4])  # the 3 nearest of class 1, nearest first
    assert terms.weights[0].tolist() == pytest.approx([1 / 3] * 3)
    assert torch.equal(soft.distractor_features[0], f[1])  # the primary is the nearest
    # the loss is the weighted mean of the three hinges
    loss = DistractorAwareLoss(margin=1.0)
    value = loss(logits, y, distractors=soft, lambda_da=1.0) - loss.last_components["ce"]
    hinges = [distractor_aware_loss(f[:1], f[j : j + 1], torch.ones(1, 2), torch.tensor([True]), reduction="none")
              for j in (1, 2, 3)]
    per_anchor = torch.stack([h[0] for h in hinges]).mean()
    others = distractor_aware_loss(f[1:], soft.distractor_features[1:], torch.ones(4, 2), torch.ones(4, dtype=bool),
                                   reduction="none")
    assert value.item() == pytest.approx(((per_anchor + others.sum()) / 5).item(), abs=1e-6)
    value.backward()
    assert f.grad is not None and torch.isfinite(f.grad).all()
    softmax = DistractorMiner(neuron_weighting="none", bank_size=0, distractor_sample="soft", k=3,
                              soft_weighting="softmax", temperature=0.5).mine(f.detach(), logits, y)
    sims = (f[0:1] @ f[1:4].T).detach()[0]
    assert softmax.terms.weights[0].tolist() == pytest.approx(torch.softmax(sims / 0.5, 0).tolist(), abs=1e-6)


def test_several_distractor_classes_are_weighted_by_the_network_probabilities():
    f = _unit([1.0, 0.0, 0.0], [0.8, 0.6, 0.0], [0.8, 0.0, 0.6], [0.0, 1.0, 0.0])
    y = torch.tensor([0, 1, 2, 1])
    logits = torch.tensor([[3.0, 1.0, 2.0], [0.0, 3.0, 1.0], [1.0, 0.0, 3.0], [0.0, 3.0, 1.0]])
    batch = DistractorMiner(neuron_weighting="none", bank_size=0, distractor_classes=2).mine(f, logits, y)
    terms = batch.terms
    assert terms.distractor_class[0].tolist() == [2, 1]  # by the network's preference: class 2, then 1
    p = torch.softmax(logits[0], 0)
    assert terms.weights[0].tolist() == pytest.approx([(p[2] / (p[1] + p[2])).item(), (p[1] / (p[1] + p[2])).item()])
    assert batch.distractor_class[0].item() == 2 and torch.equal(batch.distractor_features[0], f[2])
    with pytest.raises(ValueError, match="confusing"):
        DistractorMiner(distractor_class="any", distractor_classes=2)


@pytest.mark.parametrize(
    "options",
    [{}, {"distractor_sample": "semi_hard"}, {"distractor_sample": "soft", "k": 3}, {"distractor_classes": 2},
     {"distractor_sample": "soft", "k": 2, "soft_weighting": "softmax", "distractor_classes": 2}],
)
def test_no_candidate_gives_a_zero_loss_with_a_valid_graph(options):
    from monai_danil.losses import DistractorAwareLoss

    f = torch.rand(4, 3, requires_grad=True)
    y = torch.zeros(4, dtype=torch.long)  # one class only: no distractor anywhere
    logits = torch.randn(4, 3, requires_grad=True)
    batch = DistractorMiner(neuron_weighting="none", bank_size=0, **options).mine(f, logits, y)
    assert not batch.has_distractor.any() and (batch.distractor_class == -1).all()
    loss = DistractorAwareLoss()
    total = loss(logits, y, distractors=batch, lambda_da=1.0)
    assert loss.last_components["da"].item() == 0.0
    total.backward()
    assert torch.isfinite(logits.grad).all()
def _bank_with_rows(features: torch.Tensor, labels: torch.Tensor, ids: torch.Tensor) -> DistractorMiner:
    miner = DistractorMiner(bank_size=32)
    miner.update(features, labels, ids)
    return miner


def test_a_nan_row_in_the_bank_is_never_chosen_and_the_loss_stays_finite():
    """The reviewer's case: one NaN row in the bank, 8 anchors; before the fix 3 anchors took it."""
    from monai_danil.losses import DistractorAwareLoss

    g = torch.Generator().manual_seed(0)
    num_classes, dim = 3, 16
    bank_f = torch.rand(12, dim, generator=g)
    bank_y, bank_ids = torch.arange(12) % num_classes, torch.arange(100, 112)
    poisoned = bank_f.clone()
    poisoned[5] = float("nan")  # id 105, class 2
    miner = _bank_with_rows(poisoned, bank_y, bank_ids)
    assert miner.bank.entry_mask().tolist() == [i != 5 for i in range(12)]
    assert torch.isfinite(miner.bank.features).all()  # stored as zeros, not NaN
    keep = torch.arange(12) != 5
    clean = _bank_with_rows(bank_f[keep], bank_y[keep], bank_ids[keep])
    f = torch.rand(8, dim, generator=g, requires_grad=True)
    y = torch.arange(8) % num_classes
    logits = torch.randn(8, num_classes, generator=g)
    weight = torch.randn(num_classes, dim, generator=g)
    batch = miner.mine(f, logits, y, classifier_weight=weight, ids=torch.arange(8))
    expected = clean.mine(f, logits, y, classifier_weight=weight, ids=torch.arange(8))
    assert (batch.distractor_class == 2).sum() >= 2  # anchors that would have taken the NaN row
    assert 105 not in batch.distractor_id.tolist()
    assert torch.equal(batch.distractor_id, expected.distractor_id)  # as if the row had never been there
    assert torch.allclose(batch.similarity, expected.similarity, atol=1e-6)  # one bank column fewer: rounding
    loss = DistractorAwareLoss(margin=1.5)(logits.requires_grad_(), y, distractors=batch, lambda_da=1.0)
    assert torch.isfinite(loss)
    loss.backward()
    assert torch.isfinite(f.grad).all() and f.grad.abs().sum() > 0
    # restored from a checkpoint holding the NaN row (saved before rows were marked): masked the same way
    state = miner.state_dict()
    saved = miner.bank.features.clone()
    saved[5] = float("nan")
    state["bank"] = {**state["bank"], "features": saved}
    del state["bank"]["valid"]
    restored = DistractorMiner(bank_size=32)
    restored.load_state_dict(state)
    assert restored.bank.entry_mask().tolist() == keep.tolist() and torch.isfinite(restored.bank.features).all()
    again = restored.mine(f, logits, y, classifier_weight=weight, ids=torch.arange(8))
    assert torch.equal(again.distractor_id, expected.distractor_id)


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_rows_in_the_batch_are_neither_anchors_nor_candidates(bad):
    from monai_danil.losses import distractor_aware_loss

    g = torch.Generator().manual_seed(1)
    f = torch.rand(8, 6, generator=g)
    y = torch.tensor([0, 1, 2, 0, 1, 2, 0, 1])
    logits = torch.randn(8, 3, generator=g)
    f[2], logits[2] = bad, bad  # a corrupt input: its neurons and logits
    logits[4, 0] = float("nan")  # NaN logits only: no anchor, but its finite features stay a candidate
    f.requires_grad_()
    for distractor_class in ("confusing", "any", "random"):
        miner = DistractorMiner(distractor_class=distractor_class, neuron_weighting="none", bank_size=16)
        batch = miner.mine(f, logits, y, ids=torch.arange(8))
        assert batch.has_distractor.tolist() == [True, True, False, True, False, True, True, True], distractor_class
        assert 2 not in batch.distractor_id.tolist()
        assert batch.distractor_class[2] == -1 and batch.distractor_class[4] == -1
        assert all(torch.isfinite(v) for v in batch.figures().values())
        assert torch.isfinite(batch.distractor_features[batch.has_distractor]).all()
        per_sample = distractor_aware_loss(
            batch.features, batch.distractor_features, batch.neuron_weights, batch.has_distractor, 1.5, reduction="none"
        )
        assert torch.isfinite(per_sample).all() and per_sample[2] == 0
        f.grad = None
        per_sample.sum().backward()
        assert torch.isfinite(f.grad[[0, 1, 3, 4, 5, 6, 7]]).all()
        # the batch goes into the bank with its corrupt row marked: never a candidate at the next step
        miner.update(f, y, torch.arange(8))
        assert miner.bank.entry_mask().tolist() == [i != 2 for i in range(8)]
        later = miner.mine(torch.rand(4, 6, generator=g), torch.randn(4, 3, generator=g), torch.tensor([0, 1, 2, 0]))
        assert 2 not in later.distractor_id.tolist()


def test_bank_rows_marked_invalid_take_slots_but_are_never_candidates():
    miner = DistractorMiner(neuron_weighting="none", bank_size=4)
    miner.update(torch.rand(2, 3), torch.tensor([1, 1]), torch.tensor([10, 11]))
    miner.update(torch.rand(2, 3), torch.tensor([1, 1]), torch.tensor([12, 13]), valid=torch.tensor(False))
    assert miner.bank.count == 4 and miner.bank.ptr == 0
    assert miner.bank.entry_mask().tolist() == [True, True, False, False]
    y = torch.zeros(3, dtype=torch.long)
    batch = miner.mine(torch.rand(3, 3), _logits_preferring(y, torch.ones(3, dtype=torch.long), 2), y)
    assert set(batch.distractor_id.tolist()) <= {10, 11}
    # the ring moves on: the oldest (valid) slots are overwritten by a batch whose loss was not finite
    miner.update(torch.rand(2, 3), torch.tensor([1, 1]), torch.tensor([14, 15]), valid=torch.tensor(False))
    assert miner.bank.entry_mask().tolist() == [False] * 4
    assert not miner.mine(torch.rand(3, 3), _logits_preferring(y, torch.ones(3, dtype=torch.long), 2), y).from_bank.any()
    with pytest.raises(ValueError, match="valid must be"):
        miner.bank.update(torch.rand(2, 3), torch.tensor([1, 1]), torch.tensor([1, 2]), torch.ones(3, dtype=torch.bool))


@pytest.mark.parametrize(
    "options",
    [{"distractor_sample": "semi_hard"}, {"distractor_sample": "soft", "k": 3},
     {"distractor_sample": "soft", "k": 3, "soft_weighting": "softmax"}, {"distractor_classes": 2}],
)
def test_sharper_distractors_never_take_a_non_finite_row(options):
    from monai_danil.losses import DistractorAwareLoss

    g = torch.Generator().manual_seed(1)
    miner = DistractorMiner(bank_size=32, **options)
    bank_f, bank_y = torch.rand(12, 6, generator=g), torch.arange(12) % 3
    bank_f[4] = float("nan")
    miner.update(bank_f, bank_y, torch.arange(100, 112))
    f = torch.rand(8, 6, generator=g)
    f[1, 2] = float("inf")  # an anchor that is neither anchor nor candidate
    f.requires_grad_(True)
    y = torch.arange(8) % 3
    logits = torch.randn(8, 3, generator=g)
    logits[2, 0] = float("nan")
    batch = miner.mine(f, logits, y, classifier_weight=torch.randn(3, 6, generator=g), ids=torch.arange(8))
    assert not batch.has_distractor[1] and not batch.has_distractor[2]
    assert not (batch.distractor_id == 104).any() and not (batch.distractor_id == 1).any()
    if batch.terms is not None:
        assert torch.isfinite(batch.terms.features).all() and torch.isfinite(batch.terms.weights).all()
    loss = DistractorAwareLoss()
    da = loss(logits.nan_to_num(), y, distractors=batch, lambda_da=1.0) - loss.last_components["ce"]
    assert torch.isfinite(da)
    da.backward()
    assert torch.isfinite(f.grad[torch.arange(8) != 1]).all()
