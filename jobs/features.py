"""Features: vocabularies, user and item features, training examples and evaluation candidates.

* Timeline: a user's interactions ordered by (event time, item index). In ``recommend.mode=evaluate``
  the last one (latest time; on a tie the larger item index) is held out as the test item when the
  user has at least 2 interactions; in ``production`` mode nothing is held out.
* Negative sampling: uniform over the item vocabulary ``1..max index``, never an item the user
  interacted with in any split, from a generator seeded by (``features.seed``, table, user index),
  so reruns and any partitioning draw the same items.
* Recency (DAYS_SINCE_LAST) is measured from the end of the run date (midnight UTC after it).
"""
from __future__ import annotations

import datetime as dt
import logging
import math
from typing import Dict

import numpy as np
import pandas as pd
from pyspark import StorageLevel
from pyspark.sql import DataFrame
from pyspark.sql import Window
from pyspark.sql import functions as F
from pyspark.sql.group import GroupedData

from libs import schema as S
from libs.conf import Config
from libs.contract import conform_exact
from libs.features import (events_until, history_windows, latest, non_null_elements, pad_right,
                           sample_negatives, session_starts, stable_vocabulary, title_tokens, user_rng)
from libs.log import step
from libs.runtime import JobContext, job_main
from libs.streaming import min_files_for_training

log = logging.getLogger(__name__)

IS_TEST = "_is_test"
IS_VALID = "_is_valid"
TS_MICROS = "_ts"
# independent random streams per table, so changing one table's sampling leaves the others alone
STREAM_CF, STREAM_SEQ, STREAM_EVAL = 1, 2, 3
_MICROS_PER_DAY = 86_400 * 1_000_000


# --- vocabularies -----------------------------------------------------------------------------

def build_vocabularies(events: DataFrame, items: DataFrame, existing: Dict[str, DataFrame]) -> Dict[str, DataFrame]:
    """The four vocabularies, extending ``existing`` (table name -> current vocabulary) if present.

    Items come from the catalog and the events (an item outside the catalog still gets an index);
    genre indices start at 0 because they are positions in GENRE_MULTI_HOT.
    """
    item_keys = items.select(S.ITEM_ID).unionByName(events.select(S.ITEM_ID))
    tokens = items.select(F.explode(title_tokens(F.col(S.TITLE))).alias(S.TOKEN))
    genres = items.select(F.explode(S.GENRES).alias(S.GENRE))
    return {
        S.VOCAB_USERS.name: stable_vocabulary(events, S.USER_ID, S.USER_IDX, existing.get(S.VOCAB_USERS.name)),
        S.VOCAB_ITEMS.name: stable_vocabulary(item_keys, S.ITEM_ID, S.ITEM_IDX, existing.get(S.VOCAB_ITEMS.name)),
        S.VOCAB_TOKENS.name: stable_vocabulary(tokens, S.TOKEN, S.TOKEN_IDX, existing.get(S.VOCAB_TOKENS.name)),
        S.VOCAB_GENRES.name: stable_vocabulary(genres, S.GENRE, S.GENRE_IDX, existing.get(S.VOCAB_GENRES.name),
                                               start=0),
    }


# --- interactions and hold-out ----------------------------------------------------------------

def indexed_interactions(events: DataFrame, vocab_users: DataFrame, vocab_items: DataFrame) -> DataFrame:
    """USER_IDX, ITEM_IDX, EVENT_TS of every event."""
    return (events.select(S.USER_ID, S.ITEM_ID, S.EVENT_TS)
            .join(vocab_users, S.USER_ID).join(vocab_items, S.ITEM_ID)
            .select(S.USER_IDX, S.ITEM_IDX, S.EVENT_TS))


