"""The Delta storage layer (delta-rs backend): versions, time travel, partitions, failed writes,
exact commits (dead writes' leftovers, row counts), named conflicts between writers, pins."""
import datetime as dt
import os
import re
from pathlib import Path

import pytest
from deltalake import DeltaTable
from pyspark.sql import functions as F

from libs.storage import NO_TABLE, ConcurrentWriteError, DeltaStore, StorageError

pytestmark = pytest.mark.spark

D1, D2 = dt.date(2024, 1, 1), dt.date(2024, 1, 2)


def _rows(df, *cols):
    return sorted(tuple(r[c] for c in cols) for r in df.collect())


def test_overwrite_append_versions_and_time_travel(spark, store):
    v0 = store.write(spark.createDataFrame([(1, "a"), (2, "b")], "id int, name string"), "t")
    v1 = store.write(spark.createDataFrame([(3, "c")], "id int, name string"), "t", mode="append")
    v2 = store.write(spark.createDataFrame([(9, "z")], "id int, name string"), "t", mode="overwrite")
    assert (v0, v1, v2) == (0, 1, 2)
    assert _rows(store.read("t", version=0), "id") == [(1,), (2,)]
    assert _rows(store.read("t", version=1), "id") == [(1,), (2,), (3,)]
    assert _rows(store.read("t"), "id", "name") == [(9, "z")]
    assert store.num_rows("t") == 1 and store.num_rows("t", version=1) == 3
    # an independent reader of the Delta log agrees on versions and files
    dtable = DeltaTable(store.path("t"))
    assert dtable.version() == 2
    assert sorted("file://" + f for f in dtable.file_uris()) == sorted(store.active_files("t"))
    assert len(DeltaTable(store.path("t"), version=1).file_uris()) == len(store.active_files("t", 1))
    ops = [h["operation"] for h in store.history("t")]
    assert len(ops) == 3
    assert store.history("t")[0]["run_id"] == "test-run"


def test_partition_overwrite_shows_only_new_rows(spark, store):
    schema = "id int, d date"
    store.write(spark.createDataFrame([(1, D1), (2, D1), (3, D2)], schema), "p", partition_by=["d"])
    # dynamic: only the partitions present in the batch are replaced
    assert store.partition_values("p", "d") == [D1.isoformat(), D2.isoformat()]  # from the log alone
    assert _rows(store.read("p", partitions={"d": [D2.isoformat()]}), "id") == [(3,)]
    assert store.read("p", partitions={"d": []}).count() == 0
    store.write(spark.createDataFrame([(10, D1)], schema), "p", mode="overwrite_partitions", partition_by=["d"])
    assert _rows(store.read("p"), "id", "d") == [(3, D2), (10, D1)]
    # replace_where with no rows empties exactly that partition
    store.write(spark.createDataFrame([], schema), "p", replace_where={"d": [D2.isoformat()]}, partition_by=["d"])
    assert _rows(store.read("p"), "id", "d") == [(10, D1)]
    assert store.partition_columns("p") == ["d"] and store.partition_values("p", "d") == [D1.isoformat()]
    # what Spark reads equals what the log lists: every active file carries the partition value
    files = DeltaTable(store.path("p")).file_uris()
    assert files and all("d=2024-01-01" in f for f in files)


def test_partition_columns_must_match(spark, store):
    store.write(spark.createDataFrame([(1, D1)], "id int, d date"), "p", partition_by=["d"])
    with pytest.raises(StorageError, match="partitioned by"):
        store.write(spark.createDataFrame([(1, D1)], "id int, d date"), "p")


def test_failed_write_leaves_previous_version_intact(spark, store):
    store.write(spark.createDataFrame([(i,) for i in range(10)], "id int"), "f")

    @F.udf("int")
    def explode_on_seven(x):
        if x == 7:
            raise ValueError("boom")
        return x

    bad = spark.range(0, 20, numPartitions=4).select(explode_on_seven(F.col("id").cast("int")).alias("id"))
    with pytest.raises(Exception, match="boom"):
        store.write(bad, "f")
    assert store.version("f") == 0
    assert _rows(store.read("f"), "id") == [(i,) for i in range(10)]


