"""OHEM with tail protection: which examples are kept, and with what weight."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from training.ohem import ohem_weights, tail_category_weights


def kept(weights: torch.Tensor) -> set[int]:
    return set(torch.nonzero(weights).flatten().tolist())


def test_tail_weights_up_weight_rare_categories_only():
    counts = np.array([1000, 400, 100, 25, 1, 0])  # median over the seen five: 100
    w = tail_category_weights(counts, power=0.5, max_weight=5.0)
    assert w.dtype == torch.float32
    assert w.tolist() == pytest.approx([1.0, 1.0, 1.0, 2.0, 5.0, 5.0])  # sqrt(100/25) = 2; sqrt(100) = 10 -> cap
    assert tail_category_weights(counts, power=0.0).tolist()[:5] == [1.0] * 5
    assert tail_category_weights(counts, power=1.0, max_weight=50.0).tolist()[3:5] == pytest.approx([4.0, 50.0])
    with pytest.raises(ValueError, match=">= 0"):
        tail_category_weights(np.array([3, -1]))
    with pytest.raises(ValueError, match="max_weight"):
        tail_category_weights(counts, max_weight=0.5)


# Categories 0 and 1 are frequent (weight 1), category 2 is tail (weight 3).
CAT_W = torch.tensor([1.0, 1.0, 3.0])


def test_keeps_exactly_the_hardest_examples():
    loss = torch.tensor([0.1, 5.0, 0.3, 2.0, 0.2, 4.0, 0.05, 1.0, 3.0, 0.4])
    cats = torch.zeros(10, dtype=torch.long)
    w = ohem_weights(loss, cats, CAT_W, keep_fraction=0.5)
    assert kept(w) == {1, 5, 8, 3, 7}  # the five largest losses
    assert w[list(kept(w))].tolist() == [1.0] * 5
    assert len(kept(ohem_weights(loss, cats, CAT_W, keep_fraction=0.7))) == 7
    # ceil(0.28 * 25) is 7, not 8, although 0.28 * 25 == 7.000000000000001 in floating point.
    assert (
        len(kept(ohem_weights(torch.arange(25.0), torch.zeros(25, dtype=torch.long), CAT_W, keep_fraction=0.28))) == 7
    )
    assert len(kept(ohem_weights(loss, cats, CAT_W, keep_fraction=0.25))) == 3  # ceil(2.5)


def test_tail_examples_are_kept_even_when_easy_and_weigh_more():
    loss = torch.tensor([5.0, 4.0, 3.0, 2.0, 0.01, 0.02])
    cats = torch.tensor([0, 1, 0, 1, 2, 0])
    w = ohem_weights(loss, cats, CAT_W, keep_fraction=0.5)
    assert kept(w) == {0, 1, 2, 4}  # the hardest three + the easy tail example; easy frequent 5 dropped
    assert w[4] > w[0]
    assert w[4] / w[0] == pytest.approx(3.0)
    assert float(w.sum()) == pytest.approx(4.0)  # normalised to the number kept
    assert w[5] == 0


def test_keep_fraction_one_keeps_all_and_normalisation_holds():
    gen = torch.Generator().manual_seed(0)
    loss = torch.rand(50, generator=gen)
    cats = torch.randint(0, 3, (50,), generator=gen)
    w = ohem_weights(loss, cats, CAT_W, keep_fraction=1.0)
    assert kept(w) == set(range(50))
    assert float(w.sum()) == pytest.approx(50.0, rel=1e-5)
    assert w[cats == 2].min() > w[cats == 0].max()


def test_min_keep_and_ties():
    loss = torch.tensor([1.0, 1.0, 1.0, 0.0])
    cats = torch.zeros(4, dtype=torch.long)
    assert kept(ohem_weights(loss, cats, CAT_W, keep_fraction=0.25)) == {0}  # ties: the earlier one
    assert kept(ohem_weights(loss, cats, CAT_W, keep_fraction=0.25, min_keep=3)) == {0, 1, 2}


def test_empty_batch():
    w = ohem_weights(torch.zeros(0), torch.zeros(0, dtype=torch.long), CAT_W)
    assert w.shape == (0,)


def test_no_gradient_flows_through_the_weights():
    loss = torch.tensor([3.0, 1.0, 2.0], requires_grad=True)
    w = ohem_weights(loss * 2, torch.tensor([0, 2, 1]), CAT_W)
    assert not w.requires_grad
    (w * loss).sum().backward()
    assert torch.equal(loss.grad, w)  # d/dloss of sum(w * loss) is w: the weights are constants


def test_bad_inputs_are_rejected():
    with pytest.raises(ValueError, match="category_ids"):
        ohem_weights(torch.ones(2), torch.tensor([0, 3]), CAT_W)
    with pytest.raises(ValueError, match="keep_fraction"):
        ohem_weights(torch.ones(2), torch.tensor([0, 1]), CAT_W, keep_fraction=0.0)
    with pytest.raises(ValueError, match=r"\(N,\)"):
        ohem_weights(torch.ones(2), torch.tensor([0, 1, 1]), CAT_W)
