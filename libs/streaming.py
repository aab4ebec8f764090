"""Petastorm readers over Delta tables, one shard per Horovod rank.

The storage layer lists the active Parquet files of a Delta version; Petastorm reads those files
row group by row group (never the whole table in memory), rank ``r`` of ``n`` taking every n-th
row group. Tables meant for training are written with at least ``num_proc`` files so every rank
gets a shard (``min_files_for_training``).
"""
from __future__ import annotations

from typing import List, Optional, Sequence


def min_files_for_training(num_proc: int) -> int:
    """Files (= row groups) a training table needs so that every rank gets some: 4 per rank."""
    return max(4 * num_proc, 8)


def make_shard_reader(files: Sequence[str], rank: int = 0, size: int = 1,
                      columns: Optional[List[str]] = None, shuffle_seed: Optional[int] = None,
                      num_epochs: Optional[int] = 1, workers: int = 2):
    """A Petastorm batch reader over this rank's shard of ``files`` (Parquet file URIs).

    Args:
        shuffle_seed: shuffle the order of row groups with this seed (None: file order).
        num_epochs: passes over the shard; None repeats forever (training uses a step count).
    """
    from petastorm import make_batch_reader

    if len(files) < size:
        raise ValueError(f"{len(files)} files cannot be sharded over {size} ranks; "
                         f"write the table with at least {min_files_for_training(size)} files")
    return make_batch_reader(
        list(files), schema_fields=list(columns) if columns else None,
        cur_shard=rank if size > 1 else None, shard_count=size if size > 1 else None,
        shuffle_row_groups=shuffle_seed is not None, seed=shuffle_seed,
        num_epochs=num_epochs, reader_pool_type="thread", workers_count=workers)
