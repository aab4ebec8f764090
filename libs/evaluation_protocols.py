"""The train job's evaluation protocols, computed on the executors: NCF HR@K / NDCG@K, sequence AUC.

Nothing proportional to users x candidates reaches the driver; it gets one row per protocol.

* NCF protocol (EVAL_CANDIDATES protocol=ncf: per user the held-out item and 99 items the user never
  touched): the candidate rows are joined in Spark with what the scorer reads (USER_FEATURES
  histories, USER_SEQUENCES split=serve windows, ITEM_FEATURES content and popularity; a user or item
  missing from those tables reads zeros), repartitioned by user and sorted within partitions. A
  ``mapInPandas`` scores whole users at a time, batches of about ``ROWS_PER_CALL`` rows (a user's
  candidates are never split between two calls, so a retriever encodes each user once), ranks each
  user's positive with the tie rule of :func:`libs.metrics.ncf_positive_ranks` and returns one row
  per user (hit, ndcg); Spark averages them.
* Sequence protocol (SEQ_EXAMPLES split=test, DIEN): the rows are scored in a ``mapInPandas`` and
  the AUC comes from Spark's ``BinaryClassificationEvaluator`` with ``numBins=0``: the ROC curve
  then has one point per distinct score (no down-sampling), and its trapezoid over a group of
  tied scores counts each tied (positive, negative) pair one half, the Mann-Whitney U of
  :func:`libs.metrics.auc`.

Scorers: :class:`ModelScorer` loads the saved model once per Python worker
(:func:`libs.serving.loaded_model`) and scores with :func:`libs.models.pair_scores`, the computation
the driver used to run, so the figures equal it (to float rounding of the mean);
:class:`PopularityScorer` is the popularity baseline on the same rows, distributed the same way.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, Iterator, List, Mapping, Optional, Sequence

import numpy as np
import pandas as pd
from pyspark import StorageLevel
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from libs import schema as S
from libs.metrics import hit_ndcg, ncf_positive_ranks

NCF_PROTOCOL, SEQUENCE_PROTOCOL = S.PROTOCOL_NCF, S.PROTOCOL_SEQUENCE
EVAL_K = 10
ROWS_PER_CALL = 32768  # candidate rows per scoring call (whole users; ~330 users of 100 candidates)
SCORE = "score"
USER_METRICS_SCHEMA = f"{S.USER_IDX} int, candidates int, hit double, ndcg double"
SCORED_SCHEMA = f"{S.LABEL} double, {SCORE} double"

USER_TABLE_COLUMNS = {S.HIST_ITEMS: "user_features", S.HIST_LEN: "user_features", S.SEQ_ITEMS: "serving",
                      S.SEQ_SESSION_STARTS: "serving", S.SEQ_LEN: "serving"}
ITEM_TABLE_COLUMNS = (S.POPULARITY, S.TITLE_TOKENS, S.GENRE_MULTI_HOT, S.YEAR_BUCKET)
FLOAT_COLUMNS = {S.GENRE_MULTI_HOT}  # every other model input is int32

Metrics = Dict[str, Dict[str, float]]  # protocol -> metric -> value


@dataclass(frozen=True)
class EvalTables:
    """The evaluation inputs as lazy Spark DataFrames, at the Delta versions the run pinned."""

    candidates: DataFrame     # EVAL_CANDIDATES protocol=ncf: USER_IDX, ITEM_IDX, LABEL
    user_features: DataFrame  # USER_IDX, HIST_ITEMS, HIST_LEN
    serving: DataFrame        # USER_SEQUENCES split=serve: USER_IDX, SEQ_ITEMS, SEQ_SESSION_STARTS, SEQ_LEN
    items: DataFrame          # ITEM_IDX, POPULARITY, TITLE_TOKENS, GENRE_MULTI_HOT, YEAR_BUCKET (one row per item)
    seq_test: DataFrame       # SEQ_EXAMPLES split=test: USER_IDX, ITEM_IDX, HIST_ITEMS, HIST_LEN, LABEL

    @classmethod
    def read(cls, store, versions: Mapping[str, int]) -> "EvalTables":
        def table(spec):
            return store.read(spec.name, versions[spec.name])

        return cls(
            table(S.EVAL_CANDIDATES).where(F.col(S.PROTOCOL) == NCF_PROTOCOL).select(S.USER_IDX, S.ITEM_IDX, S.LABEL),
            table(S.USER_FEATURES).select(S.USER_IDX, S.HIST_ITEMS, S.HIST_LEN),
            table(S.USER_SEQUENCES).where(F.col(S.SPLIT) == S.SPLIT_SERVE)
            .select(S.USER_IDX, S.SEQ_ITEMS, S.SEQ_SESSION_STARTS, S.SEQ_LEN),
            table(S.ITEM_FEATURES).select(S.ITEM_IDX, *ITEM_TABLE_COLUMNS),
            table(S.SEQ_EXAMPLES).where(F.col(S.SPLIT) == S.SPLIT_TEST)
            .select(S.USER_IDX, S.ITEM_IDX, S.HIST_ITEMS, S.HIST_LEN, S.LABEL))


# --- scorers (pickled to the executors) -----------------------------------------------------

@dataclass(frozen=True)
class PopularityScorer:
    """The popularity baseline: each item's training interactions (ITEM_FEATURES.POPULARITY), 0 for
    an item without a row (as :func:`libs.metrics.popularity_scores`)."""

    name: str = "popularity"
    columns: Sequence[str] = (S.POPULARITY,)

    def scores(self, frame: pd.DataFrame) -> np.ndarray:
        return frame[S.POPULARITY].fillna(0).to_numpy(np.float64)


@dataclass(frozen=True)
class ModelScorer:
    """A saved model's scores (:func:`libs.models.pair_scores`: a ranker's probability, a retriever's
    dot product) of the (user, item) rows of a frame."""

    name: str
    path: str            # the saved model file (ModelStore.model_path), read on the executors
    columns: Sequence[str] = field(default=())  # libs.models.inference_columns(name)

    @classmethod
    def of(cls, name: str, path: str) -> "ModelScorer":
        from libs.models import inference_columns

        return cls(name, path, tuple(inference_columns(name)))

    def scores(self, frame: pd.DataFrame) -> np.ndarray:
        from libs.models import pair_scores
        from libs.serving import loaded_model

        model = loaded_model(self.path)
        widths = {name: int(t.shape[1]) for name, t in model.input.items() if len(t.shape) == 2}
        return pair_scores(self.name, model, {c: column_array(frame, c, widths.get(c)) for c in self.columns})


def column_array(frame: pd.DataFrame, column: str, width: Optional[int] = None) -> np.ndarray:
    """A frame's column as a model input: (N,) ids or (N, L) lists; nulls (a user or item missing
    from the joined table) are zeros, as the driver's dense gather had them."""
    dtype = np.float32 if column in FLOAT_COLUMNS else np.int32
    values = frame[column]
    if values.dtype != object:
        return values.fillna(0).to_numpy(dtype)
    present = values.notna().to_numpy()
    if width is None:
        width = len(values[present].iloc[0]) if present.any() else 0
    out = np.zeros((len(values), width), dtype)
    if present.any():
        out[present] = np.stack(values[present].to_numpy()).astype(dtype)
    return out


