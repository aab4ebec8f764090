"""Ingest transforms on small hand-made files: every quarantine reason, dedup, parsing, failure."""
import datetime as dt
import json

import pytest

from jobs import ingest
from jobs.ingest import IngestError
from libs import schema as S
from libs.conf import IngestConf, SourceConf
from libs.runtime import JobContext
from libs.storage import DeltaStore, StorageError
from tests.conftest import make_config

pytestmark = pytest.mark.spark

EVENT_COLUMNS = {S.USER_ID: "u", S.ITEM_ID: "i", "timestamp": "ts", S.VALUE: "r", S.EVENT_TYPE: "type"}


def _write_lines(path, lines, crlf=True):
    path.write_bytes(("\r\n" if crlf else "\n").join(lines).encode() + b"\n")
    return str(path)


def _ts(seconds):
    return dt.datetime(1970, 1, 1) + dt.timedelta(seconds=seconds)


def test_every_event_reason_and_dedup(spark, tmp_path):
    lines = {
        "u1\ti1\t100\t5\trating": ingest.DUPLICATE_EVENT,        # same key as the next line, sorts after it
        "u1\ti1\t100\t4\trating": None,                          # kept: first by raw text
        "u2\ti2\t100": ingest.MALFORMED_LINE,                    # 3 of 5 fields
        "": ingest.MALFORMED_LINE,                               # blank line
        "\ti1\t100\t3\trating": ingest.MISSING_USER_ID,
        "\t\tyesterday\t3\trating": ingest.MISSING_USER_ID,      # several faults: the first check wins
        "u2\t \t100\t3\trating": ingest.MISSING_ITEM_ID,         # blank after trimming
        "u2\ti1\tyesterday\t3\trating": ingest.UNPARSEABLE_TIMESTAMP,
        "u2\ti1\t200\t3\tlike": ingest.UNKNOWN_EVENT_TYPE,
        "u2\ti1\t200\tfive\trating": ingest.UNPARSEABLE_VALUE,
        "u2\ti9\t200\t3\trating": ingest.ITEM_NOT_IN_CATALOG,
        "u3\ti2\t300.5\t\tclick": None,                          # empty value is allowed (null)
    }
    path = _write_lines(tmp_path / "log.tsv", ["u\ti\tts\tr\ttype"] + list(lines))
    src = SourceConf(path=path, delimiter="\t", columns=EVENT_COLUMNS)
    catalog = spark.createDataFrame([("i1",), ("i2",)], "item_id string")
    out = ingest.classify_events(ingest.read_raw(spark, src), src, IngestConf(event_types=["rating", "click"]),
                                 catalog).collect()

    assert len(out) == len(lines)  # header dropped, every line classified exactly once
    assert {r[S.RAW_RECORD]: r[S.REASON] for r in out} == lines  # \r stripped from the raw text
    events = ingest.to_events(spark.createDataFrame(out), "run-1").collect()
    assert sorted((e[S.USER_ID], e[S.ITEM_ID], e[S.EVENT_TS], e[S.EVENT_TYPE], e[S.VALUE], e[S.EVENT_DATE],
                   e[S.EVENT_MONTH]) for e in events) == [
        ("u1", "i1", _ts(100), "rating", 4.0, dt.date(1970, 1, 1), "1970-01"),
        ("u3", "i2", _ts(300.5), "click", None, dt.date(1970, 1, 1), "1970-01")]


def test_catalog_check_is_optional(spark, tmp_path):
    path = _write_lines(tmp_path / "log.tsv", ["u\ti\tts\tr\ttype", "u2\ti9\t200\t3\trating"])
    src = SourceConf(path=path, delimiter="\t", columns=EVENT_COLUMNS)
    out = ingest.classify_events(ingest.read_raw(spark, src), src, IngestConf()).collect()
    assert [r[S.REASON] for r in out] == [None]


