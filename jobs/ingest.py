"""Ingest: raw interaction logs, item catalog and user table -> events, items, users, quarantine.

Every input row lands in exactly one place: a validated table or ``quarantine`` with its raw text
and the first reason it failed. Delimited files are read as text lines and split on the delimiter
(no quote handling: MovieLens and log exports do not quote; send quoted CSV as JSON lines or
Parquet), so a malformed line is kept verbatim. A ``\\r`` at line end is stripped and the header
line of every file is dropped (all files of one source share it).

Above ``ingest.max_bad_ratio`` of quarantined rows in any source, or with an interactions input
without data rows (unless ``ingest.allow_empty_input``), the job raises :class:`IngestError`
before writing anything.

Events are appended per drop, deduplicated on EVENT_KEY against the events already in the table:
a rerun of the same drop adds nothing, and a later drop's late events of earlier dates are added.
"""
from __future__ import annotations

import datetime as dt
import logging
from typing import Dict, List, Optional

from pyspark import StorageLevel
from pyspark.sql import Column, DataFrame, SparkSession, Window
from pyspark.sql import functions as F
from pyspark.sql import types as T

from libs import schema as S
from libs.conf import Config, IngestConf, SourceConf, StorageConf
from libs.contract import conform_exact
from libs.datasets import resolve_path
from libs.log import step
from libs.runtime import JobContext, job_main
from libs.storage import NO_TABLE, StorageError

log = logging.getLogger(__name__)

INTERACTIONS, CATALOG, USER_TABLE = "interactions", "items", "users"   # SOURCE_TABLE values
TIMESTAMP = "timestamp"          # adapter key of the event time column (parsed into EVENT_TS)
RECORD = "_record"               # map<string,string>: source column -> raw value
MALFORMED = "_malformed"

MALFORMED_LINE = "malformed_line"
MISSING_USER_ID = "missing_user_id"
MISSING_ITEM_ID = "missing_item_id"
UNPARSEABLE_TIMESTAMP = "unparseable_timestamp"
UNKNOWN_EVENT_TYPE = "unknown_event_type"
UNPARSEABLE_VALUE = "unparseable_value"
ITEM_NOT_IN_CATALOG = "item_not_in_catalog"
USER_ID_CONTROL_CHARS = "user_id_has_control_characters"
ITEM_ID_CONTROL_CHARS = "item_id_has_control_characters"
TIMESTAMP_OUT_OF_WINDOW = "timestamp_outside_plausible_window"
VALUE_OUT_OF_RANGE = "value_out_of_range"
DUPLICATE_EVENT = "duplicate_event"
DUPLICATE_ITEM_ID = "duplicate_item_id"
DUPLICATE_USER_ID = "duplicate_user_id"

EVENTS_ADDED = "events_added"    # logged: events of the drop that no earlier drop delivered
EVENT_KEY = [S.USER_ID, S.ITEM_ID, S.EVENT_TS, S.EVENT_TYPE]
_CONTROL_CHARS = r"\p{Cc}"      # Java regex: C0/C1 control characters (what no real id holds)
_YEAR_IN_TITLE = r"\((\d{4})\)\s*$"


class IngestError(RuntimeError):
    """The input is unusable: too many bad rows, no rows, an adapter that does not match, lost rows."""


# --- extract: raw records of any format -------------------------------------------------------

def read_raw(spark: SparkSession, src: SourceConf) -> DataFrame:
    """One row per input record: RAW_RECORD, SOURCE_FILE, MALFORMED and RECORD (column -> text)."""
    path = resolve_path(src.path)
    if src.format == "parquet":
        table = spark.read.parquet(path)
        return table.select(
            F.to_json(F.struct(*table.columns)).alias(S.RAW_RECORD),
            F.input_file_name().alias(S.SOURCE_FILE), F.lit(False).alias(MALFORMED),
            F.create_map(*[x for c in table.columns for x in (F.lit(c), F.col(c).cast("string"))])
            .alias(RECORD))
    lines = spark.read.text(path).select(F.regexp_replace("value", "\r$", "").alias(S.RAW_RECORD),
                                         F.input_file_name().alias(S.SOURCE_FILE))
    if src.format == "json":
        record = F.from_json(S.RAW_RECORD, T.MapType(T.StringType(), T.StringType()))
        return lines.select("*", record.isNull().alias(MALFORMED), record.alias(RECORD))
    return parse_delimited(lines, src)


