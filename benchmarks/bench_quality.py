"""The nightly pipeline end to end on one dataset: wall time per step, and every stage's quality.

    python -m benchmarks.bench_quality [--dataset ml-1m]        (or: make bench-quality ARGS=...)

Runs every step of ``pipelines.nightly`` (evaluate mode) into a fresh warehouse under ``.bench/``,
then prints the seconds of each step and the full-ranking table the evaluate step wrote: each
retriever alone, the final recommendations, popularity and Spark ALS, all from the same run and
split, beside published figures for the same protocol (latest item held out, every unseen item
ranked). Published figures exist for raw ml-1m only (6,040 users, 3,706 items): eSASRec benchmark,
RecSys 2025. Also printed: the blend's validation fit and the sequence model's epochs.
"""
from __future__ import annotations

import argparse
import shutil
import time

from pyspark.sql import functions as F

from libs import schema as S
from libs.conf import load_config
from libs.model_store import ModelStore
from libs.runtime import make_context
from pipelines import nightly

PUBLISHED = {"ml-1m": {"SASRec, sampled softmax (published)": (0.293, 0.168),
                       "uSASRec (published)": (0.313, 0.177), "FuXi-alpha (published)": (0.316, 0.181)}}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dataset", default="ml-1m")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args(argv)
    warehouse = f".bench/quality-{args.dataset}"
    shutil.rmtree(warehouse, ignore_errors=True)
    cfg = load_config(env="local", dataset=args.dataset, overrides=[
        f"storage.warehouse={warehouse}", "run.date=2003-03-01", "run.run_id=bench-quality", *args.overrides])
    ctx = make_context(cfg)
    seconds = {}
    start = time.perf_counter()
    for name in nightly.STEPS:
        step_start = time.perf_counter()
        nightly.run_steps(ctx, [name])
        seconds[name] = time.perf_counter() - step_start
    total = time.perf_counter() - start

    k = cfg.recommend.k
    rows = (ctx.store.read(S.METRICS.name).where(F.col(S.RUN_DATE) == F.lit(cfg.run_date)).toPandas())
    full = rows[rows[S.PROTOCOL] == S.PROTOCOL_FULL_RANKING].pivot_table(
        index=S.MODEL, columns=S.METRIC, values=S.METRIC_VALUE, aggfunc="first")
    print(f"\n== nightly pipeline on {args.dataset}: {total:.0f}s, "
          f"{ctx.spark.sparkContext.defaultParallelism} cores, train.num_proc={cfg.train.num_proc} ==")
    for name, value in seconds.items():
        print(f"  {name:<10}{value:>8.1f}s")
    print(f"\nfull ranking, {int(full['users'].max()):,} users (latest item held out, every unseen item ranked)")
    print(f"{'':38}{'recall@' + str(k):>11}{'ndcg@' + str(k):>10}{'coverage':>10}")
    order = [m for m in full.index if m not in (S.MODEL_FINAL, S.MODEL_POPULARITY, "als")]
    for model in order + ["als", S.MODEL_POPULARITY, S.MODEL_FINAL]:
        if model in full.index:
            label = f"{model} alone (retrieval stage)" if model in order else model
            r = full.loc[model]
            print(f"{label:38}{r[f'recall@{k}']:>11.4f}{r[f'ndcg@{k}']:>10.4f}{r['catalog_coverage']:>10.4f}")
    for label, (recall, ndcg) in PUBLISHED.get(args.dataset, {}).items():
        print(f"{label:38}{recall:>11.3f}{ndcg:>10.3f}")
    models = ModelStore(warehouse)
    blend = models.record("blend", cfg.run.run_id)
    print(f"\nblend weights {blend['weights']} ({blend.get('tuned_on')})")
    for key, value in blend.items():
        if key.startswith("validation_"):
            print(f"  {key}: {value}")
    for model in cfg.train.models:
        record = models.record(model, cfg.run.run_id)
        extra = f", best epoch {record['best_epoch']} of {record['epochs_run']} run" if "best_epoch" in record else ""
        print(f"{model}: {record['training_seconds']:.0f}s training, "
              f"{record['examples_per_sec'][-1]:.0f} examples/s in the last epoch{extra}")


if __name__ == "__main__":
    main()
