"""Retrieval union, per-user standardization and the blend fit, on hand-made vectors and scores."""
import numpy as np
import pytest

from libs.ranking import (NO_ITEM, first_occurrences, fit_blend_weights, ndcg_at_k, retrieval_scores, simplex_grid, standardize,
                          top_k_rows, union_candidates)

# items 1..5 on a line (row 0 = padding): a user at +1 prefers higher items, at -1 lower ones
ITEMS = np.array([[0.0], [1.0], [2.0], [3.0], [4.0], [5.0]])
ALL = np.ones(6, bool)


def test_union_keeps_each_retrievers_exact_top_n_without_seen_items_and_in_order():
    users = {"a": np.array([[1.0], [-1.0]]), "b": np.array([[-1.0], [1.0]])}
    items = {"a": ITEMS, "b": ITEMS}
    seen = [[5], [1, 2]]
    candidates, stage = union_candidates(users, items, {"a": 2, "b": 2}, block_size=2, seen=seen,
                                         allowed_items={"a": ALL, "b": ALL})
    # user 0: a -> 4, 3 (5 seen); b -> 1, 2. user 1: a -> 3, 4 (1, 2 seen); b -> 5, 4 (4 already in)
    assert stage["a"].tolist() == [[4, 3], [3, 4]]
    assert stage["b"].tolist() == [[1, 2], [5, 4]]
    assert candidates.tolist() == [[4, 3, 1, 2], [3, 4, 5, NO_ITEM]]


def test_a_retriever_returns_only_its_allowed_items_and_pads_when_none_are_left():
    allowed = np.array([False, True, True, False, False, False])   # only items 1 and 2
    candidates, stage = union_candidates({"a": np.array([[1.0]])}, {"a": ITEMS}, {"a": 3}, 4, [[2]],
                                         {"a": allowed})
    assert stage["a"].tolist() == [[1, NO_ITEM, NO_ITEM]]
    assert candidates.tolist() == [[1, NO_ITEM, NO_ITEM]]  # fixed width: the retrievers' N summed


def test_equal_scores_are_ordered_by_item_index():
    flat = np.ones((6, 1))
    candidates, _ = union_candidates({"a": np.array([[1.0]])}, {"a": flat}, {"a": 3}, 2, [[]], {"a": ALL})
    assert candidates.tolist() == [[1, 2, 3]]


def test_retrieval_scores_and_standardize_by_hand():
    scores = retrieval_scores(np.array([[2.0]]), ITEMS, np.array([[3, 1, NO_ITEM]]))
    assert scores.tolist() == [[6.0, 2.0, 0.0]]
    z = standardize(np.array([[6.0, 2.0, 99.0], [1.0, 1.0, 1.0]]), np.array([[True, True, False], [True] * 3]))
    # row 0: mean 4, std 2 over the two valid slots -> +1, -1, and 0 at the invalid slot; row 1 constant -> 0
    assert z.tolist() == [[1.0, -1.0, 0.0], [0.0, 0.0, 0.0]]


def test_ndcg_counts_ties_against_the_target():
    scores = np.array([[3.0, 2.0, 2.0], [1.0, 5.0, 0.0]])
    valid = np.ones((2, 3), bool)
    # user 0: target slot 2 ties with slot 1 and is below slot 0 -> rank 2 -> 1/log2(4) = 0.5
    # user 1: target slot 1 is the best -> 1.0
    assert ndcg_at_k(scores, valid, np.array([2, 1]), k=3) == pytest.approx(0.75)
    assert ndcg_at_k(scores, valid, np.array([2, -1]), k=2) == 0.0  # rank 2 is outside k=2; -1 = not found


def test_blend_fit_finds_the_model_that_ranks_the_validation_items_first():
    grid = simplex_grid(2, 0.5)
    assert grid.tolist() == [[0.0, 1.0], [0.5, 0.5], [1.0, 0.0]]
    # two users, three candidates; model 0 puts each target first, model 1 puts it last
    target = np.array([0, 2])
    model0 = np.array([[1.0, 0.0, -1.0], [-1.0, 0.0, 1.0]])
    features = np.stack([model0, -model0], axis=2)
    weights, ndcg, tried = fit_blend_weights(features, np.ones((2, 3), bool), target, k=1, step=0.5)
    assert weights.tolist() == [1.0, 0.0] and ndcg == 1.0
    assert [round(value, 6) for _, value in tried] == [0.0, 0.0, 1.0]  # equal-weight blend ties: no credit


def test_top_k_rows_order_by_score_then_item_and_skip_empty_slots():
    candidates = np.array([[7, 3, NO_ITEM, 5], [2, NO_ITEM, NO_ITEM, NO_ITEM]])
    valid = candidates != NO_ITEM
    rows = top_k_rows(np.array([10, 11]), candidates, valid, np.array([[0.5, 0.5, 9.0, 0.9], [0.1, 0, 0, 0]]), 3)
    assert rows.values.tolist() == [[10, 1, 5, 0.9], [10, 2, 3, 0.5], [10, 3, 7, 0.5], [11, 1, 2, 0.1]]


def test_first_occurrences_keeps_each_rows_first_copies_in_order():
    rng = np.random.default_rng(0)
    items = rng.integers(-1, 6, (50, 9))
    out = first_occurrences(items)
    for row, got in zip(items, out):
        expected = list(dict.fromkeys(i for i in row if i != NO_ITEM))
        assert got.tolist() == expected + [NO_ITEM] * (len(row) - len(expected))
    assert first_occurrences(np.array([[3, 1, 3, -1, 1, 2]])).tolist() == [[3, 1, 2, -1, -1, -1]]
