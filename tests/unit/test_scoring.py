"""Blocked retrieval, blending and top-K ordering, against brute force and hand-worked values."""
import numpy as np
import pytest

from libs.scoring import blend_scores, retrieve_top_n, top_k


def _brute_force(users, items, n, seen):
    scores = users @ items.T
    scores[:, 0] = -np.inf
    for row, s in enumerate(seen):
        scores[row, list(s)] = -np.inf
    out = []
    for row in scores:
        idx = np.arange(len(row))
        order = np.lexsort((idx, -row))[:n]
        out.append([i for i in order if np.isfinite(row[i])])
    return out


@pytest.mark.parametrize("block_size", [1, 3, 7, 50])
def test_blocked_retrieval_matches_brute_force(block_size):
    rng = np.random.default_rng(0)
    users, items = rng.normal(size=(6, 4)), rng.normal(size=(21, 4))
    seen = [[1, 2], [], [5, 6, 7, 8], [20], [3], list(range(1, 21))]
    got, scores = retrieve_top_n(users, items, 5, block_size, seen)
    expected = _brute_force(users, items, 5, seen)
    for row in range(6):
        assert [i for i in got[row] if i >= 0] == expected[row]
    assert (got[5] == -1).all() and np.isneginf(scores[5]).all()  # user 5 has seen everything


def test_ties_break_by_item_index_and_disallowed_items_never_return():
    users = np.ones((1, 1))
    items = np.array([[9.0], [1.0], [2.0], [2.0], [2.0], [0.5]])  # row 0 = padding
    allowed = np.array([True, True, True, True, False, True])
    got, scores = retrieve_top_n(users, items, 3, 2, None, allowed)
    assert got.tolist() == [[2, 3, 1]]
    assert scores.tolist() == [[2.0, 2.0, 1.0]]


def test_blend_is_a_weighted_mean_over_present_models():
    scores = {"deep_cf": np.array([1.0, 0.0]), "dien": np.array([0.0, 1.0])}
    np.testing.assert_allclose(blend_scores(scores, {"deep_cf": 0.5, "dien": 0.3, "content": 0.2}),
                               [0.625, 0.375])
    with pytest.raises(ValueError, match="no positive weight"):
        blend_scores(scores, {"content": 1.0})


def test_top_k_orders_by_score_then_item_and_drops_empty_slots():
    items, scores = top_k(np.array([7, 3, -1, 5]), np.array([0.5, 0.5, -np.inf, 0.9]), 3)
    assert items.tolist() == [5, 3, 7] and scores.tolist() == [0.9, 0.5, 0.5]
