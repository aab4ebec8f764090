"""Evaluate the recommendations table, and every stage alone, against each user's held-out item.

Full-ranking protocol (DESIGN.md): for every user with a held-out item, precision@K, recall@K and
NDCG@K of the K recommended items (one relevant item, so ideal DCG = 1), plus catalog coverage
(distinct recommended items / items in the vocabulary) and the list metrics of :mod:`libs.diversity`
(intra-list diversity, genre coverage, popularity percentile). The same figures, in the same run, for:
each retriever alone (its own top-K from the ``candidates`` stage table), a popularity baseline (the
K most popular training items the user has not seen) and Spark MLlib ALS (implicit feedback, rank
64) trained on the same interactions the recommendations exclude. The NCF and sequence-protocol
figures that training stored per model, and the blend's validation fit, are copied alongside, so
the ``metrics`` table holds every figure of the night, with the full-ranking figures by user
segment (:mod:`libs.evaluation_segments`). An HTML report (:mod:`libs.evaluation_report`) is
written next to the tables.

In ``recommend.mode = production`` nothing is held out and this job only records that.
"""
from __future__ import annotations

import datetime as dt
import logging
from typing import Dict, Iterator, List, Optional

import numpy as np
import pandas as pd
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from libs import diversity as D, schema as S
from libs.evaluation_report import publish_report
from libs.evaluation_segments import segment_rows
from libs.log import step
from libs.rl_comparison import evaluation_rows as rl_evaluation_rows
from libs.runtime import JobContext, job_main

log = logging.getLogger(__name__)

PROTOCOL_FULL = S.PROTOCOL_FULL_RANKING
FINAL = S.MODEL_FINAL
POPULARITY = S.MODEL_POPULARITY
ALS_BASELINE = "als"
PROTOCOL_VALIDATION = S.PROTOCOL_VALIDATION
PROTOCOL_BLEND_WEIGHT = "blend_weight"
ALS_PARAMS = {"rank": 64, "maxIter": 10, "regParam": 0.05, "alpha": 20.0}  # as in benchmarks.bench_recommend


def held_out(eval_candidates: DataFrame) -> DataFrame:
    """(user_idx, held_item) of the NCF protocol's positives: each user's latest interaction."""
    return eval_candidates.where(F.col(S.LABEL) > 0).select(S.USER_IDX, F.col(S.ITEM_IDX).alias("held_item"))


def recommendations_by_index(store, run_date: dt.date) -> DataFrame:
    """(user_idx, rank, item_idx, model_run) of the run date's recommendations."""
    return (store.read(S.RECOMMENDATIONS.name).where(F.col(S.RUN_DATE) == F.lit(run_date))
            .join(store.read(S.VOCAB_USERS.name), S.USER_ID).join(store.read(S.VOCAB_ITEMS.name), S.ITEM_ID)
            .select(S.USER_IDX, S.RANK, S.ITEM_IDX, S.MODEL_RUN))


def stage_recommendations(store, run_date: dt.date) -> DataFrame:
    """(stage, user_idx, rank, item_idx) of the run date's retrieval stages (each retriever alone)."""
    if not store.exists(S.CANDIDATES.name):
        return None
    return (store.read(S.CANDIDATES.name).where(F.col(S.RUN_DATE) == F.lit(run_date))
            .select(S.STAGE, S.USER_IDX, S.RANK, S.ITEM_IDX))


def evaluated_users_seen(cf_examples: DataFrame, truth: DataFrame) -> DataFrame:
    """(user_idx, seen) of the users with a held-out item: everything the recommendations exclude
    (every positive of cf_examples: training and validation items)."""
    seen = (cf_examples.where(F.col(S.LABEL) > 0).groupBy(S.USER_IDX)
            .agg(F.array_sort(F.collect_set(S.ITEM_IDX)).alias("seen")))
    return seen.join(truth.select(S.USER_IDX), S.USER_IDX)


