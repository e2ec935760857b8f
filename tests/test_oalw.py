"""OALW features, similarities and weights (METHOD §5) on fixed tensors."""

import math

import pytest
import torch

from mosr.training import oalw


def test_pooling_variants():
    h = torch.arange(2 * 4 * 2, dtype=torch.float32).reshape(2, 4, 2)
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 1, 0]])
    n_prompt = torch.tensor([2, 3])
    assert oalw.pool(h, mask, n_prompt, "last_prompt").tolist() == [h[0, 1].tolist(), h[1, 2].tolist()]
    assert oalw.pool(h, mask, n_prompt, "mean_prompt")[0].tolist() == h[0, :2].mean(0).tolist()
    assert oalw.pool(h, mask, n_prompt, "mean_all")[1].tolist() == h[1, :3].mean(0).tolist()


def test_similarity_kinds_hand_computed():
    mal = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    pseudo = torch.tensor([[1.0, 0.0], [1.0, 1.0], [-1.0, 0.0]])
    c = 1 / math.sqrt(2)
    assert oalw.similarity(mal, pseudo, "max").tolist() == pytest.approx([1.0, c])
    assert oalw.similarity(mal, pseudo, "knn", k=2).tolist() == pytest.approx([(1 + c) / 2, (c + 0) / 2])
    assert oalw.similarity(mal, pseudo, "knn", k=99).tolist() == pytest.approx([c / 3, c / 3])  # k capped at 3
    centroid = torch.tensor([1.0 + c - 1.0, c]) / 3
    centroid = centroid / centroid.norm()
    assert oalw.similarity(mal, pseudo, "centroid").tolist() == pytest.approx([centroid[0].item(), centroid[1].item()])


@pytest.mark.parametrize("tau", [0.05, 1.0])
def test_weights_mean_one_and_formula(tau):
    s = torch.tensor([0.9, 0.5, 0.1, 0.3])
    w = oalw.weights(s, tau, "less")
    assert w.mean().item() == pytest.approx(1.0, abs=1e-6)
    expected = 4 * torch.softmax(-s.double() / tau, 0)
    assert w.tolist() == pytest.approx(expected.tolist(), rel=1e-6)


def test_weights_move_monotonically_with_similarity_in_the_chosen_direction():
    s = torch.linspace(-0.5, 0.9, 15)
    less = oalw.weights(s, 0.1, "less")
    more = oalw.weights(s, 0.1, "more")
    assert torch.all(less[1:] < less[:-1])  # more overlap -> erased less
    assert torch.all(more[1:] > more[:-1])
    assert more.mean().item() == pytest.approx(1.0, abs=1e-6)
    with pytest.raises(ValueError):
        oalw.weights(s, 0.0)
    assert torch.allclose(oalw.weights(torch.full((5,), 0.3), 0.1), torch.ones(5))
