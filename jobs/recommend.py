"""Top-K recommendations for every user: retrieval, then ranking, written to ``recommendations``.

1. Retrieval: each executor scores its users against all items with deep_cf's GMF embedding dot
   products, in item blocks, keeping a partial top-N (``recommend.candidates``) and skipping items
   the user has seen (``libs.scoring.retrieve_top_n``).
2. Ranking: the N candidates are scored by every trained deep model (deep_cf, dien, content) and
   blended: ``score = sum_m w_m * p_m / sum_m w_m`` with ``recommend.weights``. Items that never had
   an interaction have no trained CF embedding, so they are scored by the content model alone
   (its item tower reads only title, genres and year) and compete on that probability.
3. Ties break by item index; the best ``recommend.k`` are kept.
4. Fallback for users with no training history: the most popular items of the last
   ``recommend.fallback_days`` days of events up to the run date (all-time popularity if that window
   is empty), ties by item id, marked ``source = "fallback"``.

Every user of ``vocab_users`` gets exactly K rows unless fewer unseen items exist. Models are
loaded once per executor Python worker (module-level cache), never per batch.
"""
from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass
from typing import Dict, Iterator, Optional

import numpy as np
import pandas as pd
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from libs import schema as S
from libs.contract import conform_exact
from libs.log import step
from libs.runtime import JobContext, job_main
from libs.scoring import blend_scores, model_run_label, retrieve_top_n, top_k

log = logging.getLogger(__name__)

SOURCE_RANKED = "ranked"
SOURCE_FALLBACK = "fallback"
RANKING_MODELS = ("deep_cf", "dien", "content")
_USER_BATCH = 256

_loaded_models: Dict[str, object] = {}  # model path -> Keras model, per Python worker


def _model_at(path: str):
    """Load a saved model once per Python worker process (Spark reuses workers across tasks)."""
    if path not in _loaded_models:
        from libs.model_store import load_model_at

        _loaded_models[path] = load_model_at(path)
    return _loaded_models[path]


# --- extract --------------------------------------------------------------------------------

def seen_items(cf_examples: DataFrame) -> DataFrame:
    """(user_idx, seen: array<int>) of training positives: everything the user interacted with in
    production mode, everything but the held-out item in evaluate mode (features decides)."""
    return (cf_examples.where(F.col(S.LABEL) > 0).groupBy(S.USER_IDX)
            .agg(F.array_sort(F.collect_set(S.ITEM_IDX)).alias("seen")))


def users_to_score(vocab_users: DataFrame, user_features: DataFrame, seen: DataFrame) -> DataFrame:
    """Every vocabulary user with history and seen items (empty for users without history)."""
    empty_ints = F.array().cast("array<int>")
    return (vocab_users.select(S.USER_IDX)
            .join(user_features.select(S.USER_IDX, S.HIST_ITEMS, S.HIST_LEN), S.USER_IDX, "left")
            .join(seen, S.USER_IDX, "left")
            .select(S.USER_IDX, F.coalesce(S.HIST_ITEMS, empty_ints).alias(S.HIST_ITEMS),
                    F.coalesce(S.HIST_LEN, F.lit(0)).alias(S.HIST_LEN),
                    F.coalesce("seen", empty_ints).alias("seen")))


# --- transform ------------------------------------------------------------------------------

def popular_fallback(events: DataFrame, vocab_items: DataFrame, run_date: dt.date, days: int,
                     k: int) -> DataFrame:
    """(rank, item_idx, score) of the K most popular items of the last ``days`` days with data.

    The window ends at the last event date on or before the run date, so a replayed or late log
    still has a window. Only K rows reach the driver.
    """
    upto = events.where(F.col(S.EVENT_DATE) <= F.lit(run_date))
    last_day = upto.agg(F.max(S.EVENT_DATE).alias("d"))
    recent = (upto.crossJoin(last_day)
              .where(F.col(S.EVENT_DATE) > F.date_sub(F.col("d"), days)).drop("d"))
    top = (recent.groupBy(S.ITEM_ID).count().join(vocab_items, S.ITEM_ID)
           .orderBy(F.desc("count"), F.asc(S.ITEM_IDX)).limit(k).collect())
    rows = [(rank, int(r[S.ITEM_IDX]), float(r["count"])) for rank, r in enumerate(top, start=1)]
    return events.sparkSession.createDataFrame(rows, f"{S.RANK} int, {S.ITEM_IDX} int, {S.SCORE} double")


@dataclass
class RankingAssets:
    """Everything executors need to rank, shipped once per task with the closure.

    Attributes:
        user_vectors, item_vectors: (n_users+1, d), (n_items+1, d) deep_cf GMF embeddings.
        warm_items: (n_items+1,) bool, True for items with training interactions.
        item_content: column -> array indexed by item index (title tokens, genres, year bucket).
        model_paths: model name -> saved model path, for every model trained for this run.
    """

    k: int
    n: int
    block_size: int
    user_vectors: np.ndarray
    item_vectors: np.ndarray
    warm_items: np.ndarray
    item_content: Dict[str, np.ndarray]
    model_paths: Dict[str, str]
    weights: Dict[str, float]


