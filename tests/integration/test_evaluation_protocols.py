"""The train job's protocols computed on the executors (libs.evaluation_protocols) on hand-made
tables: the tie rules, users split across Arrow batches, rows missing from the joined tables."""
import math

import numpy as np
import pandas as pd
import pytest

from libs import schema as S

pytestmark = [pytest.mark.spark]

# item -> popularity; item 9 has no ITEM_FEATURES row (popularity 0)
POPULARITY = {1: 5, 2: 7, 3: 5, 4: 1, 5: 3, 6: 0}
CANDIDATES = [  # (user, item, label)
    (1, 1, 1.0), (1, 2, 0.0), (1, 3, 0.0), (1, 4, 0.0),   # positive 5 vs 7, 5 (tie ranks below), 1: rank 2
    (2, 5, 1.0), (2, 4, 0.0), (2, 9, 0.0),                # positive 3 vs 1, 0: rank 0
    (3, 2, 0.0), (3, 4, 0.0),                             # no positive: not a user of the protocol
    (4, 9, 1.0), (4, 6, 0.0),                             # positive 0 (no row) vs 0: tie, rank 1
]
SEQ_TEST = [(1, 2, 1.0), (2, 4, 1.0), (3, 4, 0.0), (4, 6, 0.0), (5, 2, 0.0)]  # pos 7, 1; neg 1, 0, 7


def _tables(spark):
    from libs.evaluation_protocols import EvalTables

    items = spark.createDataFrame(
        [(i, p, [i, 0], [1.0, 0.0], 1) for i, p in POPULARITY.items()],
        f"{S.ITEM_IDX} int, {S.POPULARITY} int, {S.TITLE_TOKENS} array<int>, {S.GENRE_MULTI_HOT} array<float>, "
        f"{S.YEAR_BUCKET} int")
    candidates = spark.createDataFrame(CANDIDATES, f"{S.USER_IDX} int, {S.ITEM_IDX} int, {S.LABEL} float")
    users = spark.createDataFrame([(1, [3, 0], 1)], f"{S.USER_IDX} int, {S.HIST_ITEMS} array<int>, {S.HIST_LEN} int")
    serving = spark.createDataFrame([], f"{S.USER_IDX} int, {S.SEQ_ITEMS} array<int>, "
                                        f"{S.SEQ_SESSION_STARTS} array<int>, {S.SEQ_LEN} int")
    seq = spark.createDataFrame([(u, i, [0, 0], 0, y) for u, i, y in SEQ_TEST],
                                f"{S.USER_IDX} int, {S.ITEM_IDX} int, {S.HIST_ITEMS} array<int>, {S.HIST_LEN} int, "
                                f"{S.LABEL} float")
    return EvalTables(candidates, users, serving, items, seq)


@pytest.fixture
def one_row_batches(spark):
    """Arrow batches of one row: every user's candidates span several batches."""
    key = "spark.sql.execution.arrow.maxRecordsPerBatch"
    before = spark.conf.get(key)
    spark.conf.set(key, "1")
    yield
    spark.conf.set(key, before)


@pytest.mark.parametrize("rows_per_call", [1, 3, 1000])
def test_ncf_figures_by_hand_whatever_the_batches(spark, one_row_batches, rows_per_call):
    from libs.evaluation_protocols import PopularityScorer, ncf_metrics
    from libs.metrics import ncf_hit_ndcg

    result = ncf_metrics(_tables(spark), PopularityScorer(), k=2, partitions=2, rows_per_call=rows_per_call)
    expected = {"hr@2": 2 / 3, "ndcg@2": (0.0 + 1.0 + 1.0 / math.log2(3.0)) / 3}
    assert result.metrics == {"ncf": pytest.approx(expected, rel=1e-12)}
    assert result.rows == {"ncf users": 3, "ncf candidates": 9}
    users, items, labels = (np.array(c) for c in zip(*CANDIDATES))
    assert ncf_hit_ndcg(users, labels, [POPULARITY.get(i, 0) for i in items], 2) == pytest.approx(
        (expected["hr@2"], expected["ndcg@2"]), rel=1e-12)


def test_sequence_auc_counts_ties_one_half_as_libs_metrics(spark):
    from libs.evaluation_protocols import PopularityScorer, sequence_auc
    from libs.metrics import auc

    result = sequence_auc(_tables(spark), PopularityScorer())
    # positives 7, 1 against negatives 1, 0, 7: 7 beats 1 and 0 and ties 7 (2.5), 1 ties 1 and beats 0 (1.5)
    assert result.metrics == {"sequence": {"auc": pytest.approx(4 / 6, rel=1e-12)}}
    assert result.rows == {"sequence examples": 5}
    labels = [y for _, _, y in SEQ_TEST]
    assert auc(labels, [POPULARITY.get(i, 0) for _, i, _ in SEQ_TEST]) == pytest.approx(4 / 6, rel=1e-12)


def test_sequence_auc_needs_both_classes_and_gives_no_figure_without_rows(spark):
    from pyspark.sql import functions as F

    from libs.evaluation_protocols import EvalTables, PopularityScorer, sequence_auc

    tables = _tables(spark)
    positives = EvalTables(*(tables.__dict__[f] for f in ("candidates", "user_features", "serving", "items")),
                           tables.seq_test.where(F.col(S.LABEL) > 0))
    with pytest.raises(Exception, match="both positive and negative"):
        sequence_auc(positives, PopularityScorer())
    empty = EvalTables(*(tables.__dict__[f] for f in ("candidates", "user_features", "serving", "items")),
                       tables.seq_test.where(F.lit(False)))
    assert sequence_auc(empty, PopularityScorer()).metrics == {}


def test_columns_of_missing_rows_read_zeros_of_the_input_width():
    from libs.evaluation_protocols import column_array

    frame = pd.DataFrame({S.HIST_ITEMS: [np.array([3, 4]), None], S.HIST_LEN: [2, np.nan],
                          S.GENRE_MULTI_HOT: [None, np.array([1.0, 0.0])]})
    np.testing.assert_array_equal(column_array(frame, S.HIST_ITEMS, 2), [[3, 4], [0, 0]])
    assert column_array(frame, S.HIST_ITEMS).dtype == np.int32
    np.testing.assert_array_equal(column_array(frame, S.HIST_LEN), [2, 0])
    genres = column_array(frame, S.GENRE_MULTI_HOT, 2)
    assert genres.dtype == np.float32 and genres.tolist() == [[0.0, 0.0], [1.0, 0.0]]
    assert column_array(pd.DataFrame({S.HIST_ITEMS: [None]}), S.HIST_ITEMS, 5).shape == (1, 5)