def parse_delimited(lines: DataFrame, src: SourceConf) -> DataFrame:
    """Split RAW_RECORD lines on ``src.delimiter``; a line with another field count is malformed."""
    first = lines.select(S.RAW_RECORD).first()
    if first is None:
        names: List[str] = list(src.columns.values())
    elif src.header:
        names = first[0].split(src.delimiter)
        lines = lines.where(F.col(S.RAW_RECORD) != first[0])
    else:
        names = [f"_c{i}" for i in range(len(first[0].split(src.delimiter)))]
    unknown = sorted(set(src.columns.values()) - set(names))
    if unknown:
        raise IngestError(f"{src.path}: adapter columns {unknown} are not in the header {names}")
    fields = F.split(S.RAW_RECORD, r"\Q" + src.delimiter + r"\E", -1)
    malformed = F.size(fields) != len(names)
    record = F.when(~malformed, F.map_from_arrays(F.array(*[F.lit(n) for n in names]), fields))
    return lines.select("*", malformed.alias(MALFORMED), record.alias(RECORD))


def source_field(src: SourceConf, ours: str) -> Column:
    """Our column ``ours`` as text trimmed of whitespace: a constant, the mapped source column, or
    null; '' -> null."""
    if ours in src.constants:
        return F.lit(src.constants[ours])
    if ours not in src.columns:
        return F.lit(None).cast("string")
    text = F.regexp_replace(F.col(RECORD).getItem(src.columns[ours]), r"^\s+|\s+$", "")
    return F.when(text != "", text)


def attributes(src: SourceConf) -> Column:
    """The source columns the adapter does not map, kept as a string map."""
    mapped = list(src.columns.values())
    return F.map_filter(F.col(RECORD), lambda k, v: ~k.isin(mapped) if mapped else F.lit(True))


def parse_timestamp(text: Column, fmt: str) -> Column:
    """Epoch seconds / milliseconds (integer or decimal text) or ISO-8601 -> timestamp; bad -> null."""
    if fmt == "iso":
        return F.to_timestamp(text)
    seconds = text.cast("double")
    if fmt == "epoch_millis":
        seconds = seconds / 1000.0
    # NaN, infinities and years past 9999 would overflow the timestamp: treat them as unparseable
    return F.when(F.abs(seconds) < 253402300800.0, F.timestamp_seconds(seconds))


# --- transform --------------------------------------------------------------------------------

def _has_control_chars(column: str) -> Column:
    return F.coalesce(F.col(column).rlike(_CONTROL_CHARS), F.lit(False))


def _first_failure(checks) -> Column:
    """The reason of the first true condition in ``checks`` (reason, condition), else null."""
    reason = F.lit(None).cast("string")
    for name, condition in reversed(checks):
        reason = F.when(condition, F.lit(name)).otherwise(reason)
    return reason


def _mark_duplicates(df: DataFrame, key: List[str], reason: str) -> DataFrame:
    """Keep one row per ``key`` among valid rows (the first by source file and raw text)."""
    order = Window.partitionBy(*key, F.col(S.REASON).isNull()).orderBy(S.SOURCE_FILE, S.RAW_RECORD)
    duplicate = F.col(S.REASON).isNull() & (F.row_number().over(order) > 1)
    return df.withColumn(S.REASON, F.when(duplicate, F.lit(reason)).otherwise(F.col(S.REASON)))


