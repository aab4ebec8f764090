"""Delta tables of the warehouse, with two backends behind one small API.

* ``spark``: Spark's own Delta writer/reader, used when the Delta Lake classes are on the JVM
  classpath (clusters that ship the delta-spark jars).
* ``delta-rs`` (the embedded default): executors write Parquet with Spark's writer into a staging
  folder of their own (``<table>/_staging/<write id>/``, so Spark's job commit never sees another
  write's task output); the driver moves exactly those files into the table's Hive layout, checks
  their row count (Parquet footers) against what the caller meant to write, and commits them to
  the Delta log in one transaction with the ``deltalake`` package.

Exactly-once commits (delta-rs): a write commits only the files its own Spark job produced. Each
commit names the table version it was computed from (``base_version``, default: the latest version
when the write starts) and is refused with :class:`ConcurrentWriteError` when another writer
committed after that version (Delta's optimistic concurrency with no silent retry), so two writers
are never merged. Files of a write that dies before its commit are never in the log: its staging
folder is removed by the next write to the table once its process is gone (same host) or after
:data:`STALE_STAGING_HOURS`, and files moved out of it by :meth:`DeltaStore.vacuum`.

Pins: a pipeline run sets ``store.pins`` (table -> version); reads without an explicit version use
the pinned version, and every write pins the version it committed. ``store.reads`` and
``store.writes`` record the versions used, for the run's bookkeeping.

Both backends produce standard Delta tables; reads go through the Delta log (``deltalake`` lists
the active files of a version and Spark reads them), so time travel works the same for both.
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import socket
import time
import uuid
from typing import Dict, Iterable, List, Optional, Sequence
from urllib.parse import quote, unquote, urlparse

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from libs.conf import join_path

log = logging.getLogger(__name__)

HIVE_NULL = "__HIVE_DEFAULT_PARTITION__"
MODES = ("overwrite", "append", "overwrite_partitions")
NO_TABLE = -1                   # base_version of a write that expects to create the table
STAGING_DIR = "_staging"        # <table>/_staging/<write id>/: one write's Spark output before commit
SPARK_TEMP_DIR = "_temporary"   # what Spark's committer leaves in a folder when its job dies
STALE_STAGING_HOURS = 24        # staging folders of other hosts (or remote storage) older than this are dead
PAUSE_ENV = "NIGHTREC_PAUSE_BEFORE_COMMIT"  # fault injection for tests: "<table>:<seconds>"
_WRITE_ID = re.compile(r"^(?P<ms>\d+)-(?P<uid>[0-9a-f]+)-(?P<pid>\d+)-(?P<host>.+)$")


class StorageError(RuntimeError):
    """A table operation failed, with the table and the reason."""


class ConcurrentWriteError(StorageError):
    """Another writer committed to the table after the version this write was computed from;
    nothing of this write was committed. Rerun once the other writer has finished."""


def delta_classes_on_classpath(spark: SparkSession) -> bool:
    try:
        spark._jvm.java.lang.Class.forName("io.delta.tables.DeltaTable")
        return True
    except Exception:  # py4j raises a Py4JJavaError wrapping ClassNotFoundException
        return False


def to_uri(path: str) -> str:
    """Local paths become absolute ``file://`` URIs; URIs (s3a://, hdfs://, file:) pass through."""
    if urlparse(path).scheme:
        return path
    return "file://" + os.path.abspath(path)


def local_path(uri: str) -> Optional[str]:
    """The local filesystem path of a ``file://`` URI or plain path; None for remote URIs."""
    parsed = urlparse(uri)
    return unquote(parsed.path) if parsed.scheme in ("", "file") else None


def _partition_values(relative_path: str, partition_by: Sequence[str]) -> Dict[str, Optional[str]]:
    values = {}
    for segment in relative_path.split("/")[:-1]:
        if "=" in segment:
            key, raw = segment.split("=", 1)
            value = unquote(raw)  # Spark escapes partition values Hive-style (%XX)
            values[key] = None if value == HIVE_NULL else value
    missing = [c for c in partition_by if c not in values]
    if missing:
        raise StorageError(f"file {relative_path} lacks partition directories for {missing}")
    return {c: values[c] for c in partition_by}


