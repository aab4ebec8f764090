"""Reusable feature helpers: stable vocabularies, fixed-length id lists, tokenizer, negative sampling.

Spark helpers build columns and DataFrames without collecting data to the driver; the numpy
helpers run inside ``applyInPandas`` on one user's rows at a time.
"""
from __future__ import annotations

import datetime as dt
from typing import Optional

import numpy as np
from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F
from pyspark.sql import types as T

from libs.schema import EVENT_DATE, EVENT_MONTH

PAD = 0  # index 0 of every id vocabulary: padding / unknown


def month_of(day: dt.date) -> str:
    """The EVENT_MONTH partition value of a date."""
    return day.strftime("%Y-%m")


def events_until(events: DataFrame, run_date: dt.date) -> DataFrame:
    """The events a run for ``run_date`` sees: those dated on or before it (prunes EVENT_MONTH)."""
    return events.where((F.col(EVENT_MONTH) <= F.lit(month_of(run_date))) & (F.col(EVENT_DATE) <= F.lit(run_date)))


# --- vocabularies -----------------------------------------------------------------------------

def stable_vocabulary(keys: DataFrame, key: str, index: str, existing: Optional[DataFrame] = None,
                      start: int = 1) -> DataFrame:
    """Map every distinct ``key`` to an int ``index`` that stays fixed across nightly runs.

    Keys already in ``existing`` keep their index; new keys get the next indices after its maximum
    (or from ``start`` for a new vocabulary), in sorted key order, so a rerun assigns the same ones.
    Keys in ``existing`` that no longer appear are kept: a model trained yesterday still resolves them.

    Args:
        keys: any DataFrame with a ``key`` column (nulls ignored).
        existing: the current vocabulary (``key``, ``index``), or None.
        start: the first index of a new vocabulary (1: index 0 is reserved for padding).
    """
    spark = keys.sparkSession
    schema = T.StructType([T.StructField(key, T.StringType(), False),
                           T.StructField(index, T.IntegerType(), False)])
    distinct = keys.select(F.col(key).cast("string").alias(key)).where(F.col(key).isNotNull()).distinct()
    first = start
    if existing is not None:
        distinct = distinct.join(existing.select(key), key, "left_anti")
        current_max = existing.agg(F.max(index)).first()[0]
        first = start if current_max is None else max(start, current_max + 1)
    # zipWithIndex numbers the globally sorted keys partition by partition, without a driver collect
    numbered = (distinct.orderBy(key).rdd.zipWithIndex()
                .map(lambda pair, first=first: (pair[0][0], pair[1] + first)))
    new = spark.createDataFrame(numbered, schema)
    return new if existing is None else existing.select(key, index).unionByName(new)


# --- fixed-length id lists --------------------------------------------------------------------

def non_null_elements(values: Column, default=PAD) -> Column:
    """``values`` with null elements replaced by ``default``.

    The table contracts declare arrays of non-null elements, but Spark types an array read back
    from Parquet (or built from a nullable column) as possibly holding nulls and refuses to cast
    it to the contract; this both guarantees and declares the elements non-null.
    """
    return F.transform(values, lambda v: F.coalesce(v, F.lit(default)))


def pad_right(ids: Column, length: int) -> Column:
    """The first ``length`` ids of an int array, right-padded with 0 to exactly ``length``."""
    head = non_null_elements(F.slice(ids, 1, length))
    return F.concat(head, F.array_repeat(F.lit(PAD), F.lit(length) - F.size(head)))


def latest(ids: Column, length: int) -> Column:
    """The last ``length`` elements of an array (all of it when shorter), order kept."""
    return F.slice(ids, F.greatest(F.size(ids) - length + 1, F.lit(1)), length)


def title_tokens(title: Column) -> Column:
    """Lower-cased word tokens of a title: runs of letters or digits (``"Toy Story (1995)"`` ->
    ``["toy", "story", "1995"]``); an apostrophe splits (``"children's"`` -> ``children``, ``s``)."""
    return F.filter(F.split(F.lower(F.coalesce(title, F.lit(""))), r"[^\p{L}\p{N}]+"),
                    lambda token: token != "")


# --- negative sampling (numpy, one user at a time) --------------------------------------------

def user_rng(seed: int, user_idx: int, stream: int) -> np.random.Generator:
    """A generator determined by (seed, user, stream): reruns and any partitioning draw the same."""
    return np.random.default_rng([seed, stream, user_idx])


def sample_negatives(rng: np.random.Generator, touched: np.ndarray, num_items: int, size: int,
                     distinct: bool = False) -> np.ndarray:
    """Item indices drawn uniformly from ``1..num_items`` excluding ``touched``.

    Rejection sampling keeps the cost proportional to ``size`` rather than to the catalog.
    With ``distinct`` no index repeats and at most ``num_items - len(touched)`` come back; a user
    who touched every item gets none.
    """
    touched = np.unique(touched)
    available = num_items - np.count_nonzero((touched >= 1) & (touched <= num_items))
    size = min(size, available) if distinct else (size if available > 0 else 0)
    picked = np.empty(0, dtype=np.int64)
    while len(picked) < size:
        draw = rng.integers(1, num_items + 1, size=2 * (size - len(picked)) + 8)
        picked = np.concatenate([picked, draw[~np.isin(draw, touched)]])
        if distinct:
            _, first_seen = np.unique(picked, return_index=True)
            picked = picked[np.sort(first_seen)]
    return picked[:size]


def session_starts(ts_micros: np.ndarray, gap_minutes: int) -> np.ndarray:
    """1 where a new session starts in one user's time-ordered event times, else 0.

    The sessions job's rule: a gap strictly greater than ``gap_minutes`` starts a new session; the
    first event always does.
    """
    gaps = np.diff(np.asarray(ts_micros, dtype=np.int64), prepend=np.iinfo(np.int64).min // 2)
    return (gaps > gap_minutes * 60 * 1_000_000).astype(np.int32)


def history_windows(sequence: np.ndarray, targets: np.ndarray, length: int) -> np.ndarray:
    """For each target position ``t``, ``sequence[max(0, t - length):t]`` right-padded with 0.

    Args:
        sequence: (n,) ids in time order.
        targets: (m,) positions in ``0..n``; position n means "after the last element".
    Returns:
        (m, length) int32: the up-to-``length`` ids before each target, oldest first.
    """
    targets = np.asarray(targets, dtype=np.int64)
    starts = np.maximum(targets - length, 0)
    cols = starts[:, None] + np.arange(length)[None, :]
    real = cols < targets[:, None]
    padded = np.append(np.asarray(sequence, dtype=np.int64), PAD)
    return np.where(real, padded[np.minimum(cols, len(sequence))], PAD).astype(np.int32)
