"""Data-parallel training of one model with Horovod, each rank streaming its Petastorm shard.

:func:`train_fn` is what ``horovod.spark.run`` ships to every rank (it imports TensorFlow and
Horovod inside, as functions sent to executors must); :func:`run_training` is the driver side.
"""
from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

from libs import schema as S

log = logging.getLogger(__name__)

DEFAULT_START_TIMEOUT_S = 120  # train.start_timeout_s: Horovod's own default (600 s) looked like a hang


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
    validation: Optional["ValidationQueries"] = None  # retrievers: pick the epoch on these (rank 0)
    warm_start: bool = False                # start from the previous run's weights where they fit
    warm_start_run: Optional[str] = None    # that run's id (None: there is none)
    warm_start_path: Optional[str] = None   # its saved model file (every rank reads it)
    warm_start_epochs: int = 2              # the epoch budget when the warm start applies

    def steps_per_epoch(self, size: int) -> int:
        """Every rank runs this many steps so allreduce calls pair up; at least one."""
        return max(1, self.train_rows // (self.conf.batch_size * size))


@dataclass
class ValidationQueries:
    """Full-ranking validation of a retriever: each user's query before the validation item.

    Attributes:
        columns: the retriever's user columns, one row per query (user_sequences split=valid).
        targets: (Q,) the validation item of each query.
        seen_indptr, seen_items: CSR rows of the items each query's user trained on (excluded).
        item_content: content columns by item index (for retrievers whose item side reads content).
    """

    columns: Dict[str, "np.ndarray"]  # noqa: F821
    targets: "np.ndarray"  # noqa: F821
    seen_indptr: "np.ndarray"  # noqa: F821
    seen_items: "np.ndarray"  # noqa: F821
    item_content: Dict[str, "np.ndarray"] = field(default_factory=dict)  # noqa: F821

    def seen(self) -> List["np.ndarray"]:  # noqa: F821
        return [self.seen_items[a:b] for a, b in zip(self.seen_indptr[:-1], self.seen_indptr[1:])]

    def ndcg_recall(self, model_name: str, model, k: int = 10, block_size: int = 4096):
        """(NDCG@k, recall@k) of the model's retrieval over the whole catalog."""
        import numpy as np

        from libs.models import retrieval_embeddings
        from libs.scoring import retrieve_top_n

        users, items = retrieval_embeddings(model_name, model, self.columns, self.item_content)
        top, _ = retrieve_top_n(users, items, k, block_size, self.seen())
        hits = top == self.targets[:, None]
        rank = np.argmax(hits, axis=1)
        found = hits.any(axis=1)
        return float(np.where(found, 1.0 / np.log2(rank + 2.0), 0.0).mean()), float(found.mean())


def _best_epoch_keeper(hvd, task: "TrainTask", patience: int, score_initial: bool):
    """Keeps the weights of the epoch with the best validation NDCG@10 (computed on rank 0) and
    stops every rank together once ``patience`` epochs (0: never) brought no improvement.

    With ``score_initial`` (a warm start) the inherited weights are scored first as epoch 0, so a
    warm-started run keeps them when no epoch beats them."""
    import numpy as np
    import tensorflow as tf

    class BestEpoch(tf.keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.history: List[dict] = []
            self.best_epoch, self.best_ndcg, self.best_weights = 0, -1.0, None

        def _score(self, epoch: int) -> None:
            ndcg, recall = task.validation.ndcg_recall(task.model, self.model)
            self.history.append({"epoch": epoch, "ndcg@10": ndcg, "recall@10": recall})
            if ndcg > self.best_ndcg:
                self.best_epoch, self.best_ndcg, self.best_weights = epoch, ndcg, self.model.get_weights()
            log.info("epoch %d: validation NDCG@10 %.4f, recall@10 %.4f (best: epoch %d)", epoch, ndcg,
                     recall, self.best_epoch)

        def on_train_begin(self, logs=None):
            if score_initial and hvd.rank() == 0:
                self._score(0)

        def on_epoch_end(self, epoch, logs=None):
            stop = 0
            if hvd.rank() == 0:
                self._score(epoch + 1)
                stop = int(patience > 0 and epoch + 1 - self.best_epoch >= patience)
            if int(hvd.broadcast(np.int32(stop), root_rank=0, name=f"stop_{epoch}")):
                self.model.stop_training = True

        def on_train_end(self, logs=None):
            if self.best_weights is not None:
                self.model.set_weights(self.best_weights)

    return BestEpoch()


def training_dataset(reader, columns: List[str], batch_size: int, shuffle_buffer: int, seed: int,
                     label: str = S.LABEL):
    """``(features, label)`` batches of the SPLIT == train rows of a Petastorm batch reader.

    Features: dict of ``columns`` -> (B,) or (B, L) tensors (Petastorm stacks fixed-length list
    columns into 2-D arrays); label: the ``label`` column, (B,) or (B, L). The split filter runs on
    whole row-group batches (one vectorized mask) before they are cut into rows for the shuffle
    buffer.
    """
    import tensorflow as tf
    from petastorm.tf_utils import make_petastorm_dataset

    def train_rows(batch):
        keep = tf.equal(batch.split, S.SPLIT_TRAIN)
        return {c: tf.boolean_mask(getattr(batch, c), keep) for c in columns + [label]}

    dataset = make_petastorm_dataset(reader).map(train_rows, num_parallel_calls=tf.data.AUTOTUNE).unbatch()
    if shuffle_buffer:
        dataset = dataset.shuffle(shuffle_buffer, seed=seed)
    return (dataset.batch(batch_size, drop_remainder=True)
            .map(lambda rows: ({c: rows[c] for c in columns}, rows[label]))
            .prefetch(tf.data.AUTOTUNE))


CONSOLE_EPOCH_LINES = 10  # a model's closing epoch lines kept on a console, at most about this many


def _epoch_logger(model: str, epochs: int, steps: int, examples_per_step: int):
    """Rank-0 callback: a progress bar every tenth of an epoch, then one line per epoch with the
    (rank-averaged) loss and examples/second.

    They go to the loggers :data:`libs.log.PROGRESS_LOGGER` and :data:`libs.log.EPOCH_LOGGER` as
    whole lines (Horovod forwards rank output line by line); the pipeline's console draws progress
    lines in place and keeps the closing lines (:class:`libs.log.RankOutput`), the run's log keeps
    every line. Of a long run (a retriever's 40 epochs) the console keeps the first epoch's line,
    every ``epochs / CONSOLE_EPOCH_LINES``-th and the last planned one; :func:`train_fn` closes
    with a line for the epochs run and the one kept.
    """
    import tensorflow as tf

    from libs.log import EPOCH_LOGGER, PROGRESS_LOGGER

    tick = max(1, steps // 10)
    stride = -(-epochs // CONSOLE_EPOCH_LINES)
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
            kept = epoch == 0 or (epoch + 1) % stride == 0 or epoch + 1 == epochs
            (closing if kept else progress).info(
                "    %-8s epoch %d/%d [%s] 100%%  loss %.4f, %s examples/s, %.1fs", model, epoch + 1, epochs,
                "#" * 20, self.losses[-1], f"{self.examples_per_sec[-1]:,.0f}", seconds)

    return EpochLogger()


def inherited_weights(previous: Sequence["np.ndarray"], fresh: Sequence["np.ndarray"],  # noqa: F821
                      names: Sequence[str]) -> Tuple[Optional[List["np.ndarray"]], Dict[str, List[int]]]:  # noqa: F821
    """A warm start's initial weights: ``previous`` (the last run's, in the same order as ``fresh``)
    wherever they fit, with new vocabulary rows left at their fresh initialization.

    Vocabulary ids are stable across runs, so row i of an embedding table (a weight whose name ends
    in ``embeddings``) is the same user, item or token in both runs and a table that grew keeps its
    old rows. Any other difference (a weight added, removed or of another shape) means the
    architecture or a hyper-parameter changed: returns ``(None, {})`` and the model trains from
    scratch. Returns ``(weights, {name: [old_rows, new_rows]} of the tables that grew)``.
    """
    import numpy as np

    if len(previous) != len(fresh):
        return None, {}
    weights, grown = [], {}
    for old, new, name in zip(previous, fresh, names):
        if old.shape == new.shape:
            weights.append(old)
        elif (name.split(":")[0].endswith("embeddings") and old.ndim == new.ndim == 2
              and old.shape[1] == new.shape[1] and old.shape[0] < new.shape[0]):
            weights.append(np.concatenate([old, new[old.shape[0]:]]).astype(new.dtype))
            grown[name] = [int(old.shape[0]), int(new.shape[0])]
        else:
            return None, {}
    return weights, grown


def _warm_start(task: "TrainTask", model) -> dict:
    """Load the previous run's weights into ``model`` where they fit; returns the record's
    ``warm_start`` entry (``applied`` False with the reason when it trains from scratch)."""
    from libs.model_store import load_model_at

    if not task.warm_start_path:
        return {"applied": False, "reason": "no previous published run"}
    weights, grown = inherited_weights(load_model_at(task.warm_start_path).get_weights(), model.get_weights(),
                                       [w.name for w in model.weights])
    if weights is None:
        return {"applied": False, "from_run": task.warm_start_run,
                "reason": "the previous run's weights have other shapes (architecture or hyper-parameters changed)"}
    model.set_weights(weights)
    return {"applied": True, "from_run": task.warm_start_run, "grown_vocabularies": grown}


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
    from libs.models import build_model, model_def, training_columns
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
        from libs.spark import code_origin

        log.info("rank code: %s", code_origin())

    spec = model_def(task.model)
    model = build_model(task.model, task.specs, conf)
    warm = _warm_start(task, model) if task.warm_start else None
    epochs = min(conf.epochs, task.warm_start_epochs) if warm and warm["applied"] else conf.epochs
    if rank == 0 and warm:
        log.info("%s warm start: %s; %d epoch(s) at most", task.model, warm, epochs)
    model.compile(optimizer=hvd.DistributedOptimizer(tf.keras.optimizers.Adam(learning_rate)), loss=spec.loss)
    store = ModelStore(task.warehouse)
    callbacks = [hvd.callbacks.BroadcastGlobalVariablesCallback(0), hvd.callbacks.MetricAverageCallback()]
    best = (_best_epoch_keeper(hvd, task, conf.patience, score_initial=bool(warm and warm["applied"]))
            if task.validation is not None else None)
    callbacks += [best] if best else []
    progress = _epoch_logger(task.model, epochs, steps, conf.batch_size * size)
    if rank == 0:
        checkpoints = store.checkpoint_dir(task.model, task.run_id)
        callbacks += [progress, tf.keras.callbacks.ModelCheckpoint(checkpoints + "/epoch-{epoch:02d}",
                                                                   save_weights_only=True)]
    columns = [c for c in training_columns(task.model, conf) if c != spec.label]
    start = time.perf_counter()
    with make_shard_reader(task.files, rank, size, columns=columns + [spec.label, S.SPLIT],
                           shuffle_seed=task.shuffle_seed, num_epochs=None,
                           workers=task.reader_workers) as reader:
        dataset = training_dataset(reader, columns, conf.batch_size, task.shuffle_buffer,
                                   seed=task.shuffle_seed + rank, label=spec.label)
        model.fit(dataset, steps_per_epoch=steps, epochs=epochs, callbacks=callbacks, verbose=0)
    seconds = time.perf_counter() - start
    if rank != 0:
        return None
    from libs.log import EPOCH_LOGGER

    kept = (f", kept epoch {best.best_epoch} (validation NDCG@10 {best.best_ndcg:.4f})"
            if best is not None and best.history else "")
    logging.getLogger(EPOCH_LOGGER).info("    %-8s %d epoch(s) in %.0fs%s", task.model, len(progress.losses),
                                         seconds, kept)

    summary = {
        "num_proc": size, "device": device, "steps_per_epoch": steps, "batch_size_per_rank": conf.batch_size,
        "learning_rate_scaled": learning_rate, "train_rows": task.train_rows,
        "epoch_loss": progress.losses, "examples_per_sec": progress.examples_per_sec,
        # epoch_loss is the sum Keras minimizes: the label loss plus the layers' add_loss terms
        "loss_terms": [getattr(spec.loss, "__name__", spec.loss)] + sorted(
            layer.name for layer in model.layers if layer.losses),
        "training_seconds": seconds, "epochs_budget": epochs,
        "warm_start": warm or {"applied": False, "reason": "train.warm_start is off"},
    }
    if best is not None:
        summary.update({"epochs_run": len(progress.losses), "best_epoch": best.best_epoch,
                        "validation_by_epoch": best.history,
                        "tuned_on_validation": "epoch with the best full-ranking NDCG@10 of each user's "
                                               "validation item (second-latest interaction), never the test item"})
    # Save a fresh copy: the trained model's compile state holds Horovod's optimizer wrapper,
    # which a plain load_model could not rebuild.
    export = build_model(task.model, task.specs, conf)
    export.set_weights(model.get_weights())
    store.save(task.model, task.run_id, export, {
        "hyper_parameters": dataclasses.asdict(conf), "feature_specs": task.specs.to_dict(),
        "run_date": task.run_date, "shuffle_seed": task.shuffle_seed, **task.record, **summary})
    return summary


class TrainingStartError(RuntimeError):
    """The Horovod ranks cannot all start: more ranks than Spark task slots, or a start timeout."""


def task_slots(spark) -> Optional[int]:
    """Spark tasks that can run at once, when the configuration fixes it up front.

    ``local[N]``: N (``local[*]``: the cores); static executors: ``spark.executor.instances`` x
    ``spark.executor.cores``; a standalone master (``spark://``): ``spark.cores.max``, the most
    cores the application gets; each divided by ``spark.task.cpus``. None when unknown (dynamic
    allocation can add executors): then only the start timeout bounds the wait.
    """
    import os
    import re

    sc = spark.sparkContext
    conf = sc.getConf()
    local = re.fullmatch(r"local(?:\[(\d+|\*)(?:,\d+)?\])?", sc.master)
    if local:
        cores = (os.cpu_count() or 1) if local.group(1) == "*" else int(local.group(1) or 1)
    elif (conf.get("spark.dynamicAllocation.enabled", "false").lower() != "true"
          and conf.get("spark.executor.instances") and conf.get("spark.executor.cores")):
        cores = int(conf.get("spark.executor.instances")) * int(conf.get("spark.executor.cores"))
    elif sc.master.startswith("spark://") and conf.get("spark.cores.max"):
        cores = int(conf.get("spark.cores.max"))
    else:
        return None
    return cores // int(conf.get("spark.task.cpus", "1"))


def rank_python(spark) -> str:
    """The Python the Horovod ranks start with: the executors' own (``spark.pyspark.python``, e.g.
    a shipped ``./environment/bin/python`` relative to each executor's work dir), else the
    driver's. Horovod's default is the driver's ``sys.executable``, which on a cluster is a path
    that only the driver has (here: the checkout's venv, with the source tree installed)."""
    import sys

    return spark.sparkContext.getConf().get("spark.pyspark.python") or sys.executable


def run_training(task: TrainTask, num_proc: int, start_timeout_s: int = DEFAULT_START_TIMEOUT_S) -> dict:
    """Run :func:`train_fn` on ``num_proc`` Horovod ranks inside the active Spark application.

    Every rank is a Spark task that must run at the same time as the others: with more ranks than
    task slots Horovod would wait for ever, so that fails up front, and a start that takes longer
    than ``start_timeout_s`` fails too, each with :class:`TrainingStartError` saying what to change.
    """
    import horovod.spark
    from horovod.runner.common.util.timeout import TimeoutException
    from pyspark.sql import SparkSession

    from libs.log import rank_outputs

    slots = task_slots(SparkSession.getActiveSession())
    if slots is not None and num_proc > slots:
        raise TrainingStartError(
            f"train.num_proc={num_proc} Horovod ranks need {num_proc} Spark tasks at once, but this Spark "
            f"application has {slots} task slot(s): set --set train.num_proc={slots} or give Spark more "
            "cores (e.g. spark.master local[N], or more executors/spark.executor.cores)")
    executable = rank_python(SparkSession.getActiveSession())
    log.info("starting %d Horovod rank(s) for %s (start timeout %ds, python %s)", num_proc, task.model,
             start_timeout_s, executable)
    stdout, stderr = rank_outputs()  # the ranks' output: to the run's log file, progress to the console
    try:
        results = horovod.spark.run(train_fn, args=(task,), num_proc=num_proc, start_timeout=start_timeout_s,
                                    use_gloo=True, verbose=1, stdout=stdout, stderr=stderr,
                                    executable=executable)
    except TimeoutException as exc:
        raise TrainingStartError(
            f"the {num_proc} Horovod ranks of {task.model} did not all start within train.start_timeout_s="
            f"{start_timeout_s}s ({exc}); lower train.num_proc to the executors' free task slots, or raise "
            "train.start_timeout_s if executors are still being allocated") from exc
    summaries = [r for r in results if r is not None]
    if len(summaries) != 1:
        raise RuntimeError(f"expected one summary from rank 0, got {len(summaries)}")
    return summaries[0]
