"""Top-K recommendations for every user: retrieval over the whole catalog, then a fitted blend.

1. Retrieval: every retriever of ``recommend.retrievers`` (the registry says which models can)
   turns each user's serving query (``user_sequences`` split=serve) into a vector and scores the
   whole catalog in item blocks, keeping its top-N of the items the user has not seen; the union
   of those lists are the candidates (:mod:`libs.ranking`).
2. Ranking: each candidate gets every trained model's score (a retriever's dot product, a ranker's
   probability), standardized per user, and the weighted sum decides. The weights are fitted on
   validation queries (each user's history before the second-latest interaction, candidates from
   that history, target = that interaction; never the test item) over a sample of
   ``recommend.blend_users`` users; ``recommend.blend_users: 0`` uses ``recommend.weights`` as given.
   The fit and its validation NDCG@10 per model are saved in the model store (``blend``).
3. Ties break by item index; the best ``recommend.k`` are kept; score = sigmoid(blend). With
   ``recommend.diversity`` > 0 the K are picked by maximal marginal relevance instead
   (:mod:`libs.diversity`; score = the MMR gain + lambda), on the executors with the rest.
4. Fallback for users with no training history: the most popular items of the last
   ``recommend.fallback_days`` days of events up to the run date, ties by item id, marked
   ``source = "fallback"``.
5. A reason per row (:mod:`libs.explanations`): for each user's final K rows only, the history
   item that the first model of ``recommend.explain_with`` taking part in the ranking attends to
   most (``because_you_watched:<item_id>``); ``popular_recently`` for fallback rows.

Each retriever's own top-K goes to the ``candidates`` stage table, so the evaluate job can score
every stage alone. Models are loaded and compiled once per executor Python worker, never per
batch (:mod:`libs.serving`); each ranker does its user-side work once per user. Where the time went
(executor seconds per step, driver seconds per phase) is logged as ``recommend profile``.
"""
from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass, field
from typing import Dict, Iterator, List, Optional, Tuple

import numpy as np
import pandas as pd
from pyspark import StorageLevel
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from libs import schema as S
from libs.contract import conform_exact
from libs.diversity import diversified_top_k
from libs.features import month_of
from libs.log import step
from libs.ranking import (BLEND_RECORD, NO_ITEM, blend, fit_blend_weights, query_columns, retrieval_scores,
                          standardize, top_k_rows, union_candidates)
from libs.runtime import JobContext, job_main
from libs.scoring import model_run_label
from libs.serving import USER_BLOCK, Profile, ServedModel, served_model

log = logging.getLogger(__name__)

SOURCE_RANKED = "ranked"
SOURCE_FALLBACK = "fallback"
SEEN = "seen"
REASON_ITEM = "reason_item"  # item index of a ranked row's reason (0: none), until original ids are joined


def _served(assets: "ServingAssets", name: str, profile: Profile) -> ServedModel:
    """A model's serving functions, loaded and compiled once per Python worker (Spark reuses
    workers across tasks and stages), with TensorFlow held to the task's cores."""
    return served_model(name, assets.model_paths[name], assets.item_content, lambda: profile.timed("load models"))


# --- extract --------------------------------------------------------------------------------

def seen_items(cf_examples: DataFrame, splits: Optional[List[str]] = None) -> DataFrame:
    """(user_idx, seen: array<int>) of the user's positives in ``splits`` (default: every split).

    Every split is what serving excludes (training and validation items; in production mode that
    is everything); ``[train]`` is what a validation query excludes.
    """
    positives = cf_examples.where(F.col(S.LABEL) > 0)
    if splits:
        positives = positives.where(F.col(S.SPLIT).isin(splits))
    return positives.groupBy(S.USER_IDX).agg(F.array_sort(F.collect_set(S.ITEM_IDX)).alias(SEEN))


def queries(user_sequences: DataFrame, split: str, seen: DataFrame) -> DataFrame:
    """The ``split`` query of every user that has one, with the items it must exclude."""
    empty = F.array().cast("array<int>")
    return (user_sequences.where((F.col(S.SPLIT) == split) & (F.col(S.SEQ_LEN) > 0))
            .join(seen, S.USER_IDX, "left")
            .select(S.USER_IDX, S.SEQ_ITEMS, S.SEQ_SESSION_STARTS, S.SEQ_LEN, S.VALID_ITEM,
                    F.coalesce(SEEN, empty).alias(SEEN)))