def als_top_k(users_seen: DataFrame, cf_examples: DataFrame, k: int, seed: int) -> DataFrame:
    """(user_idx, rank, item_idx): Spark MLlib ALS (implicit) trained on every positive the
    recommendations exclude, each user's K best unseen items by the factors' dot product."""
    from pyspark.ml.recommendation import ALS

    from libs.scoring import retrieve_top_n

    positives = cf_examples.where(F.col(S.LABEL) > 0).select(S.USER_IDX, S.ITEM_IDX, F.lit(1.0).alias("r"))
    model = ALS(userCol=S.USER_IDX, itemCol=S.ITEM_IDX, ratingCol="r", implicitPrefs=True, seed=seed,
                coldStartStrategy="drop", **ALS_PARAMS).fit(positives)
    factors = model.itemFactors.toPandas()  # one row per item: small
    items = np.zeros((int(factors["id"].max()) + 1, ALS_PARAMS["rank"]), np.float32)
    items[factors["id"].to_numpy()] = np.stack(factors["features"].to_numpy())

    def top(frames: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        for frame in frames:
            vectors = np.stack(frame["features"].to_numpy()).astype(np.float32) if len(frame) else \
                np.zeros((0, items.shape[1]), np.float32)
            best, _ = retrieve_top_n(vectors, items, k, 4096, list(frame["seen"]))
            rows, ranks = np.nonzero(best >= 0)
            yield pd.DataFrame({S.USER_IDX: frame[S.USER_IDX].to_numpy(np.int32)[rows],
                                S.RANK: (ranks + 1).astype(np.int32), S.ITEM_IDX: best[rows, ranks].astype(np.int32)})

    users = users_seen.join(model.userFactors.withColumnRenamed("id", S.USER_IDX), S.USER_IDX)
    return users.mapInPandas(top, f"{S.USER_IDX} int, {S.RANK} int, {S.ITEM_IDX} int")


def full_ranking_metrics(recs: DataFrame, truth: DataFrame, k: int, n_items: int) -> Dict[str, float]:
    """precision/recall/NDCG@k over users in ``truth``; coverage over ``recs``.

    Args:
        recs: (user_idx, rank, item_idx) with ranks 1..k.
        truth: (user_idx, held_item), one row per evaluated user.
    """
    hits = (truth.join(recs.where(F.col(S.RANK) <= k), S.USER_IDX, "left")
            .groupBy(S.USER_IDX)
            .agg(F.max(F.when(F.col(S.ITEM_IDX) == F.col("held_item"), 1.0 / F.log2(F.col(S.RANK) + 1.0))
                       .otherwise(0.0)).alias("dcg"),
                 F.max(F.when(F.col(S.ITEM_IDX) == F.col("held_item"), 1.0).otherwise(0.0)).alias("hit")))
    row = hits.agg(F.count("*").alias("users"), F.avg("hit").alias("recall"), F.avg("dcg").alias("ndcg")).first()
    covered = recs.where(F.col(S.RANK) <= k).select(S.ITEM_IDX).distinct().count()
    users = int(row["users"] or 0)
    recall = float(row["recall"] or 0.0)
    return {f"precision@{k}": recall / k, f"recall@{k}": recall, f"ndcg@{k}": float(row["ndcg"] or 0.0),
            "catalog_coverage": covered / max(n_items, 1), "users": float(users)}


def item_catalog(store) -> D.Catalog:
    """Genres and training popularity of the catalog's items, for the list metrics."""
    return D.item_catalog(store.read(S.ITEM_FEATURES.name).select(S.ITEM_IDX, S.POPULARITY, S.GENRE_MULTI_HOT)
                          .toPandas())  # one row per item: small


def list_metrics(recs: DataFrame, catalog: D.Catalog, k: int) -> Dict[str, float]:
    """The list metrics of :mod:`libs.diversity` of ``recs`` (user_idx, rank, item_idx): each user's
    on the executors, their means and the table's genre coverage on the driver."""
    top = recs.where(F.col(S.RANK) <= k)
    shipped = top.sparkSession.sparkContext.broadcast(catalog)

    def per_user(frames: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        for frame in frames:
            lists = np.full((len(frame), k), D.NO_ITEM, np.int64)
            for row, items in enumerate(frame["items"]):
                lists[row, :len(items)] = items
            yield pd.DataFrame(D.per_user_list_metrics(lists, shipped.value))

    means = (top.groupBy(S.USER_IDX).agg(F.collect_list(S.ITEM_IDX).alias("items"))
             .mapInPandas(per_user, ", ".join(f"{m} double" for m in D.PER_USER_METRICS))
             .agg(*[F.avg(F.when(~F.isnan(m), F.col(m))).alias(m) for m in D.PER_USER_METRICS]).first())
    items = np.array([r[0] for r in top.select(S.ITEM_IDX).distinct().collect()], np.int64)  # at most the catalog
    shipped.unpersist()
    return {**{m: float(means[m] or 0.0) for m in D.PER_USER_METRICS},
            D.GENRE_COVERAGE_TABLE: D.table_genre_coverage(items, catalog)}


def popularity_top_k(users_seen: DataFrame, cf_examples: DataFrame, k: int) -> DataFrame:
    """(user_idx, rank, item_idx): the K most popular training items each user has not seen."""
    popularity = (cf_examples.where(F.col(S.LABEL) > 0).groupBy(S.ITEM_IDX).count()
                  .orderBy(F.desc("count"), F.asc(S.ITEM_IDX)).toPandas())  # one row per item
    order = popularity[S.ITEM_IDX].to_numpy(np.int64)

    def top(frames: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        for frame in frames:
            out = []
            for user, seen in zip(frame[S.USER_IDX], frame["seen"]):
                items = order[~np.isin(order, np.asarray(seen, dtype=np.int64))][:k]
                out.append(pd.DataFrame({S.USER_IDX: np.full(len(items), user, np.int32),
                                         S.RANK: np.arange(1, len(items) + 1, dtype=np.int32),
                                         S.ITEM_IDX: items.astype(np.int32)}))
            if out:
                yield pd.concat(out, ignore_index=True)

    return users_seen.mapInPandas(top, f"{S.USER_IDX} int, {S.RANK} int, {S.ITEM_IDX} int")


def metric_rows(model: str, model_run: Optional[str], protocol: str, figures: Dict[str, float],
                run_date: dt.date) -> List[tuple]:
    return [(model, model_run, protocol, name, float(value), run_date) for name, value in sorted(figures.items())]


def blend_metric_rows(warehouse: str, run_id: str, run_date: dt.date) -> List[tuple]:
    """The blend's validation fit (from the model store): full-ranking NDCG@K of the validation items
    for the fitted blend (final), each model alone on the same candidates, and popularity; and the
    fitted weights."""
    from libs.model_store import ModelStore
    from libs.ranking import BLEND_RECORD

    store = ModelStore(warehouse)
    try:
        record = store.record(BLEND_RECORD, run_id)
    except (FileNotFoundError, OSError):
        return []
    name = next((k for k in record if k.startswith("validation_ndcg@") and not k.endswith("_alone")), None)
    if name is None:
        return []
    metric = name[len("validation_"):]
    rows = metric_rows(FINAL, run_id, PROTOCOL_VALIDATION, {metric: record[name]}, run_date)
    for model, value in sorted(record.get(name + "_alone", {}).items()):
        rows += metric_rows(model, run_id, PROTOCOL_VALIDATION, {metric: value}, run_date)
    if name + "_popularity" in record:
        rows += metric_rows(POPULARITY, None, PROTOCOL_VALIDATION, {metric: record[name + "_popularity"]}, run_date)
    for model, weight in sorted(record["weights"].items()):
        rows += metric_rows(model, run_id, PROTOCOL_BLEND_WEIGHT, {"weight": weight}, run_date)
    return rows


def training_metric_rows(ctx: JobContext, models: List[str], run_date: dt.date) -> List[tuple]:
    """The per-model evaluation figures training stored in the model store records of this run's
    models, and the popularity baseline it computed in the same run."""
    from libs.model_store import ModelStore

    store, rows, baseline = ModelStore(ctx.cfg.storage.warehouse), [], None
    for model in models:
        run_id = ctx.model_run(model)
        if not run_id:
            continue
        record = store.record(model, run_id)
        rows += _figure_rows(model, run_id, record.get("metrics"), run_date)
        baseline = baseline or record.get("popularity_baseline")
    return rows + _figure_rows(POPULARITY, None, baseline, run_date)


def _figure_rows(model, run_id, metrics: Optional[dict], run_date: dt.date) -> List[tuple]:
    rows = []
    for protocol, figures in (metrics or {}).items():
        if isinstance(figures, dict):
            rows += metric_rows(model, run_id, protocol,
                                {k: v for k, v in figures.items() if isinstance(v, (int, float))}, run_date)
    return rows


def run(ctx: JobContext) -> Dict[str, int]:
    cfg, store, spark = ctx.cfg, ctx.store, ctx.spark
    k = cfg.recommend.k
    with step(log, "evaluate") as result:
        if cfg.recommend.mode == "production":
            # nothing is held out for testing: the night's figures are the validation fit's
            rows = blend_metric_rows(cfg.storage.warehouse, cfg.run.run_id, cfg.run_date)
            store.write(spark.createDataFrame(rows, S.METRICS.schema), S.METRICS.name,
                        partition_by=list(S.METRICS.partition_by), replace_where={S.RUN_DATE: [cfg.run.date]})
            result.add(S.METRICS.name, len(rows))
            log.info("recommend.mode=production: no test items; %d validation figures recorded", len(rows))
            return dict(result.rows)
        truth = held_out(store.read(S.EVAL_CANDIDATES.name)).cache()
        n_items = store.read(S.VOCAB_ITEMS.name).count()
        recs = recommendations_by_index(store, cfg.run_date)
        model_run = (recs.select(S.MODEL_RUN).first() or [None])[0]
        cf = store.read(S.CF_EXAMPLES.name)
        seen = evaluated_users_seen(cf, truth)
        rows = metric_rows(FINAL, model_run, PROTOCOL_FULL, full_ranking_metrics(recs, truth, k, n_items), cfg.run_date)
        catalog = item_catalog(store)
        rows += metric_rows(FINAL, model_run, PROTOCOL_FULL, list_metrics(recs, catalog, k), cfg.run_date)
        stages = stage_recommendations(store, cfg.run_date)
        for stage in sorted(r[0] for r in stages.select(S.STAGE).distinct().collect()) if stages is not None else []:
            rows += metric_rows(stage, model_run, PROTOCOL_FULL, full_ranking_metrics(
                stages.where(F.col(S.STAGE) == stage).drop(S.STAGE), truth, k, n_items), cfg.run_date)
            rows += metric_rows(stage, model_run, PROTOCOL_FULL, list_metrics(
                stages.where(F.col(S.STAGE) == stage).drop(S.STAGE), catalog, k), cfg.run_date)
        seen = seen.cache()
        popular = popularity_top_k(seen, cf, k).cache()
        rows += metric_rows(POPULARITY, None, PROTOCOL_FULL, full_ranking_metrics(popular, truth, k, n_items),
                            cfg.run_date)
        rows += metric_rows(POPULARITY, None, PROTOCOL_FULL, list_metrics(popular, catalog, k), cfg.run_date)
        als = als_top_k(seen, cf, k, cfg.features.seed).cache()
        rows += metric_rows(ALS_BASELINE, None, PROTOCOL_FULL, full_ranking_metrics(als, truth, k, n_items),
                            cfg.run_date)
        rows += metric_rows(ALS_BASELINE, None, PROTOCOL_FULL, list_metrics(als, catalog, k), cfg.run_date)
        als.unpersist()
        rows += blend_metric_rows(cfg.storage.warehouse, cfg.run.run_id, cfg.run_date)
        rows += training_metric_rows(ctx, cfg.train.models, cfg.run_date)
        # the offline RL re-ranker against its supervised twin on held-out users (libs.rl_comparison)
        rows += rl_evaluation_rows(store, cfg, cfg.train.models, cfg.run_date, ctx.model_run)
        # metrics by user segment, as extra rows (libs.evaluation_segments)
        rows += segment_rows(store, [(FINAL, model_run, recs), (POPULARITY, None, popular)], truth, k, cfg.run_date)
        seen.unpersist(), popular.unpersist()
        metrics = spark.createDataFrame(rows, S.METRICS.schema)
        store.write(metrics, S.METRICS.name, partition_by=list(S.METRICS.partition_by),
                    replace_where={S.RUN_DATE: [cfg.run.date]})
        result.add(S.METRICS.name, len(rows))
        # the HTML report, from the metrics table just written (libs.evaluation_report)
        path = publish_report(store, cfg.storage.warehouse, cfg.run_date, recs, k)
        for row in rows:
            if row[2] == PROTOCOL_FULL and row[3] in (f"recall@{k}", f"ndcg@{k}"):
                log.info("%s %s %s = %.4f", row[0], row[2], row[3], row[4])
        log.info("evaluation report: %s", path)
    return dict(result.rows)


def main(argv: Optional[list] = None) -> Dict[str, int]:
    return job_main("evaluate: recommendations vs held-out interactions", run, argv)


if __name__ == "__main__":
    main()
