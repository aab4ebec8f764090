"""Offline comparison of the RL re-ranker (``dqn``, SQN) with the supervised ranker: protocol ``rl_holdout``.

Protocol (both models see the same data, neither sees the held-out futures):

1. Users in one of ``holdout_buckets`` hash buckets of USER_IDX (:func:`holdout_mask`) are held out:
   their windows leave NEXT_ITEM_EXAMPLES for both trainings.
2. Two models of the same architecture (SASRec encoder + heads, :mod:`libs.models.dqn`) are trained
   on the other users' windows with the same seed, batches and ``comparison_epochs``: the DQN with
   its TD and CQL terms, the supervised ranker with them off (only SQN's softmax head), so the
   difference is the RL term alone. They train in this process with Keras (the epoch cap keeps
   the cost bounded), not through Horovod: a comparison, not a published model.
3. Each held-out user's timeline before serving time (USER_SEQUENCES split=serve) is cut leaving
   the N = ``horizon`` latest items as the future; the state is what precedes the cut
   (:func:`cut_queries`). Users with fewer than N + 2 items are skipped.
4. Candidates, the same for both models: the N future items plus ``comparison_negatives`` items
   the user never touched, sampled with a fixed seed. The DQN ranks them by Q(s, a), the supervised
   ranker by its next-item logits.
5. Metrics (:func:`rl_metrics`): ``hits@K_nextN``, the share of the N future items found in the top
   K (divided by min(K, N)), the long horizon; ``ndcg@K``, NDCG@K of the next item (the first future
   one). Ties are ranked by item index.
"""
from __future__ import annotations

import logging
import time
from typing import Dict, Mapping, Optional

import numpy as np

from libs import schema as S

log = logging.getLogger(__name__)

SUPERVISED = S.MODEL_RL_SUPERVISED
WINDOW_COLUMNS = [S.SEQ_ITEMS, S.SEQ_SESSION_STARTS, S.SEQ_LEN]


def holdout_mask(users: np.ndarray, buckets: int) -> np.ndarray:
    """True for users in hash bucket 0 of ``buckets`` (Knuth's multiplicative hash of USER_IDX:
    stable across runs, unrelated to the order users were indexed in)."""
    hashed = (np.asarray(users, np.uint64) * np.uint64(2654435761)) % np.uint64(2 ** 32)
    return hashed % np.uint64(buckets) == 0


def cut_queries(windows: Mapping[str, np.ndarray], horizon: int) -> Dict[str, np.ndarray]:
    """Cut each window (right-padded SEQ_* rows) leaving its ``horizon`` latest items as the future.

    Returns SEQ_* columns of the states (the items before the cut, right-padded), ``future``
    (Q, horizon) and ``rows``: which input rows were kept (those with at least horizon + 2 items).
    """
    items, starts = np.asarray(windows[S.SEQ_ITEMS]), np.asarray(windows[S.SEQ_SESSION_STARTS])
    lengths = np.asarray(windows[S.SEQ_LEN])
    rows = np.flatnonzero(lengths >= horizon + 2)
    cut = lengths[rows] - horizon
    keep = np.arange(items.shape[1])[None, :] < cut[:, None]
    future = np.stack([items[r, c:c + horizon] for r, c in zip(rows, cut)]) if len(rows) else \
        np.zeros((0, horizon), items.dtype)
    return {S.SEQ_ITEMS: np.where(keep, items[rows], 0).astype(np.int32),
            S.SEQ_SESSION_STARTS: np.where(keep, starts[rows], 0).astype(np.int32),
            S.SEQ_LEN: cut.astype(np.int32), "future": future.astype(np.int64), "rows": rows}


