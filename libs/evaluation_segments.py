"""Full-ranking metrics by user segment, computed in Spark and stored as extra ``metrics`` rows.

Segments come from each user's training interactions (``user_features``): ``few`` (fewer than
:data:`SOME`), ``some`` (up to :data:`MANY`), ``many`` (:data:`MANY` or more), and, across them,
``new``: users whose first training interaction is less than :data:`NEW_DAYS` days before the
end of the training data (anyone's latest), or who have none (cold start, served by the fallback).

A segment's figures keep the metrics schema: protocol ``full_ranking``, metric name
``<metric> segment=<segment>`` (e.g. ``ndcg@10 segment=few``, ``users segment=new``), so readers
of the whole-population figures (``ndcg@10``) are unaffected.
"""
from __future__ import annotations

import datetime as dt
from typing import List, Optional, Sequence, Tuple

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from libs import schema as S

SOME, MANY = 30, 100       # training interactions where "some" and "many" start
NEW_DAYS = 30
SEGMENTS = ("few", "some", "many", "new")
SEGMENT_TAG = " segment="  # metric name = f"{metric}{SEGMENT_TAG}{segment}"
SEGMENT = "segment"


def segment_metric(metric: str, segment: str) -> str:
    return f"{metric}{SEGMENT_TAG}{segment}"


def user_segments(user_features: DataFrame, users: DataFrame) -> DataFrame:
    """(user_idx, segment) of every user in ``users`` (a frame with user_idx): one activity
    segment each, plus a ``new`` row for new users."""
    stats = user_features.select(S.USER_IDX, S.INTERACTION_COUNT, S.FIRST_TS)
    latest = user_features.agg(F.max(S.LAST_TS)).first()[0]  # the end of the training data
    horizon = (latest - dt.timedelta(days=NEW_DAYS)) if latest else None
    joined = users.select(S.USER_IDX).distinct().join(stats, S.USER_IDX, "left")
    count = F.coalesce(F.col(S.INTERACTION_COUNT), F.lit(0))
    activity = (F.when(count >= MANY, "many").when(count >= SOME, "some").otherwise("few"))
    is_new = F.col(S.FIRST_TS).isNull()
    if horizon is not None:
        is_new = is_new | (F.col(S.FIRST_TS) > F.lit(horizon))
    return (joined.select(S.USER_IDX, activity.alias(SEGMENT))
            .unionByName(joined.where(is_new).select(S.USER_IDX, F.lit("new").alias(SEGMENT))))


def segment_figures(recs: DataFrame, truth: DataFrame, segments: DataFrame, k: int) -> DataFrame:
    """(segment, users, recall@k, ndcg@k) over the users of ``truth`` in each segment.

    Args:
        recs: (user_idx, rank, item_idx), ranks from 1.
        truth: (user_idx, held_item), one row per evaluated user.
        segments: (user_idx, segment) from :func:`user_segments`.
    """
    top = recs.where(F.col(S.RANK) <= k).select(S.USER_IDX, S.RANK, S.ITEM_IDX)
    hit = F.col(S.ITEM_IDX) == F.col("held_item")
    per_user = (truth.join(top, S.USER_IDX, "left").groupBy(S.USER_IDX)
                .agg(F.max(F.when(hit, 1.0).otherwise(0.0)).alias("hit"),
                     F.max(F.when(hit, 1.0 / F.log2(F.col(S.RANK) + 1.0)).otherwise(0.0)).alias("dcg")))
    return (per_user.join(segments, S.USER_IDX).groupBy(SEGMENT)
            .agg(F.count("*").alias("users"), F.avg("hit").alias(f"recall@{k}"), F.avg("dcg").alias(f"ndcg@{k}")))


def segment_metric_rows(model: str, model_run: Optional[str], recs: DataFrame, truth: DataFrame,
                        segments: DataFrame, k: int, run_date: dt.date) -> List[tuple]:
    """``metrics`` rows of :func:`segment_figures`; a segment without evaluated users gets
    ``users segment=<name>`` = 0 and no other figure."""
    found = {row[SEGMENT]: row.asDict() for row in segment_figures(recs, truth, segments, k).collect()}
    rows = []
    for segment in SEGMENTS:
        figures = found.get(segment, {"users": 0})
        for metric in sorted(m for m in figures if m != SEGMENT):
            rows.append((model, model_run, S.PROTOCOL_FULL_RANKING, segment_metric(metric, segment),
                         float(figures[metric]), run_date))
    return rows


def segment_rows(store, evaluated: Sequence[Tuple[str, Optional[str], DataFrame]], truth: DataFrame, k: int,
                 run_date: dt.date) -> List[tuple]:
    """Segment ``metrics`` rows of every (model, model_run, recs) in ``evaluated``, with the
    segments of the users in ``truth`` from the warehouse's ``user_features``."""
    segments = user_segments(store.read(S.USER_FEATURES.name), truth).cache()
    rows = [row for model, model_run, recs in evaluated
            for row in segment_metric_rows(model, model_run, recs, truth, segments, k, run_date)]
    segments.unpersist()
    return rows