def mark_holdout(interactions: DataFrame, hold_out: bool) -> DataFrame:
    """Add IS_TEST and IS_VALID: the held-out test and validation interactions of each user.

    With ``hold_out`` (evaluate mode) a user's latest interaction is the test item (users with >= 2)
    and the one before it the validation item (users with >= 3). Without (production mode) nothing
    is a test item and the latest is the validation item (users with >= 2). Validation items tune
    epochs and blend weights and are never trained on; they stay in the histories models read at
    serving time, as in the SASRec protocol.
    """
    newest_first = Window.partitionBy(S.USER_IDX).orderBy(F.desc(S.EVENT_TS), F.desc(S.ITEM_IDX))
    count = F.count(F.lit(1)).over(Window.partitionBy(S.USER_IDX))
    recency = F.row_number().over(newest_first)
    is_test = ((recency == 1) & (count >= 2)) if hold_out else F.lit(False)
    valid_recency, valid_count = (2, 3) if hold_out else (1, 2)
    return (interactions.withColumn("_recency", recency).withColumn("_count", count)
            .withColumn(IS_TEST, is_test)
            .withColumn(IS_VALID, (F.col("_recency") == valid_recency) & (F.col("_count") >= valid_count))
            .drop("_recency", "_count"))


def _split(is_test: np.ndarray, is_valid: np.ndarray) -> np.ndarray:
    return np.where(is_test, S.SPLIT_TEST, np.where(is_valid, S.SPLIT_VALID, S.SPLIT_TRAIN))


# --- user and item features -------------------------------------------------------------------

def _end_of_day_micros(run_date: dt.date) -> int:
    midnight = dt.datetime.combine(run_date + dt.timedelta(days=1), dt.time(), tzinfo=dt.timezone.utc)
    return int(midnight.timestamp()) * 1_000_000


def _days_since(ts_column, run_date: dt.date):
    return ((F.lit(_end_of_day_micros(run_date)) - F.unix_micros(ts_column)) / _MICROS_PER_DAY).cast("float")


def user_features(marked: DataFrame, run_date: dt.date, history_length: int) -> DataFrame:
    """Activity of each user's training interactions; HIST_ITEMS = latest L items, oldest first."""
    train = marked.where(~F.col(IS_TEST))
    timeline = F.transform(F.array_sort(F.collect_list(F.struct(S.EVENT_TS, S.ITEM_IDX))),
                           lambda e: e[S.ITEM_IDX])
    agg = train.groupBy(S.USER_IDX).agg(
        F.count(F.lit(1)).alias(S.INTERACTION_COUNT), F.countDistinct(S.ITEM_IDX).alias(S.DISTINCT_ITEMS),
        F.min(S.EVENT_TS).alias(S.FIRST_TS), F.max(S.EVENT_TS).alias(S.LAST_TS), timeline.alias("_timeline"))
    return S.conform(agg.select(
        "*", _days_since(F.col(S.LAST_TS), run_date).alias(S.DAYS_SINCE_LAST),
        pad_right(latest(F.col("_timeline"), history_length), history_length).alias(S.HIST_ITEMS),
        F.least(F.size("_timeline"), F.lit(history_length)).alias(S.HIST_LEN)).drop("_timeline"),
        S.USER_FEATURES)


