"""Train the models of ``train.models`` with Horovod inside Spark, then evaluate each on the held-out tables.

extract: the Delta versions of the feature tables and the active files of each training table.
train:   ``horovod.spark.run`` with ``train.num_proc`` ranks (:mod:`libs.training`); rank 0 saves the
         run to the model store.
evaluate: on the executors (:mod:`libs.evaluation_protocols`): EVAL_CANDIDATES (NCF protocol HR@10 /
         NDCG@10) joined in Spark with the users' histories (USER_FEATURES), serving windows
         (USER_SEQUENCES split=serve) and item content (ITEM_FEATURES), grouped by user, scored by the
         saved model loaded once per Python worker; DIEN also on SEQ_EXAMPLES split=test (AUC); the
         popularity baseline on the same rows, the same way. The driver gets one row per protocol
         (the means), nothing proportional to users x candidates. Metrics go into the record and the
         run is published as the model's latest.

Retrievers (the registry says which) also get each user's validation query (history before the
second-latest interaction, items trained on excluded): rank 0 keeps the epoch with the best
full-ranking NDCG@10 on it. Those queries are collected on the driver and shipped to rank 0
(O(users x history), see :func:`validation_queries`). With ``train.warm_start`` each model starts
from its latest published run (another run id than this one) and trains at most
``train.warm_start_epochs`` epochs.
"""
from __future__ import annotations

import logging
from typing import Dict, Optional, Sequence

import numpy as np
import pandas as pd
from pyspark.sql import functions as F

from libs import schema as S
from libs.conf import MODEL_NAMES
from libs.evaluation_protocols import EvalTables, Evaluation, Metrics, ModelScorer, PopularityScorer, evaluate
from libs.feature_specs import FeatureSpecs
from libs.log import step
from libs.model_store import ModelStore
from libs.runtime import JobContext, job_main

log = logging.getLogger(__name__)

NCF_PROTOCOL, SEQUENCE_PROTOCOL = S.PROTOCOL_NCF, S.PROTOCOL_SEQUENCE
ITEM_CONTENT = {S.TITLE_TOKENS: np.int32, S.GENRE_MULTI_HOT: np.float32, S.YEAR_BUCKET: np.int32}
FEATURE_TABLES = (S.VOCAB_USERS, S.VOCAB_ITEMS, S.VOCAB_TOKENS, S.VOCAB_GENRES, S.USER_FEATURES,
                  S.ITEM_FEATURES, S.EVAL_CANDIDATES, S.SEQ_EXAMPLES, S.USER_SEQUENCES, S.CF_EXAMPLES)


def _stack(series: pd.Series, dtype) -> np.ndarray:
    """A column of equal-length arrays (from Spark) -> (N, L) array."""
    return np.stack(series.to_numpy()).astype(dtype) if len(series) else np.zeros((0, 0), dtype)


def _by_index(frame: pd.DataFrame, index_column: str, column: str, size: int, dtype) -> np.ndarray:
    """Rows of ``column`` placed at their index: (size,) or (size, L); missing indexes are zeros."""
    values = _stack(frame[column], dtype) if frame[column].dtype == object else frame[column].to_numpy(dtype)
    out = np.zeros((size,) + values.shape[1:], dtype)
    out[frame[index_column].to_numpy()] = values
    return out


def _partitions(ctx: JobContext) -> int:
    return max(ctx.spark.sparkContext.defaultParallelism, 2)


def popularity_metrics(ctx: JobContext, tables: EvalTables) -> Metrics:
    """The popularity baseline on the same rows as the models, on the executors."""
    protocols = (NCF_PROTOCOL, SEQUENCE_PROTOCOL)
    return evaluate(tables, PopularityScorer(), protocols, partitions=_partitions(ctx)).metrics


def evaluate_model(ctx: JobContext, name: str, model_path: str, tables: EvalTables) -> Evaluation:
    """The protocols the registry lists for the model (HR/NDCG@10 on the NCF candidates, AUC on the
    next-item test examples), the saved model at ``model_path`` scoring on the executors."""
    from libs.models import model_def

    return evaluate(tables, ModelScorer.of(name, model_path), model_def(name).protocols, partitions=_partitions(ctx))


def validation_queries(ctx: JobContext, name: str, versions: Dict[str, int], history_length: int):
    """The full-ranking validation queries of a retriever (None for other models), see
    :class:`libs.training.ValidationQueries`.

    Collected on the driver and shipped to Horovod rank 0, which scores them after every epoch:
    O(users x history) rows (ml-1m: 6,040 queries), unlike the evaluation, which stays on the
    executors."""
    from libs.models import model_def
    from libs.ranking import query_columns
    from libs.training import ValidationQueries

    retrieval = model_def(name).retrieval
    if retrieval is None:
        return None
    store = ctx.store
    seen = (store.read(S.CF_EXAMPLES.name, versions[S.CF_EXAMPLES.name])
            .where((F.col(S.LABEL) > 0) & (F.col(S.SPLIT) == S.SPLIT_TRAIN))
            .groupBy(S.USER_IDX).agg(F.array_sort(F.collect_set(S.ITEM_IDX)).alias("seen")))
    rows = (store.read(S.USER_SEQUENCES.name, versions[S.USER_SEQUENCES.name])
            .where((F.col(S.SPLIT) == S.SPLIT_VALID) & (F.col(S.SEQ_LEN) > 0))
            .join(seen, S.USER_IDX, "left").orderBy(S.USER_IDX).toPandas())
    if rows.empty:
        return None
    columns = {c: values for c, values in query_columns(rows, history_length).items() if c in retrieval.user_columns}
    seen_lists = [np.asarray(s if s is not None else [], np.int64) for s in rows["seen"]]
    indptr = np.r_[0, np.cumsum([len(s) for s in seen_lists])]
    items = store.read(S.ITEM_FEATURES.name, versions[S.ITEM_FEATURES.name]).select(
        S.ITEM_IDX, *ITEM_CONTENT).toPandas()  # one row per item: small
    n_items = int(items[S.ITEM_IDX].max()) + 1 if len(items) else 1
    content = {c: _by_index(items, S.ITEM_IDX, c, n_items, dtype) for c, dtype in ITEM_CONTENT.items()}
    return ValidationQueries(columns, rows[S.VALID_ITEM].to_numpy(np.int64), indptr,
                             np.concatenate(seen_lists) if len(seen_lists) else np.zeros(0, np.int64), content)