# --- transform ------------------------------------------------------------------------------

def fallback_window(store, run_date: dt.date, days: int) -> Tuple[Optional[dt.date], List[str]]:
    """The last event date on or before the run date (so a replayed or late log still has a
    window) and the EVENT_MONTH partitions of the ``days`` days up to it; (None, []) without one.

    Months come from the log; only the latest months are opened, newest first, until one has an
    event dated on or before the run date (usually the first).
    """
    months = [m for m in store.partition_values(S.EVENTS.name, S.EVENT_MONTH) if m <= month_of(run_date)]
    for month in reversed(months):
        last = (store.read(S.EVENTS.name, partitions={S.EVENT_MONTH: [month]})
                .where(F.col(S.EVENT_DATE) <= F.lit(run_date)).agg(F.max(S.EVENT_DATE)).first()[0])
        if last is not None:
            first = month_of(last - dt.timedelta(days=days - 1))
            return last, [m for m in months if first <= m <= month]
    return None, []


def popular_fallback(events: DataFrame, vocab_items: DataFrame, last_day: Optional[dt.date], days: int,
                     k: int) -> DataFrame:
    """(rank, item_idx, score) of the K most popular items of the ``days`` days up to ``last_day``.

    Only K rows reach the driver.
    """
    schema = f"{S.RANK} int, {S.ITEM_IDX} int, {S.SCORE} double"
    if last_day is None:
        return events.sparkSession.createDataFrame([], schema)
    recent = events.where((F.col(S.EVENT_DATE) <= F.lit(last_day))
                          & (F.col(S.EVENT_DATE) > F.lit(last_day - dt.timedelta(days=days))))
    top = (recent.groupBy(S.ITEM_ID).count().join(vocab_items, S.ITEM_ID)
           .orderBy(F.desc("count"), F.asc(S.ITEM_IDX)).limit(k).collect())
    rows = [(rank, int(r[S.ITEM_IDX]), float(r["count"])) for rank, r in enumerate(top, start=1)]
    return events.sparkSession.createDataFrame(rows, schema)


@dataclass
class ServingAssets:
    """Everything executors need, broadcast once per executor (O(items) numbers; the models are
    loaded from their paths in the model store, once per Python worker).

    Attributes:
        retrievers: retriever -> candidates it contributes (its top-N).
        item_vectors: retriever -> (n_items, D) item vectors.
        allowed_items: retriever -> (n_items,) bool, the items it may return: items with training
            interactions, and for retrievers whose item side reads only content, every item.
        item_content: column -> array indexed by item index (title tokens, genres, year bucket).
        model_paths: model -> saved model path, for every model in the blend.
        blend_models: the blend's feature order; weights: (M,) in that order.
        history_length: L of the rankers' HIST_ITEMS (the latest L items of the query).
        train_popularity: (n_items,) training interactions per item (validation's popularity baseline).
        diversity: the MMR lambda of the final top-K (0: by the blend alone).
        explainer: the model whose attention gives the final rows their reason (None: no reason).
    """

    k: int
    block_size: int
    retrievers: Dict[str, int]
    item_vectors: Dict[str, np.ndarray]
    allowed_items: Dict[str, np.ndarray]
    item_content: Dict[str, np.ndarray]
    model_paths: Dict[str, str]
    blend_models: List[str]
    weights: np.ndarray = field(default_factory=lambda: np.zeros(0))
    history_length: int = 0
    train_popularity: np.ndarray = field(default_factory=lambda: np.zeros(0))
    diversity: float = 0.0
    explainer: Optional[str] = None