def test_read_missing_table_is_a_clear_error(store):
    assert store.version("nope") is None
    with pytest.raises(StorageError, match="does not exist"):
        store.read("nope")


def test_timestamps_and_arrays_round_trip(spark, store):
    df = spark.sql("select 1 as id, timestamp'2024-01-01 10:00:00' as ts, array(1,2,3) as xs, "
                   "map('a','b') as m")
    store.write(df, "types")
    row = store.read("types").collect()[0]
    assert row.xs == [1, 2, 3] and row.m == {"a": "b"}
    assert row.ts == dt.datetime(2024, 1, 1, 10, 0)


# --- exact commits, concurrency, pins ------------------------------------------------------------

def _dead_pid() -> int:
    import subprocess

    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def _files_under(folder):
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*.parquet"))


def test_dead_writes_leftovers_are_never_committed_and_are_cleaned(spark, store, tmp_path):
    import shutil
    import socket

    store.write(spark.createDataFrame([(1,), (2,)], "id int"), "t")
    root = Path(store.path("t")[len("file://"):])
    part = next(root.glob("*.parquet"))
    # what dead writes leave: Spark task output under _temporary (the old failure), a staging
    # folder of a killed process, and a file moved out of staging whose commit never happened
    leftovers = [root / "_temporary/0/task_0/part-00000-dead.snappy.parquet",
                 root / f"_staging/1700000000000-abc-{_dead_pid()}-{socket.gethostname()}/part-00000-x.parquet",
                 root / "part-00000-orphan.snappy.parquet"]
    for path in leftovers:
        path.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(part, path)
    live = root / f"_staging/1700000000000-def-{os.getpid()}-{socket.gethostname()}"  # a running writer
    live.mkdir()

    store.write(spark.createDataFrame([(3,)], "id int"), "t", mode="append", expected_rows=1)
    assert _rows(store.read("t"), "id") == [(1,), (2,), (3,)]
    assert store.num_rows("t") == 3
    assert not (root / "_temporary").exists() and not leftovers[1].parent.exists()
    assert live.exists()
    assert leftovers[2].exists()  # not in the log, so invisible; vacuum removes it
    store.vacuum("t", retention_hours=0)
    assert not leftovers[2].exists()
    assert _rows(store.read("t"), "id") == [(1,), (2,), (3,)]


def test_row_count_check_commits_nothing_on_mismatch(spark, store):
    store.write(spark.createDataFrame([(1,)], "id int"), "t")
    with pytest.raises(StorageError, match="produced 2 rows, expected 3; nothing was committed"):
        store.write(spark.createDataFrame([(2,), (3,)], "id int"), "t", mode="append", expected_rows=3)
    assert store.version("t") == 0 and _rows(store.read("t"), "id") == [(1,)]
    root = store.path("t")[len("file://"):]
    assert sorted(f for f in os.listdir(root) if f.endswith(".parquet")) == \
        sorted(os.path.basename(f) for f in store.active_files("t"))
    assert os.listdir(os.path.join(root, "_staging")) == []


def test_a_write_computed_from_an_old_version_fails_with_a_named_conflict(spark, store):
    schema = "id int, d date"
    store.write(spark.createDataFrame([(1, D1)], schema), "p", partition_by=["d"])
    store.write(spark.createDataFrame([(2, D1)], schema), "p", mode="append", partition_by=["d"])
    with pytest.raises(ConcurrentWriteError, match="another writer committed after version 0"):
        store.write(spark.createDataFrame([(3, D2)], schema), "p", mode="append", partition_by=["d"],
                    base_version=0)
    with pytest.raises(ConcurrentWriteError, match=r"after version \(none\)"):
        store.write(spark.createDataFrame([(3, D2)], schema), "p", partition_by=["d"], base_version=NO_TABLE)
    assert store.latest_version("p") == 1 and _rows(store.read("p"), "id") == [(1,), (2,)]
    root = store.path("p")[len("file://"):]
    on_disk = sorted(os.path.join(root, f) for f in _files_under(Path(root)))
    assert on_disk == sorted(f[len("file://"):] for f in store.active_files("p"))  # refused files removed


