"""The nightly pipeline end to end on one dataset: wall time per step, and every stage's quality.

    python -m benchmarks.bench_quality [--dataset ml-1m]        (or: make bench-quality ARGS=...)

Runs every step of ``pipelines.nightly`` (evaluate mode) into a fresh warehouse under ``.bench/``,
then prints the seconds of each step and the full-ranking table the evaluate step wrote: each
retriever alone, the final recommendations, popularity and Spark ALS, all from the same run and
split, beside published figures for the same protocol (latest item held out, every unseen item
ranked). Published figures exist for raw ml-1m only (6,040 users, 3,706 items): eSASRec benchmark,
RecSys 2025. Also printed: the blend's validation fit and each model's training time and epochs.

``--warm`` then runs the next night (run date + 1 day, same events) with ``train.warm_start``: its
step times and stage table against the cold night's show what a warm start saves and costs. The
events are unchanged, so this is a warm start's best case: real nights bring new users and items.
"""
from __future__ import annotations

import argparse
import datetime as dt
import shutil
import time
from typing import Optional

from pyspark.sql import functions as F

from libs import diversity as D, schema as S
from libs.conf import load_config
from libs.model_store import ModelStore
from libs.runtime import make_context
from pipelines import nightly

PUBLISHED = {"ml-1m": {"SASRec, sampled softmax (published)": (0.293, 0.168),
                       "uSASRec (published)": (0.313, 0.177), "FuXi-alpha (published)": (0.316, 0.181)}}


def run_night(ctx) -> dict:
    """Every step of one night in order; returns seconds per step (and "total")."""
    seconds = {}
    start = time.perf_counter()
    for name in nightly.STEPS:
        step_start = time.perf_counter()
        nightly.run_steps(ctx, [name])
        seconds[name] = time.perf_counter() - step_start
    seconds["total"] = time.perf_counter() - start
    return seconds


def report_night(ctx, seconds: Optional[dict], title: str) -> None:
    """The night's step seconds (when given), its full-ranking stage table from METRICS, the blend
    fit and each model's training record (the runs this night used: ``ctx.model_run``)."""
    cfg = ctx.cfg
    k = cfg.recommend.k
    rows = (ctx.store.read(S.METRICS.name).where(F.col(S.RUN_DATE) == F.lit(cfg.run_date)).toPandas())
    full = rows[rows[S.PROTOCOL] == S.PROTOCOL_FULL_RANKING].pivot_table(
        index=S.MODEL, columns=S.METRIC, values=S.METRIC_VALUE, aggfunc="first")
    took = f"{seconds['total']:.0f}s, " if seconds else ""
    print(f"\n== {title}: {took}"
          f"{ctx.spark.sparkContext.defaultParallelism} cores, train.num_proc={cfg.train.num_proc} ==")
    for name in [s for s in nightly.STEPS if s in (seconds or {})]:
        print(f"  {name:<10}{seconds[name]:>8.1f}s")
    print(f"\nfull ranking, {int(full['users'].max()):,} users (latest item held out, every unseen item ranked)")
    lists = [m for m in (D.INTRA_LIST_DIVERSITY, D.GENRE_COVERAGE, D.POPULARITY_PERCENTILE) if m in full.columns]
    print(f"{'':38}{'recall@' + str(k):>11}{'ndcg@' + str(k):>10}{'coverage':>10}"
          + "".join(f"{m:>{len(m) + 2}}" for m in lists))
    order = [m for m in full.index if m not in (S.MODEL_FINAL, S.MODEL_POPULARITY, "als")]
    for model in order + ["als", S.MODEL_POPULARITY, S.MODEL_FINAL]:
        if model in full.index:
            label = f"{model} alone (retrieval stage)" if model in order else model
            r = full.loc[model]
            print(f"{label:38}{r[f'recall@{k}']:>11.4f}{r[f'ndcg@{k}']:>10.4f}{r['catalog_coverage']:>10.4f}"
                  + "".join(f"{r[m]:>{len(m) + 2}.4f}" for m in lists))
    for label, (recall, ndcg) in PUBLISHED.get(cfg.dataset_name, {}).items():
        print(f"{label:38}{recall:>11.3f}{ndcg:>10.3f}")
    models = ModelStore(cfg.storage.warehouse)
    blend = models.record("blend", cfg.run.run_id)
    print(f"\nblend weights {blend['weights']} ({blend.get('tuned_on')})")
    for key, value in blend.items():
        if key.startswith("validation_"):
            print(f"  {key}: {value}")
    for model in cfg.train.models:
        record = models.record(model, ctx.model_run(model))
        extra = f", best epoch {record['best_epoch']} of {record['epochs_run']} run" if "best_epoch" in record else ""
        warm = record.get("warm_start", {})
        start = f"warm from {warm['from_run']}" if warm.get("applied") else "cold"
        print(f"{model}: {record['training_seconds']:.0f}s training ({start}), "
              f"{record['examples_per_sec'][-1]:.0f} examples/s in the last epoch{extra}")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dataset", default="ml-1m")
    parser.add_argument("--warm", action="store_true",
                        help="then run the next night (run date + 1 day) warm-started from the first one")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args(argv)
    warehouse = f".bench/quality-{args.dataset}"
    shutil.rmtree(warehouse, ignore_errors=True)
    night = dt.date(2003, 3, 1)
    sets = [f"storage.warehouse={warehouse}", *args.overrides]
    cold = load_config(env="local", dataset=args.dataset,
                       overrides=sets + [f"run.date={night}", "run.run_id=bench-quality"])
    ctx = make_context(cold)
    report_night(ctx, run_night(ctx), f"nightly pipeline on {args.dataset}, cold start")
    if args.warm:
        warm = load_config(env="local", dataset=args.dataset, overrides=sets + [
            f"run.date={night + dt.timedelta(days=1)}", "run.run_id=bench-quality-warm", "train.warm_start=true"])
        ctx = make_context(warm)
        report_night(ctx, run_night(ctx), f"the next night on the same events, warm-started "
                                          f"(train.warm_start_epochs={warm.train.warm_start_epochs})")


if __name__ == "__main__":
    main()
