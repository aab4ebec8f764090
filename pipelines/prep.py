"""Data preparation for one run date: ingest -> sessions -> features, in one Spark application.

    ./spark-submit.sh pipelines.prep --run-date 2024-01-15 [--dataset ml-1m]
"""
from __future__ import annotations

import logging
from typing import Dict

from jobs import features, ingest, sessions
from libs.runtime import JobContext, job_main

log = logging.getLogger(__name__)

PREP_JOBS = (ingest, sessions, features)


def run_prep(ctx: JobContext) -> Dict[str, int]:
    """Run the three preparation jobs in order; returns rows written per table."""
    rows: Dict[str, int] = {}
    for job in PREP_JOBS:
        rows.update(job.run(ctx))
    log.info("prep done: %s", ", ".join(f"{k}={v:,}" for k, v in rows.items()))
    return rows


def main(argv=None) -> Dict[str, int]:
    return job_main("prep: ingest -> sessions -> features", run_prep, argv)


if __name__ == "__main__":
    main()