def candidate_features(frame: pd.DataFrame, assets: ServingAssets, profile: Profile,
                       weights: Optional[np.ndarray] = None, columns: Optional[Dict[str, np.ndarray]] = None):
    """(candidates (U, C), valid (U, C), features (U, C, M), stage {retriever: (U, N)}) of a block.

    With ``weights``, models of weight 0 are not run (their feature stays 0: the blend is the same).
    ``columns``: the block's :func:`query_columns`, when the caller has them already.
    """
    columns = query_columns(frame, assets.history_length) if columns is None else columns
    seen = [np.asarray(s, dtype=np.int64) for s in frame[SEEN]]
    scored = [name for m, name in enumerate(assets.blend_models) if weights is None or weights[m] != 0]
    served = {name: _served(assets, name, profile) for name in [*assets.retrievers, *scored]}
    with profile.timed("retrieval"):
        user_vectors = {name: np.asarray(served[name].user_vectors(columns), np.float32) for name in assets.retrievers}
        candidates, stage = union_candidates(user_vectors, assets.item_vectors, assets.retrievers,
                                             assets.block_size, seen, assets.allowed_items)
    valid = candidates != NO_ITEM
    features = np.zeros(candidates.shape + (len(assets.blend_models),))
    for m, name in enumerate(assets.blend_models):
        if name not in scored:
            continue
        with profile.timed(f"score {name}"):
            if name in user_vectors:
                scores = retrieval_scores(user_vectors[name], assets.item_vectors[name], candidates)
            else:  # the first call of a worker includes compiling the model's serving function
                scores = served[name].score_candidates(columns, candidates)
            features[:, :, m] = standardize(scores, valid)
    return candidates, valid, features, stage


def similarity_sources(assets: ServingAssets) -> List[np.ndarray]:
    """What MMR's item similarity averages: genre multi-hot and the first retriever's item vectors."""
    return [assets.item_content[S.GENRE_MULTI_HOT], assets.item_vectors[next(iter(assets.retrievers))]]


STAGE_SCHEMA = (f"{S.USER_IDX} int, {S.STAGE} string, {S.RANK} int, {S.ITEM_IDX} int, {S.SCORE} double, "
                f"{REASON_ITEM} int")


def reason_items(final: pd.DataFrame, users: np.ndarray, columns: Dict[str, np.ndarray], explain,
                 k: int) -> np.ndarray:
    """(rows,) the reason item of each of a block's final rows (user_idx, rank, item_idx), 0: none.

    Only the final K rows per user are explained: ``explain(columns, items (U, K))`` (a fixed
    width, so compiled explainers see one shape; slots of users with fewer rows hold 0).
    """
    row = pd.Index(users).get_indexer(final[S.USER_IDX].to_numpy())
    slot = final[S.RANK].to_numpy() - 1
    items = np.zeros((len(users), k), np.int64)
    items[row, slot] = final[S.ITEM_IDX].to_numpy()
    return np.asarray(explain(columns, items))[row, slot] if len(final) else np.zeros(0, np.int32)


def rank_users(batches: Iterator[pd.DataFrame], assets: ServingAssets, profile: Profile) -> Iterator[pd.DataFrame]:
    """mapInPandas body: serving queries -> K final rows per user, plus each retriever's top-K."""
    for frame in batches:
        for start in range(0, len(frame), USER_BLOCK):
            chunk = frame.iloc[start:start + USER_BLOCK]
            users = chunk[S.USER_IDX].to_numpy()
            columns = query_columns(chunk, assets.history_length)
            candidates, valid, features, stage = candidate_features(chunk, assets, profile, assets.weights, columns)
            with profile.timed("blend + top-k"):
                blended = 1.0 / (1.0 + np.exp(-blend(features, assets.weights)))
                final = diversified_top_k(users, candidates, valid, blended, assets.k, assets.diversity,
                                          similarity_sources(assets))
            reasons = np.zeros(len(final), np.int32)
            if assets.explainer is not None:  # the reasons of the rows the table gets, after any re-ranking
                with profile.timed(f"explain {assets.explainer}"):
                    reasons = reason_items(final, users, columns, _served(assets, assets.explainer, profile).explain,
                                           assets.k)
            with profile.timed("blend + top-k"):
                out = [final.assign(**{S.STAGE: S.MODEL_FINAL, REASON_ITEM: reasons})]
                for name, items in stage.items():
                    retrieved = items[:, :assets.k]
                    slots = np.broadcast_to(-np.arange(retrieved.shape[1], dtype=np.float64), retrieved.shape)
                    out.append(top_k_rows(users, retrieved, retrieved != NO_ITEM, slots, assets.k)
                               .assign(**{S.STAGE: name, REASON_ITEM: 0}))
                rows = pd.concat(out, ignore_index=True)[[S.USER_IDX, S.STAGE, S.RANK, S.ITEM_IDX, S.SCORE,
                                                          REASON_ITEM]]
            profile.flush()
            yield rows


