"""Caption-retrieval metrics on hand-built cases with known answers."""
import math

import pytest
import torch

import interpret
from util.retrieval import agreement, recall_at_k, retrieve, summarize


def unit(*v):
    v = torch.tensor(v, dtype=torch.float32)
    return v / v.norm()


# Gallery of 4 captions; cosine order of each query worked out by hand.
GALLERY = torch.stack([unit(1, 0, 0), unit(0, 1, 0), unit(0, 0, 1), unit(1, 1, 0)])
QUERIES = torch.stack([
    unit(1, 0.1, 0),       # 0 > 3 > 1 > 2
    unit(0.1, 1, 0),       # 1 > 3 > 0 > 2
    unit(0.2, 0.1, 1),     # 2 > 3 > 0 > 1   (cos numerators 1, .3/sqrt2 = .21, .2, .1)
    5 * unit(1, 1, 0.05),  # 3 > 0 = 1 > 2  (norm must not matter)
])
TARGETS = torch.tensor([0, 3, 1, 3])  # own captions: rank 1, 2, 4, 1


def test_retrieve_orders_by_cosine_and_ranks_targets():
    r = retrieve(QUERIES, GALLERY, k=4, targets=TARGETS)
    sims = (QUERIES / QUERIES.norm(dim=1, keepdim=True)) @ GALLERY.T
    assert r.indices[:, 0].tolist() == [0, 1, 2, 3]
    assert r.indices[0].tolist() == [0, 3, 1, 2] and r.indices[1].tolist() == [1, 3, 0, 2]
    assert torch.allclose(r.scores, sims.sort(dim=1, descending=True).values)
    assert r.ranks.tolist() == [1, 2, 4, 1]
    # chunking must not change anything
    r2 = retrieve(QUERIES, GALLERY, k=4, targets=TARGETS, chunk=3)
    assert torch.equal(r.indices, r2.indices) and torch.equal(r.ranks, r2.ranks)


def test_recall_at_k_known_values():
    r = retrieve(QUERIES, GALLERY, k=4, targets=TARGETS)
    rec = recall_at_k(r.indices, TARGETS, ks=(1, 2, 3, 4, 10))
    assert rec == {1: 0.5, 2: 0.75, 3: 0.75, 4: 1.0, 10: 1.0}  # k beyond the gallery: the whole list
    s = summarize(r, TARGETS, ks=(1, 2))
    assert s == {"R@1": 0.5, "R@2": 0.75, "median_rank": 1.0}  # torch median: lower middle of [1, 1, 2, 4]
    assert math.isnan(recall_at_k(r.indices[:0], TARGETS[:0], ks=(1,))[1])


def test_agreement_known_values():
    a = torch.tensor([[0, 1, 2], [3, 4, 5], [6, 7, 8]])
    b = torch.tensor([[0, 2, 9], [4, 3, 5], [1, 6, 7]])
    out = agreement(a, b)
    assert out["top1"] == pytest.approx(1 / 3)
    assert out["overlap"] == pytest.approx((2 / 3 + 1 + 2 / 3) / 3)
    assert agreement(a, a) == {"top1": 1.0, "overlap": 1.0}
    with pytest.raises(ValueError):
        agreement(a, b[:, :2])


def test_evaluate_table_on_a_hand_built_reconstruction():
    """Two masked segments; the LV-MAE 'reconstruction' equals the original for the first and
    points at the wrong caption for the second; uncaptioned masked segments are not scored."""
    x = torch.stack([QUERIES[0], QUERIES[1], QUERIES[2], QUERIES[3]])
    rec = {"x": x, "masked": torch.tensor([True, True, False, True]),
           "LV-MAE": torch.stack([x[0], GALLERY[2], x[2], x[3]]),
           "nearest visible": torch.stack([x[2], x[2], x[2], x[2]]),
           "linear interpolation": x.clone()}
    targets = torch.tensor([0, 1, 2, -1])
    _, rows = interpret.evaluate(rec, targets, GALLERY, topk=4)
    by = {r["method"]: r for r in rows}
    assert by["original"]["R@1"] == 100.0
    assert by["LV-MAE"]["R@1"] == 50.0 and by["LV-MAE"]["top-1 agree"] == 50.0
    assert by["LV-MAE"]["cos to original"] == pytest.approx((1 + 0) / 2, abs=1e-6)
    assert by["nearest visible"]["R@1"] == 0.0
    assert by["linear interpolation"]["top-k overlap"] == 100.0
    assert by["chance"]["R@1"] == 25.0 and by["chance"]["R@10"] == 100.0
