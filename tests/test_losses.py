"""Loss terms of METHOD §4/§5 against hand-computed values on fixed tensors."""

import math

import pytest
import torch

from mosr.training import losses


def test_schedule_matches_method_formula():
    assert losses.schedule(0, 100, 10.0) == (0.0, 10.0)
    c_ret, c_erase = losses.schedule(50, 100, 10.0)
    assert c_ret == pytest.approx(2.5) and c_erase == pytest.approx(7.5)  # α·t/(2T), α·(1 − t/(2T))
    c_ret, c_erase = losses.schedule(100, 100, 4.0)
    assert (c_ret, c_erase) == pytest.approx((2.0, 2.0))


def test_retain_loss_is_mean_token_l2_distance():
    # one layer, one row, 3 tokens (last one masked out)
    hp = torch.tensor([[[[3.0, 4.0], [1.0, 1.0], [100.0, 0.0]]]])
    hr = torch.zeros_like(hp)
    mask = torch.tensor([[1.0, 1.0, 0.0]])
    # token distances 5 and sqrt(2)
    assert losses.retain_loss(hp, hr, mask).item() == pytest.approx((5 + math.sqrt(2)) / 2, rel=1e-6)
    # two layers: mean over layers as well
    hp2 = torch.cat([hp, 2 * hp])
    hr2 = torch.zeros_like(hp2)
    assert losses.retain_loss(hp2, hr2, mask).item() == pytest.approx(1.5 * (5 + math.sqrt(2)) / 2, rel=1e-6)


def test_erase_per_sample_relu_cosine_means():
    ref = torch.tensor([[[[1.0, 0.0], [1.0, 0.0], [1.0, 0.0]], [[0.0, 1.0], [0.0, 1.0], [0.0, 1.0]]]])  # [1, 2, 3, 2]
    pol = torch.tensor([[[[1.0, 0.0], [1.0, 1.0], [-1.0, 0.0]], [[0.0, -2.0], [3.0, 0.0], [0.0, 5.0]]]])
    mask = torch.tensor([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]])
    per = losses.erase_per_sample(pol, ref, mask)
    # row 0: cos = 1, 1/sqrt2, -1 -> relu -> (1 + 0.7071 + 0) / 3 ; row 1: cos = -1, 0 (third masked) -> 0
    assert per.tolist() == pytest.approx([(1 + 1 / math.sqrt(2)) / 3, 0.0], abs=1e-6)


def test_weighted_erase_global_and_batch():
    per = torch.tensor([1.0, 0.5, 0.0])
    w = torch.tensor([2.0, 0.5, 0.5])
    assert losses.weighted_erase(per, w, "batch").item() == pytest.approx((2 * 1 + 0.25) / 3.0)
    assert losses.weighted_erase(per, w, "global").item() == pytest.approx((2 * 1 + 0.25) / 3)
    w2 = torch.tensor([0.2, 0.2, 0.2])  # a batch of low-weight samples
    assert losses.weighted_erase(per, w2, "batch").item() == pytest.approx(0.5)  # re-normalised away
    assert losses.weighted_erase(per, w2, "global").item() == pytest.approx(0.1)  # erased less, as intended
    ones = torch.ones(3)
    assert losses.weighted_erase(per, ones, "global").item() == pytest.approx(per.mean().item())
    with pytest.raises(ValueError):
        losses.weighted_erase(per, ones, "nope")  # type: ignore[arg-type]


def test_shifted_ce_equals_causal_lm_loss_on_labelled_tokens():
    torch.manual_seed(0)
    logits = torch.randn(2, 5, 7)
    I = losses.IGNORE_INDEX
    labels = torch.tensor([[I, I, 3, 4, I], [I, 1, 2, I, I]])
    pos, targets = losses.shifted_targets(labels)
    assert targets.tolist() == [3, 4, 1, 2]
    assert pos.tolist() == [[False, True, True, False, False], [True, True, False, False, False]]
    got = losses.token_cross_entropy(logits[pos], targets)
    assert got.item() == pytest.approx(losses.masked_lm_loss(logits, labels).item(), rel=1e-6)
    # hand value for one position
    one = losses.token_cross_entropy(logits[0, 1:2], torch.tensor([3]))
    assert one.item() == pytest.approx(-torch.log_softmax(logits[0, 1], -1)[3].item(), rel=1e-6)


def test_combine_weights_terms():
    total = losses.combine({"a": torch.tensor(2.0), "b": torch.tensor(3.0)}, {"a": 0.5, "b": 2.0})
    assert total.item() == pytest.approx(7.0)


def test_rep_stats_are_masked_per_layer_mean_and_population_std():
    # one layer, one row, 3 tokens; the third token is masked out
    h = torch.tensor([[[[1.0, 10.0], [3.0, 30.0], [1000.0, -1000.0]]]])
    mask = torch.tensor([[1.0, 1.0, 0.0]])
    mean, std = losses.rep_stats(h, mask)
    assert mean[0].tolist() == pytest.approx([2.0, 20.0])
    assert std[0].tolist() == pytest.approx([1.0, 10.0])  # population std of {1, 3} and {10, 30}


def test_standardize_removes_an_outlier_dimension_from_cosine():
    # dimension 0 is an outlier: the same large value on every token, as in the default model's residual stream
    ref = torch.tensor([[[[100.0, 1.0, 0.0]]]])
    pol = torch.tensor([[[[100.0, 0.0, 1.0]]]])  # the small dimensions are orthogonal to the reference
    mask = torch.ones(1, 1)
    raw = losses.erase_per_sample(pol, ref, mask).item()
    # raw cosine = 10000 / (sqrt(10001) * sqrt(10001)) = 0.99990
    assert raw == pytest.approx(10000 / 10001, rel=1e-6)
    mean = torch.tensor([[100.0, 0.0, 0.0]])
    std = torch.tensor([[10.0, 1.0, 1.0]])
    zp, zr = losses.standardize(pol, mean, std), losses.standardize(ref, mean, std)
    assert zr.flatten().tolist() == pytest.approx([0.0, 1.0, 0.0])
    assert zp.flatten().tolist() == pytest.approx([0.0, 0.0, 1.0])
    assert losses.erase_per_sample(zp, zr, mask).item() == pytest.approx(0.0, abs=1e-7)  # orthogonal once the offset is gone
    # the L2 retain distance is measured in units of each dimension's std: (100 - 130)/10 = -3 on dim 0
    far = torch.tensor([[[[130.0, 1.0, 0.0]]]])
    assert losses.retain_loss(losses.standardize(far, mean, std), zr, mask).item() == pytest.approx(3.0)


def test_standardize_per_layer_and_none_is_identity():
    h = torch.tensor([[[[2.0]]], [[[2.0]]]])  # [L=2, B=1, S=1, D=1]
    mean = torch.tensor([[1.0], [0.0]])
    std = torch.tensor([[1.0], [4.0]])
    assert losses.standardize(h, mean, std).flatten().tolist() == pytest.approx([1.0, 0.5])
    # unit: also divided by sqrt(D) (here D = 1, so unchanged); D = 4 halves the values
    h4, m4, s4 = torch.full((1, 1, 1, 4), 3.0), torch.ones(1, 4), torch.ones(1, 4)
    assert losses.standardize(h4, m4, s4, unit=True).flatten().tolist() == pytest.approx([1.0] * 4)
    assert losses.standardize(h, None, None) is h
    # a zero std is clamped, not a division by zero
    assert torch.isfinite(losses.standardize(h, mean, torch.zeros(2, 1))).all()
