"""Full-ranking metrics by user segment (libs/evaluation_segments.py) on hand-made frames."""
import datetime as dt
import math

import pytest

from libs import schema as S
from libs.evaluation_segments import segment_metric_rows, user_segments

pytestmark = pytest.mark.spark

RUN_DATE = dt.date(2024, 3, 2)
# user_idx, training interactions, first and last training interaction; the data ends 2024-03-01,
# so "new" means a first interaction after 2024-01-31. User 5 has no training history at all.
FEATURES = [(1, 5, dt.datetime(2024, 1, 1), dt.datetime(2024, 3, 1)),
            (2, 50, dt.datetime(2023, 6, 1), dt.datetime(2024, 2, 1)),
            (3, 150, dt.datetime(2023, 1, 1), dt.datetime(2024, 2, 15)),
            (4, 3, dt.datetime(2024, 2, 20), dt.datetime(2024, 2, 25))]
TRUTH = [(u, 10 * u) for u in range(1, 6)]                     # held-out item of user u: 10u
RECS = [(1, 1, 10), (1, 2, 11),                                 # hit at rank 1: dcg 1
        (2, 1, 21), (2, 2, 20),                                 # hit at rank 2: dcg 1/log2(3)
        (3, 1, 31), (3, 2, 32), (3, 3, 30),                     # rank 3 is beyond k = 2: miss
        (4, 1, 41), (4, 2, 42),                                 # miss
        (5, 1, 50), (5, 2, 51)]                                 # hit at rank 1 (a fallback user)


@pytest.fixture
def frames(spark):
    features = spark.createDataFrame(FEATURES, f"{S.USER_IDX} int, {S.INTERACTION_COUNT} int, "
                                               f"{S.FIRST_TS} timestamp, {S.LAST_TS} timestamp")
    truth = spark.createDataFrame(TRUTH, f"{S.USER_IDX} int, held_item int")
    recs = spark.createDataFrame(RECS, f"{S.USER_IDX} int, {S.RANK} int, {S.ITEM_IDX} int")
    return features, truth, recs


def test_users_fall_in_one_activity_segment_and_new_users_also_in_new(frames):
    features, truth, _ = frames
    segments = sorted(tuple(r) for r in user_segments(features, truth).collect())
    assert segments == [(1, "few"), (2, "some"), (3, "many"), (4, "few"), (4, "new"), (5, "few"), (5, "new")]


def test_segment_rows_by_hand(frames):
    features, truth, recs = frames
    rows = segment_metric_rows("final", "deep_cf=r1", recs, truth, user_segments(features, truth), 2, RUN_DATE)
    assert {r[:3] for r in rows} == {("final", "deep_cf=r1", "full_ranking")}
    assert {r[5] for r in rows} == {RUN_DATE}
    got = {r[3]: r[4] for r in rows}
    expected = {
        "ndcg@2 segment=few": 2 / 3, "recall@2 segment=few": 2 / 3, "users segment=few": 3,   # users 1, 4, 5
        "ndcg@2 segment=some": 1 / math.log2(3), "recall@2 segment=some": 1.0, "users segment=some": 1,
        "ndcg@2 segment=many": 0.0, "recall@2 segment=many": 0.0, "users segment=many": 1,
        "ndcg@2 segment=new": 0.5, "recall@2 segment=new": 0.5, "users segment=new": 2,          # users 4, 5
    }
    assert got.keys() == expected.keys()
    for name, value in expected.items():
        assert got[name] == pytest.approx(value), name


def test_a_segment_without_evaluated_users_says_zero_users(frames, spark):
    features, truth, recs = frames
    only_user_3 = truth.where(f"{S.USER_IDX} = 3")
    rows = segment_metric_rows("popularity", None, recs, only_user_3, user_segments(features, only_user_3), 2, RUN_DATE)
    got = {r[3]: r[4] for r in rows}
    assert got == {"users segment=few": 0.0, "users segment=some": 0.0, "ndcg@2 segment=many": 0.0,
                   "recall@2 segment=many": 0.0, "users segment=many": 1.0, "users segment=new": 0.0}
