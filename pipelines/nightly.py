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
import os
import sys
import textwrap
import time
from typing import Dict, List, Optional, Sequence

from libs import schema as S
from libs.conf import ConfigError, add_common_args, config_from_args
from libs.log import log_file_for, setup_logging
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
        print_step(name, time.perf_counter() - start, rows)
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


def _readable(uri: str) -> str:
    """A local path for a ``file://`` URI (what people paste), other URIs as they are."""
    from libs.storage import local_path

    return local_path(uri) or uri


# --- what the console shows: one line per step, the summary, the cause of a failure -------------
# Everything else goes to the run's log file (libs.log.setup_logging with log_file).

def start_console(cfg, steps: Sequence[str]) -> str:
    """Send all logging of this run to ``<warehouse>/logs/<run_id>.log``; print where it is."""
    path = log_file_for(cfg.storage.warehouse, cfg.run.run_id)
    setup_logging(cfg.run.run_id, cfg.run.date, log_file=path)
    print(f"nightly {cfg.run.date}: {' -> '.join(steps)} (dataset {cfg.dataset_name}, mode {cfg.recommend.mode})\n"
          f"  log {path}", flush=True)
    return path


def print_step(name: str, seconds: float, rows: dict) -> None:
    log.info("nightly step %s done in %.1fs: %s", name, seconds, describe(rows))
    print(f"  {name:<10}{seconds:7.1f}s  {describe(rows)}", flush=True)


def print_failure(log_path: str) -> None:
    """After the cause (an error logged by our code, which the console shows): where the rest is."""
    print(f"  details (tracebacks, Spark, TensorFlow and Horovod output): {log_path}", file=sys.stderr, flush=True)


def summary(ctx: JobContext, done: Dict[str, Dict[str, int]], seconds: float, log_path: str) -> str:
    """The closing lines: where the recommendations, the report, the log and the tables are, and
    how to read the recommendations with or without Spark."""
    from libs.report import report_path

    store, cfg = ctx.store, ctx.cfg
    recs = _readable(store.path(S.RECOMMENDATIONS.name))
    report = report_path(cfg.storage.warehouse, cfg.run.date)
    tables = [f"{t} v{store.version(t)}" for t in S.ALL_TABLES if store.exists(t)]
    where = f"run_date = '{cfg.run.date}'"
    lines = [f"nightly {cfg.run.date} finished in {seconds:.0f}s (run {cfg.run.run_id})",
             f"  recommendations: {recs}",
             *([f"  report: {report}"] if report and os.path.exists(report) else []),
             f"  log: {log_path}",
             f"  tables in {_readable(store.root)} (Delta version):"]
    lines += ["    " + line for line in textwrap.wrap(", ".join(tables), 96)]
    lines += ["read the recommendations of this night (README, 'Reading the recommendations'):",
              "  Python, no Spark (pip install polars deltalake; deltalake and duckdb in the README):",
              f"    polars.scan_delta('{recs}').filter(polars.col('run_date') == polars.col('run_date').max()).collect()",
              "  Spark with the Delta Lake jars (--packages io.delta:delta-spark_2.12:3.3.2):",
              f"    spark.read.format('delta').load('{recs}').where(\"{where}\")",
              "  Spark without them: the Parquet files of the latest Delta version, listed by deltalake:",
              f"    files = deltalake.DeltaTable('{recs}').file_uris(file_pruning_predicate=\"{where}\")",
              f"    spark.read.option('basePath', '{recs}').parquet(*files)"]
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
    steps = STEPS[STEPS.index(args.from_step):STEPS.index(args.to_step) + 1]
    log_path = start_console(cfg, steps)
    start = time.perf_counter()
    try:
        ctx = make_context(cfg, args)
        log.info("nightly %s: steps %s, dataset %s, mode %s, warehouse %s", cfg.run.date, " -> ".join(steps),
                 cfg.dataset_name, cfg.recommend.mode, ctx.store.root)
        done = run_steps(ctx, steps)
    except StepFailed as exc:
        log.error("%s", exc)
        print_failure(log_path)
        return 1
    except Exception as exc:
        log.exception("nightly %s could not start: %s: %s", cfg.run.date, type(exc).__name__, exc)
        print_failure(log_path)
        return 1
    print(summary(ctx, done, time.perf_counter() - start, log_path))
    return 0


if __name__ == "__main__":
    sys.exit(main())