def test_two_concurrent_writers_one_commits_the_other_fails(spark, store):
    import threading

    store.write(spark.createDataFrame([(0,)], "id int"), "c")
    errors, versions = [], []

    def writer(first):
        try:
            df = spark.range(first, first + 1000, numPartitions=2).selectExpr("cast(id as int) id")
            versions.append(store.write(df, "c", mode="append", base_version=0, expected_rows=1000))
        except ConcurrentWriteError as exc:
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(first,)) for first in (1000, 5000)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert versions == [1] and len(errors) == 1
    ids = [r.id for r in store.read("c", version=1).collect()]
    assert len(ids) == 1001 and len(set(ids)) == 1001  # one writer's rows, never both
    assert store.latest_version("c") == 1


def test_pins_decide_what_reads_see_and_writes_move_them(spark, store):
    store.write(spark.createDataFrame([(1,)], "id int"), "t")
    store.write(spark.createDataFrame([(2,)], "id int"), "t")
    other = DeltaStore(spark, store.root, backend="delta-rs")
    other.pins = {"t": 0}
    assert other.version("t") == 0 and other.latest_version("t") == 1
    assert _rows(other.read("t"), "id") == [(1,)] and other.num_rows("t") == 1
    assert other.reads == {"t": 0}
    assert other.write(spark.createDataFrame([(3,)], "id int"), "t") == 2
    assert other.pins == {"t": 2} and other.writes == {"t": 2}
    assert _rows(other.read("t"), "id") == [(3,)]
    assert _rows(other.read("t", version=1), "id") == [(2,)]


OLD_SCHEMA = "user_id string not null, rank int not null, d date not null"


@pytest.mark.parametrize("mode", ["replace_where", "overwrite_partitions", "append"])
def test_a_write_widens_an_old_table_by_a_nullable_column(spark, store, mode):
    """An old-schema table (no ``reason``) accepts rows that carry it; its old rows read null."""
    store.write(spark.createDataFrame([("u1", 1, D1)], OLD_SCHEMA), "w", partition_by=["d"])
    new = spark.createDataFrame([("u2", 1, D2, "popular_recently")], OLD_SCHEMA + ", reason string")
    kwargs = {"replace_where": {"d": [D2.isoformat()]}} if mode == "replace_where" else {"mode": mode}
    store.write(new, "w", partition_by=["d"], **kwargs)
    assert store.schema("w").fieldNames() == ["user_id", "rank", "d", "reason"]
    assert store.schema("w")["reason"].nullable
    assert _rows(store.read("w"), "user_id", "reason") == [("u1", None), ("u2", "popular_recently")]
    # an independent reader of the log sees the widened schema too
    assert [f.name for f in DeltaTable(store.path("w")).schema().fields] == ["user_id", "rank", "d", "reason"]
    # the version before the write still reads with its own schema (time travel)
    assert store.read("w", version=0).columns == ["user_id", "rank", "d"]


def test_a_write_that_would_narrow_or_retype_or_add_a_required_column_is_refused(spark, store):
    store.write(spark.createDataFrame([("u1", 1, D1)], OLD_SCHEMA), "w", partition_by=["d"])
    cases = [(("u2", D2), "user_id string not null, d date not null", "lacks column(s) ['rank']"),
             (("u2", "1", D2), "user_id string not null, rank string not null, d date not null",
              "changes type(s) ['rank: int -> string']"),
             (("u2", 1, D2, "x"), OLD_SCHEMA + ", reason string not null", "adds non-nullable column(s) ['reason']")]
    for row, schema, message in cases:
        with pytest.raises(StorageError, match=re.escape(message)):
            store.write(spark.createDataFrame([row], schema), "w", partition_by=["d"],
                        replace_where={"d": [D2.isoformat()]})
    assert store.latest_version("w") == 0 and store.schema("w").fieldNames() == ["user_id", "rank", "d"]
    # replacing the whole table keeps rows of no other schema: it may change the schema
    store.write(spark.createDataFrame([("u3", D2)], "user_id string not null, d date not null"), "w",
                partition_by=["d"])
    assert store.schema("w").fieldNames() == ["user_id", "d"]
