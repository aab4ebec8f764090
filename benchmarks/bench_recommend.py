"""Benchmark the recommend job against Spark MLlib ALS on the same data, machine and run.

    python -m benchmarks.bench_recommend [--dataset ml-1m] [--epochs 2]     (or: make bench-recommend)

Prepares features and trains the models into ``.bench/<dataset>`` when missing (reused after), then
prints side by side:
- users scored per second: our recommend job (retrieval + three-model ranking, written to Delta)
  vs ALS ``recommendForAllUsers(K)`` (the classic Spark baseline, forced with a count);
- full-ranking precision/recall/NDCG@K and catalog coverage against each user's held-out latest
  interaction, for our recommendations, ALS (its factors, seen items excluded with the same
  retrieval code so both rank unseen items only) and popularity.
"""
from __future__ import annotations

import argparse
import time

import numpy as np
from pyspark.ml.recommendation import ALS
from pyspark.sql import functions as F

from jobs import evaluate, recommend, train
from libs import schema as S
from libs.conf import load_config
from libs.model_store import ModelStore
from libs.runtime import make_context
from libs.scoring import retrieve_top_n
from pipelines.prep import run_prep


def als_top_k(spark, cf, users_seen, k, rank, seed):
    """Fit implicit ALS on the training positives; time recommendForAllUsers(k); our top-k from its factors."""
    positives = cf.where(F.col(S.LABEL) > 0).select(S.USER_IDX, S.ITEM_IDX, F.lit(1.0).alias("rating")).cache()
    positives.count()
    als = ALS(rank=rank, maxIter=10, regParam=0.05, alpha=20.0, implicitPrefs=True, seed=seed,
              userCol=S.USER_IDX, itemCol=S.ITEM_IDX, ratingCol="rating", coldStartStrategy="drop")
    start = time.perf_counter()
    model = als.fit(positives)
    fit_seconds = time.perf_counter() - start
    start = time.perf_counter()
    n_users = model.recommendForAllUsers(k).count()
    recommend_seconds = time.perf_counter() - start
    users = model.userFactors.toPandas()
    items = model.itemFactors.toPandas()
    n_items = int(items["id"].max()) + 1
    item_matrix = np.zeros((n_items, rank), np.float32)
    item_matrix[items["id"].to_numpy()] = np.stack(items["features"].to_numpy())
    user_rows = dict(zip(users["id"], users["features"]))
    seen = users_seen.toPandas()
    user_matrix = np.stack([user_rows.get(u, np.zeros(rank)) for u in seen[S.USER_IDX]]).astype(np.float32)
    top, _ = retrieve_top_n(user_matrix, item_matrix, k, 2048, list(seen["seen"]))
    rows = [(int(u), r + 1, int(i)) for u, items_ in zip(seen[S.USER_IDX], top) for r, i in enumerate(items_) if i >= 0]
    recs = spark.createDataFrame(rows, f"{S.USER_IDX} int, {S.RANK} int, {S.ITEM_IDX} int")
    return recs, n_users, fit_seconds, recommend_seconds


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dataset", default="ml-1m")
    parser.add_argument("--epochs", type=int, default=2, help="training epochs when models are missing")
    parser.add_argument("--warehouse", default=None)
    args = parser.parse_args(argv)
    warehouse = args.warehouse or f".bench/{args.dataset}"
    cfg = load_config(env="local", dataset=args.dataset, overrides=[
        f"storage.warehouse={warehouse}", "run.date=2003-03-01", "run.run_id=bench",
        *(f"train.{m}.epochs={args.epochs}" for m in ("sasrec", "deep_cf", "dien", "content"))])
    ctx = make_context(cfg)
    store, spark, k = ctx.store, ctx.spark, cfg.recommend.k
    if not store.exists(S.EVAL_CANDIDATES.name):
        run_prep(ctx)
    if not all(ModelStore(cfg.storage.warehouse).latest_run(m) for m in cfg.train.models):
        train.run(ctx)

    start = time.perf_counter()
    recommend.run(ctx)
    ours_seconds = time.perf_counter() - start
    n_users = store.read(S.VOCAB_USERS.name).count()
    n_items = store.read(S.VOCAB_ITEMS.name).count()

    truth = evaluate.held_out(store.read(S.EVAL_CANDIDATES.name)).cache()
    ours = evaluate.recommendations_by_index(store, cfg.run_date)
    cf = store.read(S.CF_EXAMPLES.name)
    seen = evaluate.evaluated_users_seen(cf, truth)
    als_recs, als_users, als_fit, als_seconds = als_top_k(spark, cf, seen, k, cfg.train.deep_cf.embedding_dim, 42)
    figures = {
        "recommend job (ours)": evaluate.full_ranking_metrics(ours, truth, k, n_items),
        "ALS (implicit)": evaluate.full_ranking_metrics(als_recs, truth, k, n_items),
        "popularity": evaluate.full_ranking_metrics(evaluate.popularity_top_k(seen, cf, k), truth, k, n_items),
    }
    print(f"\n== recommend benchmark: {args.dataset}, {n_users:,} users, {n_items:,} items, K={k}, "
          f"{spark.sparkContext.defaultParallelism} cores ==")
    print(f"{'':28}{'seconds':>10}{'users/s':>12}")
    print(f"{'recommend job (ours)':28}{ours_seconds:>10.1f}{n_users / ours_seconds:>12.0f}")
    print(f"{'ALS recommendForAllUsers':28}{als_seconds:>10.1f}{als_users / als_seconds:>12.0f}"
          f"   (ALS fit {als_fit:.1f}s not included)")
    print(f"ratio ours / ALS users per second: {(n_users / ours_seconds) / (als_users / als_seconds):.2f}")
    names = [f"precision@{k}", f"recall@{k}", f"ndcg@{k}", "catalog_coverage"]
    print(f"\n{'full ranking':28}" + "".join(f"{n:>18}" for n in names))
    for model, values in figures.items():
        print(f"{model:28}" + "".join(f"{values[n]:>18.4f}" for n in names))


if __name__ == "__main__":
    main()