def rl_metrics(scores: np.ndarray, candidates: np.ndarray, future: np.ndarray, k: int = 10) -> Dict[str, float]:
    """``hits@k_nextN`` and ``ndcg@k`` (see the module docstring) of scores (Q, C) of candidates (Q, C)
    against the future items (Q, N), the next item first."""
    n = future.shape[1]
    order = np.lexsort((candidates, -scores), axis=1)[:, :k]        # by score, ties by item index
    top = np.take_along_axis(candidates, order, axis=1)              # (Q, k)
    hits = (future[:, :, None] == top[:, None, :]).any(axis=2)       # (Q, N): each future event found once
    next_hit = top == future[:, :1]
    ndcg = np.where(next_hit.any(axis=1), 1.0 / np.log2(np.argmax(next_hit, axis=1) + 2.0), 0.0)
    return {f"hits@{k}_next{n}": float((hits.sum(axis=1) / min(k, n)).mean()) if len(top) else 0.0,
            f"ndcg@{k}": float(ndcg.mean()) if len(top) else 0.0}


def candidate_items(future: np.ndarray, touched, n_items: int, negatives: int, seed: int) -> np.ndarray:
    """(Q, N + negatives): the future items, then ``negatives`` items (1..n_items-1) the user never
    touched (``touched[q]``: the user's items), sampled without replacement (fewer, padded with
    item 0, which is never ranked, when the catalog runs out)."""
    rng = np.random.default_rng(seed)
    out = np.empty((len(future), future.shape[1] + negatives), np.int64)
    for q, items in enumerate(future):
        pool = np.setdiff1d(np.arange(1, n_items), np.union1d(touched[q], items))
        drawn = rng.choice(pool, size=min(negatives, len(pool)), replace=False)
        out[q] = np.concatenate([items, drawn, np.zeros(negatives - len(drawn), np.int64)])
    return out


def _train(specs, conf, windows: Mapping[str, np.ndarray], epochs: int, seed: int):
    import tensorflow as tf

    from libs.models import dqn
    from libs.models.sasrec import masked_catalog_softmax

    tf.keras.utils.set_random_seed(seed)
    model = dqn.build_dqn(specs, conf)
    model.compile(tf.keras.optimizers.Adam(conf.learning_rate), masked_catalog_softmax)
    model.fit({c: windows[c] for c in WINDOW_COLUMNS}, windows[S.TARGET_ITEMS], batch_size=conf.batch_size,
              epochs=epochs, shuffle=True, verbose=0)
    return model


def rl_comparison(specs, conf, windows: Mapping[str, np.ndarray], serving: Mapping[str, np.ndarray],
                  k: int = 10, seed: int = 7, epochs: Optional[int] = None) -> Dict[str, object]:
    """Train the DQN and its supervised twin without the held-out users and score both on them.

    Args:
        specs: :class:`libs.feature_specs.FeatureSpecs` (n_items, sequence_length).
        conf: :class:`libs.conf.DQNConf` (``train.dqn``).
        windows: NEXT_ITEM_EXAMPLES split=train columns (USER_IDX, SEQ_*, TARGET_ITEMS), one row per window.
        serving: USER_SEQUENCES split=serve columns (USER_IDX, SEQ_*), one row per user.
        epochs: both models' epochs (default ``conf.comparison_epochs``).
    Returns:
        ``{"dqn": metrics, SUPERVISED: metrics, "users": held-out queries, "train_windows": n,
        "epochs": e, "seconds": {...}}``.
    """
    from libs.models import dqn

    epochs = epochs or conf.comparison_epochs
    train = ~holdout_mask(windows[S.USER_IDX], conf.holdout_buckets)
    fit = {c: np.asarray(windows[c])[train] for c in WINDOW_COLUMNS + [S.TARGET_ITEMS]}
    held = holdout_mask(serving[S.USER_IDX], conf.holdout_buckets)
    queries = cut_queries({c: np.asarray(serving[c])[held] for c in WINDOW_COLUMNS}, conf.horizon)
    users = np.asarray(serving[S.USER_IDX])[held][queries["rows"]]
    touched = _touched_items(windows, serving, users)
    candidates = candidate_items(queries["future"], touched, specs.n_items, conf.comparison_negatives, seed)
    state = {c: queries[c] for c in WINDOW_COLUMNS}
    result: Dict[str, object] = {"users": int(len(users)), "train_windows": int(train.sum()), "epochs": epochs,
                                 "seconds": {}}
    for name, model_conf, head in (("dqn", conf, "q"), (SUPERVISED, dqn.supervised_conf(conf), "supervised")):
        start = time.perf_counter()
        model = _train(specs, model_conf, fit, epochs, seed)
        scores = np.take_along_axis(dqn.head_scorer(model, head)(state), candidates, axis=1)
        scores = np.where(candidates > 0, scores, -np.inf)           # padding slots rank last
        result[name] = rl_metrics(scores, candidates, queries["future"], k)
        result["seconds"][name] = round(time.perf_counter() - start, 1)
        log.info("rl_holdout %s: %s (%d held-out users, %d epochs, %.0fs)", name, result[name], len(users), epochs,
                 result["seconds"][name])
    return result