def added_columns(table: str, existing: T.StructType, incoming: T.StructType) -> List[T.StructField]:
    """The columns a write that keeps the table's other rows adds to its schema.

    Such a write may widen the table by new *nullable* columns only: the rows already there read
    them as null. A column the write lacks, a changed type, or a new non-nullable column (the old
    rows could not honour it) raise :class:`StorageError` before anything is written.
    """
    have = {f.name: f for f in incoming.fields}
    missing = [f.name for f in existing.fields if f.name not in have]
    changed = [f"{f.name}: {f.dataType.simpleString()} -> {have[f.name].dataType.simpleString()}"
               for f in existing.fields if f.name in have
               and f.dataType.simpleString() != have[f.name].dataType.simpleString()]
    names = set(existing.fieldNames())
    added = [f for f in incoming.fields if f.name not in names]
    required = [f.name for f in added if not f.nullable]
    problems = ([f"lacks column(s) {missing}"] if missing else []) + \
               ([f"changes type(s) {changed}"] if changed else []) + \
               ([f"adds non-nullable column(s) {required}, which the table's existing rows have no value "
                 "for (declare them nullable)"] if required else [])
    if problems:
        raise StorageError(f"table {table}: the write {'; '.join(problems)}. A write that keeps existing rows may "
                           "only add nullable columns; nothing was written")
    return added


def _sql_literal(value) -> str:
    return "'" + str(value).replace("'", "''") + "'"


def _new_write_id() -> str:
    """``<ms>-<random>-<pid>-<host>``: unique, and tells a later write whether its owner is alive."""
    return f"{int(time.time() * 1000)}-{uuid.uuid4().hex[:12]}-{os.getpid()}-{socket.gethostname()}"


def _owner_is_dead(write_id: str, now_ms: int) -> bool:
    """A staging folder's write is dead: its process is gone (same host), or it is stale."""
    match = _WRITE_ID.match(write_id)
    if match is None:
        return True
    if match["host"] == socket.gethostname():
        try:
            os.kill(int(match["pid"]), 0)
        except ProcessLookupError:
            return True
        except PermissionError:  # alive, another user's
            return False
        return False
    return now_ms - int(match["ms"]) > STALE_STAGING_HOURS * 3600 * 1000


def _pause_before_commit(table: str) -> None:
    """Hold a write whose files are staged but not committed (``NIGHTREC_PAUSE_BEFORE_COMMIT=
    <table>:<seconds>``), so fault tests can kill or race it at that exact moment."""
    spec = os.environ.get(PAUSE_ENV, "")
    name, _, seconds = spec.partition(":")
    if name == table:
        log.warning("%s: pausing %ss before the commit of %s", PAUSE_ENV, seconds, table)
        time.sleep(float(seconds or 0))