def test_timestamp_formats(spark):
    df = spark.createDataFrame([("1700000000000", "2024-01-15T10:30:00Z", "1e30"),
                                ("17e11", "2024-01-15 10:30:00", "nan"),
                                ("x", "15/01/2024", "")], "ms string, iso string, sec string")
    rows = df.select(ingest.parse_timestamp(df.ms, "epoch_millis").alias("ms"),
                     ingest.parse_timestamp(df.iso, "iso").alias("iso"),
                     ingest.parse_timestamp(df.sec, "epoch_seconds").alias("sec")).collect()
    assert [tuple(r) for r in rows] == [
        (dt.datetime(2023, 11, 14, 22, 13, 20), dt.datetime(2024, 1, 15, 10, 30), None),
        (dt.datetime(2023, 11, 14, 22, 13, 20), dt.datetime(2024, 1, 15, 10, 30), None),
        (None, None, None)]


def test_items_reasons_year_genres_attributes(spark, tmp_path):
    lines = ["id\ttitle\tyear\tgenres\tstudio",
             "1\tToy Story\t1995.0\tAnimation Comedy\tPixar",
             "1\tToy Story again\t1995\tComedy\tX",     # duplicate id; "\t" sorts before " ": line 1 is kept
             "2\tHeat\tunknown\t\tWB",
             "\tNo id\t2000\tDrama\tY",
             "3\tBroken"]
    src = SourceConf(path=_write_lines(tmp_path / "items.tsv", lines), delimiter="\t", list_delimiter=" ",
                     columns={S.ITEM_ID: "id", S.TITLE: "title", S.YEAR: "year", S.GENRES: "genres"})
    out = ingest.classify_items(ingest.read_raw(spark, src), src).collect()
    assert sorted((r[S.RAW_RECORD], r[S.REASON]) for r in out if r[S.REASON]) == sorted([
        ("1\tToy Story again\t1995\tComedy\tX", ingest.DUPLICATE_ITEM_ID),
        ("\tNo id\t2000\tDrama\tY", ingest.MISSING_ITEM_ID),
        ("3\tBroken", ingest.MALFORMED_LINE)])
    valid = sorted((r[S.ITEM_ID], r[S.TITLE], r[S.GENRES], r[S.YEAR], r[S.ATTRIBUTES])
                   for r in out if r[S.REASON] is None)
    assert valid == [("1", "Toy Story", ["Animation", "Comedy"], 1995, {"studio": "Pixar"}),
                     ("2", "Heat", [], None, {"studio": "WB"})]


def test_year_from_title_and_users(spark, tmp_path):
    items = SourceConf(path=_write_lines(tmp_path / "items.csv", ["id,title", "7,Heat (1995)", "8,Heat"]),
                       columns={S.ITEM_ID: "id", S.TITLE: "title"}, year_from_title=True)
    years = {r[S.ITEM_ID]: r[S.YEAR] for r in ingest.classify_items(ingest.read_raw(spark, items), items).collect()}
    assert years == {"7": 1995, "8": None}

    users = SourceConf(path=_write_lines(tmp_path / "users.csv", ["id,age", "a,30", "a,31", ",40"]),
                       columns={S.USER_ID: "id"})
    out = ingest.classify_users(ingest.read_raw(spark, users), users).collect()
    assert sorted((r[S.RAW_RECORD], r[S.REASON]) for r in out) == [
        (",40", ingest.MISSING_USER_ID), ("a,30", None), ("a,31", ingest.DUPLICATE_USER_ID)]