VALIDATION_SCHEMA = (f"{S.USER_IDX} int, width int, n_candidates int, features array<double>, target_slot int, "
                     "popularity_rank int")


def popularity_rank(popularity: np.ndarray, target: int, seen: np.ndarray) -> int:
    """0-based rank of ``target`` when the unseen items are ordered by popularity, then item index."""
    ahead = (popularity > popularity[target]) | ((popularity == popularity[target]) &
                                                  (np.arange(len(popularity)) < target))
    ahead[0] = False
    ahead[seen[seen < len(popularity)]] = False
    return int(ahead.sum())


def validation_features(batches: Iterator[pd.DataFrame], assets: ServingAssets,
                        profile: Profile) -> Iterator[pd.DataFrame]:
    """mapInPandas body: validation queries -> each user's flattened (C, M) features, the slot of the
    validation item among its candidates (-1 when no retriever found it), and its popularity rank."""
    for frame in batches:
        for start in range(0, len(frame), USER_BLOCK):
            chunk = frame.iloc[start:start + USER_BLOCK]
            candidates, valid, features, _ = candidate_features(chunk, assets, profile)
            profile.flush()
            targets = chunk[S.VALID_ITEM].to_numpy()
            hit = candidates == targets[:, None]
            slot = np.where(hit.any(axis=1), hit.argmax(axis=1), -1)
            yield pd.DataFrame({S.USER_IDX: chunk[S.USER_IDX].to_numpy(np.int32),
                                "width": np.full(len(chunk), candidates.shape[1], np.int32),
                                "n_candidates": valid.sum(axis=1).astype(np.int32),
                                "features": list(features.reshape(len(chunk), -1)), "target_slot": slot,
                                "popularity_rank": [popularity_rank(assets.train_popularity, t, np.asarray(s, np.int64))
                                                    for t, s in zip(targets, chunk[SEEN])]})


def fit_blend(validation: pd.DataFrame, models: List[str], k: int, step: float) -> dict:
    """Fit the blend weights on collected validation features; the record of the fit."""
    width = int(validation["width"].max())
    m = len(models)
    features = np.zeros((len(validation), width, m))
    valid = np.zeros((len(validation), width), bool)
    for row, (w, n, flat) in enumerate(zip(validation["width"], validation["n_candidates"], validation["features"])):
        features[row, :w] = np.asarray(flat).reshape(w, m)
        valid[row, :n] = True  # union_candidates packs the real candidates first
    slots = validation["target_slot"].to_numpy()
    weights, ndcg, _ = fit_blend_weights(features, valid, slots, k, step)
    alone = {name: fit_blend_weights(features[:, :, [i]], valid, slots, k, 1.0)[1] for i, name in enumerate(models)}
    ranks = validation["popularity_rank"].to_numpy()
    popularity = float(np.where(ranks < k, 1.0 / np.log2(ranks + 2.0), 0.0).mean())
    return {"models": models, "weights": {n: float(w) for n, w in zip(models, weights)},
            f"validation_ndcg@{k}": ndcg, f"validation_ndcg@{k}_alone": alone,
            f"validation_ndcg@{k}_popularity": popularity,
            "validation_users": int(len(validation)),
            "validation_recall_of_candidates": float((slots >= 0).mean()) if len(slots) else 0.0,
            "tuned_on": "each user's validation item (second-latest interaction in evaluate mode, latest in "
                        "production), candidates retrieved from the history before it; test items unused"}


