"""The evaluate job's list metrics (libs.diversity, per user on the executors) on a 2-user table."""
import datetime as dt

import pytest

from libs import diversity as D
from libs import schema as S

pytestmark = pytest.mark.spark

# items 1..4: genres (3 of them) and training popularity 10, 5, 5, 0 (as in tests/unit/test_diversity.py)
GENRES = {1: [1.0, 0.0, 0.0], 2: [1.0, 1.0, 0.0], 3: [0.0, 0.0, 1.0], 4: [0.0, 1.0, 0.0]}
POPULARITY = {1: 10, 2: 5, 3: 5, 4: 0}


def test_list_metrics_of_a_table_by_hand(spark, store):
    from jobs.evaluate import item_catalog, list_metrics

    ts = dt.datetime(2024, 1, 10)
    store.write(S.conform(spark.createDataFrame(
        [(i, POPULARITY[i], POPULARITY[i], ts, 1.0, [1, 0], GENRES[i], 1990, 1) for i in GENRES],
        S.ITEM_FEATURES.schema), S.ITEM_FEATURES), S.ITEM_FEATURES.name)
    recs = spark.createDataFrame([(1, 1, 1), (1, 2, 2), (1, 3, 4), (2, 1, 3), (2, 2, 1)],
                                 f"{S.USER_IDX} int, {S.RANK} int, {S.ITEM_IDX} int")
    catalog = item_catalog(store)
    # K = 3, user 1 [1, 2, 4]: ILD (0.29289 + 1 + 0.29289) / 3 = 0.52860, genres 2/3, popularity percentile
    # (0.875 + 0.5 + 0.125) / 3 = 0.5; user 2 [3, 1]: ILD 1, genres 2/3, (0.5 + 0.875) / 2 = 0.6875.
    # Means 0.76430, 2/3, 0.59375; all items together cover the 3 genres
    assert list_metrics(recs, catalog, 3) == pytest.approx({
        D.INTRA_LIST_DIVERSITY: 0.7642977, D.GENRE_COVERAGE: 2 / 3, D.POPULARITY_PERCENTILE: 0.59375,
        D.GENRE_COVERAGE_TABLE: 1.0})
    # K = 2 cuts user 1 to [1, 2]: ILD 1 - 1/sqrt(2) = 0.29289, genres {0, 1} 2/3, popularity (0.875 + 0.5) / 2;
    # means: ILD (0.29289 + 1) / 2 = 0.64645, 2/3, 0.6875; items {1, 2, 3} still cover the 3 genres
    assert list_metrics(recs, catalog, 2) == pytest.approx({
        D.INTRA_LIST_DIVERSITY: 0.6464466, D.GENRE_COVERAGE: 2 / 3, D.POPULARITY_PERCENTILE: 0.6875,
        D.GENRE_COVERAGE_TABLE: 1.0})