def test_json_lines_and_parquet_sources(spark, tmp_path):
    good = json.dumps({"user": 7, "item": "i1", "ts": "2024-01-15T10:00:00Z", "extra": [1]})
    path = _write_lines(tmp_path / "log.jsonl", [good, '{"user": 8, "item": '], crlf=False)
    src = SourceConf(path=path, format="json", timestamp_format="iso", constants={S.EVENT_TYPE: "click"},
                     columns={S.USER_ID: "user", S.ITEM_ID: "item", "timestamp": "ts"})
    out = {r[S.RAW_RECORD]: r for r in ingest.classify_events(ingest.read_raw(spark, src), src, IngestConf()).collect()}
    assert out['{"user": 8, "item": '][S.REASON] == ingest.MALFORMED_LINE
    assert (out[good][S.USER_ID], out[good][S.EVENT_TS], out[good][S.EVENT_TYPE], out[good][S.REASON]) == \
        ("7", dt.datetime(2024, 1, 15, 10), "click", None)

    pq = str(tmp_path / "log.parquet")
    spark.createDataFrame([("u1", "i1", 1700000000123), ("u2", None, 1)], "uid string, iid string, ms long") \
        .coalesce(1).write.parquet(pq)
    src = SourceConf(path=pq, format="parquet", timestamp_format="epoch_millis", constants={S.EVENT_TYPE: "view"},
                     columns={S.USER_ID: "uid", S.ITEM_ID: "iid", "timestamp": "ms"})
    out = sorted(ingest.classify_events(ingest.read_raw(spark, src), src, IngestConf()).collect(),
                 key=lambda r: r[S.USER_ID])
    assert [(r[S.USER_ID], r[S.EVENT_TS], r[S.REASON]) for r in out] == [
        ("u1", dt.datetime(2023, 11, 14, 22, 13, 20, 123000), None),
        ("u2", dt.datetime(1970, 1, 1, 0, 0, 0, 1000), ingest.MISSING_ITEM_ID)]
    assert json.loads(out[0][S.RAW_RECORD]) == {"uid": "u1", "iid": "i1", "ms": 1700000000123}


def test_bad_ratio_check():
    ingest.check_bad_ratio("interactions", {None: 95, "malformed_line": 5}, 0.05)  # at the limit: fine
    with pytest.raises(IngestError, match=r"interactions: 6 of 100 rows \(6.00%\).*malformed_line=6"):
        ingest.check_bad_ratio("interactions", {None: 94, "malformed_line": 6}, 0.05)


def _small_adapter(tmp_path, interaction_lines):
    """Files in the ml-100k adapter's layout (its headers), so the adapter conf applies as is."""
    inter = _write_lines(tmp_path / "x.inter", ["user_id:token\titem_id:token\trating:float\ttimestamp:float"]
                         + interaction_lines)
    item = _write_lines(tmp_path / "x.item", ["item_id:token\tmovie_title:token_seq\trelease_year:token\t"
                                              "class:token_seq", "1\tToy Story\t1995\tAnimation Comedy",
                                              "2\tHeat\t1995\tAction"])
    user = _write_lines(tmp_path / "x.user", ["user_id:token\tage:token", "u1\t30", "u2\t40"])
    return {"dataset.interactions.path": inter, "dataset.items.path": item, "dataset.users.path": user}


def test_too_many_bad_rows_fails_and_writes_nothing(spark, store, warehouse, tmp_path):
    files = _small_adapter(tmp_path, ["u1\t1\t5\t881250949", "u1\t7\t5\t881250949", "u2\t1\t5"])
    ctx = JobContext(spark, make_config(warehouse, **files), store)
    with pytest.raises(IngestError, match="interactions: 2 of 3 rows .*nothing was written"):
        ingest.run(ctx)
    assert not any(store.exists(t.name) for t in (S.EVENTS, S.ITEMS, S.USERS, S.QUARANTINE))


