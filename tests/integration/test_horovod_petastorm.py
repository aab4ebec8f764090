"""Two Horovod ranks started from local Spark each stream a different Petastorm shard of a Delta table."""
import sys

import cloudpickle
import pytest

from libs.streaming import min_files_for_training

pytestmark = [pytest.mark.spark, pytest.mark.horovod]

# Horovod pickles the rank function; test modules are not importable on the ranks, so ship by value.
cloudpickle.register_pickle_by_value(sys.modules[__name__])


def _read_my_shard(files):
    """Runs on each rank (shipped to Spark tasks): returns (rank, size, ids read, allreduced count)."""
    import horovod.tensorflow as hvd
    import tensorflow as tf

    from libs.streaming import make_shard_reader

    hvd.init()
    ids = []
    with make_shard_reader(files, hvd.rank(), hvd.size(), columns=["id"]) as reader:
        for batch in reader:
            ids.extend(int(i) for i in batch.id)
    total = hvd.allreduce(tf.constant(len(ids), tf.float32), op=hvd.Sum)
    return hvd.rank(), hvd.size(), sorted(ids), int(total.numpy())


def test_two_ranks_read_disjoint_shards_of_a_delta_table(spark, store):
    import horovod.spark

    n_files = min_files_for_training(2)
    df = spark.range(0, 1000).selectExpr("cast(id as int) as id").repartition(n_files)
    store.write(df, "shard_me")
    files = store.active_files("shard_me")
    assert len(files) == n_files

    results = horovod.spark.run(_read_my_shard, args=(files,), num_proc=2, use_gloo=True, verbose=0)

    by_rank = {rank: (size, ids, total) for rank, size, ids, total in results}
    assert sorted(by_rank) == [0, 1]
    ids0, ids1 = by_rank[0][1], by_rank[1][1]
    assert ids0 and ids1, "each rank must get rows"
    assert not set(ids0) & set(ids1), "shards must be disjoint"
    assert sorted(ids0 + ids1) == list(range(1000))
    assert by_rank[0][2] == by_rank[1][2] == 1000  # allreduce over Gloo saw both ranks