def _touched_items(windows, serving, users: np.ndarray):
    """Per user of ``users``: every item of its windows and serving query (never sampled as a negative)."""
    touched: Dict[int, set] = {int(u): set() for u in users}
    for source, columns in ((windows, (S.SEQ_ITEMS, S.TARGET_ITEMS)), (serving, (S.SEQ_ITEMS,))):
        owners = np.asarray(source[S.USER_IDX])
        for row in np.flatnonzero(np.isin(owners, users)):
            for c in columns:
                touched[int(owners[row])].update(np.asarray(source[c][row]).tolist())
    return [np.fromiter(touched[int(u)], np.int64) for u in users]


def read_inputs(store, versions: Optional[Mapping[str, int]] = None):
    """(windows, serving) column arrays of NEXT_ITEM_EXAMPLES split=train and USER_SEQUENCES
    split=serve at ``versions`` (default: latest), collected to the driver (ml-1m: ~25k windows)."""
    from pyspark.sql import functions as F

    versions = versions or {}

    def columns(spec, split, names):
        frame = (store.read(spec.name, versions.get(spec.name)).where(F.col(S.SPLIT) == split)
                 .select(S.USER_IDX, *names).orderBy(S.USER_IDX).toPandas())
        return {c: (np.stack(frame[c].to_numpy()).astype(np.int32) if frame[c].dtype == object and len(frame)
                    else frame[c].to_numpy(np.int32)) for c in frame.columns}

    return (columns(S.NEXT_ITEM_EXAMPLES, S.SPLIT_TRAIN, WINDOW_COLUMNS + [S.TARGET_ITEMS]),
            columns(S.USER_SEQUENCES, S.SPLIT_SERVE, WINDOW_COLUMNS))


def evaluation_rows(store, cfg, models, run_date, model_run) -> list:
    """METRICS rows (model, model_run, protocol ``rl_holdout``, metric, value, run_date) of the
    comparison, for each of ``models`` whose registry entry lists the protocol: the model's figures
    and its supervised twin's (SUPERVISED), each with the held-out ``users``. ``model_run(name)``:
    the model store run the figures go with (the night's run of that model)."""
    from libs.feature_specs import FeatureSpecs
    from libs.models import model_def

    names = [m for m in models if S.PROTOCOL_RL_HOLDOUT in model_def(m).protocols]
    if not names:
        return []
    windows, serving = read_inputs(store)
    specs = FeatureSpecs.from_store(store, cfg)
    rows = []
    for name in names:
        result = rl_comparison(specs, getattr(cfg.train, name), windows, serving, k=cfg.recommend.k,
                               seed=cfg.train.shuffle_seed)
        for model, key in ((name, "dqn"), (SUPERVISED, SUPERVISED)):
            figures = {**result[key], "users": result["users"]}
            rows += [(model, model_run(name), S.PROTOCOL_RL_HOLDOUT, metric, float(value), run_date)
                     for metric, value in sorted(figures.items())]
    return rows