def test_run_writes_every_row_once_and_reruns_replace(spark, store, warehouse, tmp_path):
    files = _small_adapter(tmp_path, ["u1\t1\t5\t881250949", "u1\t1\t4\t881250949", "u2\t2\t3\t881337349",
                                      "u2\t9\t3\t881337349"])
    ctx = JobContext(spark, make_config(warehouse, **{"ingest.max_bad_ratio": 0.5, **files}), store)
    for _ in range(2):  # the rerun of the same date replaces, never duplicates
        rows = ingest.run(ctx)
        assert rows == {S.EVENTS.name: 2, S.ITEMS.name: 2, S.USERS.name: 2, S.QUARANTINE.name: 2}
        events = store.read(S.EVENTS.name).collect()
        assert sorted((e[S.USER_ID], e[S.ITEM_ID], e[S.VALUE], str(e[S.EVENT_DATE])) for e in events) == [
            ("u1", "1", 4.0, "1997-12-04"), ("u2", "2", 3.0, "1997-12-05")]
        quarantine = store.read(S.QUARANTINE.name).collect()
        assert sorted((q[S.SOURCE_TABLE], q[S.REASON], q[S.RUN_DATE]) for q in quarantine) == [
            ("interactions", ingest.DUPLICATE_EVENT, dt.date(2024, 1, 15)),
            ("interactions", ingest.ITEM_NOT_IN_CATALOG, dt.date(2024, 1, 15))]
    assert store.partition_columns(S.EVENTS.name) == [S.EVENT_MONTH]
    assert store.schema(S.QUARANTINE.name) == S.QUARANTINE.schema


# --- plausibility checks, empty input, drops ------------------------------------------------------

def _epoch(day: dt.date, hour: int = 12) -> int:
    return int((dt.datetime(day.year, day.month, day.day, hour) - dt.datetime(1970, 1, 1)).total_seconds())


def test_implausible_rows_get_their_own_reasons(spark, tmp_path):
    run_date = dt.date(2024, 1, 15)
    conf = IngestConf(event_types=["rating"], max_days_before_run_date=10, max_days_after_run_date=1,
                      min_value=1, max_value=5)
    lines = {
        f"u1\ti1\t{_epoch(dt.date(2024, 1, 5))}\t1\trating": None,                  # 10 days before: inside
        f"u1\ti1\t{_epoch(dt.date(2024, 1, 4))}\t3\trating": ingest.TIMESTAMP_OUT_OF_WINDOW,
        f"u1\ti1\t{_epoch(dt.date(2024, 1, 16), 23)}\t5\trating": None,             # 1 day after: inside
        f"u1\ti1\t{_epoch(dt.date(2024, 1, 17), 0)}\t3\trating": ingest.TIMESTAMP_OUT_OF_WINDOW,
        "u1\ti1\t0\t3\trating": ingest.TIMESTAMP_OUT_OF_WINDOW,                      # the epoch itself
        f"u\x01\x02\ti1\t{_epoch(run_date)}\t3\trating": ingest.USER_ID_CONTROL_CHARS,
        f"\x7f\ti1\t{_epoch(run_date)}\t3\trating": ingest.USER_ID_CONTROL_CHARS,    # DEL is a control char
        f"u2\ti\x1b[0m\t{_epoch(run_date)}\t3\trating": ingest.ITEM_ID_CONTROL_CHARS,
        f"u2\ti1\t{_epoch(run_date)}\t0\trating": ingest.VALUE_OUT_OF_RANGE,
        f"u2\ti1\t{_epoch(run_date)}\t5.5\trating": ingest.VALUE_OUT_OF_RANGE,
        f"u2\ti1\t{_epoch(run_date)}\t\trating": None,                                # no value: no range check
        f"u3 \ti1\t{_epoch(run_date)}\t2\trating": None,                              # trailing blank trimmed
    }
    path = _write_lines(tmp_path / "log.tsv", ["u\ti\tts\tr\ttype"] + list(lines))
    src = SourceConf(path=path, delimiter="\t", columns=EVENT_COLUMNS)
    out = ingest.classify_events(ingest.read_raw(spark, src), src, conf, run_date=run_date).collect()
    assert {r[S.RAW_RECORD]: r[S.REASON] for r in out} == lines
    assert sorted(r[S.USER_ID] for r in out if r[S.REASON] is None) == ["u1", "u1", "u2", "u3"]

    json_path = _write_lines(tmp_path / "log.jsonl", [json.dumps({"u": "\t \n", "i": "i1", "ts": 1705320000})],
                             crlf=False)
    src = SourceConf(path=json_path, format="json", constants={S.EVENT_TYPE: "rating"},
                     columns={S.USER_ID: "u", S.ITEM_ID: "i", "timestamp": "ts"})
    out = ingest.classify_events(ingest.read_raw(spark, src), src, conf, run_date=run_date).collect()
    assert [r[S.REASON] for r in out] == [ingest.MISSING_USER_ID]  # whitespace only: empty after trimming