def item_features(marked: DataFrame, items: DataFrame, vocab_items: DataFrame, vocab_tokens: DataFrame,
                  vocab_genres: DataFrame, num_genres: int, cfg: Config) -> DataFrame:
    """Popularity of every vocabulary item in the training interactions, plus its content."""
    fc = cfg.features
    train = marked.where(~F.col(IS_TEST))
    stats = train.groupBy(S.ITEM_IDX).agg(
        F.count(F.lit(1)).alias(S.POPULARITY), F.countDistinct(S.USER_IDX).alias(S.USER_COUNT),
        F.max(S.EVENT_TS).alias(S.LAST_TS))
    tokens = (items.select(S.ITEM_ID, F.posexplode(title_tokens(F.col(S.TITLE))).alias("_pos", S.TOKEN))
              .join(vocab_tokens, S.TOKEN)
              .groupBy(S.ITEM_ID)
              .agg(F.transform(F.array_sort(F.collect_list(F.struct("_pos", S.TOKEN_IDX))),
                               lambda t: t[S.TOKEN_IDX]).alias("_tokens")))
    genre_set = (items.select(S.ITEM_ID, F.explode(S.GENRES).alias(S.GENRE)).join(vocab_genres, S.GENRE)
                 .groupBy(S.ITEM_ID).agg(F.collect_set(S.GENRE_IDX).alias("_genres")))
    item_genres = F.coalesce("_genres", F.array().cast("array<int>"))
    multi_hot = F.transform(F.array_repeat(F.lit(0.0), num_genres),
                            lambda _, i: F.when(F.array_contains(item_genres, i), 1.0).otherwise(0.0))
    year_bucket = F.when(F.col(S.YEAR).isNull(), 0).otherwise(
        F.greatest(F.floor((F.col(S.YEAR) - fc.year_origin) / fc.year_bucket_size) + 1, F.lit(1)))
    joined = (vocab_items.join(items.select(S.ITEM_ID, S.YEAR), S.ITEM_ID, "left")
              .join(tokens, S.ITEM_ID, "left").join(genre_set, S.ITEM_ID, "left")
              .join(stats, S.ITEM_IDX, "left"))
    return S.conform(joined.select(
        S.ITEM_IDX, F.coalesce(S.POPULARITY, F.lit(0)).alias(S.POPULARITY),
        F.coalesce(S.USER_COUNT, F.lit(0)).alias(S.USER_COUNT), S.LAST_TS,
        _days_since(F.col(S.LAST_TS), run_date=cfg.run_date).alias(S.DAYS_SINCE_LAST),
        pad_right(F.coalesce("_tokens", F.array().cast("array<int>")), fc.title_max_tokens).alias(S.TITLE_TOKENS),
        multi_hot.alias(S.GENRE_MULTI_HOT), S.YEAR, year_bucket.alias(S.YEAR_BUCKET)), S.ITEM_FEATURES)


# --- examples (one user per pandas call) ------------------------------------------------------

def _user_frames(marked: DataFrame) -> GroupedData:
    return (marked.select(S.USER_IDX, S.ITEM_IDX, F.unix_micros(S.EVENT_TS).alias(TS_MICROS), IS_TEST, IS_VALID)
            .groupBy(S.USER_IDX))


def _timeline(pdf: pd.DataFrame) -> pd.DataFrame:
    """One user's rows in timeline order; the held-out rows (validation, then test) come last."""
    return pdf.sort_values([TS_MICROS, S.ITEM_IDX], kind="stable", ignore_index=True)


def _array_column(matrix: np.ndarray) -> pd.Series:
    """(rows, L) -> a column of length-L arrays; object dtype so Arrow converts it even when empty."""
    return pd.Series(list(matrix), dtype=object)


def cf_examples(marked: DataFrame, num_items: int, negatives_per_positive: int, seed: int) -> DataFrame:
    """Each distinct (user, item) of the training interactions (label 1, split train) plus N negatives
    (label 0), and the validation item (label 1, split valid: seen by the user, never trained on)."""

    def per_user(pdf: pd.DataFrame) -> pd.DataFrame:
        user = int(pdf[S.USER_IDX].iat[0])
        held = pdf[IS_TEST] | pdf[IS_VALID]
        positives = np.unique(pdf.loc[~held, S.ITEM_IDX].to_numpy())
        valid = np.setdiff1d(pdf.loc[pdf[IS_VALID], S.ITEM_IDX].to_numpy(), positives)
        negatives = sample_negatives(user_rng(seed, user, STREAM_CF), pdf[S.ITEM_IDX].to_numpy(), num_items,
                                     len(positives) * negatives_per_positive)
        return pd.DataFrame({
            S.USER_IDX: np.int32(user),
            S.ITEM_IDX: np.concatenate([positives, negatives, valid]).astype(np.int32),
            S.LABEL: np.repeat(np.float32([1.0, 0.0, 1.0]), [len(positives), len(negatives), len(valid)]),
            S.SPLIT: np.repeat([S.SPLIT_TRAIN, S.SPLIT_TRAIN, S.SPLIT_VALID],
                               [len(positives), len(negatives), len(valid)])})

    return _user_frames(marked).applyInPandas(per_user, S.CF_EXAMPLES.schema)


