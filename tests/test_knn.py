"""Weighted kNN on faiss against a naive torch reference and a case worked by hand."""
from __future__ import annotations

import math

import faiss
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from ssl_bf.errors import UsageError
from ssl_bf.evaluation.knn import knn_classify, knn_metrics, weighted_votes


def clustered(n: int, dim: int, classes: int, seed: int, spread: float = 1.5):
    """L2-normalised features around one random centre per class (a learnable problem)."""
    gen = torch.Generator().manual_seed(seed)
    centres = torch.randn(classes, dim, generator=torch.Generator().manual_seed(99))
    labels = torch.randint(classes, (n,), generator=gen)
    feats = centres[labels] + spread * torch.randn(n, dim, generator=gen)
    return F.normalize(feats, dim=1), labels


def naive_knn(bank, bank_labels, queries, k, temperature, classes, dtype=torch.float32):
    """Wu et al. 2018 written out: full similarity matrix, top-k, exp(s/T) votes, argmax."""
    sims = queries.to(dtype) @ bank.to(dtype).T
    top_sims, top_idx = sims.topk(k, dim=1)
    weights = torch.exp(top_sims / temperature)
    scores = torch.zeros(len(queries), classes, dtype=dtype)
    scores.scatter_add_(1, bank_labels[top_idx], weights)
    return scores.argmax(dim=1)


def test_faiss_matches_naive_torch_for_every_k():
    bank, bank_y = clustered(3000, 64, 10, seed=0)
    queries, query_y = clustered(701, 64, 10, seed=1)
    ks = [1, 10, 50, 200]
    # chunk_size 128: the queries go through in 6 chunks, the last one partial
    out = knn_classify(bank, bank_y, queries, query_y, ks, 0.1, 10, chunk_size=128,
                       return_predictions=True)
    for k in ks:
        expected = naive_knn(bank, bank_y, queries, k, 0.1, 10)
        assert np.array_equal(out["predictions"][k], expected.numpy()), f"k={k}"
        top1 = 100.0 * (expected == query_y).float().mean().item()
        assert out["top1"][k] == pytest.approx(top1)
        assert out["top5"][k] >= out["top1"][k]
    assert out["top1"][50] > 50.0  # the clusters are learnable: 10 classes, chance is 10%


def test_numpy_input_and_chunking_give_the_same_result():
    bank, bank_y = clustered(500, 16, 4, seed=2)
    queries, query_y = clustered(333, 16, 4, seed=3)
    whole = knn_classify(bank, bank_y, queries, query_y, [7, 20], 0.07, 4, chunk_size=10_000)
    chunked = knn_classify(bank.numpy(), bank_y.numpy(), queries.numpy(), query_y.numpy(),
                           [20, 7], 0.07, 4, chunk_size=50)
    assert whole == chunked


def test_weighted_vote_by_hand():
    # Four unit vectors in 2-D; the query is (1, 0). Similarities 1, 0.5, 0.5, -1.
    angle = math.pi / 3
    bank = torch.tensor([[1.0, 0.0], [math.cos(angle), math.sin(angle)],
                         [math.cos(angle), -math.sin(angle)], [-1.0, 0.0]])
    bank_y = torch.tensor([0, 1, 1, 0])
    query, query_y = torch.tensor([[1.0, 0.0]]), torch.tensor([0])
    # k=3: class 0 has one vote of weight e^(1/T), class 1 two of e^(0.5/T).
    # T=0.5: e^2 = 7.39 > 2 e^1 = 5.44 -> class 0 wins against the 2:1 majority.
    sharp = knn_classify(bank, bank_y, query, query_y, [1, 3, 4], 0.5, 2, return_predictions=True)
    assert [sharp["predictions"][k][0] for k in (1, 3, 4)] == [0, 0, 0]
    # T=2: e^0.5 = 1.65 < 2 e^0.25 = 2.57 -> class 1 wins at k=3; at k=4 the far
    # point adds e^-0.5 = 0.61 to class 0: 2.26 < 2.57, still class 1.
    soft = knn_classify(bank, bank_y, query, query_y, [1, 3, 4], 2.0, 2, return_predictions=True)
    assert [soft["predictions"][k][0] for k in (1, 3, 4)] == [0, 1, 1]
    assert soft["top1"] == {1: 100.0, 3: 0.0, 4: 0.0}
    assert soft["top5"] == {1: 100.0, 3: 100.0, 4: 100.0}  # top-min(5, C) = top-2 of 2 classes
    # the scores themselves, up to the common factor e^(-s_1/T) = e^(-1/T)
    sims = torch.tensor([[1.0, 0.5, 0.5, -1.0]])
    scores = weighted_votes(sims, bank_y[None], 2.0, 2)
    expected = torch.tensor([[1.0 + math.exp(-1.0), 2 * math.exp(-0.25)]])
    assert torch.allclose(scores, expected)


def test_small_temperature_does_not_overflow():
    # s/T reaches 200: exp overflows float32 (max e^88) unless the vote is shifted.
    bank, bank_y = clustered(800, 32, 5, seed=4)
    queries, query_y = clustered(200, 32, 5, seed=5)
    out = knn_classify(bank, bank_y, queries, query_y, [30], 0.005, 5, return_predictions=True)
    reference = naive_knn(bank, bank_y, queries, 30, 0.005, 5, dtype=torch.float64)
    assert np.array_equal(out["predictions"][30], reference.numpy())


def test_bad_inputs_are_usage_errors():
    bank, bank_y = clustered(50, 8, 3, seed=6)
    with pytest.raises(UsageError, match="knn.k: 51 neighbours"):
        knn_classify(bank, bank_y, bank, bank_y, [5, 51], 0.1, 3)
    with pytest.raises(UsageError, match="labels"):
        knn_classify(bank, torch.full((50,), -1), bank, bank_y, [5], 0.1, 3)


def test_faiss_thread_setting_is_restored():
    faiss.omp_set_num_threads(1)
    bank, bank_y = clustered(100, 8, 3, seed=7)
    knn_classify(bank, bank_y, bank, bank_y, [5], 0.1, 3, threads=2)
    assert faiss.omp_get_max_threads() == 1


def test_metrics_row_reports_the_last_k_as_knn_top1():
    result = {"top1": {20: 41.0, 200: 39.5}, "top5": {20: 80.0, 200: 82.0}}
    row = knn_metrics(result, [20, 200])
    assert row == {"knn_top1": 39.5, "knn_top1_k20": 41.0, "knn_top5_k20": 80.0,
                   "knn_top1_k200": 39.5, "knn_top5_k200": 82.0}
    assert knn_metrics(result, [200, 20])["knn_top1"] == 41.0  # last as written