def test_catalog_and_user_ids_with_control_characters(spark, tmp_path):
    items = SourceConf(path=_write_lines(tmp_path / "items.csv", ["id,title", "7,Heat", "8\x00,Heat 2"]),
                       columns={S.ITEM_ID: "id", S.TITLE: "title"})
    out = ingest.classify_items(ingest.read_raw(spark, items), items).collect()
    assert sorted((r[S.RAW_RECORD], r[S.REASON]) for r in out) == [
        ("7,Heat", None), ("8\x00,Heat 2", ingest.ITEM_ID_CONTROL_CHARS)]
    users = SourceConf(path=_write_lines(tmp_path / "users.csv", ["id,age", "a,30", "\x05,31"]),
                       columns={S.USER_ID: "id"})
    out = ingest.classify_users(ingest.read_raw(spark, users), users).collect()
    assert sorted((r[S.RAW_RECORD], r[S.REASON]) for r in out) == [
        ("\x05,31", ingest.USER_ID_CONTROL_CHARS), ("a,30", None)]


def test_empty_input_fails_before_any_write_unless_allowed(spark, store, warehouse, tmp_path):
    files = _small_adapter(tmp_path, [])  # header only
    ctx = JobContext(spark, make_config(warehouse, **files), store)
    with pytest.raises(IngestError, match=r"has no data rows \(empty or header only\); nothing was written.*"
                                          r"ingest.allow_empty_input=true"):
        ingest.run(ctx)
    assert not any(store.exists(t.name) for t in (S.EVENTS, S.ITEMS, S.USERS, S.QUARANTINE))

    ctx = JobContext(spark, make_config(warehouse, **{"ingest.allow_empty_input": "true", **files}), store)
    assert ingest.run(ctx) == {S.EVENTS.name: 0, S.ITEMS.name: 2, S.USERS.name: 2, S.QUARANTINE.name: 0}
    assert store.num_rows(S.EVENTS.name) == 0 and store.num_rows(S.ITEMS.name) == 2


def _events(store):
    return sorted((e[S.USER_ID], e[S.ITEM_ID], e[S.EVENT_TS], str(e[S.EVENT_DATE]))
                  for e in store.read(S.EVENTS.name).collect())


def test_drops_are_idempotent_and_late_events_are_added(spark, store, warehouse, tmp_path):
    d1, d2, d3 = dt.date(2024, 1, 13), dt.date(2024, 1, 14), dt.date(2024, 1, 15)
    drop1 = [f"u1\t1\t5\t{_epoch(d1)}", f"u2\t1\t4\t{_epoch(d1)}", f"u1\t2\t3\t{_epoch(d2)}"]
    # the next night: a late event of d1, one event already delivered by drop 1, one new of d3
    drop2 = [f"u2\t2\t4\t{_epoch(d1, 18)}", f"u1\t1\t5\t{_epoch(d1)}", f"u2\t1\t2\t{_epoch(d3)}"]
    (tmp_path / "1").mkdir(), (tmp_path / "2").mkdir()
    ctx1 = JobContext(spark, make_config(warehouse, **_small_adapter(tmp_path / "1", drop1)), store)
    ctx2 = JobContext(spark, make_config(warehouse, **{"run.date": "2024-01-16",
                                                       **_small_adapter(tmp_path / "2", drop2)}), store)
    first = {("u1", "1", _ts(_epoch(d1)), str(d1)), ("u2", "1", _ts(_epoch(d1)), str(d1)),
             ("u1", "2", _ts(_epoch(d2)), str(d2))}

    assert ingest.run(ctx1)[S.EVENTS.name] == 3
    assert _events(store) == sorted(first) and store.latest_version(S.EVENTS.name) == 0
    files = store.active_files(S.EVENTS.name)
    ingest.run(ctx1)  # the same drop again: a version that adds no file
    assert _events(store) == sorted(first) and store.active_files(S.EVENTS.name) == files

    assert ingest.run(ctx2)[S.EVENTS.name] == 3
    late = {("u2", "2", _ts(_epoch(d1, 18)), str(d1)), ("u2", "1", _ts(_epoch(d3)), str(d3))}
    assert _events(store) == sorted(first | late)  # d1 keeps drop 1's events and gains the late one
    assert store.num_rows(S.EVENTS.name) == 5
    files = store.active_files(S.EVENTS.name)
    ingest.run(ctx2)
    ingest.run(ctx1)
    assert _events(store) == sorted(first | late) and store.active_files(S.EVENTS.name) == files


