"""Wall time and throughput of ingest, sessions and features on a real dataset (default ml-1m).

    python -m benchmarks.bench_prep [--dataset ml-1m] [--env local] [--jobs ingest,sessions] [--set key=value ...]

Runs the jobs in one local Spark application into a temporary warehouse (removed afterwards
unless --keep) and prints, per job, the wall time, input events per second, the driver's peak
memory, and the active files of every table at the end. ``--json`` prints one JSON line instead
(what :mod:`benchmarks.bench_scale` and :mod:`benchmarks.bench_backfill` read).

Peak memory is the high-water mark of resident memory (``VmHWM``) of the driver's Python process
and of its JVM; in local mode that JVM also runs the executors' tasks (not their Python workers).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from typing import Dict, List

from jobs import features, ingest, sessions
from libs import schema as S
from libs.conf import load_config
from libs.runtime import make_context

JOBS = {"ingest": ingest, "sessions": sessions, "features": features}


def peak_rss_mb(pid: int) -> float:
    """High-water mark of a process's resident memory (Linux ``/proc``), in MiB."""
    with open(f"/proc/{pid}/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def measure(dataset: str, env: str, run_date: str, overrides: List[str], jobs: List[str], keep: bool) -> Dict:
    """Run ``jobs`` in order in one Spark application; per job wall seconds and rows written,
    events in the table, active files per table and the driver's peak memory."""
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)  # executors need this venv's pandas/numpy
    warehouse = tempfile.mkdtemp(prefix="bench-prep-")
    cfg = load_config(env=env, dataset=dataset, overrides=[
        f"storage.warehouse={warehouse}", f"run.date={run_date}", "run.run_id=bench-prep", *overrides])
    ctx = make_context(cfg)
    jvm_pid = ctx.spark.sparkContext._jvm.java.lang.ProcessHandle.current().pid()
    try:
        steps = []
        for name in jobs:
            start = time.perf_counter()
            rows = JOBS[name].run(ctx)
            steps.append({"job": name, "seconds": time.perf_counter() - start, "rows": rows,
                          "driver_python_peak_mb": peak_rss_mb(os.getpid()),
                          "driver_jvm_peak_mb": peak_rss_mb(jvm_pid)})
        tables = sorted(t for t in os.listdir(warehouse) if ctx.store.exists(t))
        return {"dataset": dataset, "events": ctx.store.num_rows(S.EVENTS.name), "steps": steps,
                "files": {t: len(ctx.store.active_files(t)) for t in tables},
                "master": ctx.spark.sparkContext.master,
                "cores": ctx.spark.sparkContext.defaultParallelism,
                "shuffle_partitions": ctx.spark.conf.get("spark.sql.shuffle.partitions")}
    finally:
        ctx.spark.stop()
        if keep:
            print(f"warehouse kept at {warehouse}", file=sys.stderr)
        else:
            shutil.rmtree(warehouse, ignore_errors=True)


def measure_in_subprocess(dataset: str, overrides: List[str], jobs: List[str], env: str = "local") -> Dict:
    """:func:`measure` in a fresh Python and JVM (so one run's warm-up or memory never helps or
    hurts another's); the child's logs go to this process's stderr."""
    command = [sys.executable, "-m", "benchmarks.bench_prep", "--dataset", dataset, "--env", env,
               "--jobs", ",".join(jobs), "--json"] + [f"--set={o}" for o in overrides]
    done = subprocess.run(command, stdout=subprocess.PIPE, text=True, check=True)
    return json.loads([line for line in done.stdout.splitlines() if line.startswith("{")][-1])


def print_result(result: Dict) -> None:
    events = result["events"]
    print(f"\nprep benchmark: {result['dataset']}, {events:,} events, master {result['master']}, "
          f"shuffle partitions {result['shuffle_partitions']}")
    print(f"{'job':<10}{'wall s':>9}{'events/s':>12}{'py MiB':>9}{'jvm MiB':>9}  rows written")
    for step in result["steps"]:
        written = ", ".join(f"{k}={v:,}" for k, v in step["rows"].items())
        print(f"{step['job']:<10}{step['seconds']:>9.1f}{events / step['seconds']:>12,.0f}"
              f"{step['driver_python_peak_mb']:>9,.0f}{step['driver_jvm_peak_mb']:>9,.0f}  {written}")
    total = sum(s["seconds"] for s in result["steps"])
    print(f"{'total':<10}{total:>9.1f}{events / total:>12,.0f}")
    print("active files: " + ", ".join(f"{t}={n:,}" for t, n in result["files"].items()))


def main(argv=None) -> Dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="ml-1m")
    parser.add_argument("--env", default="local")
    parser.add_argument("--run-date", default="2024-01-15")
    parser.add_argument("--jobs", default=",".join(JOBS), help="comma-separated, in order")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--keep", action="store_true", help="keep the temporary warehouse")
    parser.add_argument("--json", action="store_true", help="print the result as one JSON line")
    args = parser.parse_args(argv)
    jobs = args.jobs.split(",")
    unknown = set(jobs) - set(JOBS)
    if unknown:
        parser.error(f"unknown job(s) {sorted(unknown)}; choose from {list(JOBS)}")
    result = measure(args.dataset, args.env, args.run_date, args.overrides, jobs, args.keep)
    if args.json:
        print(json.dumps(result))
    else:
        print_result(result)
    return result


if __name__ == "__main__":
    main()