def recommend(users: DataFrame, assets: ServingAssets, fallback: DataFrame, profile: Profile) -> DataFrame:
    """(user_idx, stage, rank, item_idx, score, reason_item, source): ranked rows and retriever stage
    rows of every user with history, and the fallback list (stage final) for ``users`` without."""
    with_history = users.where(F.col(S.SEQ_LEN) > 0)
    shipped = users.sparkSession.sparkContext.broadcast(assets)  # once per executor, not per task
    ranked = (with_history.mapInPandas(lambda it: rank_users(it, shipped.value, profile), STAGE_SCHEMA)
              .withColumn(S.SOURCE, F.lit(SOURCE_RANKED)))
    cold_users = users.where(F.col(S.SEQ_LEN) == 0).select(S.USER_IDX)
    fallen_back = (cold_users.crossJoin(F.broadcast(fallback))
                   .select(S.USER_IDX, F.lit(S.MODEL_FINAL).alias(S.STAGE), S.RANK, S.ITEM_IDX, S.SCORE,
                           F.lit(0).alias(REASON_ITEM), F.lit(SOURCE_FALLBACK).alias(S.SOURCE)))
    return ranked.unionByName(fallen_back)


def with_original_ids(recs: DataFrame, vocab_users: DataFrame, vocab_items: DataFrame,
                      model_run: str, run_date: dt.date) -> DataFrame:
    """The recommendations table's rows: original ids, and the reason (README "Explanations")."""
    reason_ids = vocab_items.select(F.col(S.ITEM_IDX).alias(REASON_ITEM), F.col(S.ITEM_ID).alias("reason_id"))
    reason = (F.when(F.col(S.SOURCE) == SOURCE_FALLBACK, F.lit(S.REASON_POPULAR_RECENTLY))
              .when(F.col("reason_id").isNotNull(), F.concat(F.lit(S.REASON_BECAUSE_YOU_WATCHED), "reason_id")))
    out = (recs.join(vocab_users, S.USER_IDX).join(vocab_items, S.ITEM_IDX).join(reason_ids, REASON_ITEM, "left")
           .withColumn(S.REASON, reason)
           .withColumn(S.MODEL_RUN, F.lit(model_run)).withColumn(S.RUN_DATE, F.lit(run_date)))
    return conform_exact(out.select(*S.RECOMMENDATIONS.columns), S.RECOMMENDATIONS)


# --- run ------------------------------------------------------------------------------------

def load_assets(ctx: JobContext, item_features: DataFrame, n_items: int):
    """(ServingAssets without weights, {model: run id}) of this run's trained models."""
    from libs import models as registry
    from libs.model_store import ModelStore

    cfg = ctx.cfg.recommend
    cannot = [m for m in cfg.explain_with if registry.model_def(m).explainer is None]
    if cannot:
        raise ValueError(f"recommend.explain_with: {cannot} cannot explain (no attention over the history); "
                         f"models that can: {registry.explainers(registry.MODEL_NAMES)}")
    store = ModelStore(ctx.cfg.storage.warehouse)
    runs = {m: ctx.model_run(m) for m in ctx.cfg.train.models}
    runs = {m: r for m, r in runs.items() if r}
    chosen = {name: n for name, n in cfg.retrievers.items() if name in runs}
    if not chosen:
        raise RuntimeError(f"recommend needs a trained retriever of recommend.retrievers {sorted(cfg.retrievers)} "
                           f"(trained: {sorted(runs) or 'none'}); run jobs.train first (model store: {store.root})")
    content = item_features.select(S.ITEM_IDX, S.POPULARITY, S.TITLE_TOKENS, S.GENRE_MULTI_HOT,
                                   S.YEAR_BUCKET).toPandas()  # one row per item: small
    idx = content[S.ITEM_IDX].to_numpy()
    size = max(n_items, int(idx.max(initial=0))) + 1

    def dense(column, dtype):
        values = np.stack(content[column].to_numpy()).astype(dtype)
        out = np.zeros((size,) + values.shape[1:], dtype)
        out[idx] = values
        return out

    item_content = {S.TITLE_TOKENS: dense(S.TITLE_TOKENS, np.int32),
                    S.GENRE_MULTI_HOT: dense(S.GENRE_MULTI_HOT, np.float32),
                    S.YEAR_BUCKET: dense(S.YEAR_BUCKET, np.int32)}
    models = {m: store.load(m, r) for m, r in runs.items() if m in chosen or registry.model_def(m).ranks}
    item_vectors = {m: np.asarray(registry.model_def(m).retrieval.item_vectors(models[m], item_content), np.float32)
                    for m in chosen}
    warm = np.zeros(size, bool)
    warm[idx[content[S.POPULARITY].to_numpy() > 0]] = True
    allowed = {}
    for m, vectors in item_vectors.items():
        allowed[m] = np.ones(len(vectors), bool) if registry.model_def(m).scores_cold_items else warm[:len(vectors)].copy()
        allowed[m][size:] = False
    blend_models = list(chosen) + [m for m in sorted(models) if m not in chosen and registry.model_def(m).ranks]
    history_length = max([int(models[m].input[S.HIST_ITEMS].shape[1]) for m in blend_models
                          if S.HIST_ITEMS in getattr(models[m], "input", {})] or [0])
    log.info("retrieval with %s, blend of %s; %d warm items of %d", chosen, blend_models, warm.sum(), size - 1)
    assets = ServingAssets(cfg.k, cfg.block_size, chosen, item_vectors, allowed, item_content,
                           {m: store.model_path(m, runs[m]) for m in blend_models}, blend_models,
                           history_length=history_length, diversity=cfg.diversity)
    return assets, {m: runs[m] for m in blend_models}