def test_events_are_monthly_files_and_crowded_months_get_compacted(spark, store, warehouse, tmp_path):
    # a backfill of three months: one file per month; then nightly drops add one file each to January
    backfill = [f"u{i}\t1\t5\t{_epoch(dt.date(2023, 11 + i % 3, 1) if i % 3 < 2 else dt.date(2024, 1, 1))}"
                for i in range(6)]
    (tmp_path / "b").mkdir()
    conf = {"storage.compact_min_files": 3, "ingest.max_days_after_run_date": 30}
    assert ingest.run(JobContext(spark, make_config(warehouse, **conf, **_small_adapter(tmp_path / "b", backfill)),
                                 store))[S.EVENTS.name] == 6
    months = [parts[S.EVENT_MONTH] for _, parts in store._files_by_partition(S.EVENTS.name, [S.EVENT_MONTH])]
    assert sorted(months) == ["2023-11", "2023-12", "2024-01"]
    for night in (2, 3):
        (tmp_path / str(night)).mkdir()
        drop = _small_adapter(tmp_path / str(night), [f"u9\t2\t4\t{_epoch(dt.date(2024, 1, night))}"])
        ingest.run(JobContext(spark, make_config(warehouse, **conf, **drop), store))
    before_compaction = store.latest_version(S.EVENTS.name) - 1
    january = [u for u, parts in store._files_by_partition(S.EVENTS.name, [S.EVENT_MONTH])
               if parts[S.EVENT_MONTH] == "2024-01"]
    assert len(january) == 1  # the third file of January triggered its compaction
    assert store.history(S.EVENTS.name)[0]["operation"] == "OPTIMIZE"
    assert _events(store) == sorted(
        (e[S.USER_ID], e[S.ITEM_ID], e[S.EVENT_TS], str(e[S.EVENT_DATE]))
        for e in store.read(S.EVENTS.name, version=before_compaction).collect())  # same rows, fewer files
    assert store.num_rows(S.EVENTS.name) == 8


def test_events_table_of_the_old_daily_layout_is_refused_before_any_read(spark, store, warehouse, tmp_path):
    (tmp_path / "a").mkdir()
    adapter = _small_adapter(tmp_path / "a", [f"u1\t1\t5\t{_epoch(dt.date(2024, 1, 1))}"])
    ingest.run(JobContext(spark, make_config(warehouse, **adapter), store))
    old_warehouse = str(tmp_path / "old")
    old_store = DeltaStore(spark, old_warehouse, backend="delta-rs", run_id="test-run")
    old_store.write(store.read(S.EVENTS.name).drop(S.EVENT_MONTH), S.EVENTS.name,
                    partition_by=[S.EVENT_DATE])  # what versions before issue 10 wrote
    (tmp_path / "b").mkdir()
    drop = _small_adapter(tmp_path / "b", [f"u2\t1\t4\t{_epoch(dt.date(2024, 1, 2))}"])
    with pytest.raises(StorageError, match=r"partitioned by \['event_date'\].*new storage.warehouse"):
        ingest.run(JobContext(spark, make_config(old_warehouse, **drop), old_store))