def seq_examples(marked: DataFrame, num_items: int, history_length: int, seed: int) -> DataFrame:
    """DIEN examples: for every interaction after the user's first, the history before it (latest L,
    oldest first, right-padded), a positive row for the item and a negative row for a sampled item
    sharing that history. HIST_NEG_ITEMS holds, per history position, a sampled negative fixed for
    that position of the user's timeline (the auxiliary loss contrasts it with the real next item).
    SPLIT is the target's: train, valid (the validation item) or test (the held-out item).
    """

    def per_user(pdf: pd.DataFrame) -> pd.DataFrame:
        pdf = _timeline(pdf)
        user = int(pdf[S.USER_IDX].iat[0])
        touched = pdf[S.ITEM_IDX].to_numpy(np.int64)
        split = _split(pdf[IS_TEST].to_numpy(bool), pdf[IS_VALID].to_numpy(bool))
        rng = user_rng(seed, user, STREAM_SEQ)
        timeline_negatives = sample_negatives(rng, touched, num_items, len(touched))
        positions = np.arange(1, len(touched))
        targets = touched[positions]
        target_negatives = sample_negatives(rng, touched, num_items, len(positions))
        if len(target_negatives) < len(positions):  # the user touched every item: nothing to contrast
            positions, targets = positions[:0], targets[:0]
        hist = history_windows(touched, positions, history_length)
        hist_neg = history_windows(timeline_negatives, positions, history_length)
        return pd.DataFrame({
            S.USER_IDX: np.int32(user),
            S.HIST_ITEMS: _array_column(np.repeat(hist, 2, axis=0)),
            S.HIST_NEG_ITEMS: _array_column(np.repeat(hist_neg, 2, axis=0)),
            S.HIST_LEN: np.repeat(np.minimum(positions, history_length), 2).astype(np.int32),
            S.ITEM_IDX: np.stack([targets, target_negatives[:len(targets)]], axis=1).ravel().astype(np.int32),
            S.LABEL: np.tile(np.float32([1.0, 0.0]), len(positions)),
            S.SPLIT: np.repeat(split[positions], 2)})

    return _user_frames(marked).applyInPandas(per_user, S.SEQ_EXAMPLES.schema)


def next_item_examples(marked: DataFrame, sequence_length: int, gap_minutes: int) -> DataFrame:
    """Sequence model windows: each user's training timeline (validation and test items excluded)
    cut from its end into windows of ``sequence_length`` inputs; every position's target is the
    item after it, so one window trains up to L next-item predictions."""

    def per_user(pdf: pd.DataFrame) -> pd.DataFrame:
        pdf = _timeline(pdf)
        train = ~(pdf[IS_TEST] | pdf[IS_VALID]).to_numpy(bool)
        items = pdf[S.ITEM_IDX].to_numpy(np.int64)[train]
        starts = session_starts(pdf[TS_MICROS].to_numpy(np.int64)[train], gap_minutes)
        ends = np.arange(len(items) - 1, 0, -sequence_length)  # last target of each window
        inputs = history_windows(items, ends, sequence_length)
        return pd.DataFrame({
            S.USER_IDX: np.int32(pdf[S.USER_IDX].iat[0]),
            S.SEQ_ITEMS: _array_column(inputs),
            S.SEQ_SESSION_STARTS: _array_column(history_windows(starts, ends, sequence_length)),
            S.SEQ_LEN: np.minimum(ends, sequence_length).astype(np.int32),
            S.TARGET_ITEMS: _array_column(history_windows(items, ends + 1, sequence_length + 1)[:, 1:]),
            S.SPLIT: S.SPLIT_TRAIN})

    return _user_frames(marked).applyInPandas(per_user, S.NEXT_ITEM_EXAMPLES.schema)