class DeltaStore:
    """Read and write the Delta tables under one warehouse root."""

    def __init__(self, spark: SparkSession, warehouse: str, backend: str = "auto",
                 run_id: Optional[str] = None):
        if backend not in ("auto", "spark", "delta-rs"):
            raise ValueError(f"unknown storage backend {backend!r}")
        self.spark = spark
        self.root = to_uri(warehouse)
        if backend == "auto":
            backend = "spark" if delta_classes_on_classpath(spark) else "delta-rs"
        if backend == "spark" and not delta_classes_on_classpath(spark):
            raise StorageError("storage.backend=spark but the Delta Lake classes are not on the classpath "
                               "(add the delta-spark jars, or use storage.backend=delta-rs)")
        self.backend = backend
        self.run_id = run_id
        self.pins: Dict[str, int] = {}     # table -> version that reads without a version use
        self.reads: Dict[str, int] = {}    # table -> version last read (bookkeeping)
        self.writes: Dict[str, int] = {}   # table -> version last committed (bookkeeping)
        log.info("delta store at %s (backend %s)", self.root, self.backend)

    @classmethod
    def from_config(cls, spark: SparkSession, cfg) -> "DeltaStore":
        return cls(spark, cfg.storage.warehouse, cfg.storage.backend, cfg.run.run_id)

    # --- paths and log ------------------------------------------------------------------

    def path(self, table: str) -> str:
        return join_path(self.root, table)

    def _delta_table(self, table: str, version: Optional[int] = None):
        from deltalake import DeltaTable

        try:
            return DeltaTable(self.path(table), version=version)
        except Exception as exc:  # TableNotFoundError, or a version that does not exist
            if not self.exists(table):
                raise StorageError(f"table {table} does not exist at {self.path(table)}") from exc
            raise StorageError(f"table {table}: cannot load version {version}: {exc}") from exc

    def exists(self, table: str) -> bool:
        from deltalake import DeltaTable

        return DeltaTable.is_deltatable(self.path(table))

    def latest_version(self, table: str) -> Optional[int]:
        """The newest committed version (ignoring pins), or None if the table does not exist."""
        return self._delta_table(table).version() if self.exists(table) else None

    def partition_columns(self, table: str) -> List[str]:
        """The partition columns of an existing table, from its log's metadata."""
        return list(self._delta_table(table).metadata().partition_columns)

    def version(self, table: str) -> Optional[int]:
        """The version reads use: the pinned one, else the latest; None if the table does not exist."""
        return self.pins[table] if table in self.pins else self.latest_version(table)

    def _resolve(self, table: str, version: Optional[int]) -> Optional[int]:
        return self.pins.get(table) if version is None else version

    def active_files(self, table: str, version: Optional[int] = None) -> List[str]:
        """Absolute URIs of the Parquet files that make up ``version`` (default: pinned, else latest).

        The log stores percent-encoded relative paths and delta-rs returns them as stored, so
        they are decoded here into the names on the filesystem that Spark and Petastorm open.
        Local files come back as bare paths from delta-rs; Petastorm needs ``file://`` URIs.
        """
        dtable = self._delta_table(table, self._resolve(table, version))
        self.reads[table] = dtable.version()
        return [to_uri(unquote(uri)) for uri in dtable.file_uris()]

    def partition_values(self, table: str, column: str, version: Optional[int] = None) -> List[str]:
        """Sorted distinct values of partition ``column`` among the version's active files, from
        the log alone (no data file is opened)."""
        values = {parts[column] for _, parts in self._files_by_partition(table, [column], version)}
        return sorted(v for v in values if v is not None)

    def _files_by_partition(self, table: str, columns: Sequence[str], version: Optional[int] = None):
        """(file URI, {column: value}) of every active file of the version, from the log."""
        root = to_uri(self.path(table)).rstrip("/") + "/"
        return [(uri, _partition_values(uri[len(root):], columns)) for uri in self.active_files(table, version)]

    def partition_columns(self, table: str, version: Optional[int] = None) -> List[str]:
        return list(self._delta_table(table, self._resolve(table, version)).metadata().partition_columns)

    def schema(self, table: str, version: Optional[int] = None) -> T.StructType:
        dtable = self._delta_table(table, self._resolve(table, version))
        return T.StructType.fromJson(json.loads(dtable.schema().to_json()))

    def history(self, table: str) -> List[dict]:
        """Commits, newest first: version, timestamp, operation, parameters, our run id."""
        return self._delta_table(table).history()

    def vacuum(self, table: str, retention_hours: int = 168, dry_run: bool = False) -> List[str]:
        """Delete files no version within the retention needs, files no version ever referenced
        (moved out of staging by a write that died before its commit), and dead staging folders."""
        if not dry_run:
            self._remove_dead_staging(self.path(table))
        return self._delta_table(table).vacuum(retention_hours=retention_hours, dry_run=dry_run, full=True,
                                               enforce_retention_duration=retention_hours >= 168)

    # --- read ---------------------------------------------------------------------------

    def read(self, table: str, version: Optional[int] = None,
             partitions: Optional[Dict[str, Sequence[str]]] = None) -> DataFrame:
        """The table at ``version`` (default: the pinned version, else the latest), through the log.

        ``partitions`` ({column: values}) keeps only those partitions, chosen from the log before
        Spark lists a file (a table of many small partitions costs Spark a listing per file).
        """
        version = self._resolve(table, version)
        if self.backend == "spark":
            resolved = self.latest_version(table) if version is None else version
            if resolved is None:
                raise StorageError(f"table {table} does not exist at {self.path(table)}")
            self.reads[table] = resolved
            df = self.spark.read.format("delta").option("versionAsOf", resolved).load(self.path(table))
            for column, values in (partitions or {}).items():
                df = df.where(F.col(column).cast("string").isin(list(values)))
            return df
        schema = self.schema(table, version)
        if partitions:
            wanted = {c: set(v) for c, v in partitions.items()}
            files = [uri for uri, parts in self._files_by_partition(table, list(wanted), version)
                     if all(value in wanted[c] for c, value in parts.items())]
        else:
            files = self.active_files(table, version)
        if not files:
            return self.spark.createDataFrame([], schema)
        with self._driver_side_listing(len(files)):
            df = (self.spark.read.schema(schema).option("basePath", self.path(table))
                  .parquet(*files))
        return df.select(*[f.name for f in schema.fields])

    @contextlib.contextmanager
    def _driver_side_listing(self, paths: int):
        """Above ``spark.sql.sources.parallelPartitionDiscovery.threshold`` paths (32) Spark lists
        them with a Spark job, one task per path; the paths here are files from the Delta log, so
        that job only stats them again (seconds for a table of a few hundred files on local[2]).
        The driver stats them instead while the DataFrame is built."""
        key = "spark.sql.sources.parallelPartitionDiscovery.threshold"
        previous = self.spark.conf.get(key, None)
        self.spark.conf.set(key, str(max(paths, 32)))
        try:
            yield
        finally:
            if previous is None:
                self.spark.conf.unset(key)
            else:
                self.spark.conf.set(key, previous)

    # --- write --------------------------------------------------------------------------

    def write(self, df: DataFrame, table: str, mode: str = "overwrite",
              partition_by: Optional[Sequence[str]] = None,
              replace_where: Optional[Dict[str, Iterable]] = None,
              expected_rows: Optional[int] = None, base_version: Optional[int] = None) -> int:
        """Write ``df`` as a new version of ``table``, pin it, and return that version.

        Args:
            mode: ``overwrite`` (the whole table, or only the partitions in ``replace_where``),
                ``append``, or ``overwrite_partitions`` (replace exactly the partitions that
                ``df`` has rows in: an idempotent rerun of a nightly batch).
            partition_by: partition columns; must match the table's if it exists.
            replace_where: ``{partition column: values}``; with ``mode="overwrite"`` only these
                partitions are replaced (the rows of ``df`` must fall inside them).
            expected_rows: the rows the caller means to write; a different committed count
                (sum of the files' Parquet row counts) raises :class:`StorageError`, nothing committed.
            base_version: the version ``df`` was computed from (``NO_TABLE``: the table must not
                exist yet); default: the latest version when the write starts. If another writer
                committed after it, :class:`ConcurrentWriteError` and nothing is committed
                (delta-rs backend; Spark's Delta writer applies its own conflict rules).
        """
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        if replace_where and mode != "overwrite":
            raise ValueError("replace_where goes with mode='overwrite'")
        partition_by = list(partition_by or [])
        for column in partition_by + list(replace_where or {}):
            if column not in df.columns:
                raise StorageError(f"table {table}: partition column {column!r} not in {df.columns}")
        latest = self.latest_version(table)
        added: List[T.StructField] = []
        if latest is not None:
            existing = self.partition_columns(table)
            if existing != partition_by:
                raise StorageError(f"table {table} is partitioned by {existing}, write asked for {partition_by}")
            if mode != "overwrite" or replace_where:  # other rows stay: schema evolution by nullable columns only
                added = added_columns(table, self.schema(table, latest), df.schema)
                if added:
                    log.info("table %s: adding nullable column(s) %s", table, [f.name for f in added])
        if replace_where and not set(replace_where) <= set(partition_by):
            raise StorageError(f"replace_where keys {list(replace_where)} must be partition columns {partition_by}")
        start = time.perf_counter()
        if self.backend == "spark":
            version = self._write_spark(df, table, mode, partition_by, replace_where, merge_schema=bool(added))
        else:
            base = (NO_TABLE if latest is None else latest) if base_version is None else base_version
            version = self._write_delta_rs(df, table, mode, partition_by, replace_where, expected_rows, base,
                                           [f.name for f in added])
        self.pins[table] = self.writes[table] = version
        log.info("wrote %s version %d (%s) in %.1fs", table, version, mode, time.perf_counter() - start)
        return version

    def _write_spark(self, df, table, mode, partition_by, replace_where, merge_schema=False) -> int:
        writer = df.write.format("delta").partitionBy(*partition_by)
        if merge_schema:  # checked by added_columns: new nullable columns only
            writer = writer.option("mergeSchema", "true")
        if mode == "overwrite_partitions":
            writer = writer.mode("overwrite").option("partitionOverwriteMode", "dynamic")
        else:
            writer = writer.mode(mode)
        if replace_where:
            condition = " AND ".join(
                f"`{col}` IN ({', '.join(_sql_literal(v) for v in values)})"
                for col, values in replace_where.items())
            writer = writer.option("replaceWhere", condition)
        if self.run_id:
            writer = writer.option("userMetadata", json.dumps({"run_id": self.run_id}))
        writer.save(self.path(table))
        return self.latest_version(table)

    def _write_delta_rs(self, df, table, mode, partition_by, replace_where, expected_rows, base,
                        added=()) -> int:
        table_uri = self.path(table)
        self._remove_dead_staging(table_uri)
        staging = join_path(table_uri, STAGING_DIR, _new_write_id())
        moved: List[str] = []
        try:
            # Spark's job commit moves only this job's task output: the staging folder is ours alone.
            (df.write.mode("errorifexists").partitionBy(*partition_by)
             .option("mapreduce.fileoutputcommitter.marksuccessfuljobs", "false")
             .parquet(staging))
            staged = self._list_files(staging)
            counts = {rel: self._num_records(staging, rel) for rel in staged}
            rows = sum(counts.values()) if None not in counts.values() else None
            if rows is None and expected_rows is not None:  # remote storage: count with Spark
                rows = self.spark.read.parquet(*[join_path(staging, rel) for rel in staged]).count()
            if expected_rows is not None and rows != expected_rows:
                raise StorageError(f"table {table}: the write produced {rows} rows, expected {expected_rows}; "
                                   "nothing was committed")
            for rel in sorted(staged):
                self._move(join_path(staging, rel), join_path(table_uri, rel))
                moved.append(rel)
            _pause_before_commit(table)
            version = self._commit(table, table_uri, moved, staged, counts, df.schema, mode, partition_by,
                                   replace_where, base, added)
            moved = []  # committed: the table owns them now
        finally:
            for rel in moved:  # moved but never committed: invisible, remove them now
                self._fs(table_uri).delete(self._hpath(join_path(table_uri, rel)), False)
            self._fs(staging).delete(self._hpath(staging), True)
        log.info("table %s: committed %d file(s), %s rows as version %d", table, len(staged),
                 "?" if rows is None else f"{rows:,}", version)
        return version

    def _commit(self, table, table_uri, files, staged, counts, spark_schema, mode, partition_by,
                replace_where, base, added=()) -> int:
        """One Delta transaction adding ``files`` on top of version ``base`` (no silent retry).

        An overwrite's transaction carries the schema (with the ``added`` columns) as its metaData;
        delta-rs's append keeps the old schema, so an append that adds columns first commits them
        alone (``alter.add_columns``: no data change) and then its files on top of that version.
        """
        from deltalake import CommitProperties, DeltaTable, Schema
        from deltalake.exceptions import CommitFailedError
        from deltalake.transaction import AddAction, create_table_with_add_actions

        actions = [AddAction(quote(rel, safe="/="), staged[rel][0], _partition_values(rel, partition_by),
                             staged[rel][1], True,
                             "{}" if counts[rel] is None else json.dumps({"numRecords": counts[rel]}))
                   for rel in files]
        schema = Schema.from_json(spark_schema.json())
        commit = CommitProperties(custom_metadata={"run_id": self.run_id or "", "mode": mode},
                                  max_commit_retries=0)
        conflict = ConcurrentWriteError(
            f"table {table}: another writer committed after version {'(none)' if base == NO_TABLE else base}, "
            f"which this {mode} write was computed from; nothing of it was committed. Rerun when the "
            f"other writer has finished.")
        if base == NO_TABLE:
            if DeltaTable.is_deltatable(table_uri):
                raise conflict
            try:
                create_table_with_add_actions(table_uri, schema, actions, mode="error",
                                              partition_by=partition_by or None, commit_properties=commit)
            except Exception as exc:
                if DeltaTable.is_deltatable(table_uri):  # created by another writer meanwhile
                    raise conflict from exc
                raise
            return 0
        dtable = self._delta_table(table, base)
        filters = None
        if mode == "overwrite_partitions":
            touched = {tuple(a.partition_values[c] for c in partition_by) for a in actions}
            if not touched:
                log.info("table %s: no rows to write, no partition replaced", table)
                return base
            if len(partition_by) != 1:
                raise StorageError("overwrite_partitions supports one partition column")
            filters = [(partition_by[0], "in", sorted(v[0] for v in touched))]
        elif replace_where:
            filters = [(col, "in", sorted(str(v) for v in values)) for col, values in replace_where.items()]
        delta_mode = "append" if mode == "append" else "overwrite"
        try:
            if added and delta_mode == "append":
                dtable.alter.add_columns([f for f in schema.fields if f.name in added], commit_properties=commit)
                base += 1
                dtable = self._delta_table(table, base)
            dtable.create_write_transaction(actions, delta_mode, schema, partition_by=partition_by or None,
                                            partition_filters=filters, commit_properties=commit)
        except CommitFailedError as exc:
            raise conflict from exc
        return base + 1

    # --- maintenance --------------------------------------------------------------------

    def compact(self, table: str, column: str, values: Iterable[str], min_files: int, target_bytes: int) -> List[str]:
        """Compact the partitions ``column`` = one of ``values`` that hold ``min_files`` active
        files or more: their small files are rewritten into files of about ``target_bytes`` in one
        commit that changes no data (Delta's OPTIMIZE: ``dataChange=false``, readers of any version
        see the same rows). Returns the partition values compacted; pins the new version."""
        counts: Dict[Optional[str], int] = {}
        for _, parts in self._files_by_partition(table, [column]):
            counts[parts[column]] = counts.get(parts[column], 0) + 1
        crowded = sorted(v for v in set(values) if counts.get(v, 0) >= min_files)
        if not crowded:
            return []
        start = time.perf_counter()
        if self.backend == "spark":
            from delta.tables import DeltaTable as SparkDeltaTable

            condition = f"`{column}` IN ({', '.join(_sql_literal(v) for v in crowded)})"
            SparkDeltaTable.forPath(self.spark, self.path(table)).optimize().where(condition).executeCompaction()
        else:
            from deltalake import CommitProperties

            self._delta_table(table).optimize.compact(
                partition_filters=[(column, "in", crowded)], target_size=target_bytes,
                commit_properties=CommitProperties(custom_metadata={"run_id": self.run_id or "", "mode": "compact"},
                                                   max_commit_retries=0))
        version = self.latest_version(table)
        self.pins[table] = self.writes[table] = version
        log.info("table %s: compacted %d partition(s) of %d+ files (%s..%s) as version %d in %.1fs", table,
                 len(crowded), min_files, crowded[0], crowded[-1], version, time.perf_counter() - start)
        return crowded

    # --- files (Hadoop FileSystem through the JVM: local, HDFS, s3a alike) --------------

    def _hpath(self, uri: str):
        return self.spark._jvm.org.apache.hadoop.fs.Path(uri)

    def _fs(self, uri: str):
        return self._hpath(uri).getFileSystem(self.spark._jsc.hadoopConfiguration())

    def _move(self, src: str, dst: str) -> None:
        fs, target = self._fs(dst), self._hpath(dst)
        fs.mkdirs(target.getParent())
        if not fs.rename(self._hpath(src), target):
            raise StorageError(f"could not move {src} to {dst}")

    def _list_files(self, folder_uri: str) -> Dict[str, tuple]:
        """Parquet data files under a folder (relative path -> (size, mtime ms)); hidden folders
        (``_delta_log``, ``_temporary``, ``_staging``) and files are skipped."""
        hpath = self._hpath(folder_uri)
        fs = self._fs(folder_uri)
        if not fs.exists(hpath):
            return {}
        root = fs.makeQualified(hpath).toString().rstrip("/") + "/"
        found = {}
        iterator = fs.listFiles(hpath, True)
        while iterator.hasNext():
            status = iterator.next()
            full = status.getPath().toString()
            rel = full[len(root):] if full.startswith(root) else None
            if rel is None or not rel.endswith(".parquet"):
                continue
            if any(part.startswith(("_", ".")) for part in rel.split("/")):
                continue
            found[unquote(rel)] = (status.getLen(), status.getModificationTime())
        return found

    def _remove_dead_staging(self, table_uri: str) -> None:
        """Delete what dead writes left: staging folders whose owner is gone and Spark's
        ``_temporary`` of the table folder (no live write uses it: writes stage elsewhere)."""
        fs = self._fs(table_uri)
        temp = self._hpath(join_path(table_uri, SPARK_TEMP_DIR))
        if fs.exists(temp):
            log.warning("table %s: removing leftovers of a dead write in %s", table_uri, SPARK_TEMP_DIR)
            fs.delete(temp, True)
        staging = self._hpath(join_path(table_uri, STAGING_DIR))
        if not fs.exists(staging):
            return
        now_ms = int(time.time() * 1000)
        for status in fs.listStatus(staging):
            name = status.getPath().getName()
            if _owner_is_dead(name, now_ms):
                log.warning("table %s: removing staging folder %s of a dead write (never committed)",
                            table_uri, name)
                fs.delete(status.getPath(), True)

    @staticmethod
    def _num_records(folder_uri: str, rel: str) -> Optional[int]:
        """Rows of a staged file from its Parquet footer when it is local (cheap), else None."""
        local = local_path(folder_uri)
        if local is None:
            return None
        import pyarrow.parquet as pq

        return pq.read_metadata(os.path.join(local, rel)).num_rows

    def num_rows(self, table: str, version: Optional[int] = None) -> int:
        """Row count from the log's per-file stats when present, else by reading the table."""
        version = self._resolve(table, version)
        dtable = self._delta_table(table, version)
        try:
            adds = dtable.get_add_actions(flatten=True)
            column = adds.column("num_records")
            values = column.to_pylist() if hasattr(column, "to_pylist") else list(column)
            if values and all(v is not None for v in values):
                return int(sum(values))
        except Exception as exc:  # stats missing or an unexpected arrow type: fall back to Spark
            log.debug("no row stats for %s: %s", table, exc)
        return self.read(table, version).count()
