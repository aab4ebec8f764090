"""Data-parallel training of one model with Horovod, each rank streaming its Petastorm shard.

:func:`train_fn` is what ``horovod.spark.run`` ships to every rank (it imports TensorFlow and
Horovod inside, as functions sent to executors must); :func:`run_training` is the driver side.
"""
from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass, field
from typing import Dict, List, Optional

from libs import schema as S

log = logging.getLogger(__name__)


@dataclass
class TrainTask:
    """Everything a rank needs, pickled to the Spark tasks that run the ranks."""

    model: str
    run_id: str
    run_date: str
    specs: "libs.feature_specs.FeatureSpecs"  # noqa: F821
    conf: "libs.conf.ModelConf"  # noqa: F821
    files: List[str]              # active Parquet files of the training table's Delta version
    train_rows: int               # rows with SPLIT == train in those files
    warehouse: str                # model store root
    shuffle_seed: int = 7
    shuffle_buffer: int = 10_000  # rows; row groups are shuffled too, this mixes within them
    reader_workers: int = 2
    record: Dict = field(default_factory=dict)   # extra record fields: table versions, row counts

    def steps_per_epoch(self, size: int) -> int:
        """Every rank runs this many steps so allreduce calls pair up; at least one."""
        return max(1, self.train_rows // (self.conf.batch_size * size))


def training_dataset(reader, columns: List[str], batch_size: int, shuffle_buffer: int, seed: int):
    """``(features, label)`` batches of the SPLIT == train rows of a Petastorm batch reader.

    Features: dict of ``columns`` -> (B,) or (B, L) tensors (Petastorm stacks fixed-length list
    columns into 2-D arrays); label: LABEL (B,). The split filter runs on whole row-group batches
    (one vectorized mask) before they are cut into rows for the shuffle buffer.
    """
    import tensorflow as tf
    from petastorm.tf_utils import make_petastorm_dataset

    def train_rows(batch):
        keep = tf.equal(batch.split, S.SPLIT_TRAIN)
        return {c: tf.boolean_mask(getattr(batch, c), keep) for c in columns + [S.LABEL]}

    dataset = make_petastorm_dataset(reader).map(train_rows, num_parallel_calls=tf.data.AUTOTUNE).unbatch()
    if shuffle_buffer:
        dataset = dataset.shuffle(shuffle_buffer, seed=seed)
    return (dataset.batch(batch_size, drop_remainder=True)
            .map(lambda rows: ({c: rows[c] for c in columns}, rows[S.LABEL]))
            .prefetch(tf.data.AUTOTUNE))


def _epoch_logger(model: str, epochs: int, steps: int, examples_per_step: int):
    """Rank-0 callback: a progress bar every tenth of an epoch, then one line per epoch with the
    (rank-averaged) loss and examples/second.

    They go to the loggers :data:`libs.log.PROGRESS_LOGGER` and :data:`libs.log.EPOCH_LOGGER` as
    whole lines (Horovod forwards rank output line by line); the pipeline's console draws them as
    one line per epoch (:class:`libs.log.RankOutput`), Spark's and the run's logs keep every line.
    """
    import tensorflow as tf

    from libs.log import EPOCH_LOGGER, PROGRESS_LOGGER

    tick = max(1, steps // 10)
    progress, closing = logging.getLogger(PROGRESS_LOGGER), logging.getLogger(EPOCH_LOGGER)

    class EpochLogger(tf.keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.losses: List[float] = []
            self.examples_per_sec: List[float] = []

        def on_epoch_begin(self, epoch, logs=None):
            self._epoch = epoch
            self._start = time.perf_counter()

        def on_train_batch_end(self, batch, logs=None):
            done = batch + 1
            if done % tick or done == steps:
                return
            filled = 20 * done // steps
            progress.info("    %-8s epoch %d/%d [%s%s] %3d%%  loss %.4f", model, self._epoch + 1, epochs,
                          "#" * filled, "." * (20 - filled), 100 * done // steps,
                          (logs or {}).get("loss", float("nan")))

        def on_epoch_end(self, epoch, logs=None):
            seconds = time.perf_counter() - self._start
            self.losses.append(float(logs["loss"]))
            self.examples_per_sec.append(steps * examples_per_step / seconds)
            closing.info("    %-8s epoch %d/%d [%s] 100%%  loss %.4f, %s examples/s, %.1fs", model, epoch + 1,
                         epochs, "#" * 20, self.losses[-1], f"{self.examples_per_sec[-1]:,.0f}", seconds)

    return EpochLogger()


def _configure_devices(hvd) -> str:
    """Pin one GPU per rank by local rank; on CPU split the cores between the local ranks."""
    import os

    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    if gpus:
        gpu = gpus[hvd.local_rank() % len(gpus)]
        tf.config.experimental.set_memory_growth(gpu, True)
        tf.config.set_visible_devices(gpu, "GPU")
        return f"GPU {gpu.name}"
    threads = max(1, (os.cpu_count() or 1) // hvd.local_size())
    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(threads)
    return f"CPU ({threads} threads)"


def train_fn(task: TrainTask) -> Optional[dict]:
    """One Horovod rank: train ``task.model`` on this rank's shard; rank 0 saves the run.

    Returns (rank 0) the training summary also written to the run's record.json; other ranks None.
    """
    import horovod.tensorflow.keras as hvd
    import tensorflow as tf

    from libs.log import setup_logging
    from libs.model_store import ModelStore
    from libs.models import build_model, training_columns
    from libs.streaming import make_shard_reader

    setup_logging(task.run_id, task.run_date)
    hvd.init()
    device = _configure_devices(hvd)
    rank, size = hvd.rank(), hvd.size()
    tf.keras.utils.set_random_seed(task.shuffle_seed + rank)
    conf = task.conf
    steps = task.steps_per_epoch(size)
    learning_rate = conf.learning_rate * size
    if rank == 0:
        log.info("training %s on %d rank(s) (%s): %d rows, %d steps/epoch of %d x %d, lr %.4g",
                 task.model, size, device, task.train_rows, steps, size, conf.batch_size, learning_rate)

    model = build_model(task.model, task.specs, conf)
    model.compile(optimizer=hvd.DistributedOptimizer(tf.keras.optimizers.Adam(learning_rate)),
                  loss="binary_crossentropy")
    store = ModelStore(task.warehouse)
    callbacks = [hvd.callbacks.BroadcastGlobalVariablesCallback(0), hvd.callbacks.MetricAverageCallback()]
    progress = _epoch_logger(task.model, conf.epochs, steps, conf.batch_size * size)
    if rank == 0:
        checkpoints = store.checkpoint_dir(task.model, task.run_id)
        callbacks += [progress, tf.keras.callbacks.ModelCheckpoint(checkpoints + "/epoch-{epoch:02d}",
                                                                   save_weights_only=True)]
    columns = [c for c in training_columns(task.model, conf) if c != S.LABEL]
    start = time.perf_counter()
    with make_shard_reader(task.files, rank, size, columns=columns + [S.LABEL, S.SPLIT],
                           shuffle_seed=task.shuffle_seed, num_epochs=None,
                           workers=task.reader_workers) as reader:
        dataset = training_dataset(reader, columns, conf.batch_size, task.shuffle_buffer,
                                   seed=task.shuffle_seed + rank)
        model.fit(dataset, steps_per_epoch=steps, epochs=conf.epochs, callbacks=callbacks, verbose=0)
    seconds = time.perf_counter() - start
    if rank != 0:
        return None

    summary = {
        "num_proc": size, "device": device, "steps_per_epoch": steps, "batch_size_per_rank": conf.batch_size,
        "learning_rate_scaled": learning_rate, "train_rows": task.train_rows,
        "epoch_loss": progress.losses, "examples_per_sec": progress.examples_per_sec,
        # epoch_loss is the sum Keras minimizes: the label loss plus the layers' add_loss terms
        "loss_terms": ["binary_crossentropy"] + sorted(layer.name for layer in model.layers if layer.losses),
        "training_seconds": seconds,
    }
    # Save a fresh copy: the trained model's compile state holds Horovod's optimizer wrapper,
    # which a plain load_model could not rebuild.
    export = build_model(task.model, task.specs, conf)
    export.set_weights(model.get_weights())
    store.save(task.model, task.run_id, export, {
        "hyper_parameters": dataclasses.asdict(conf), "feature_specs": task.specs.to_dict(),
        "run_date": task.run_date, "shuffle_seed": task.shuffle_seed, **task.record, **summary})
    return summary


def run_training(task: TrainTask, num_proc: int) -> dict:
    """Run :func:`train_fn` on ``num_proc`` Horovod ranks inside the active Spark application."""
    import horovod.spark

    from libs.log import rank_outputs

    log.info("starting %d Horovod rank(s) for %s", num_proc, task.model)
    stdout, stderr = rank_outputs()  # the ranks' output: to the run's log file, progress to the console
    results = horovod.spark.run(train_fn, args=(task,), num_proc=num_proc, use_gloo=True, verbose=1,
                                stdout=stdout, stderr=stderr)
    summaries = [r for r in results if r is not None]
    if len(summaries) != 1:
        raise RuntimeError(f"expected one summary from rank 0, got {len(summaries)}")
    return summaries[0]