def user_sequences(marked: DataFrame, sequence_length: int, gap_minutes: int) -> DataFrame:
    """Two queries per user: ``valid``, the latest L items before the validation item (VALID_ITEM),
    for users that have one; ``serve``, the latest L items before the test item (evaluate mode) or
    of the whole timeline (production), which the recommendations are made from."""

    def per_user(pdf: pd.DataFrame) -> pd.DataFrame:
        pdf = _timeline(pdf)
        items = pdf[S.ITEM_IDX].to_numpy(np.int64)
        starts = session_starts(pdf[TS_MICROS].to_numpy(np.int64), gap_minutes)
        is_valid = pdf[IS_VALID].to_numpy(bool)
        serve_end = len(items) - int(pdf[IS_TEST].sum())
        ends = np.r_[np.flatnonzero(is_valid)[:1], serve_end]
        splits = [S.SPLIT_VALID] * (len(ends) - 1) + [S.SPLIT_SERVE]
        return pd.DataFrame({
            S.USER_IDX: np.int32(pdf[S.USER_IDX].iat[0]), S.SPLIT: splits,
            S.SEQ_ITEMS: _array_column(history_windows(items, ends, sequence_length)),
            S.SEQ_SESSION_STARTS: _array_column(history_windows(starts, ends, sequence_length)),
            S.SEQ_LEN: np.minimum(ends, sequence_length).astype(np.int32),
            S.VALID_ITEM: np.r_[items[is_valid][:1], 0].astype(np.int32)})

    return _user_frames(marked).applyInPandas(per_user, S.USER_SEQUENCES.schema)


def content_examples(seq: DataFrame, item_features_df: DataFrame) -> DataFrame:
    """The DIEN rows (train and test) joined with their target item's content features."""
    content = item_features_df.select(S.ITEM_IDX, non_null_elements(F.col(S.TITLE_TOKENS)).alias(S.TITLE_TOKENS),
                                      non_null_elements(F.col(S.GENRE_MULTI_HOT), 0.0).alias(S.GENRE_MULTI_HOT),
                                      S.YEAR_BUCKET)
    rows = seq.withColumn(S.HIST_ITEMS, non_null_elements(F.col(S.HIST_ITEMS)))
    return S.conform(rows.join(F.broadcast(content), S.ITEM_IDX), S.CONTENT_EXAMPLES, strict=False)


def eval_candidates(marked: DataFrame, num_items: int, eval_negatives: int, seed: int) -> DataFrame:
    """NCF protocol: each held-out item (label 1) and ``eval_negatives`` distinct never-touched items."""

    def per_user(pdf: pd.DataFrame) -> pd.DataFrame:
        user = int(pdf[S.USER_IDX].iat[0])
        held_out = pdf.loc[pdf[IS_TEST], S.ITEM_IDX].to_numpy(np.int64)
        if len(held_out) == 0:
            negatives = held_out
        else:
            negatives = sample_negatives(user_rng(seed, user, STREAM_EVAL), pdf[S.ITEM_IDX].to_numpy(), num_items,
                                         eval_negatives, distinct=True)
        return pd.DataFrame({
            S.USER_IDX: np.int32(user), S.ITEM_IDX: np.concatenate([held_out, negatives]).astype(np.int32),
            S.LABEL: np.repeat(np.float32([1.0, 0.0]), [len(held_out), len(negatives)]),
            S.PROTOCOL: S.PROTOCOL_NCF})

    return _user_frames(marked).applyInPandas(per_user, S.EVAL_CANDIDATES.schema)


# --- job --------------------------------------------------------------------------------------

def training_files(expected_rows: int, cfg: Config) -> int:
    """Files for a training table: enough for every Horovod rank, and small enough to balance."""
    return max(min_files_for_training(cfg.train.num_proc),
               math.ceil(expected_rows / cfg.features.rows_per_training_file))


VOCABULARIES = (S.VOCAB_USERS, S.VOCAB_ITEMS, S.VOCAB_TOKENS, S.VOCAB_GENRES)


def extract(ctx: JobContext) -> Dict[str, DataFrame]:
    """Events up to the run date, the catalog, and the vocabularies of earlier runs (when present)."""
    store = ctx.store
    tables = {S.EVENTS.name: events_until(store.read(S.EVENTS.name), ctx.cfg.run_date),
              S.ITEMS.name: store.read(S.ITEMS.name)}
    tables.update({spec.name: store.read(spec.name) for spec in VOCABULARIES if store.exists(spec.name)})
    return tables


