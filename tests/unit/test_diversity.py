"""MMR re-ranking and the list metrics (libs.diversity) on examples worked out by hand."""
import numpy as np
import pytest

from libs import diversity as D
from libs.ranking import NO_ITEM, top_k_rows

# items 1..4 (row 0 is padding); genre multi-hot
GENRES = np.array([[0, 0], [1, 0], [1, 0], [0, 1], [1, 1]], float)
# blend scores of items 1..4: 2.0, 1.5, 1.0, 0.0 -> relevance (min-max) 1, 0.75, 0.5, 0
CANDIDATES = np.array([[1, 2, 3, 4]])
SCORES = np.array([[2.0, 1.5, 1.0, 0.0]])
VALID = np.ones((1, 4), bool)


def test_mmr_trades_relevance_for_genre_novelty():
    # genre cosines: (1,2) = 1, (1,3) = 0, (1,4) = (2,4) = (3,4) = 1/sqrt(2) = 0.7071, (2,3) = 0
    # lambda 0.5, gain = 0.5 rel - 0.5 max_sim:
    # pick 1: gains 0.5, 0.375, 0.25, 0 -> item 1 (score 0.5 + 0.5 = 1.0)
    # pick 2: max_sim to {1}: i2 1, i3 0, i4 0.7071 -> 0.375 - 0.5 = -0.125, 0.25, 0 - 0.35355 -> item 3 (0.75)
    # pick 3: max_sim to {1, 3}: i2 1, i4 0.7071 -> -0.125, -0.35355 -> item 2 (-0.125 + 0.5 = 0.375)
    items, scores = D.mmr(CANDIDATES, VALID, SCORES, 3, 0.5, [GENRES])
    assert items.tolist() == [[1, 3, 2]]
    np.testing.assert_allclose(scores, [[1.0, 0.75, 0.375]])


def test_mmr_averages_the_clipped_cosines_of_its_sources():
    embeddings = np.array([[0, 0], [1, 0], [0, 1], [1, 0], [-1, 0]], float)
    # embedding cosines: (1,3) = 1, (1,4) = (3,4) = -1 -> clipped to 0, others 0
    # mean with genres: (1,2) = (1 + 0)/2 = 0.5, (1,3) = (0 + 1)/2 = 0.5, (1,4) = (2,4) = (3,4) = 0.35355, (2,3) = 0
    # pick 1: item 1 (1.0); pick 2: i2 0.375 - 0.25 = 0.125, i3 0.25 - 0.25 = 0, i4 0 - 0.17678 -> item 2 (0.625)
    # pick 3: max_sim i3 max(0.5, 0) = 0.5 -> 0; i4 0.35355 -> -0.17678 -> item 3 (0.5)
    items, scores = D.mmr(CANDIDATES, VALID, SCORES, 3, 0.5, [GENRES, embeddings])
    assert items.tolist() == [[1, 2, 3]]
    np.testing.assert_allclose(scores, [[1.0, 0.625, 0.5]])


def test_mmr_ties_go_to_the_lower_item_index_and_short_lists_are_padded():
    genres = np.eye(6)  # no two items alike
    candidates = np.array([[5, 2, NO_ITEM], [4, NO_ITEM, NO_ITEM]])
    valid = candidates != NO_ITEM
    scores = np.array([[1.0, 1.0, 0.0], [3.0, 0.0, 0.0]])  # equal blend: relevance 1 for both
    items, gains = D.mmr(candidates, valid, scores, 3, 0.3, [genres])
    assert items.tolist() == [[2, 5, NO_ITEM], [4, NO_ITEM, NO_ITEM]]
    # gains 0.7 * 1 - 0.3 * 0 = 0.7 (+ 0.3 = 1.0) for every real pick
    np.testing.assert_allclose(gains[:, :2], [[1.0, 1.0], [1.0, -np.inf]])
    assert np.isneginf(gains[:, 2]).all()


def test_lambda_zero_returns_the_relevance_order_with_ties_by_item_index():
    rng = np.random.default_rng(7)
    candidates = np.stack([rng.permutation(np.arange(1, 21)) for _ in range(5)])
    scores = np.round(rng.normal(size=(5, 20)), 1)  # rounded: ties happen
    valid = np.ones_like(candidates, bool)
    valid[2, 5:] = False
    items, gains = D.mmr(candidates, valid, scores, 8, 0.0, [rng.normal(size=(21, 3))])
    expected = top_k_rows(np.arange(5), candidates, valid, scores, 8)
    got = [(u, r + 1, int(i)) for u in range(5) for r, i in enumerate(items[u]) if i != NO_ITEM]
    assert got == [tuple(x) for x in expected[["user_idx", "rank", "item_idx"]].to_numpy().tolist()]
    assert (np.diff(gains[np.isfinite(gains).all(axis=1)], axis=1) <= 0).all()