def explaining_model(explain_with: List[str], assets: ServingAssets) -> Optional[str]:
    """The first of ``explain_with`` that took part in the ranking: a retriever of the run, or a
    model of non-zero blend weight (a model of weight 0 did not shape the list, and is not run)."""
    used = set(assets.retrievers) | {m for m, w in zip(assets.blend_models, assets.weights) if w != 0}
    return next((m for m in explain_with if m in used), None)


def blend_weights(ctx: JobContext, assets: ServingAssets, user_sequences: DataFrame, cf: DataFrame,
                  profile: Profile) -> dict:
    """Fitted (or configured) weights of the blend, and the fit's record."""
    cfg = ctx.cfg.recommend
    if len(assets.blend_models) == 1 or cfg.blend_users == 0:
        weights = {m: float(cfg.weights.get(m, 0.0 if len(assets.blend_models) > 1 else 1.0))
                   for m in assets.blend_models}
        return {"models": assets.blend_models, "weights": weights, "tuned_on": "configured (recommend.weights)"}
    counts = (cf.where((F.col(S.LABEL) > 0) & (F.col(S.SPLIT) == S.SPLIT_TRAIN)).groupBy(S.ITEM_IDX).count()
              .toPandas())  # one row per item: small
    assets.train_popularity = np.zeros(len(assets.item_content[S.YEAR_BUCKET]), np.int64)
    assets.train_popularity[counts[S.ITEM_IDX].to_numpy()] = counts["count"].to_numpy()
    valid_queries = queries(user_sequences, S.SPLIT_VALID, seen_items(cf, [S.SPLIT_TRAIN]))
    sample = valid_queries.orderBy(F.xxhash64(S.USER_IDX, F.lit(ctx.cfg.features.seed))).limit(cfg.blend_users)
    shipped = ctx.spark.sparkContext.broadcast(assets)
    collected = (sample.repartition(max(ctx.spark.sparkContext.defaultParallelism, 2), S.USER_IDX)
                 .mapInPandas(lambda it: validation_features(it, shipped.value, profile), VALIDATION_SCHEMA)
                 .toPandas())
    shipped.unpersist()
    if collected.empty:
        log.warning("no validation queries (users need 3+ interactions): blend weights from recommend.weights")
        return {"models": assets.blend_models, "weights": {m: cfg.weights.get(m, 0.0) for m in assets.blend_models},
                "tuned_on": "configured (no validation queries)"}
    return fit_blend(collected.sort_values(S.USER_IDX, ignore_index=True), assets.blend_models, cfg.k,
                     cfg.blend_grid_step)