def train_one(ctx: JobContext, name: str, versions: Dict[str, int], specs: FeatureSpecs,
              eval_tables: EvalTables, baseline: Metrics) -> dict:
    """Train ``name`` with Horovod, evaluate the saved model, record the metrics, publish the run."""
    from libs.models import training_table
    from libs.training import TrainTask, run_training

    cfg, store = ctx.cfg, ctx.store
    table = training_table(name).name
    version = store.version(table)
    if version is None:
        raise RuntimeError(f"training table {table} does not exist; run the features job first")
    train_rows = store.read(table, version).filter(F.col(S.SPLIT) == S.SPLIT_TRAIN).count()
    read_versions = {**versions, table: version}
    models = ModelStore(store.root)
    previous = models.latest_run(name) if cfg.train.warm_start else None
    previous = previous if previous != cfg.run.run_id else None  # a redo of this run starts afresh
    task = TrainTask(
        model=name, run_id=cfg.run.run_id, run_date=cfg.run.date, specs=specs, conf=getattr(cfg.train, name),
        files=store.active_files(table, version), train_rows=train_rows, warehouse=store.root,
        shuffle_seed=cfg.train.shuffle_seed, shuffle_buffer=cfg.train.shuffle_buffer,
        record={"training_table": table, "table_versions": read_versions,
                "table_rows": {table: store.num_rows(table, version)}},
        validation=validation_queries(ctx, name, versions, specs.history_length),
        warm_start=cfg.train.warm_start, warm_start_run=previous,
        warm_start_path=models.model_path(name, previous) if previous else None,
        warm_start_epochs=cfg.train.warm_start_epochs)
    with step(log, f"train {name}") as result:
        summary = run_training(task, cfg.train.num_proc, cfg.train.start_timeout_s)
        result.add(f"{table} train rows", train_rows)
    with step(log, f"evaluate {name}") as result:
        evaluation = evaluate_model(ctx, name, models.model_path(name, cfg.run.run_id), eval_tables)
        metrics = evaluation.metrics
        for what, count in evaluation.rows.items():
            result.add(what, count)
    models.update_metrics(name, cfg.run.run_id, metrics)
    models.update_record(name, cfg.run.run_id, {"popularity_baseline": baseline})
    models.publish(name, cfg.run.run_id)
    log.info("%s run %s: %s (popularity: %s); %.0f examples/s in the last epoch", name, cfg.run.run_id,
             _fmt(metrics), _fmt(baseline), summary["examples_per_sec"][-1])
    return {"run_id": cfg.run.run_id, "metrics": metrics, "epoch_loss": summary["epoch_loss"],
            "examples_per_sec": summary["examples_per_sec"]}


def _fmt(metrics: Metrics) -> str:
    return ", ".join(f"{p}/{k}={v:.4f}" for p, figures in metrics.items() for k, v in figures.items())


def run(ctx: JobContext, models: Optional[Sequence[str]] = None) -> dict:
    """Train and evaluate ``models`` (default: ``--model``, else ``train.models``).

    Returns ``{model: {"run_id", "metrics", "epoch_loss", "examples_per_sec"}, "popularity": metrics}``.
    """
    requested = models or _models_from_args(ctx) or ctx.cfg.train.models
    unknown = set(requested) - set(MODEL_NAMES)
    if unknown:
        raise ValueError(f"unknown model(s) {sorted(unknown)}; choose from {MODEL_NAMES}")
    store = ctx.store
    missing = [t.name for t in FEATURE_TABLES if not store.exists(t.name)]
    if missing:
        raise RuntimeError(f"feature tables missing: {missing}; run the features job first")
    versions = {t.name: store.version(t.name) for t in FEATURE_TABLES}
    specs = FeatureSpecs.from_store(store, ctx.cfg, versions)
    log.info("feature versions %s; %s", versions, specs)
    eval_tables = EvalTables.read(store, versions)  # lazy: read by the executors
    with step(log, "evaluate popularity"):
        baseline = popularity_metrics(ctx, eval_tables)
    log.info("popularity baseline: %s", _fmt(baseline))
    results: dict = {"popularity": baseline}
    for name in requested:
        results[name] = train_one(ctx, name, versions, specs, eval_tables, baseline)
    return results


def _models_from_args(ctx: JobContext):
    choice = getattr(ctx.args, "model", None) if ctx.args is not None else None
    if not choice:
        return None
    return list(MODEL_NAMES) if choice == "all" else [choice]


def _add_args(parser):
    parser.add_argument("--model", choices=list(MODEL_NAMES) + ["all"],
                        help="model to train (default: train.models of the configuration)")


def main(argv=None):
    return job_main("train", run, argv, add_args=_add_args)


if __name__ == "__main__":
    main()