# --- joins ----------------------------------------------------------------------------------

def with_inputs(rows: DataFrame, tables: EvalTables, columns: Sequence[str]) -> DataFrame:
    """``rows`` (USER_IDX, ITEM_IDX, LABEL, ...) left-joined with the columns the scorer reads that
    they lack: per-user ones on USER_IDX, per-item ones on ITEM_IDX."""
    missing = [c for c in columns if c not in rows.columns and c not in (S.USER_IDX, S.ITEM_IDX)]
    unknown = [c for c in missing if c not in USER_TABLE_COLUMNS and c not in ITEM_TABLE_COLUMNS]
    if unknown:
        raise ValueError(f"no evaluation table holds column(s) {unknown}")
    for table_name in ("user_features", "serving"):
        wanted = [c for c in missing if USER_TABLE_COLUMNS.get(c) == table_name]
        if wanted:
            rows = rows.join(getattr(tables, table_name).select(S.USER_IDX, *wanted), S.USER_IDX, "left")
    wanted = [c for c in missing if c in ITEM_TABLE_COLUMNS]
    if wanted:
        rows = rows.join(tables.items.select(S.ITEM_IDX, *wanted), S.ITEM_IDX, "left")
    return rows


# --- executor bodies ------------------------------------------------------------------------

def _users_metrics(frame: pd.DataFrame, scorer, k: int) -> pd.DataFrame:
    users, rank = ncf_positive_ranks(frame[S.USER_IDX].to_numpy(), frame[S.LABEL].to_numpy(), scorer.scores(frame))
    hit, ndcg = hit_ndcg(rank, k)
    candidates = frame.groupby(S.USER_IDX).size().reindex(users).to_numpy()
    return pd.DataFrame({S.USER_IDX: users.astype(np.int32), "candidates": candidates.astype(np.int32),
                         "hit": hit, "ndcg": ndcg})


