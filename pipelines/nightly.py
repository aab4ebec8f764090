"""The nightly pipeline: ingest -> sessions -> features -> train -> recommend -> evaluate.

One Spark application for one run date. Every step writes its tables idempotently (partitions of
the run date are replaced, snapshot tables overwritten), so rerunning a date redoes it cleanly
with no duplicated rows, and ``--from-step`` resumes after a failure without redoing earlier steps.

    python -m pipelines.nightly [--run-date YYYY-MM-DD] [--set key=value ...] [--from-step train]
    ./spark-submit.sh --master yarn --env cluster pipelines.nightly --run-date 2024-01-15
"""
from __future__ import annotations

import argparse
import importlib
import logging
import sys
import time
from typing import Dict, List, Optional, Sequence

from libs import schema as S
from libs.conf import ConfigError, add_common_args, config_from_args
from libs.runtime import JobContext, make_context

log = logging.getLogger("pipelines.nightly")

STEPS = ["ingest", "sessions", "features", "train", "recommend", "evaluate"]


class StepFailed(RuntimeError):
    pass


def run_steps(ctx: JobContext, steps: Sequence[str]) -> Dict[str, Dict[str, int]]:
    """Run ``steps`` in order; stop at the first failure with a message that says how to resume."""
    done: Dict[str, Dict[str, int]] = {}
    for name in steps:
        start = time.perf_counter()
        try:
            rows = importlib.import_module(f"jobs.{name}").run(ctx) or {}
        except Exception as exc:
            log.exception("step %s failed", name)
            raise StepFailed(
                f"nightly {ctx.cfg.run.date} stopped at step '{name}' after {time.perf_counter() - start:.0f}s: "
                f"{type(exc).__name__}: {exc}. Completed: {', '.join(done) or 'none'}. Tables of earlier "
                f"steps are committed; fix the cause and rerun with --run-date {ctx.cfg.run.date} "
                f"--from-step {name} (or rerun the whole date: every step replaces its own output).") from exc
        done[name] = rows
        log.info("nightly step %-9s %6.1fs  %s", name, time.perf_counter() - start, describe(rows))
    return done


def describe(result: dict) -> str:
    """One line for a step's result: row counts per table, or figures per trained model."""
    parts = []
    for key, value in result.items():
        if isinstance(value, bool) or value is None:
            continue
        if isinstance(value, int):
            parts.append(f"{key}={value:,}")
        elif isinstance(value, float):
            parts.append(f"{key}={value:.4f}")
        elif isinstance(value, dict):
            parts.append(f"{key}: [{describe(value.get('metrics', value))}]")
    return ", ".join(parts) or "-"


def summary(ctx: JobContext, done: Dict[str, Dict[str, int]], seconds: float) -> str:
    store, cfg = ctx.store, ctx.cfg
    lines = [f"nightly {cfg.run.date} (run {cfg.run.run_id}) finished in {seconds:.0f}s", "tables:"]
    for table in S.ALL_TABLES:
        if store.exists(table):
            lines.append(f"  {table:<18} version {store.version(table):>3}  {store.path(table)}")
    recs = store.path(S.RECOMMENDATIONS.name)
    lines += ["recommendations: " + recs,
              "read them with Spark (any Delta reader works the same):",
              f"  spark.read.format('delta').load('{recs}').where(\"run_date = '{cfg.run.date}'\")",
              "or with plain Python:",
              f"  from deltalake import DeltaTable; DeltaTable('{recs}').file_uris()  # Parquet files of the latest version",
              "  (see README, 'The recommendations table')"]
    return "\n".join(lines)


def parse_args(argv: Optional[List[str]]) -> argparse.Namespace:
    parser = add_common_args(argparse.ArgumentParser(description=__doc__.split("\n")[0]))
    parser.add_argument("--from-step", choices=STEPS, default=STEPS[0],
                        help="resume at this step (earlier steps' tables are reused)")
    parser.add_argument("--to-step", choices=STEPS, default=STEPS[-1], help="stop after this step")
    return parser.parse_args(argv)


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    try:
        cfg = config_from_args(args)
    except ConfigError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return 2
    ctx = make_context(cfg, args)
    steps = STEPS[STEPS.index(args.from_step):STEPS.index(args.to_step) + 1]
    log.info("nightly %s: steps %s, dataset %s, mode %s, warehouse %s", cfg.run.date, " -> ".join(steps),
             cfg.dataset_name, cfg.recommend.mode, ctx.store.root)
    start = time.perf_counter()
    try:
        done = run_steps(ctx, steps)
    except StepFailed as exc:
        log.error("%s", exc)
        return 1
    print(summary(ctx, done, time.perf_counter() - start))
    return 0


if __name__ == "__main__":
    sys.exit(main())
