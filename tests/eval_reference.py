"""The driver-side evaluation the train job ran before it moved to the executors, kept as the tests'
reference (and the benchmark's "before"): every input gathered per candidate row on the driver,
scored with ``libs.models.pair_scores``, figures from ``libs.metrics``. For small data only."""
from __future__ import annotations

from typing import Dict

import numpy as np
from pyspark.sql import functions as F

from jobs.train import _by_index, _stack  # the driver gather's helpers, which the job keeps for item content
from libs import schema as S
from libs.metrics import auc, ncf_hit_ndcg, popularity_scores

ITEM_CONTENT = ((S.TITLE_TOKENS, np.int32), (S.GENRE_MULTI_HOT, np.float32), (S.YEAR_BUCKET, np.int32))


def collect_eval_data(store, versions: Dict[str, int], n_users: int, n_items: int):
    """(NCF candidate columns, popularity by ITEM_IDX, sequence test columns), all on the driver."""
    def read(spec):
        return store.read(spec.name, versions[spec.name])

    candidates = (read(S.EVAL_CANDIDATES).filter(F.col(S.PROTOCOL) == S.PROTOCOL_NCF)
                  .select(S.USER_IDX, S.ITEM_IDX, S.LABEL).toPandas())
    users = read(S.USER_FEATURES).select(S.USER_IDX, S.HIST_ITEMS, S.HIST_LEN).toPandas()
    items = read(S.ITEM_FEATURES).select(S.ITEM_IDX, S.POPULARITY, *(c for c, _ in ITEM_CONTENT)).toPandas()
    user_idx = candidates[S.USER_IDX].to_numpy(np.int32)
    item_idx = candidates[S.ITEM_IDX].to_numpy(np.int32)
    columns = {S.USER_IDX: user_idx, S.ITEM_IDX: item_idx, S.LABEL: candidates[S.LABEL].to_numpy(np.float32)}
    for column in (S.HIST_ITEMS, S.HIST_LEN):
        columns[column] = _by_index(users, S.USER_IDX, column, n_users, np.int32)[user_idx]
    serving = (read(S.USER_SEQUENCES).where(F.col(S.SPLIT) == S.SPLIT_SERVE)
               .select(S.USER_IDX, S.SEQ_ITEMS, S.SEQ_SESSION_STARTS, S.SEQ_LEN).toPandas())
    for column in (S.SEQ_ITEMS, S.SEQ_SESSION_STARTS, S.SEQ_LEN):
        columns[column] = _by_index(serving, S.USER_IDX, column, n_users, np.int32)[user_idx]
    for column, dtype in ITEM_CONTENT:
        columns[column] = _by_index(items, S.ITEM_IDX, column, n_items, dtype)[item_idx]
    seq = (read(S.SEQ_EXAMPLES).filter(F.col(S.SPLIT) == S.SPLIT_TEST)
           .select(S.USER_IDX, S.ITEM_IDX, S.HIST_ITEMS, S.HIST_LEN, S.LABEL).toPandas())
    seq_test = {S.USER_IDX: seq[S.USER_IDX].to_numpy(np.int32), S.ITEM_IDX: seq[S.ITEM_IDX].to_numpy(np.int32),
                S.HIST_ITEMS: _stack(seq[S.HIST_ITEMS], np.int32), S.HIST_LEN: seq[S.HIST_LEN].to_numpy(np.int32),
                S.LABEL: seq[S.LABEL].to_numpy(np.float32)}
    return columns, items.set_index(S.ITEM_IDX)[S.POPULARITY], seq_test


def _ncf(candidates, scores):
    hr, ndcg = ncf_hit_ndcg(candidates[S.USER_IDX], candidates[S.LABEL], scores, 10)
    return {"hr@10": hr, "ndcg@10": ndcg}


def popularity_reference(candidates, popularity, seq_test):
    metrics = {S.PROTOCOL_NCF: _ncf(candidates, popularity_scores(candidates[S.ITEM_IDX], popularity))}
    if len(seq_test[S.LABEL]):
        metrics[S.PROTOCOL_SEQUENCE] = {"auc": auc(seq_test[S.LABEL], popularity_scores(seq_test[S.ITEM_IDX],
                                                                                         popularity))}
    return metrics


def model_reference(name, model, candidates, seq_test):
    from libs.models import inference_columns, model_def, pair_scores

    protocols, columns = model_def(name).protocols, inference_columns(name)
    metrics = {}
    if S.PROTOCOL_NCF in protocols:
        metrics[S.PROTOCOL_NCF] = _ncf(candidates, pair_scores(name, model, {c: candidates[c] for c in columns}))
    if S.PROTOCOL_SEQUENCE in protocols and len(seq_test[S.LABEL]):
        metrics[S.PROTOCOL_SEQUENCE] = {"auc": auc(seq_test[S.LABEL],
                                                   pair_scores(name, model, {c: seq_test[c] for c in columns}))}
    return metrics
