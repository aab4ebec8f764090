"""Delta tables of the warehouse, with two backends behind one small API.

* ``spark``: Spark's own Delta writer/reader, used when the Delta Lake classes are on the JVM
  classpath (clusters that ship the delta-spark jars).
* ``delta-rs`` (the embedded default): executors write Parquet with Spark's writer straight into
  the table folder (Hive layout, unique file names); the driver then commits exactly the new files
  to the Delta log in one transaction with the ``deltalake`` package. Files of a write that fails
  before its commit are not in the log, so readers never see them; ``vacuum`` removes them.

Both backends produce standard Delta tables; reads go through the Delta log (``deltalake`` lists
the active files of a version and Spark reads them), so time travel works the same for both.
Single writer per table is assumed (the nightly pipeline); concurrent writers to one table are not
supported by the delta-rs backend's file discovery.
"""
from __future__ import annotations

import json
import logging
import os
import time
from typing import Dict, Iterable, List, Optional, Sequence
from urllib.parse import quote, unquote, urlparse

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import types as T

from libs.conf import join_path

log = logging.getLogger(__name__)

HIVE_NULL = "__HIVE_DEFAULT_PARTITION__"
MODES = ("overwrite", "append", "overwrite_partitions")


class StorageError(RuntimeError):
    """A table operation failed, with the table and the reason."""


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


