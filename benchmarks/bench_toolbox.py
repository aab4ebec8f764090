"""Issue 12's toolbox on one dataset, in one run: the stage table before and with the autoencoder
retriever, the diversity curve, and the RL re-ranker against its supervised twin.

    python -m benchmarks.bench_toolbox [--dataset ml-1m]          (or: make bench-toolbox ARGS=...)
    python -m benchmarks.bench_toolbox --warehouse W --run-date D --base-run-id R   (reuse a night)

1. A night with the defaults (no autoencoder), every step, into a fresh warehouse under
   ``.bench/``; or, with ``--base-run-id``, a night already run in ``--warehouse`` with them (its step
   times are then not printed). Its stage table is printed before step 2 replaces the date's metrics.
2. The night with the autoencoder retriever (``WITH_AUTOENCODER``) on the same feature tables: the
   models the first night did not train (multvae) are trained, the others are its published runs;
   then recommend and evaluate. Its stage table: each retriever alone, final, ALS and popularity,
   with the list metrics, and the blend fit (validation) that decides whether it helps.
3. :func:`benchmarks.bench_diversity.diversity_curve` on that night (candidates blended once, MMR
   per ``recommend.diversity`` value).
4. :func:`benchmarks.bench_rl.rl_vs_supervised` on the same feature tables (protocol rl_holdout).
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import time

from benchmarks.bench_diversity import KNOBS, diversity_curve
from benchmarks.bench_quality import report_night, run_night
from benchmarks.bench_rl import rl_vs_supervised
from libs.conf import load_config
from libs.runtime import make_context
from pipelines import nightly

# the defaults plus the autoencoder retriever (multvae is not a default: README, Autoencoder retriever)
WITH_AUTOENCODER = ["train.models=[sasrec, deep_cf, dien, content, multvae]",
                    "recommend.retrievers={sasrec: 50, deep_cf: 20, multvae: 50}"]


def toolbox_night(ctx, trained_before) -> dict:
    """Train the models the first night did not, then recommend and evaluate; seconds per step."""
    from jobs import train

    seconds = {}
    start = time.perf_counter()
    new = [m for m in ctx.cfg.train.models if m not in trained_before]
    if new:
        train.run(ctx, models=new)
    seconds["train"] = time.perf_counter() - start
    for name in ("recommend", "evaluate"):
        step_start = time.perf_counter()
        nightly.run_steps(ctx, [name])
        seconds[name] = time.perf_counter() - step_start
    seconds["total"] = time.perf_counter() - start
    return seconds


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dataset", default="ml-1m")
    parser.add_argument("--warehouse", default=None, help="default .bench/toolbox-<dataset> (made afresh)")
    parser.add_argument("--run-date", default="2003-03-01")
    parser.add_argument("--base-run-id", default=None,
                        help="a night already run in --warehouse with the defaults: skip step 1")
    parser.add_argument("--knobs", default=",".join(str(v) for v in KNOBS), help="MMR lambdas, comma-separated")
    parser.add_argument("--rl-epochs", type=int, default=None, help="default train.dqn.comparison_epochs")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args(argv)
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    warehouse = args.warehouse or f".bench/toolbox-{args.dataset}"
    if args.base_run_id is None:
        shutil.rmtree(warehouse, ignore_errors=True)
    sets = [f"storage.warehouse={warehouse}", f"run.date={args.run_date}", *args.overrides]

    before = load_config(env="local", dataset=args.dataset,
                         overrides=sets + [f"run.run_id={args.base_run_id or 'bench-defaults'}"])
    ctx = make_context(before)
    seconds = None if args.base_run_id else run_night(ctx)
    report_night(ctx, seconds, f"{args.dataset}, the defaults (retrievers {dict(before.recommend.retrievers)})")

    now = load_config(env="local", dataset=args.dataset, overrides=sets + WITH_AUTOENCODER + ["run.run_id=bench-toolbox"])
    ctx = make_context(now)
    report_night(ctx, toolbox_night(ctx, before.train.models),
                 f"{args.dataset}, with the autoencoder retriever (retrievers {dict(now.recommend.retrievers)})")
    diversity_curve(ctx, [float(v) for v in args.knobs.split(",") if v])
    rl_vs_supervised(ctx, args.rl_epochs)


if __name__ == "__main__":
    main()
