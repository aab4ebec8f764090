"""Blocked retrieval, blending and top-K ordering, against brute force and hand-worked values."""
import numpy as np
import pytest

from libs.scoring import retrieve_top_n


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