def classify_events(raw: DataFrame, src: SourceConf, conf: IngestConf,
                    catalog_ids: Optional[DataFrame] = None, run_date: Optional[dt.date] = None) -> DataFrame:
    """Typed event columns plus REASON (null for a valid row) for every raw interaction record.

    Checks in order, the first failure wins: malformed_line, missing_user_id (also: blank after
    trimming), missing_item_id, user_id / item_id_has_control_characters, unparseable_timestamp,
    timestamp_outside_plausible_window (event date before ``run_date`` - max_days_before_run_date or
    after ``run_date`` + max_days_after_run_date; when ``run_date`` is given), unknown_event_type,
    unparseable_value, value_out_of_range (outside [min_value, max_value]), item_not_in_catalog
    (when ``catalog_ids`` is given), duplicate_event (same user, item, timestamp and event type: the
    first by source file and raw text is kept).
    """
    df = raw.select(S.RAW_RECORD, S.SOURCE_FILE, MALFORMED,
                    *[source_field(src, c).alias(c) for c in (S.USER_ID, S.ITEM_ID, TIMESTAMP,
                                                              S.EVENT_TYPE, S.VALUE)])
    df = (df.withColumn(S.EVENT_TS, parse_timestamp(F.col(TIMESTAMP), src.timestamp_format))
          .withColumn("_value", F.col(S.VALUE).cast("double")))
    if catalog_ids is not None:
        known = catalog_ids.select(F.col(S.ITEM_ID), F.lit(True).alias("_in_catalog")).distinct()
        df = df.join(known, S.ITEM_ID, "left")
    checks = [
        (MALFORMED_LINE, F.col(MALFORMED)),
        (MISSING_USER_ID, F.col(S.USER_ID).isNull()),
        (MISSING_ITEM_ID, F.col(S.ITEM_ID).isNull()),
        (USER_ID_CONTROL_CHARS, _has_control_chars(S.USER_ID)),
        (ITEM_ID_CONTROL_CHARS, _has_control_chars(S.ITEM_ID)),
        (UNPARSEABLE_TIMESTAMP, F.col(S.EVENT_TS).isNull()),
    ]
    if run_date is not None:
        first = run_date - dt.timedelta(days=conf.max_days_before_run_date)
        last = run_date + dt.timedelta(days=conf.max_days_after_run_date)
        event_date = F.to_date(S.EVENT_TS)
        checks.append((TIMESTAMP_OUT_OF_WINDOW, (event_date < F.lit(first)) | (event_date > F.lit(last))))
    checks += [
        (UNKNOWN_EVENT_TYPE, ~F.coalesce(F.col(S.EVENT_TYPE).isin(conf.event_types), F.lit(False))),
        (UNPARSEABLE_VALUE, F.col(S.VALUE).isNotNull() & (F.col("_value").isNull() | F.isnan("_value"))),
    ]
    if conf.min_value is not None:
        checks.append((VALUE_OUT_OF_RANGE, F.col("_value") < F.lit(conf.min_value)))
    if conf.max_value is not None:
        checks.append((VALUE_OUT_OF_RANGE, F.col("_value") > F.lit(conf.max_value)))
    if catalog_ids is not None:
        checks.append((ITEM_NOT_IN_CATALOG, F.col("_in_catalog").isNull()))
    df = _mark_duplicates(df.withColumn(S.REASON, _first_failure(checks)), EVENT_KEY, DUPLICATE_EVENT)
    return df.select(S.USER_ID, S.ITEM_ID, S.EVENT_TS, S.EVENT_TYPE, F.col("_value").alias(S.VALUE),
                     S.SOURCE_FILE, S.RAW_RECORD, S.REASON)


