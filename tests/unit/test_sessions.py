"""Sessionization on hand-made events: the gap boundary, time order with item-id ties."""
import datetime as dt

import pytest

from jobs.sessions import sessionize
from libs import schema as S
from libs.features import events_until

pytestmark = pytest.mark.spark

T0 = dt.datetime(2024, 1, 15, 8, 0, 0)


def _events(spark, rows):
    times = [(u, i, T0 + dt.timedelta(seconds=s)) for u, i, s in rows]
    return spark.createDataFrame([(u, i, t, t.date(), t.strftime("%Y-%m")) for u, i, t in times],
                                 "user_id string, item_id string, event_ts timestamp, event_date date, "
                                 "event_month string")


def test_gap_boundary_and_tie_order(spark):
    events = _events(spark, [
        ("a", "i1", 0),
        ("a", "i2", 30 * 60),              # exactly the 30-minute gap: same session
        ("a", "i3", 60 * 60 + 1),          # 30 min 1 s after i2: a new session
        ("a", "i0", 60 * 60 + 1),          # same time as i3: ordered by item id, i0 first
        ("a", "i4", 60 * 60 + 1 + 29 * 60),
        ("b", "i9", 0),
    ])
    sessions = sessionize(events, gap_minutes=30)
    assert sessions.columns == S.SESSIONS.columns
    got = sorted((r[S.USER_ID], r[S.SESSION_ID], r[S.SESSION_START], r[S.SESSION_END], r[S.SESSION_LENGTH],
                  r[S.ITEM_SEQUENCE]) for r in sessions.collect())
    t = lambda s: T0 + dt.timedelta(seconds=s)  # noqa: E731
    assert got == [
        ("a", 0, t(0), t(1800), 2, ["i1", "i2"]),
        ("a", 1, t(3601), t(3601 + 1740), 3, ["i0", "i3", "i4"]),
        ("b", 0, t(0), t(0), 1, ["i9"]),
    ]


def test_events_after_the_run_date_are_ignored(spark):
    events = _events(spark, [("a", "i1", 0), ("a", "i2", 86_400)])
    visible = events_until(events, dt.date(2024, 1, 15))
    assert [r[S.ITEM_SEQUENCE] for r in sessionize(visible, 30).collect()] == [["i1"]]
