"""How data preparation grows with the log: ingest, sessions and features on synthetic logs of
1M, 10M and 30M events (a year of daily drops), each in a fresh Spark application.

    python -m benchmarks.bench_scale [--sizes 1000000,10000000,30000000] [--days 365] [--seed 0] [--reuse]

Prints per size and step the wall time, events/s (and per core), the active files of every table
and the driver's peak memory; then the growth between consecutive sizes: time ratio / events
ratio (1.0 = linear; above 1, a step grows faster than its input). Targets (issue 10): ingest +
sessions + features at >= 50,000 events/s per core at 10M events, growth <= 1 (allowing noise),
flat driver memory. Logs are generated once into ``.bench/synthetic-<events>-s<seed>/`` (users and
items grow with the log: events/100 and 4*sqrt(events)). Each size's figures are saved to
``.bench/scale-<events>-s<seed>-d<days>.json``; ``--reuse`` reports a size from its saved figures
instead of measuring it again (the report names the date they were measured on), so a 30M run
can be added to an earlier 1M/10M one.
"""
from __future__ import annotations

import argparse
import json
import os
import time
from datetime import datetime, timezone
from typing import Dict, List, Optional

from benchmarks.bench_prep import measure_in_subprocess
from libs.synthetic import generate

JOBS = ["ingest", "sessions", "features"]
TARGET_EVENTS_PER_CORE_S = 50_000


def synthetic_log(events: int, days: int, seed: int) -> str:
    """The folder of the log with these parameters, generated unless already there."""
    root = os.path.join(".bench", f"synthetic-{events}-s{seed}")
    summary = os.path.join(root, "summary.json")
    if os.path.exists(summary):
        with open(summary, encoding="utf-8") as f:
            written = json.load(f)
        if written["events"] == events and written["seed"] == seed and written["drops"] <= days:
            return root
    start = time.perf_counter()
    generate(root, events, days=days, seed=seed)
    print(f"generated {events:,} events in {time.perf_counter() - start:.0f}s into {root}", flush=True)
    return root


def result_path(events: int, days: int, seed: int) -> str:
    return os.path.join(".bench", f"scale-{events}-s{seed}-d{days}.json")


def saved_result(events: int, days: int, seed: int) -> Optional[Dict]:
    path = result_path(events, days, seed)
    if not os.path.exists(path):
        return None
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def save_result(result: Dict, days: int, seed: int) -> None:
    result["measured_at"] = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    with open(result_path(result["events"], days, seed), "w", encoding="utf-8") as f:
        json.dump(result, f)


def print_report(results: List[Dict]) -> None:
    cores = results[0]["cores"]
    print(f"\nscale benchmark: synthetic logs, master {results[0]['master']} ({cores} cores), "
          f"shuffle partitions {results[0]['shuffle_partitions']}")
    header = f"{'events':>12}{'job':>10}{'wall s':>9}{'events/s':>11}{'/core':>9}{'py MiB':>8}{'jvm MiB':>9}"
    print(header)
    for result in results:
        events = result["events"]
        if result.get("measured_at"):
            print(f"{events:>12,} measured {result['measured_at']}")
        for step in result["steps"] + [{"job": "total", "seconds": sum(s["seconds"] for s in result["steps"]),
                                        "driver_python_peak_mb": result["steps"][-1]["driver_python_peak_mb"],
                                        "driver_jvm_peak_mb": result["steps"][-1]["driver_jvm_peak_mb"]}]:
            rate = events / step["seconds"]
            print(f"{events:>12,}{step['job']:>10}{step['seconds']:>9.1f}{rate:>11,.0f}{rate / cores:>9,.0f}"
                  f"{step['driver_python_peak_mb']:>8,.0f}{step['driver_jvm_peak_mb']:>9,.0f}")
        print(f"{'':>12}files: " + ", ".join(f"{t}={n:,}" for t, n in result["files"].items()))
    print("\ngrowth between sizes (time ratio / events ratio; 1.0 = linear)")
    for small, large in zip(results, results[1:]):
        factor = large["events"] / small["events"]
        cells = []
        for a, b in zip(small["steps"], large["steps"]):
            cells.append(f"{a['job']} {b['seconds'] / a['seconds'] / factor:.2f}")
        total = sum(s["seconds"] for s in large["steps"]) / sum(s["seconds"] for s in small["steps"]) / factor
        print(f"{small['events']:>12,} -> {large['events']:,} (x{factor:.0f}): " + ", ".join(cells)
              + f", total {total:.2f}")


def main(argv=None) -> List[Dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1000000,10000000,30000000")
    parser.add_argument("--days", type=int, default=365)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--reuse", action="store_true", help="report sizes measured before from their saved figures")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args(argv)
    results = []
    for events in (int(s) for s in args.sizes.split(",")):
        saved = saved_result(events, args.days, args.seed) if args.reuse else None
        if saved is not None:
            results.append(saved)
            continue
        root = synthetic_log(events, args.days, args.seed)
        results.append(measure_in_subprocess("synthetic", [f"dataset.root={root}", *args.overrides], JOBS))
        save_result(results[-1], args.days, args.seed)
        print(json.dumps(results[-1]), flush=True)
    print_report(results)
    return results


if __name__ == "__main__":
    main()
