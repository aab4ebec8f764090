"""The Delta storage layer (delta-rs backend): versions, time travel, partitions, failed writes."""
import datetime as dt

import pytest
from deltalake import DeltaTable
from pyspark.sql import functions as F

from libs.storage import DeltaStore, StorageError

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
    store.write(spark.createDataFrame([(10, D1)], schema), "p", mode="overwrite_partitions", partition_by=["d"])
    assert _rows(store.read("p"), "id", "d") == [(3, D2), (10, D1)]
    # replace_where with no rows empties exactly that partition
    store.write(spark.createDataFrame([], schema), "p", replace_where={"d": [D2.isoformat()]}, partition_by=["d"])
    assert _rows(store.read("p"), "id", "d") == [(10, D1)]
    assert store.partition_columns("p") == ["d"]
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