def load(ctx: JobContext, df: DataFrame, spec: S.TableSpec, files: int = 1) -> int:
    """Overwrite ``spec``'s table with ``df`` in ``files`` files (round-robin); return its rows.

    Even one file is a repartition, not a coalesce: ``coalesce(1)`` would narrow the per-user pandas
    pass that computes ``df`` to one task, one core (eval_candidates at 30M events: 631 s)."""
    ctx.store.write(conform_exact(df, spec).repartition(files), spec.name)
    return ctx.store.num_rows(spec.name)


def run(ctx: JobContext) -> Dict[str, int]:
    cfg, store, fc = ctx.cfg, ctx.store, ctx.cfg.features
    rows: Dict[str, int] = {}

    def write(st, df: DataFrame, spec: S.TableSpec, files: int = 1) -> None:
        rows[spec.name] = load(ctx, df, spec, files)
        st.add(spec.name, rows[spec.name])

    sources = extract(ctx)
    events, items = sources[S.EVENTS.name], sources[S.ITEMS.name]
    with step(log, "features.vocabularies") as st:
        existing = {spec.name: sources[spec.name] for spec in VOCABULARIES if spec.name in sources}
        for name, vocab in build_vocabularies(events, items, existing).items():
            write(st, vocab, S.ALL_TABLES[name])
    vocab = {spec.name: store.read(spec.name) for spec in VOCABULARIES}
    num_items = vocab[S.VOCAB_ITEMS.name].agg(F.max(S.ITEM_IDX)).first()[0] or 0
    num_genres = rows[S.VOCAB_GENRES.name]

    marked = mark_holdout(indexed_interactions(events, vocab[S.VOCAB_USERS.name], vocab[S.VOCAB_ITEMS.name]),
                          hold_out=cfg.recommend.mode == "evaluate").persist(StorageLevel.MEMORY_AND_DISK)
    try:
        with step(log, "features.user_item") as st:
            train_rows = marked.where(~F.col(IS_TEST)).count()
            st.add("train_interactions", train_rows)
            write(st, user_features(marked, cfg.run_date, fc.history_length), S.USER_FEATURES)
            write(st, item_features(marked, items, vocab[S.VOCAB_ITEMS.name], vocab[S.VOCAB_TOKENS.name],
                                    vocab[S.VOCAB_GENRES.name], num_genres, cfg), S.ITEM_FEATURES)
        with step(log, "features.cf_examples") as st:
            write(st, cf_examples(marked, num_items, fc.negatives_per_positive, fc.seed), S.CF_EXAMPLES,
                  training_files(train_rows * (1 + fc.negatives_per_positive), cfg))
        with step(log, "features.seq_examples") as st:
            write(st, seq_examples(marked, num_items, fc.history_length, fc.seed), S.SEQ_EXAMPLES,
                  training_files(2 * train_rows, cfg))
        with step(log, "features.content_examples") as st:
            # from the written table: recomputing the seq examples would redo the sampling UDF
            write(st, content_examples(store.read(S.SEQ_EXAMPLES.name), store.read(S.ITEM_FEATURES.name)),
                  S.CONTENT_EXAMPLES, training_files(2 * train_rows, cfg))
        with step(log, "features.sequences") as st:
            write(st, next_item_examples(marked, fc.sequence_length, cfg.sessions.gap_minutes),
                  S.NEXT_ITEM_EXAMPLES, training_files(train_rows // fc.sequence_length, cfg))
            write(st, user_sequences(marked, fc.sequence_length, cfg.sessions.gap_minutes), S.USER_SEQUENCES)
        with step(log, "features.eval_candidates") as st:
            write(st, eval_candidates(marked, num_items, fc.eval_negatives, fc.seed), S.EVAL_CANDIDATES)
    finally:
        marked.unpersist()
    return rows


def main(argv=None) -> Dict[str, int]:
    return job_main("features: events -> vocabularies, features, examples, eval candidates", run, argv)


if __name__ == "__main__":
    main()
