"""Sessions: split each user's time-ordered events into sessions at inactivity gaps.

A new session starts when the time since the user's previous event is strictly greater than
``sessions.gap_minutes``; a gap of exactly ``gap_minutes`` stays in the same session. Events are
ordered by time, ties broken by item id. Events after the run date are ignored, so a backfill of an
older date sees what that night saw.
"""
from __future__ import annotations

import logging
from typing import Dict

from pyspark.sql import DataFrame, Window
from pyspark.sql import functions as F

from libs import schema as S
from libs.contract import conform_exact
from libs.features import events_until
from libs.log import step
from libs.runtime import JobContext, job_main

log = logging.getLogger(__name__)


def sessionize(events: DataFrame, gap_minutes: int) -> DataFrame:
    """Sessions (SESSIONS columns) of ``events`` (USER_ID, ITEM_ID, EVENT_TS)."""
    timeline = Window.partitionBy(S.USER_ID).orderBy(S.EVENT_TS, S.ITEM_ID)
    gap = F.unix_micros(S.EVENT_TS) - F.lag(F.unix_micros(S.EVENT_TS)).over(timeline)
    starts = F.coalesce(gap > gap_minutes * 60 * 1_000_000, F.lit(True)).cast("int")
    marked = events.select(S.USER_ID, S.ITEM_ID, S.EVENT_TS, starts.alias("_starts"))
    numbered = marked.withColumn(
        S.SESSION_ID, F.sum("_starts").over(timeline.rowsBetween(Window.unboundedPreceding, 0)) - 1)
    # collect_list order is not guaranteed after a shuffle: sort (time, item) pairs explicitly
    ordered = F.array_sort(F.collect_list(F.struct(S.EVENT_TS, S.ITEM_ID)))
    sessions = numbered.groupBy(S.USER_ID, S.SESSION_ID).agg(
        F.min(S.EVENT_TS).alias(S.SESSION_START), F.max(S.EVENT_TS).alias(S.SESSION_END),
        F.count(F.lit(1)).alias(S.SESSION_LENGTH),
        # ids are never null in events; coalesce only lets Spark type the elements as non-null
        F.transform(ordered, lambda e: F.coalesce(e[S.ITEM_ID], F.lit(""))).alias(S.ITEM_SEQUENCE))
    return S.conform(sessions, S.SESSIONS)


def extract(ctx: JobContext) -> DataFrame:
    return events_until(ctx.store.read(S.EVENTS.name), ctx.cfg.run_date)


def load(ctx: JobContext, sessions: DataFrame) -> int:
    ctx.store.write(conform_exact(sessions, S.SESSIONS), S.SESSIONS.name)
    return ctx.store.num_rows(S.SESSIONS.name)


def run(ctx: JobContext) -> Dict[str, int]:
    with step(log, "sessions") as st:
        rows = load(ctx, sessionize(extract(ctx), ctx.cfg.sessions.gap_minutes))
        st.add(S.SESSIONS.name, rows)
    return {S.SESSIONS.name: rows}


def main(argv=None) -> Dict[str, int]:
    return job_main("sessions: events -> per-user sessions", run, argv)


if __name__ == "__main__":
    main()
