"""Benchmark training: quality against popularity and the published NeuMF figures, and throughput.

    python -m benchmarks.bench_train [--dataset ml-1m] [--epochs 1] [--skip-one-rank]

Prepares the features into ``.bench/<dataset>`` when missing (shared with bench_recommend), then
prints side by side:
- NCF protocol HR@10 / NDCG@10 of sasrec, deep_cf, content, dien and popularity (published NeuMF on
  ml-1m: HR@10 0.726 / NDCG@10 0.445 with pre-training, 0.701 / 0.425 without);
- DIEN next-item AUC with and without the auxiliary loss;
- deep_cf and sasrec training examples/second with 1 rank (one epoch) and 2 Horovod ranks (last
  epoch, all ranks together), and sasrec's epochs to converge (best validation epoch, patience);
- one process training deep_cf fed by Petastorm from the Delta files vs from an in-memory
  ``tf.data`` dataset of the same rows, and Petastorm's raw read throughput.
Every figure is measured in this run; nothing is copied in.
"""
from __future__ import annotations

import argparse
import copy
import os
import sys
import time

from jobs import train
from libs import schema as S
from libs.conf import load_config
from libs.model_store import ModelStore
from libs.runtime import JobContext, make_context
from pipelines.prep import run_prep

PUBLISHED_NEUMF_ML1M = {"hr@10": 0.726, "ndcg@10": 0.445}


def run_models(ctx, run_id, models, edit=None):
    """``jobs.train.run`` of ``models`` under ``run_id`` on a copy of the config changed by ``edit``."""
    cfg = copy.deepcopy(ctx.cfg)
    cfg.run.run_id = run_id
    if edit:
        edit(cfg)
    return train.run(JobContext(ctx.spark, cfg, ctx.store), models=models)