def rank_users(batches: Iterator[pd.DataFrame], assets: RankingAssets) -> Iterator[pd.DataFrame]:
    """mapInPandas body: rows (user_idx, hist_items, hist_len, seen) -> K ranked rows per user."""
    cold = np.flatnonzero(~assets.warm_items[1:]) + 1
    for frame in batches:
        for start in range(0, len(frame), _USER_BATCH):
            chunk = frame.iloc[start:start + _USER_BATCH]
            users = chunk[S.USER_IDX].to_numpy()
            seen = [np.asarray(s, dtype=np.int64) for s in chunk["seen"]]
            candidates, _ = retrieve_top_n(assets.user_vectors[users], assets.item_vectors, assets.n,
                                           assets.block_size, seen, assets.warm_items)
            yield _rank_chunk(chunk, users, seen, candidates, cold, assets)


def _rank_chunk(chunk: pd.DataFrame, users: np.ndarray, seen, candidates: np.ndarray,
                cold: np.ndarray, assets: RankingAssets) -> pd.DataFrame:
    from libs import models as registry

    score_cold = "content" in assets.model_paths and len(cold) > 0  # else cold items stay out
    pair_row, pair_item, pair_warm = [], [], []
    for row in range(len(users)):
        warm = candidates[row][candidates[row] >= 0]
        cold_unseen = np.setdiff1d(cold, seen[row]) if score_cold else cold[:0]
        pair_row.append(np.full(len(warm) + len(cold_unseen), row))
        pair_item.append(np.concatenate([warm, cold_unseen]))
        pair_warm.append(np.r_[np.ones(len(warm), bool), np.zeros(len(cold_unseen), bool)])
    pair_row, pair_item, pair_warm = (np.concatenate(a) for a in (pair_row, pair_item, pair_warm))
    if not len(pair_item):
        return _empty_ranked()
    hist = np.stack(chunk[S.HIST_ITEMS].to_numpy()).astype(np.int32)
    columns = {
        S.USER_IDX: users[pair_row].astype(np.int32), S.ITEM_IDX: pair_item.astype(np.int32),
        S.HIST_ITEMS: hist[pair_row], S.HIST_LEN: chunk[S.HIST_LEN].to_numpy()[pair_row].astype(np.int32),
        **{c: values[pair_item] for c, values in assets.item_content.items()},
    }
    # Cold items have no CF/DIEN signal: only the content model scores them, and its probability
    # is their score. Warm pairs get every model and the blend.
    blended = np.empty(len(pair_item))
    warm_scores = {}
    for name, path in sorted(assets.model_paths.items()):
        rows = slice(None) if name == "content" else pair_warm
        inputs = {c: columns[c][rows] for c in registry.inference_columns(name)}
        n_rows = len(next(iter(inputs.values())))
        probabilities = (registry.score(_model_at(path), inputs).astype(np.float64) if n_rows
                         else np.zeros(0))
        if name == "content":
            blended[~pair_warm] = probabilities[~pair_warm]
            probabilities = probabilities[pair_warm]
        warm_scores[name] = probabilities
    blended[pair_warm] = blend_scores(warm_scores, assets.weights)
    frames = []
    for row, user in enumerate(users):
        mask = pair_row == row
        items, best = top_k(pair_item[mask], blended[mask], assets.k)
        frames.append(pd.DataFrame({
            S.USER_IDX: np.full(len(items), user, np.int32), S.RANK: np.arange(1, len(items) + 1, dtype=np.int32),
            S.ITEM_IDX: items.astype(np.int32), S.SCORE: best, S.SOURCE: SOURCE_RANKED}))
    return pd.concat(frames, ignore_index=True)


def _empty_ranked() -> pd.DataFrame:
    return pd.DataFrame({S.USER_IDX: pd.Series(dtype="int32"), S.RANK: pd.Series(dtype="int32"),
                         S.ITEM_IDX: pd.Series(dtype="int32"), S.SCORE: pd.Series(dtype="float64"),
                         S.SOURCE: pd.Series(dtype="object")})


RANKED_SCHEMA = f"{S.USER_IDX} int, {S.RANK} int, {S.ITEM_IDX} int, {S.SCORE} double, {S.SOURCE} string"


def recommend(users: DataFrame, assets: RankingAssets, fallback: DataFrame) -> DataFrame:
    """(user_idx, rank, item_idx, score, source) for every user: ranked, or the fallback list."""
    with_history = users.where(F.col(S.HIST_LEN) > 0)
    ranked = with_history.mapInPandas(lambda it: rank_users(it, assets), RANKED_SCHEMA)
    cold_users = users.where(F.col(S.HIST_LEN) == 0).select(S.USER_IDX)
    fallen_back = (cold_users.crossJoin(F.broadcast(fallback))
                   .select(S.USER_IDX, S.RANK, S.ITEM_IDX, S.SCORE, F.lit(SOURCE_FALLBACK).alias(S.SOURCE)))
    return ranked.unionByName(fallen_back)