def classify_items(raw: DataFrame, src: SourceConf) -> DataFrame:
    """Catalog rows typed (title, genres array, int year, other columns as attributes) plus REASON.

    Reasons: malformed_line, missing_item_id, item_id_has_control_characters, duplicate_item_id (the
    first by file and text is kept).
    The year accepts ``1995`` or ``1995.0``; anything else is a null year, not a bad row.
    """
    title = source_field(src, S.TITLE)
    year_text = source_field(src, S.YEAR)
    if S.YEAR not in src.columns and src.year_from_title:
        year_text = F.regexp_extract(F.coalesce(title, F.lit("")), _YEAR_IN_TITLE, 1)
    genres = F.filter(F.split(F.coalesce(source_field(src, S.GENRES), F.lit("")),
                              r"\Q" + src.list_delimiter + r"\E", -1), lambda g: g != "")
    df = raw.select(S.RAW_RECORD, S.SOURCE_FILE, source_field(src, S.ITEM_ID).alias(S.ITEM_ID),
                    title.alias(S.TITLE), genres.alias(S.GENRES),
                    year_text.cast("double").cast("int").alias(S.YEAR), attributes(src).alias(S.ATTRIBUTES),
                    _first_failure([(MALFORMED_LINE, F.col(MALFORMED)),
                                    (MISSING_ITEM_ID, source_field(src, S.ITEM_ID).isNull())]).alias(S.REASON))
    df = df.withColumn(S.REASON, F.coalesce(S.REASON, F.when(_has_control_chars(S.ITEM_ID),
                                                             F.lit(ITEM_ID_CONTROL_CHARS))))
    return _mark_duplicates(df, [S.ITEM_ID], DUPLICATE_ITEM_ID)


def classify_users(raw: DataFrame, src: SourceConf) -> DataFrame:
    """User rows (id + other columns as attributes) plus REASON: malformed_line, missing_user_id,
    user_id_has_control_characters, duplicate_user_id."""
    df = raw.select(S.RAW_RECORD, S.SOURCE_FILE, source_field(src, S.USER_ID).alias(S.USER_ID),
                    attributes(src).alias(S.ATTRIBUTES),
                    _first_failure([(MALFORMED_LINE, F.col(MALFORMED)),
                                    (MISSING_USER_ID, source_field(src, S.USER_ID).isNull())]).alias(S.REASON))
    df = df.withColumn(S.REASON, F.coalesce(S.REASON, F.when(_has_control_chars(S.USER_ID),
                                                             F.lit(USER_ID_CONTROL_CHARS))))
    return _mark_duplicates(df, [S.USER_ID], DUPLICATE_USER_ID)


def to_events(classified: DataFrame, run_id: str) -> DataFrame:
    valid = classified.where(F.col(S.REASON).isNull())
    return S.conform(valid.withColumn(S.RUN_ID, F.lit(run_id))
                     .withColumn(S.EVENT_DATE, F.to_date(S.EVENT_TS))
                     .withColumn(S.EVENT_MONTH, F.date_format(S.EVENT_DATE, "yyyy-MM"))
                     .drop(S.RAW_RECORD, S.REASON), S.EVENTS)


def to_quarantine(classified: DataFrame, source_table: str, run_id: str, run_date) -> DataFrame:
    bad = classified.where(F.col(S.REASON).isNotNull())
    return S.conform(bad.select(F.lit(source_table).alias(S.SOURCE_TABLE), S.RAW_RECORD, S.REASON,
                                S.SOURCE_FILE, F.lit(run_id).alias(S.RUN_ID),
                                F.lit(run_date).cast("date").alias(S.RUN_DATE)), S.QUARANTINE)


def check_bad_ratio(source_table: str, reason_counts: Dict[Optional[str], int], max_bad_ratio: float) -> None:
    """Raise :class:`IngestError` when the quarantined share of ``source_table`` exceeds the limit."""
    total = sum(reason_counts.values())
    bad = total - reason_counts.get(None, 0)
    if total and bad / total > max_bad_ratio:
        reasons = ", ".join(f"{k}={v:,}" for k, v in sorted(reason_counts.items(), key=str) if k)
        raise IngestError(f"{source_table}: {bad:,} of {total:,} rows ({bad / total:.2%}) are bad, above "
                          f"ingest.max_bad_ratio={max_bad_ratio:.2%} ({reasons}); nothing was written")


# --- job --------------------------------------------------------------------------------------

def extract(spark: SparkSession, cfg: Config) -> Dict[str, DataFrame]:
    """Raw records per source table (users only when the adapter has a user table)."""
    sources = {INTERACTIONS: cfg.dataset.interactions, CATALOG: cfg.dataset.items}
    if cfg.dataset.users is not None:
        sources[USER_TABLE] = cfg.dataset.users
    return {name: read_raw(spark, src) for name, src in sources.items()}