def streaming_vs_memory(ctx, steps: int, batch_size: int):
    """Examples/s of one process training a fresh deep_cf for ``steps`` batches from each feed."""
    import numpy as np
    import pyarrow.parquet as pq
    import tensorflow as tf

    from libs.feature_specs import FeatureSpecs
    from libs.models import build_model
    from libs.streaming import make_shard_reader
    from libs.training import training_dataset

    store, cfg = ctx.store, ctx.cfg
    table = S.CF_EXAMPLES.name
    files = store.active_files(table)
    specs = FeatureSpecs.from_store(store, cfg)
    columns = [S.USER_IDX, S.ITEM_IDX]

    def fit(dataset):
        model = build_model("deep_cf", specs, cfg.train.deep_cf)
        model.compile(tf.keras.optimizers.Adam(cfg.train.deep_cf.learning_rate), "binary_crossentropy")
        model.fit(dataset, steps_per_epoch=20, epochs=1, verbose=0)  # trace and warm up
        start = time.perf_counter()
        model.fit(dataset, steps_per_epoch=steps, epochs=1, verbose=0)
        return steps * batch_size / (time.perf_counter() - start)

    figures = {}
    with make_shard_reader(files, columns=columns + [S.LABEL, S.SPLIT], shuffle_seed=7, num_epochs=None) as reader:
        figures["petastorm -> tf.data -> deep_cf"] = fit(
            training_dataset(reader, columns, batch_size, cfg.train.shuffle_buffer, 7).repeat())
    with make_shard_reader(files, columns=columns + [S.LABEL, S.SPLIT], num_epochs=1) as reader:
        start, rows = time.perf_counter(), 0
        for batch in reader:
            rows += len(batch.label)
            if rows >= 2_000_000:
                break
        figures["petastorm raw read (rows/s)"] = rows / (time.perf_counter() - start)

    table_rows = pq.ParquetDataset([f[len("file://"):] for f in files]).read(
        columns=columns + [S.LABEL, S.SPLIT]).to_pandas()
    table_rows = table_rows[table_rows[S.SPLIT] == S.SPLIT_TRAIN]
    memory = (tf.data.Dataset.from_tensor_slices((
        {c: table_rows[c].to_numpy(np.int32) for c in columns}, table_rows[S.LABEL].to_numpy(np.float32)))
        .shuffle(cfg.train.shuffle_buffer, seed=7).repeat().batch(batch_size, drop_remainder=True)
        .prefetch(tf.data.AUTOTUNE))
    figures["in-memory tf.data -> deep_cf"] = fit(memory)
    return figures


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dataset", default="ml-1m")
    parser.add_argument("--epochs", type=int, default=1, help="epochs per model (bounded run time on 2 cores)")
    parser.add_argument("--warehouse", default=None, help="default .bench/<dataset>")
    parser.add_argument("--stream-steps", type=int, default=300, help="batches per feed in the streaming comparison")
    parser.add_argument("--skip-one-rank", action="store_true", help="skip the 1-rank deep_cf throughput run")
    args = parser.parse_args(argv)
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    cfg = load_config(env="local", dataset=args.dataset, overrides=[
        f"storage.warehouse={args.warehouse or f'.bench/{args.dataset}'}", "run.date=2003-03-01",
        "run.run_id=bench", *(f"train.{m}.epochs={args.epochs}" for m in ("deep_cf", "dien", "content"))])
    # sasrec keeps its configured maximum epochs and patience: the benchmark reports epochs to converge
    ctx = make_context(cfg)
    if not ctx.store.exists(S.EVAL_CANDIDATES.name):
        run_prep(ctx)
    start = time.perf_counter()

    # The 2-rank run with the auxiliary loss goes last, so it is what LATEST points at afterwards.
    ranks = {}
    if not args.skip_one_rank:
        def one_rank_one_epoch(c):
            c.train.num_proc, c.train.deep_cf.epochs, c.train.sasrec.epochs = 1, 1, 1

        one_rank = run_models(ctx, "bench-train-1-rank", ["deep_cf", "sasrec"], one_rank_one_epoch)
        ranks[1] = {m: one_rank[m]["examples_per_sec"][-1] for m in ("deep_cf", "sasrec")}
    no_aux = run_models(ctx, "bench-train-no-aux", ["dien"], lambda c: setattr(c.train.dien, "use_aux_loss", False))
    main_run = run_models(ctx, "bench-train", ["sasrec", "deep_cf", "content", "dien"],
                          lambda c: setattr(c.train.dien, "use_aux_loss", True))
    ranks[2] = {m: main_run[m]["examples_per_sec"][-1] for m in ("deep_cf", "sasrec")}
    sasrec = ModelStore(cfg.storage.warehouse).record("sasrec", "bench-train")
    feeds = streaming_vs_memory(ctx, args.stream_steps, cfg.train.deep_cf.batch_size)

    print(f"\n== training benchmark: {args.dataset}, {args.epochs} epoch(s) per model, "
          f"{os.cpu_count()} cores, {time.perf_counter() - start:.0f}s ==")
    print(f"{'NCF protocol (1 of 100)':34}{'HR@10':>10}{'NDCG@10':>10}")
    for name in ("sasrec", "deep_cf", "content", "dien"):
        ncf = main_run[name]["metrics"]["ncf"]
        print(f"{name:34}{ncf['hr@10']:>10.4f}{ncf['ndcg@10']:>10.4f}")
    popularity = main_run["popularity"]["ncf"]
    print(f"{'popularity':34}{popularity['hr@10']:>10.4f}{popularity['ndcg@10']:>10.4f}")
    if args.dataset == "ml-1m":
        print(f"{'NeuMF published (pre-trained)':34}{PUBLISHED_NEUMF_ML1M['hr@10']:>10.4f}"
              f"{PUBLISHED_NEUMF_ML1M['ndcg@10']:>10.4f}")
    print(f"\n{'DIEN next-item AUC':34}{'AUC':>10}")
    print(f"{'with auxiliary loss':34}{main_run['dien']['metrics']['sequence']['auc']:>10.4f}")
    print(f"{'without auxiliary loss':34}{no_aux['dien']['metrics']['sequence']['auc']:>10.4f}")
    print(f"{'popularity':34}{main_run['popularity']['sequence']['auc']:>10.4f}")
    print(f"\n{'training throughput (examples/s)':34}{'deep_cf':>12}{'sasrec':>12}   (sasrec: windows of "
          f"{cfg.features.sequence_length} positions)")
    for n, value in sorted(ranks.items()):
        print(f"{f'{n} Horovod rank(s)':34}{value['deep_cf']:>12.0f}{value['sasrec']:>12.0f}")
    print(f"sasrec: best validation epoch {sasrec['best_epoch']} of {sasrec['epochs_run']} run (patience "
          f"{cfg.train.sasrec.patience}), {sasrec['training_seconds']:.0f}s on {sasrec['num_proc']} ranks")
    print(f"\n{'one process, same deep_cf':34}{'per second':>12}")
    for name, value in feeds.items():
        print(f"{name:34}{value:>12.0f}")


if __name__ == "__main__":
    main()
