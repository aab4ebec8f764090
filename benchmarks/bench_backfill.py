"""A years-long backfill against ml-100k: ingest + sessions of a synthetic log of the same size
spanning two decades, next to ml-100k's 100,000 events over 7 months, on the same machine in the
same run (each in a fresh Spark application).

    python -m benchmarks.bench_backfill [--events 100000] [--days 7300] [--single-file]

Target (issue 10): the backfill takes no more than twice ml-100k's time. The log is written by
:mod:`libs.synthetic` (daily drops; ``--single-file``: one file, as a history export would be).
"""
from __future__ import annotations

import argparse
import glob
import os
import shutil
import tempfile

from benchmarks.bench_prep import measure_in_subprocess
from libs.synthetic import generate

JOBS = ["ingest", "sessions"]
TARGET_RATIO = 2.0


def single_file(root: str) -> None:
    """Concatenate the daily drops into one file (one header)."""
    drops = sorted(glob.glob(os.path.join(root, "interactions", "*.csv")))
    with open(os.path.join(root, "history.csv"), "w", encoding="utf-8") as out:
        for i, path in enumerate(drops):
            with open(path, encoding="utf-8") as f:
                lines = f.readlines()
            out.writelines(lines if i == 0 else lines[1:])
    shutil.rmtree(os.path.join(root, "interactions"))
    os.makedirs(os.path.join(root, "interactions"))
    os.rename(os.path.join(root, "history.csv"), os.path.join(root, "interactions", "history.csv"))


def main(argv=None) -> float:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--days", type=int, default=7300)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--single-file", action="store_true")
    args = parser.parse_args(argv)
    root = tempfile.mkdtemp(prefix="bench-backfill-")
    try:
        summary = generate(root, args.events, days=args.days, seed=args.seed)
        if args.single_file:
            single_file(root)
        reference = measure_in_subprocess("ml-100k", [], JOBS)
        backfill = measure_in_subprocess("synthetic", [f"dataset.root={root}"], JOBS)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    drops = 1 if args.single_file else summary.drops
    print(f"\nbackfill benchmark: synthetic {summary.events:,} events over {args.days:,} days "
          f"({summary.first_day}..{summary.last_day}, {drops:,} input file(s)) vs ml-100k")
    print(f"{'job':<10}{'ml-100k s':>11}{'backfill s':>12}{'ratio':>8}")
    for ref, run in zip(reference["steps"], backfill["steps"]):
        print(f"{ref['job']:<10}{ref['seconds']:>11.1f}{run['seconds']:>12.1f}{run['seconds'] / ref['seconds']:>8.2f}")
    ref_total = sum(s["seconds"] for s in reference["steps"])
    total = sum(s["seconds"] for s in backfill["steps"])
    ratio = total / ref_total
    print(f"{'total':<10}{ref_total:>11.1f}{total:>12.1f}{ratio:>8.2f}  (target <= {TARGET_RATIO:.1f})")
    print(f"events files: ml-100k {reference['files']['events']:,}, backfill {backfill['files']['events']:,}")
    return ratio


if __name__ == "__main__":
    main()