def transform(raw: Dict[str, DataFrame], cfg: Config) -> Dict[str, DataFrame]:
    """Classified rows (typed columns + REASON) per source table."""
    items = classify_items(raw[CATALOG], cfg.dataset.items)
    catalog_ids = None
    if cfg.ingest.require_item_in_catalog:
        catalog_ids = items.where(F.col(S.REASON).isNull()).select(S.ITEM_ID)
    out = {CATALOG: items,
           INTERACTIONS: classify_events(raw[INTERACTIONS], cfg.dataset.interactions, cfg.ingest, catalog_ids,
                                         cfg.run_date)}
    if USER_TABLE in raw:
        out[USER_TABLE] = classify_users(raw[USER_TABLE], cfg.dataset.users)
    return out


def validate_counts(raw: Dict[str, DataFrame], classified: Dict[str, DataFrame],
                    max_bad_ratio: float) -> Dict[str, Dict[Optional[str], int]]:
    """Rows per reason (None: valid) for every source.

    Raises :class:`IngestError` unless input rows == valid + quarantined rows (a join that lost or
    duplicated rows), or when a source's quarantined share is above ``max_bad_ratio``.
    """
    counts = {}
    for name, df in classified.items():
        by_reason = {r[S.REASON]: r["count"] for r in df.groupBy(S.REASON).count().collect()}
        total, valid = raw[name].count(), by_reason.get(None, 0)
        bad = sum(by_reason.values()) - valid
        if valid + bad != total:
            raise IngestError(f"{name}: {total:,} input rows != {valid:,} valid + {bad:,} quarantined")
        log.info("%s: %s input rows = %s valid + %s quarantined %s", name, f"{total:,}", f"{valid:,}",
                 f"{bad:,}", {k: v for k, v in by_reason.items() if k})
        counts[name] = by_reason
    for name, by_reason in counts.items():
        check_bad_ratio(name, by_reason, max_bad_ratio)
    return counts


def check_not_empty(input_rows: int, conf: IngestConf, path: str) -> None:
    """Raise :class:`IngestError` for an interactions input without data rows, unless allowed."""
    if input_rows == 0 and not conf.allow_empty_input:
        raise IngestError(f"interactions input {path} has no data rows (empty or header only); nothing was "
                          "written. If this night truly had no events, rerun with "
                          "--set ingest.allow_empty_input=true")


def new_events(batch: DataFrame, existing: DataFrame) -> DataFrame:
    """The rows of ``batch`` whose EVENT_KEY is not among ``existing``'s (earlier drops' events)."""
    return batch.join(existing.select(*EVENT_KEY), EVENT_KEY, "left_anti")


def require_current_layout(store) -> None:
    """Stop before anything is read if the events table has another partitioning (before issue 10
    it was partitioned by event_date: thousands of tiny files for a log of years)."""
    found, wanted = store.partition_columns(S.EVENTS.name), list(S.EVENTS.partition_by)
    if found != wanted:
        raise StorageError(
            f"the events table at {store.path(S.EVENTS.name)} is partitioned by {found}; this version lays events "
            f"out by {wanted} (README, 'Storage layout'). Ingest the raw drops again into a new storage.warehouse "
            f"(ingest is idempotent; a folder of drops is read in one run), or move the old events table aside")