def with_original_ids(recs: DataFrame, vocab_users: DataFrame, vocab_items: DataFrame,
                      model_run: str, run_date: dt.date) -> DataFrame:
    out = (recs.join(vocab_users, S.USER_IDX).join(vocab_items, S.ITEM_IDX)
           .withColumn(S.MODEL_RUN, F.lit(model_run)).withColumn(S.RUN_DATE, F.lit(run_date)))
    return conform_exact(out.select(*S.RECOMMENDATIONS.columns), S.RECOMMENDATIONS)


# --- run ------------------------------------------------------------------------------------

def load_assets(ctx: JobContext, item_features: DataFrame, vocab_items_count: int):
    """(RankingAssets, {model: run id}) for this run: embeddings, content arrays, model paths.

    Small (O(users + items) numbers) so the driver builds them once and Spark ships them to tasks.
    """
    from libs import models as registry
    from libs.model_store import ModelStore

    cfg = ctx.cfg.recommend
    store = ModelStore(ctx.cfg.storage.warehouse)
    runs = {m: store.latest_run(m) for m in RANKING_MODELS if m in ctx.cfg.train.models}
    runs = {m: r for m, r in runs.items() if r}
    if "deep_cf" not in runs:
        raise RuntimeError("recommend needs a trained deep_cf model for retrieval; run jobs.train first "
                           f"(model store: {store.root})")
    user_vectors, item_vectors = registry.retrieval_embeddings("deep_cf", store.load("deep_cf", runs["deep_cf"]))
    content = item_features.select(S.ITEM_IDX, S.POPULARITY, S.TITLE_TOKENS, S.GENRE_MULTI_HOT,
                                   S.YEAR_BUCKET).toPandas()  # one row per item: small
    size = max(vocab_items_count + 1, len(item_vectors))
    idx = content[S.ITEM_IDX].to_numpy()
    warm = np.zeros(size, bool)
    warm[idx[content[S.POPULARITY].to_numpy() > 0]] = True
    warm[len(item_vectors):] = False

    def dense(column, dtype):
        values = np.stack(content[column].to_numpy()).astype(dtype)
        out = np.zeros((size,) + values.shape[1:], dtype)
        out[idx] = values
        return out

    item_content = {S.TITLE_TOKENS: dense(S.TITLE_TOKENS, np.int32),
                    S.GENRE_MULTI_HOT: dense(S.GENRE_MULTI_HOT, np.float32),
                    S.YEAR_BUCKET: dense(S.YEAR_BUCKET, np.int32)}
    log.info("ranking with %s; %d warm and %d cold items", model_run_label(runs), warm.sum(),
             size - 1 - warm.sum())
    return RankingAssets(cfg.k, cfg.candidates, cfg.block_size, user_vectors, item_vectors, warm,
                         item_content, {m: store.model_path(m, r) for m, r in runs.items()},
                         dict(cfg.weights)), runs


def run(ctx: JobContext) -> Dict[str, int]:
    cfg, store = ctx.cfg, ctx.store
    with step(log, "recommend") as result:
        vocab_users, vocab_items = store.read(S.VOCAB_USERS.name), store.read(S.VOCAB_ITEMS.name)
        item_features = store.read(S.ITEM_FEATURES.name)
        assets, runs = load_assets(ctx, item_features, vocab_items.count())
        users = users_to_score(vocab_users, store.read(S.USER_FEATURES.name),
                               seen_items(store.read(S.CF_EXAMPLES.name)))
        n_partitions = max(ctx.spark.sparkContext.defaultParallelism, 2)
        fallback = popular_fallback(store.read(S.EVENTS.name), vocab_items, cfg.run_date,
                                    cfg.recommend.fallback_days, cfg.recommend.k)
        recs = recommend(users.repartition(n_partitions, S.USER_IDX), assets, fallback)
        out = with_original_ids(recs, vocab_users, vocab_items, model_run_label(runs), cfg.run_date)
        version = store.write(out, S.RECOMMENDATIONS.name, partition_by=list(S.RECOMMENDATIONS.partition_by),
                              replace_where={S.RUN_DATE: [cfg.run.date]})
        rows = store.read(S.RECOMMENDATIONS.name).where(F.col(S.RUN_DATE) == F.lit(cfg.run_date)).count()
        result.add(S.RECOMMENDATIONS.name, rows)
        log.info("recommendations for %s: version %d at %s", cfg.run.date, version,
                 store.path(S.RECOMMENDATIONS.name))
    return dict(result.rows)


def main(argv: Optional[list] = None) -> Dict[str, int]:
    return job_main("recommend: top-K for every user", run, argv)


if __name__ == "__main__":
    main()
