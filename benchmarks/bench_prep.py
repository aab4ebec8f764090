"""Wall time and throughput of ingest, sessions and features on a real dataset (default ml-1m).

    python -m benchmarks.bench_prep [--dataset ml-1m] [--env local] [--set key=value ...]

Runs the three jobs in one local Spark application into a temporary warehouse (removed afterwards
unless --keep) and prints, per job, the wall time and input events per second.
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time

from jobs import features, ingest, sessions
from libs import schema as S
from libs.conf import load_config
from libs.runtime import make_context


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="ml-1m")
    parser.add_argument("--env", default="local")
    parser.add_argument("--run-date", default="2024-01-15")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--keep", action="store_true", help="keep the temporary warehouse")
    args = parser.parse_args(argv)
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)  # executors need this venv's pandas/numpy

    warehouse = tempfile.mkdtemp(prefix="bench-prep-")
    cfg = load_config(env=args.env, dataset=args.dataset, overrides=[
        f"storage.warehouse={warehouse}", f"run.date={args.run_date}", "run.run_id=bench-prep", *args.overrides])
    ctx = make_context(cfg)
    try:
        timings = []
        for job in (ingest, sessions, features):
            start = time.perf_counter()
            rows = job.run(ctx)
            timings.append((job.__name__.split(".")[-1], time.perf_counter() - start, rows))
        events = ctx.store.num_rows(S.EVENTS.name)
        print(f"\nprep benchmark: {args.dataset}, {events:,} events, master {ctx.spark.sparkContext.master}, "
              f"shuffle partitions {ctx.spark.conf.get('spark.sql.shuffle.partitions')}")
        print(f"{'job':<10}{'wall s':>9}{'events/s':>12}  rows written")
        for name, seconds, rows in timings:
            written = ", ".join(f"{k}={v:,}" for k, v in rows.items())
            print(f"{name:<10}{seconds:>9.1f}{events / seconds:>12,.0f}  {written}")
        total = sum(t[1] for t in timings)
        print(f"{'total':<10}{total:>9.1f}{events / total:>12,.0f}")
    finally:
        ctx.spark.stop()
        if args.keep:
            print(f"warehouse kept at {warehouse}")
        else:
            shutil.rmtree(warehouse, ignore_errors=True)


if __name__ == "__main__":
    main()