def append_new_events(store, events: DataFrame, conf: StorageConf) -> int:
    """Append the events no earlier drop delivered; return how many were committed.

    The batch is anti-joined with the table's rows of the batch's months at the latest version,
    and committed on top of exactly that version: a concurrent ingest that committed in between
    makes this write fail with ConcurrentWriteError instead of adding its rows twice. A drop with
    nothing new commits an empty append (a version that adds no file), so every ingest run records
    the events version it left. Files: the batch is range-partitioned by (month, time) into one
    task per ``conf.rows_per_file`` rows, so a backfill of years writes about one file per month
    and a nightly drop one file; months left with ``conf.compact_min_files`` files are compacted.
    """
    base = store.latest_version(S.EVENTS.name)
    if base is not None:
        require_current_layout(store)
    months = sorted(r[0] for r in events.select(S.EVENT_MONTH).distinct().collect())
    if base is not None:
        existing = store.read(S.EVENTS.name, version=base, partitions={S.EVENT_MONTH: months})
        events = new_events(events, existing)
    new = conform_exact(events, S.EVENTS).persist(StorageLevel.MEMORY_AND_DISK)
    try:
        count = new.count()
        if count == 0 and base is not None:
            log.info("events: every event of this drop is already in version %d; no file added", base)
        tasks = max(1, -(-count // conf.rows_per_file))
        laid_out = (new.repartitionByRange(tasks, S.EVENT_MONTH, S.EVENT_TS)
                    .sortWithinPartitions(S.EVENT_MONTH, S.EVENT_TS))
        store.write(laid_out, S.EVENTS.name, mode="append", partition_by=S.EVENTS.partition_by,
                    expected_rows=count, base_version=NO_TABLE if base is None else base)
    finally:
        new.unpersist()
    store.compact(S.EVENTS.name, S.EVENT_MONTH, months, conf.compact_min_files, conf.target_file_mb << 20)
    return count


def load(ctx: JobContext, classified: Dict[str, DataFrame]) -> int:
    """Write every table; returns the number of events this drop added to ``events``."""
    cfg, store, run_id = ctx.cfg, ctx.store, ctx.cfg.run.run_id
    added = append_new_events(store, to_events(classified[INTERACTIONS], run_id), cfg.storage)
    for name, spec in ((CATALOG, S.ITEMS), (USER_TABLE, S.USERS)):
        if name in classified:
            valid = classified[name].where(F.col(S.REASON).isNull())
            store.write(conform_exact(S.conform(valid, spec, strict=False), spec).coalesce(1), spec.name)
    quarantine = None
    for name, df in classified.items():
        part = to_quarantine(df, name, run_id, cfg.run_date)
        quarantine = part if quarantine is None else quarantine.unionByName(part)
    store.write(conform_exact(quarantine, S.QUARANTINE).coalesce(1), S.QUARANTINE.name,
                partition_by=S.QUARANTINE.partition_by, replace_where={S.RUN_DATE: [cfg.run.date]})
    return added


def run(ctx: JobContext) -> Dict[str, int]:
    persisted: List[DataFrame] = []

    def keep(df: DataFrame) -> DataFrame:
        persisted.append(df.persist(StorageLevel.MEMORY_AND_DISK))
        return df

    try:
        with step(log, "ingest.extract") as st:
            raw = {name: keep(df) for name, df in extract(ctx.spark, ctx.cfg).items()}
            for name, df in raw.items():
                st.add(name, df.count())
            check_not_empty(st.rows[INTERACTIONS], ctx.cfg.ingest, ctx.cfg.dataset.interactions.path)
        with step(log, "ingest.validate") as st:
            classified = {name: keep(df) for name, df in transform(raw, ctx.cfg).items()}
            counts = validate_counts(raw, classified, ctx.cfg.ingest.max_bad_ratio)
            for name, by_reason in counts.items():
                st.add(f"{name}.bad", sum(v for k, v in by_reason.items() if k))
        with step(log, "ingest.load") as st:
            added = load(ctx, classified)
            # events: the drop's valid events (all in the table now); events_added: those no earlier drop had
            st.add(EVENTS_ADDED, added)
            rows = {S.EVENTS.name: counts[INTERACTIONS].get(None, 0), S.ITEMS.name: counts[CATALOG].get(None, 0),
                    S.QUARANTINE.name: sum(v for by in counts.values() for k, v in by.items() if k)}
            if USER_TABLE in counts:
                rows[S.USERS.name] = counts[USER_TABLE].get(None, 0)
            for name, count in rows.items():
                st.add(name, count)
        return rows
    finally:
        for df in persisted:
            df.unpersist()


def main(argv=None) -> Dict[str, int]:
    return job_main("ingest: raw logs -> events, items, users, quarantine", run, argv)


if __name__ == "__main__":
    main()