def run(ctx: JobContext, profile: Optional[Profile] = None) -> Dict[str, int]:
    """Recommendations and stage rows of the run date; ``profile`` (made here when not given)
    collects where the time went, and is logged at the end."""
    from libs.model_store import ModelStore

    cfg, store = ctx.cfg, ctx.store
    profile = profile or Profile(ctx.spark.sparkContext)
    with step(log, "recommend") as result:
        vocab_users, vocab_items = store.read(S.VOCAB_USERS.name), store.read(S.VOCAB_ITEMS.name)
        with profile.wall("load assets"):
            assets, runs = load_assets(ctx, store.read(S.ITEM_FEATURES.name), vocab_items.count())
        sequences = store.read(S.USER_SEQUENCES.name)
        # the positives are read three times (train popularity, validation and serving exclusions):
        # one scan of cf_examples, whose rows are mostly sampled negatives
        cf = (store.read(S.CF_EXAMPLES.name).where(F.col(S.LABEL) > 0)
              .select(S.USER_IDX, S.ITEM_IDX, S.LABEL, S.SPLIT).persist(StorageLevel.MEMORY_AND_DISK))
        with profile.wall("blend fit"):
            fit = blend_weights(ctx, assets, sequences, cf, profile)
        assets.weights = np.array([fit["weights"][m] for m in assets.blend_models])
        assets.explainer = explaining_model(cfg.recommend.explain_with, assets)
        log.info("blend weights %s (%s); reasons from %s", fit["weights"], fit["tuned_on"],
                 assets.explainer or "no model (recommend.explain_with: none took part)")
        ModelStore(cfg.storage.warehouse).save_record(BLEND_RECORD, cfg.run.run_id, {
            **fit, "model_runs": runs, "retrievers": assets.retrievers, "run_date": cfg.run.date})
        serving = queries(sequences, S.SPLIT_SERVE, seen_items(cf))
        users = (vocab_users.select(S.USER_IDX).join(serving, S.USER_IDX, "left")
                 .fillna(0, [S.SEQ_LEN]))
        with profile.wall("fallback"):
            last_day, months = fallback_window(store, cfg.run_date, cfg.recommend.fallback_days)
            fallback = popular_fallback(store.read(S.EVENTS.name, partitions={S.EVENT_MONTH: months}), vocab_items,
                                        last_day, cfg.recommend.fallback_days, cfg.recommend.k)
        n_partitions = max(ctx.spark.sparkContext.defaultParallelism, 2)
        rows = recommend(users.repartition(n_partitions, S.USER_IDX), assets, fallback, profile).persist(
            StorageLevel.MEMORY_AND_DISK)
        try:
            with profile.wall("score users"):
                rows.count()
            with profile.wall("write"):
                final = rows.where(F.col(S.STAGE) == S.MODEL_FINAL).drop(S.STAGE)
                out = with_original_ids(final, vocab_users, vocab_items, model_run_label(runs), cfg.run_date)
                version = store.write(out, S.RECOMMENDATIONS.name,
                                      partition_by=list(S.RECOMMENDATIONS.partition_by),
                                      replace_where={S.RUN_DATE: [cfg.run.date]})
                stages = conform_exact(rows.where(F.col(S.STAGE) != S.MODEL_FINAL).drop(S.SOURCE)
                                       .withColumn(S.RUN_DATE, F.lit(cfg.run_date)).select(*S.CANDIDATES.columns),
                                       S.CANDIDATES)
                store.write(stages.coalesce(1), S.CANDIDATES.name, partition_by=list(S.CANDIDATES.partition_by),
                            replace_where={S.RUN_DATE: [cfg.run.date]})
        finally:
            rows.unpersist()
            cf.unpersist()
        count = store.read(S.RECOMMENDATIONS.name).where(F.col(S.RUN_DATE) == F.lit(cfg.run_date)).count()
        result.add(S.RECOMMENDATIONS.name, count)
        log.info("recommendations for %s: version %d at %s", cfg.run.date, version,
                 store.path(S.RECOMMENDATIONS.name))
        log.info("recommend profile: %s", profile.summary())
    return dict(result.rows)


def main(argv: Optional[list] = None) -> Dict[str, int]:
    return job_main("recommend: top-K for every user", run, argv)


if __name__ == "__main__":
    # Run through the importable module: the broadcast ServingAssets then pickles as
    # jobs.recommend.ServingAssets, which executors can import (not __main__.ServingAssets).
    from jobs import recommend

    recommend.main()