def test_relevance_rescales_per_user_over_valid_candidates():
    scores = np.array([[4.0, 2.0, 0.0, 99.0], [1.0, 1.0, 0.0, 0.0]])
    valid = np.array([[True, True, True, False], [True, True, False, False]])
    # user 0: (s - 0) / 4 -> 1, 0.5, 0, (invalid) 0; user 1: constant -> 1, 1, then invalid 0
    np.testing.assert_allclose(D.relevance(scores, valid), [[1.0, 0.5, 0.0, 0.0], [1.0, 1.0, 0.0, 0.0]])


# catalog items 1..4: genres (3 of them) and training popularity 10, 5, 5, 0
CAT_ITEMS = np.array([1, 2, 3, 4])
CAT_GENRES = np.array([[1, 0, 0], [1, 1, 0], [0, 0, 1], [0, 1, 0]], float)
CAT_POPULARITY = np.array([10, 5, 5, 0])


def test_popularity_percentile_is_mid_rank_among_catalog_items():
    cat = D.catalog(CAT_ITEMS, CAT_POPULARITY, CAT_GENRES)
    # sorted popularity 0, 5, 5, 10: item 1 (3 below + 0.5) / 4 = 0.875; items 2, 3 (1 + 0.5 * 2) / 4 = 0.5;
    # item 4 (0 + 0.5) / 4 = 0.125; the catalog's mean is 0.5
    np.testing.assert_allclose(cat.percentile, [0.0, 0.875, 0.5, 0.5, 0.125])
    assert cat.genre_count == 3


def test_list_metrics_of_two_users():
    cat = D.catalog(CAT_ITEMS, CAT_POPULARITY, CAT_GENRES)
    lists = np.array([[1, 2, 4], [3, 1, NO_ITEM]])
    # user A [1, 2, 4]: cos(1,2) = 1/sqrt(2), cos(1,4) = 0, cos(2,4) = 1/sqrt(2)
    #   ILD = (0.29289 + 1 + 0.29289) / 3 = 0.52860; genres {0, 1}: 2/3; popularity (0.875 + 0.5 + 0.125)/3 = 0.5
    # user B [3, 1]: cos = 0 -> ILD 1; genres {2, 0}: 2/3; popularity (0.5 + 0.875) / 2 = 0.6875
    per_user = D.per_user_list_metrics(lists, cat)
    np.testing.assert_allclose(per_user[D.INTRA_LIST_DIVERSITY], [0.5285955, 1.0], rtol=1e-6)
    np.testing.assert_allclose(per_user[D.GENRE_COVERAGE], [2 / 3, 2 / 3])
    np.testing.assert_allclose(per_user[D.POPULARITY_PERCENTILE], [0.5, 0.6875])
    figures = D.list_metrics(lists, cat)
    # means: ILD (0.52860 + 1) / 2 = 0.76430; genre coverage 2/3; popularity (0.5 + 0.6875) / 2 = 0.59375;
    # the table's items {1, 2, 3, 4} cover genres {0, 1, 2}: 3/3
    assert figures == pytest.approx({D.INTRA_LIST_DIVERSITY: 0.7642977, D.GENRE_COVERAGE: 2 / 3,
                                     D.POPULARITY_PERCENTILE: 0.59375, D.GENRE_COVERAGE_TABLE: 1.0})


def test_a_list_of_one_item_has_no_diversity_and_is_left_out_of_its_mean():
    cat = D.catalog(CAT_ITEMS, CAT_POPULARITY, CAT_GENRES)
    lists = np.array([[2, NO_ITEM], [1, 3]])
    # user 0: one item -> ILD undefined (left out of the mean); user 1: cos(1,3) = 0 -> ILD 1
    per_user = D.per_user_list_metrics(lists, cat)
    assert np.isnan(per_user[D.INTRA_LIST_DIVERSITY][0]) and per_user[D.INTRA_LIST_DIVERSITY][1] == 1.0
    assert D.list_metrics(lists, cat)[D.INTRA_LIST_DIVERSITY] == 1.0
    # only item 1 (genre 0): a third of the catalog's genres
    assert D.table_genre_coverage(np.array([1, NO_ITEM]), cat) == pytest.approx(1 / 3)
