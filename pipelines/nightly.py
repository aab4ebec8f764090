"""The nightly pipeline: ingest -> sessions -> features -> train -> recommend -> evaluate.

One Spark application for one run date. Every step writes its tables idempotently (partitions of
the run date are replaced, snapshot tables overwritten, events appended once per drop), so
rerunning a date redoes it cleanly with no duplicated rows, and ``--from-step`` resumes the same
run (same run id, the table versions and model runs its earlier steps pinned) after a failure.

Every run is a row of the ``runs`` table (:mod:`libs.runs`). After ``evaluate`` the quality gate
(``gate:`` in conf) decides: a night that passes is marked published; one that fails exits 3 and
leaves the last published night what downstream readers get.

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

from libs import runs
from libs import schema as S
from libs.conf import ConfigError, add_common_args, config_from_args
from libs.log import log_file_for, setup_logging
from libs.runtime import JobContext, make_context

log = logging.getLogger("pipelines.nightly")

STEPS = ["ingest", "sessions", "features", "train", "recommend", "evaluate"]


EXIT_STEP_FAILED, EXIT_CONFIG, EXIT_GATE_FAILED = 1, 2, 3


class StepFailed(RuntimeError):
    pass


def run_steps(ctx: JobContext, steps: Sequence[str],
              book: Optional[runs.RunBook] = None) -> Dict[str, Dict[str, int]]:
    """Run ``steps`` in order; stop at the first failure with a message that says how to resume."""
    done: Dict[str, Dict[str, int]] = {}
    for name in steps:
        start = time.perf_counter()
        started = runs.now_utc()
        ctx.store.reads.clear()
        ctx.store.writes.clear()
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
        if book is not None:
            record_step(ctx, book, name, started, rows)
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


# --- run bookkeeping and publishing (libs/runs.py) ---------------------------------------

def open_run(ctx: JobContext, args: argparse.Namespace) -> runs.RunBook:
    """A new run, or with ``--from-step`` the latest run of the date (or ``--set run.run_id``)
    resumed: same run id, store pinned to its versions, its model runs."""
    first = STEPS.index(args.from_step)
    if first == 0:
        return runs.RunBook.start(ctx.store, ctx.cfg)
    explicit = any(o.startswith("run.run_id=") for o in args.overrides)
    book = runs.RunBook.resume(ctx.store, ctx.cfg.run.date, STEPS[:first],
                               ctx.cfg.run.run_id if explicit else None)
    ctx.cfg.run.run_id = ctx.store.run_id = book.run_id
    setup_logging(book.run_id, ctx.cfg.run.date)
    ctx.model_runs.update(book.model_runs)
    return book


def record_step(ctx: JobContext, book: runs.RunBook, name: str, started, result: dict) -> None:
    book.step_done(name, started, result, ctx.store)
    ctx.model_runs.update(book.model_runs)


def gate_and_publish(ctx: JobContext, book: runs.RunBook) -> runs.GateResult:
    """Apply the quality gate to this night's metrics; publish the run only if it passes."""
    cfg = ctx.cfg
    last = runs.latest_published(book.store)
    last_value = None
    if (last is not None and last[S.STATUS] == S.RUN_PUBLISHED and last[S.GATE_METRIC] == cfg.gate.metric
            and last[S.RUN_MODE] == cfg.recommend.mode):
        last_value = last[S.GATE_VALUE]
    result = runs.quality_gate(runs.night_metrics(ctx.store, cfg.run_date), cfg.recommend.mode, cfg.gate, last_value)
    status = S.RUN_PUBLISHED if result.passed else S.RUN_GATE_FAILED
    book.finish(status, result.message, cfg.gate.metric, result.value)
    if result.passed:
        log.info("quality gate passed: %s; run %s of %s is published", result.message, book.run_id, cfg.run.date)
    else:
        kept = (f"run {last[S.RUN_ID]} of {last[S.RUN_DATE]}" if last is not None else "none yet")
        log.error("quality gate FAILED: %s. Run %s of %s is NOT published; the last published night "
                  "(%s) is still what readers get.", result.message, book.run_id, cfg.run.date, kept)
    return result


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
        return EXIT_CONFIG
    steps = STEPS[STEPS.index(args.from_step):STEPS.index(args.to_step) + 1]
    log_path = start_console(cfg, steps)
    start = time.perf_counter()
    try:
        ctx = make_context(cfg, args)
        book = open_run(ctx, args)
        log.info("nightly %s: steps %s, dataset %s, mode %s, warehouse %s", cfg.run.date, " -> ".join(steps),
                 cfg.dataset_name, cfg.recommend.mode, ctx.store.root)
        done = run_steps(ctx, steps, book)
    except runs.RunError as exc:
        log.error("%s", exc)
        print_failure(log_path)
        return EXIT_CONFIG
    except StepFailed as exc:
        log.error("%s", exc)
        book.finish(S.RUN_FAILED, str(exc))
        print_failure(log_path)
        return EXIT_STEP_FAILED
    except Exception as exc:
        log.exception("nightly %s could not start: %s: %s", cfg.run.date, type(exc).__name__, exc)
        print_failure(log_path)
        return EXIT_STEP_FAILED
    if steps[-1] != STEPS[-1]:
        book.finish(S.RUN_COMPLETED, f"stopped after step {steps[-1]} (--to-step); not gated, not published")
    elif not gate_and_publish(ctx, book).passed:
        print_failure(log_path)
        return EXIT_GATE_FAILED
    print(summary(ctx, done, time.perf_counter() - start, log_path))
    return 0


if __name__ == "__main__":
    sys.exit(main())