def ncf_user_metrics(batches: Iterator[pd.DataFrame], scorer, k: int = EVAL_K,
                     rows_per_call: int = ROWS_PER_CALL) -> Iterator[pd.DataFrame]:
    """mapInPandas body over a partition sorted by USER_IDX: (USER_IDX, candidates, hit, ndcg) of
    every user with a positive. Arrow batches are gathered up to ``rows_per_call`` rows; the last
    user of a batch may continue in the next, so it waits for it."""
    pending: List[pd.DataFrame] = []
    size = 0
    for frame in batches:
        pending.append(frame)
        size += len(frame)
        if size < rows_per_call:
            continue
        frame = pd.concat(pending, ignore_index=True)
        users = frame[S.USER_IDX].to_numpy()
        last = users == users[-1]  # sorted: the last user's rows are the tail
        pending, size = [frame[last]], int(last.sum())
        if (~last).any():
            yield _users_metrics(frame[~last], scorer, k)
    if size:
        yield _users_metrics(pd.concat(pending, ignore_index=True), scorer, k)


def scored_rows(batches: Iterator[pd.DataFrame], scorer) -> Iterator[pd.DataFrame]:
    """mapInPandas body: (label 0/1, score) of every row; -0.0 scores become 0.0 (one tie group)."""
    for frame in batches:
        if len(frame):
            yield pd.DataFrame({S.LABEL: (frame[S.LABEL].to_numpy() > 0).astype(np.float64),
                                SCORE: np.asarray(scorer.scores(frame), np.float64) + 0.0})


# --- the protocols --------------------------------------------------------------------------

@dataclass
class Evaluation:
    metrics: Metrics
    rows: Dict[str, int]  # what was scored: {"ncf users", "ncf candidates", "sequence examples"}


def ncf_metrics(tables: EvalTables, scorer, k: int = EVAL_K, partitions: int = 2,
                rows_per_call: int = ROWS_PER_CALL) -> Evaluation:
    """Mean HR@k / NDCG@k over the users of EVAL_CANDIDATES with a positive, scored on the executors."""
    rows = with_inputs(tables.candidates, tables, scorer.columns)
    per_user = (rows.repartition(partitions, S.USER_IDX).sortWithinPartitions(S.USER_IDX)
                .mapInPandas(lambda it: ncf_user_metrics(it, scorer, k, rows_per_call), USER_METRICS_SCHEMA))
    out = per_user.agg(F.count(F.lit(1)).alias("users"), F.sum("candidates").alias("candidates"),
                       F.avg("hit").alias("hit"), F.avg("ndcg").alias("ndcg")).first()
    users = int(out["users"])
    figures = {f"hr@{k}": float(out["hit"]) if users else float("nan"),
               f"ndcg@{k}": float(out["ndcg"]) if users else float("nan")}
    return Evaluation({NCF_PROTOCOL: figures}, {"ncf users": users, "ncf candidates": int(out["candidates"] or 0)})


def sequence_auc(tables: EvalTables, scorer) -> Evaluation:
    """AUC of the scorer on SEQ_EXAMPLES split=test (no figure without rows), scored on the executors."""
    from pyspark.ml.evaluation import BinaryClassificationEvaluator

    scored = (with_inputs(tables.seq_test, tables, scorer.columns)
              .mapInPandas(lambda it: scored_rows(it, scorer), SCORED_SCHEMA)
              .persist(StorageLevel.MEMORY_AND_DISK))  # the evaluator passes over it several times
    try:
        counts = scored.agg(F.count(F.lit(1)).alias("n"), F.sum(S.LABEL).alias("positives")).first()
        n, positives = int(counts["n"]), int(counts["positives"] or 0)
        if n == 0:
            return Evaluation({}, {"sequence examples": 0})
        if positives in (0, n):
            raise ValueError("AUC needs both positive and negative examples")
        value = BinaryClassificationEvaluator(rawPredictionCol=SCORE, labelCol=S.LABEL, metricName="areaUnderROC",
                                              numBins=0).evaluate(scored)
        return Evaluation({SEQUENCE_PROTOCOL: {"auc": float(value)}}, {"sequence examples": n})
    finally:
        scored.unpersist()


def evaluate(tables: EvalTables, scorer, protocols: Sequence[str], k: int = EVAL_K, partitions: int = 2) -> Evaluation:
    """The ``protocols`` of a scorer (the registry's ``ModelDef.protocols`` of a model)."""
    result = Evaluation({}, {})
    parts = ([ncf_metrics(tables, scorer, k, partitions)] if NCF_PROTOCOL in protocols else []) + \
            ([sequence_auc(tables, scorer)] if SEQUENCE_PROTOCOL in protocols else [])
    for part in parts:
        result.metrics.update(part.metrics)
        result.rows.update(part.rows)
    return result
