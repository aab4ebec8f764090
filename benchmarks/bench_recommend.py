"""Benchmark the recommend job against Spark MLlib ALS on the same data, machine and run.

    python -m benchmarks.bench_recommend [--dataset ml-1m] [--candidates 20,50,100,200] [--cores 1]
    (or: make bench-recommend ARGS="--dataset ml-1m")

Prepares features and trains the models into ``.bench/<dataset>`` when missing (reused after), runs
the recommend job at the configured defaults and prints, every figure measured in this run:
- users/s of our scoring of every user (retrieval, the blend's deep rankers and top-K: the job's
  ``score users`` phase, forced with a count) and of the whole job (blend fit and Delta writes
  included), against ALS ``recommendForAllUsers(K)`` forced with a count (the classic Spark
  baseline; its fit is not counted), and the ratios: for a repeat run (warm JVM and Python workers,
  as in the nightly pipeline and as ALS runs here) and for the first run of the process;
- the first run's profile: driver seconds per phase, executor seconds per serving step (model
  loading and compiling included) and the Python workers' peak memory;
- the candidates curve: sasrec's top-N (``recommend.retrievers.sasrec``; the other retrievers as
  configured) against users/s, the blend's
  validation NDCG@K (what the default is chosen on) and full-ranking test NDCG@K;
- users/s with fewer executor cores (``--cores``, a fresh local Spark per count);
- full-ranking precision/recall/NDCG@K and catalog coverage of ours, ALS (its factors, seen items
  excluded with the same retrieval code) and popularity, against each user's held-out latest
  interaction.
"""
from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import time

import numpy as np
from pyspark.ml.recommendation import ALS
from pyspark.sql import functions as F

from jobs import evaluate, recommend, train
from libs import schema as S
from libs.conf import load_config
from libs.model_store import ModelStore
from libs.ranking import BLEND_RECORD
from libs.runtime import make_context
from libs.scoring import retrieve_top_n
from libs.serving import Profile
from pipelines.prep import run_prep

_SCORE_ONLY = "score-only result: "


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


def bench_config(args, *overrides):
    return load_config(env="local", dataset=args.dataset, overrides=[
        f"storage.warehouse={args.warehouse}", "run.date=2003-03-01", "run.run_id=bench",
        *(f"train.{m}.epochs={args.epochs}" for m in ("sasrec", "deep_cf", "dien", "content")), *overrides])


def timed_recommend(cfg):
    """(context, profile, whole-job seconds) of one recommend run under ``cfg``."""
    ctx = make_context(cfg)
    profile = Profile(ctx.spark.sparkContext)
    start = time.perf_counter()
    recommend.run(ctx, profile)
    return ctx, profile, time.perf_counter() - start


def print_profile(profile: Profile) -> None:
    print("\nprofile of the first default run: driver wall seconds per phase, and the executor seconds of each "
          "serving step in it (summed over tasks running in parallel; first calls include compiling):")
    for phase, seconds in profile.wall_seconds.items():
        steps = sorted(profile.phase_executor_seconds.get(phase, {}).items(), key=lambda kv: -kv[1])
        print(f"  {phase:20}{seconds:>7.1f}s   " + ", ".join(f"{name} {s:.1f}s" for name, s in steps))
    for name, value in profile.peaks.items():
        print(f"  {name}: {value:.0f}")


