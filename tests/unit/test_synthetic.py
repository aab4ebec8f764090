"""The synthetic log generator: deterministic by seed, and what ingest makes of it (every bad and
duplicate line quarantined with its reason, exactly the asked number of valid events)."""
import datetime as dt
import filecmp
import json

import pytest

from jobs import ingest
from libs import schema as S
from libs.conf import load_config
from libs.runtime import JobContext
from libs.synthetic import generate

EVENTS, DAYS = 4000, 40


def test_same_seed_same_files_and_the_drops_hold_what_the_summary_says(tmp_path):
    first = generate(str(tmp_path / "a"), EVENTS, days=DAYS, seed=3)
    generate(str(tmp_path / "b"), EVENTS, days=DAYS, seed=3)
    generate(str(tmp_path / "c"), EVENTS, days=DAYS, seed=4)
    drops = sorted(p.name for p in (tmp_path / "a" / "interactions").iterdir())
    assert len(drops) == first.drops and drops[-1] == "2024-01-15.csv"
    _, mismatch, errors = filecmp.cmpfiles(tmp_path / "a", tmp_path / "b",
                                           ["items.csv", "users.csv"] + [f"interactions/{d}" for d in drops])
    assert not mismatch and not errors
    assert (tmp_path / "a" / "interactions" / drops[-1]).read_text() != \
        (tmp_path / "c" / "interactions" / drops[-1]).read_text()
    lines = sum(len((tmp_path / "a" / "interactions" / d).read_text().splitlines()) - 1 for d in drops)
    assert lines == first.events + first.duplicate_lines + first.bad_lines
    assert json.loads((tmp_path / "a" / "summary.json").read_text())["events"] == EVENTS


@pytest.mark.spark
def test_ingest_keeps_exactly_the_valid_events_and_quarantines_the_rest(spark, store, warehouse, tmp_path):
    summary = generate(str(tmp_path / "log"), EVENTS, days=DAYS, seed=1)
    cfg = load_config(env="local", dataset="synthetic", overrides=[
        f"storage.warehouse={warehouse}", f"dataset.root={tmp_path / 'log'}", "run.date=2024-01-15",
        "run.run_id=test-run"])
    rows = ingest.run(JobContext(spark, cfg, store))
    assert rows[S.EVENTS.name] == EVENTS and rows[S.ITEMS.name] == summary.items
    assert rows[S.USERS.name] == summary.users
    reasons = {r[S.REASON]: r["count"] for r in store.read(S.QUARANTINE.name).groupBy(S.REASON).count().collect()}
    assert reasons.pop(ingest.DUPLICATE_EVENT) == summary.duplicate_lines
    per_kind = summary.bad_lines // 6
    assert reasons == {reason: pytest.approx(per_kind, abs=1) for reason in (
        ingest.MALFORMED_LINE, ingest.MISSING_USER_ID, ingest.ITEM_NOT_IN_CATALOG, ingest.UNPARSEABLE_TIMESTAMP,
        ingest.UNKNOWN_EVENT_TYPE, ingest.UNPARSEABLE_VALUE)}
    days = store.read(S.EVENTS.name).agg({S.EVENT_DATE: "min"}).first()[0]
    assert days == dt.date(2024, 1, 15) - dt.timedelta(days=DAYS - 1)