def _sql_literal(value) -> str:
    return "'" + str(value).replace("'", "''") + "'"


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

    def version(self, table: str) -> Optional[int]:
        """Latest committed version, or None if the table does not exist."""
        return self._delta_table(table).version() if self.exists(table) else None

    def active_files(self, table: str, version: Optional[int] = None) -> List[str]:
        """Absolute URIs of the Parquet files that make up ``version`` (default: latest).

        The log stores percent-encoded relative paths and delta-rs returns them as stored, so
        they are decoded here into the names on the filesystem that Spark and Petastorm open.
        Local files come back as bare paths from delta-rs; Petastorm needs ``file://`` URIs.
        """
        return [to_uri(unquote(uri)) for uri in self._delta_table(table, version).file_uris()]

    def partition_columns(self, table: str, version: Optional[int] = None) -> List[str]:
        return list(self._delta_table(table, version).metadata().partition_columns)

    def schema(self, table: str, version: Optional[int] = None) -> T.StructType:
        return T.StructType.fromJson(json.loads(self._delta_table(table, version).schema().to_json()))

    def history(self, table: str) -> List[dict]:
        """Commits, newest first: version, timestamp, operation, parameters, our run id."""
        return self._delta_table(table).history()

    def vacuum(self, table: str, retention_hours: int = 168, dry_run: bool = False) -> List[str]:
        """Delete files no version within the retention needs (including uncommitted leftovers)."""
        return self._delta_table(table).vacuum(retention_hours=retention_hours, dry_run=dry_run,
                                               enforce_retention_duration=retention_hours >= 168)

    # --- read ---------------------------------------------------------------------------

    def read(self, table: str, version: Optional[int] = None) -> DataFrame:
        """The table at ``version`` (default: latest), read through the Delta log."""
        if self.backend == "spark":
            reader = self.spark.read.format("delta")
            if version is not None:
                reader = reader.option("versionAsOf", version)
            return reader.load(self.path(table))
        schema = self.schema(table, version)
        files = self.active_files(table, version)
        if not files:
            return self.spark.createDataFrame([], schema)
        df = (self.spark.read.schema(schema).option("basePath", self.path(table))
              .parquet(*files))
        return df.select(*[f.name for f in schema.fields])

    # --- write --------------------------------------------------------------------------

    def write(self, df: DataFrame, table: str, mode: str = "overwrite",
              partition_by: Optional[Sequence[str]] = None,
              replace_where: Optional[Dict[str, Iterable]] = None) -> int:
        """Write ``df`` as a new version of ``table`` and return that version.

        Args:
            mode: ``overwrite`` (the whole table, or only the partitions in ``replace_where``),
                ``append``, or ``overwrite_partitions`` (replace exactly the partitions that
                ``df`` has rows in: an idempotent rerun of a nightly batch).
            partition_by: partition columns; must match the table's if it exists.
            replace_where: ``{partition column: values}``; with ``mode="overwrite"`` only these
                partitions are replaced (the rows of ``df`` must fall inside them).
        """
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        if replace_where and mode != "overwrite":
            raise ValueError("replace_where goes with mode='overwrite'")
        partition_by = list(partition_by or [])
        for column in partition_by + list(replace_where or {}):
            if column not in df.columns:
                raise StorageError(f"table {table}: partition column {column!r} not in {df.columns}")
        if self.exists(table):
            existing = self.partition_columns(table)
            if existing != partition_by:
                raise StorageError(f"table {table} is partitioned by {existing}, write asked for {partition_by}")
        if replace_where and not set(replace_where) <= set(partition_by):
            raise StorageError(f"replace_where keys {list(replace_where)} must be partition columns {partition_by}")
        start = time.perf_counter()
        if self.backend == "spark":
            version = self._write_spark(df, table, mode, partition_by, replace_where)
        else:
            version = self._write_delta_rs(df, table, mode, partition_by, replace_where)
        log.info("wrote %s version %d (%s) in %.1fs", table, version, mode, time.perf_counter() - start)
        return version

    def _write_spark(self, df, table, mode, partition_by, replace_where) -> int:
        writer = df.write.format("delta").partitionBy(*partition_by)
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
        return self.version(table)

    def _write_delta_rs(self, df, table, mode, partition_by, replace_where) -> int:
        from deltalake import CommitProperties, DeltaTable, Schema
        from deltalake.transaction import AddAction, create_table_with_add_actions

        table_uri = self.path(table)
        before = set(self._list_files(table_uri))
        # Executors write; Spark's own commit protocol makes the files appear only on success.
        (df.write.mode("append").partitionBy(*partition_by)
         .option("mapreduce.fileoutputcommitter.marksuccessfuljobs", "false")
         .parquet(table_uri))
        new_files = {p: meta for p, meta in self._list_files(table_uri).items() if p not in before}
        actions = [AddAction(quote(rel, safe="/="), size, _partition_values(rel, partition_by), mtime, True,
                             self._file_stats(table_uri, rel))
                   for rel, (size, mtime) in sorted(new_files.items())]
        schema = Schema.from_json(df.schema.json())
        commit = CommitProperties(custom_metadata={"run_id": self.run_id or "", "mode": mode})
        if not DeltaTable.is_deltatable(table_uri):
            create_table_with_add_actions(table_uri, schema, actions, mode="error",
                                          partition_by=partition_by or None,
                                          commit_properties=commit)
            return 0
        dtable = DeltaTable(table_uri)
        filters = None
        if mode == "overwrite_partitions":
            touched = {tuple(a.partition_values[c] for c in partition_by) for a in actions}
            if not touched:
                log.info("table %s: no rows to write, no partition replaced", table)
                return dtable.version()
            if len(partition_by) != 1:
                raise StorageError("overwrite_partitions supports one partition column")
            filters = [(partition_by[0], "in", sorted(v[0] for v in touched))]
        elif replace_where:
            filters = [(col, "in", sorted(str(v) for v in values)) for col, values in replace_where.items()]
        delta_mode = "append" if mode == "append" else "overwrite"
        dtable.create_write_transaction(actions, delta_mode, schema, partition_by=partition_by or None,
                                        partition_filters=filters, commit_properties=commit)
        return DeltaTable(table_uri).version()

    def _list_files(self, table_uri: str) -> Dict[str, tuple]:
        """Parquet data files under the table folder (relative path -> (size, mtime ms)).

        Uses Hadoop's FileSystem through the JVM, so it works for every filesystem Spark can
        write to (local, HDFS, s3a). Hidden folders (``_delta_log``, ``_temporary``) are skipped.
        """
        jvm = self.spark._jvm
        hpath = jvm.org.apache.hadoop.fs.Path(table_uri)
        fs = hpath.getFileSystem(self.spark._jsc.hadoopConfiguration())
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

    @staticmethod
    def _file_stats(table_uri: str, rel: str) -> str:
        """``{"numRecords": n}`` from the Parquet footer when the file is local (cheap), else {}."""
        local = local_path(table_uri)
        if local is None:
            return "{}"
        import pyarrow.parquet as pq

        return json.dumps({"numRecords": pq.read_metadata(os.path.join(local, rel)).num_rows})

    def num_rows(self, table: str, version: Optional[int] = None) -> int:
        """Row count from the log's per-file stats when present, else by reading the table."""
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