def score_only(args) -> None:
    """One default recommend run under ``--master``; prints its users/s for the parent run."""
    cfg = bench_config(args, f"spark.master={args.master}", "run.run_id=bench-" + re.sub(r"\W", "", args.master))
    ctx, profile, seconds = timed_recommend(cfg)
    n_users = ctx.store.read(S.VOCAB_USERS.name).count()
    print(_SCORE_ONLY + json.dumps({"master": args.master, "score_seconds": profile.wall_seconds["score users"],
                                    "job_seconds": seconds, "users": n_users}))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dataset", default="ml-1m")
    parser.add_argument("--epochs", type=int, default=2, help="training epochs when models are missing")
    parser.add_argument("--warehouse", default=None)
    parser.add_argument("--candidates", default="20,50,100,200", help="sasrec top-N values of the curve ('' skips)")
    parser.add_argument("--cores", default="1", help="other local core counts to time ('' skips)")
    parser.add_argument("--master", default=None, help=argparse.SUPPRESS)  # the --cores subprocesses
    args = parser.parse_args(argv)
    args.warehouse = args.warehouse or f".bench/{args.dataset}"
    if args.master:
        return score_only(args)

    cfg = bench_config(args)
    ctx = make_context(cfg)
    store, spark, k = ctx.store, ctx.spark, cfg.recommend.k
    if not store.exists(S.EVAL_CANDIDATES.name):
        run_prep(ctx)
    if not all(ModelStore(cfg.storage.warehouse).latest_run(m) for m in cfg.train.models):
        train.run(ctx)
    n_users = store.read(S.VOCAB_USERS.name).count()
    n_items = store.read(S.VOCAB_ITEMS.name).count()
    truth = evaluate.held_out(store.read(S.EVAL_CANDIDATES.name)).cache()
    cf = store.read(S.CF_EXAMPLES.name)
    seen = evaluate.evaluated_users_seen(cf, truth)

    def quality(run_ctx):
        return evaluate.full_ranking_metrics(evaluate.recommendations_by_index(run_ctx.store, cfg.run_date),
                                             truth, k, n_items)

    # first run: a cold JVM and Python workers, as a lone spark-submit of the job; the repeat is
    # warm, as in the nightly pipeline (prep and train ran in the same session) and as ALS runs here
    _, cold_profile, cold_seconds = timed_recommend(cfg)
    ctx, profile, job_seconds = timed_recommend(cfg)
    score_seconds = profile.wall_seconds["score users"]
    figures = {"recommend job (ours)": quality(ctx)}
    als_recs, als_users, als_fit, als_seconds = als_top_k(spark, cf, seen, k, cfg.train.deep_cf.embedding_dim, 42)
    figures["ALS (implicit)"] = evaluate.full_ranking_metrics(als_recs, truth, k, n_items)
    figures["popularity"] = evaluate.full_ranking_metrics(evaluate.popularity_top_k(seen, cf, k), truth, k, n_items)
    als_rate = als_users / als_seconds

    curve = []
    for n in [int(v) for v in args.candidates.split(",") if v]:
        run_cfg = bench_config(args, f"recommend.retrievers.sasrec={n}", f"run.run_id=bench-n{n}")
        run_ctx, run_profile, run_seconds = timed_recommend(run_cfg)
        fit = ModelStore(cfg.storage.warehouse).record(BLEND_RECORD, f"bench-n{n}")
        curve.append((n, n_users / run_profile.wall_seconds["score users"], n_users / run_seconds,
                      fit[f"validation_ndcg@{k}"], quality(run_ctx)[f"ndcg@{k}"], fit["weights"]))
    scaling = []
    for cores in [c for c in args.cores.split(",") if c]:
        out = subprocess.run([sys.executable, "-m", "benchmarks.bench_recommend", "--dataset", args.dataset,
                              "--warehouse", args.warehouse, "--master", f"local[{cores}]"],
                             capture_output=True, text=True, check=True).stdout
        scaling.append(json.loads(out.split(_SCORE_ONLY, 1)[1].splitlines()[0]))

    print(f"\n== recommend benchmark: {args.dataset}, {n_users:,} users, {n_items:,} items, K={k}, "
          f"{spark.sparkContext.defaultParallelism} cores, retrievers {dict(cfg.recommend.retrievers)}, "
          f"blend of {list(ModelStore(cfg.storage.warehouse).record(BLEND_RECORD, 'bench')['weights'])} ==")
    print(f"{'':36}{'seconds':>10}{'users/s':>12}{'vs ALS':>10}")
    for label, seconds in [("our scoring of every user", score_seconds), ("our whole recommend job", job_seconds),
                           ("  first run: scoring", cold_profile.wall_seconds["score users"]),
                           ("  first run: whole job", cold_seconds)]:
        print(f"{label:36}{seconds:>10.1f}{n_users / seconds:>12.0f}{n_users / seconds / als_rate:>9.2f}x")
    print(f"{'ALS recommendForAllUsers':36}{als_seconds:>10.1f}{als_rate:>12.0f}{1:>9.2f}x"
          f"   (ALS fit {als_fit:.1f}s not included)")
    print_profile(cold_profile)
    if curve:
        others = {r: n for r, n in cfg.recommend.retrievers.items() if r != "sasrec"}
        print(f"\ncandidates curve (sasrec's top-N, other retrievers {others}; users/s of scoring, of the whole job):")
        print(f"{'N':>6}{'scoring u/s':>14}{'job u/s':>10}{f'valid NDCG@{k}':>16}{f'test NDCG@{k}':>15}   blend weights")
        for n, rate, job_rate, valid, test, weights in curve:
            print(f"{n:>6}{rate:>14.0f}{job_rate:>10.0f}{valid:>16.4f}{test:>15.4f}   "
                  + ", ".join(f"{m} {w:.1f}" for m, w in weights.items()))
    if scaling:
        print(f"\nexecutor cores (default conf):\n{'master':>12}{'scoring u/s':>14}{'job u/s':>10}")
        for row in scaling + [{"master": spark.sparkContext.master, "score_seconds": score_seconds,
                               "job_seconds": job_seconds, "users": n_users}]:
            print(f"{row['master']:>12}{row['users'] / row['score_seconds']:>14.0f}"
                  f"{row['users'] / row['job_seconds']:>10.0f}")
    names = [f"precision@{k}", f"recall@{k}", f"ndcg@{k}", "catalog_coverage"]
    print(f"\n{'full ranking':36}" + "".join(f"{n:>18}" for n in names))
    for model, values in figures.items():
        print(f"{model:36}" + "".join(f"{values[n]:>18.4f}" for n in names))


if __name__ == "__main__":
    main()
