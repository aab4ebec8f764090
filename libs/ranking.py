"""Stage 2 of the recommendations: candidates from every retriever, ranked by a fitted blend.

Pure numpy over blocks of users, so the recommend job runs it inside ``mapInPandas`` and tests and
benchmarks call it directly.

* :func:`union_candidates`: the top-N of each retriever (dot products over the whole catalog,
  seen items excluded), merged per user in a fixed order.
* Blend features: for every candidate, each model's score (a retriever's dot product, a ranker's
  probability), standardized within the user's candidate list (:func:`standardize`), so models on
  different scales add up.
* :func:`fit_blend_weights`: the weights on the simplex (grid of ``step``) that maximize NDCG@k of
  the users' *validation* items; the test items are never seen by it.
"""
from __future__ import annotations

import itertools
from typing import Dict, List, Mapping, Sequence, Tuple

import numpy as np
import pandas as pd

from libs.scoring import retrieve_top_n

NO_ITEM = -1
BLEND_RECORD = "blend"  # the model store entry holding each run's fitted blend


def query_columns(frame, history_length: int) -> Dict[str, np.ndarray]:
    """Model inputs of a block of queries (a pandas frame of USER_IDX, SEQ_ITEMS, SEQ_SESSION_STARTS,
    SEQ_LEN): those columns as arrays, and the window's latest ``history_length`` items as HIST_ITEMS /
    HIST_LEN (what DIEN and the content model read)."""
    from libs import schema as S

    seq = np.stack(frame[S.SEQ_ITEMS].to_numpy()).astype(np.int32)
    lengths = frame[S.SEQ_LEN].to_numpy(np.int32)
    columns = {S.USER_IDX: frame[S.USER_IDX].to_numpy(np.int32), S.SEQ_ITEMS: seq,
               S.SEQ_SESSION_STARTS: np.stack(frame[S.SEQ_SESSION_STARTS].to_numpy()).astype(np.int32),
               S.SEQ_LEN: lengths}
    if history_length:
        starts = np.maximum(lengths - history_length, 0)
        cols = starts[:, None] + np.arange(history_length)[None, :]
        hist = np.take_along_axis(seq, np.minimum(cols, seq.shape[1] - 1), axis=1)
        columns[S.HIST_ITEMS] = np.where(cols < lengths[:, None], hist, 0).astype(np.int32)
        columns[S.HIST_LEN] = np.minimum(lengths, history_length).astype(np.int32)
    return columns


def union_candidates(user_vectors: Mapping[str, np.ndarray], item_vectors: Mapping[str, np.ndarray],
                     counts: Mapping[str, int], block_size: int, seen: Sequence[Sequence[int]],
                     allowed_items: Mapping[str, np.ndarray]) -> Tuple[np.ndarray, Dict[str, np.ndarray]]:
    """Candidates (U, C) of every user: each retriever's top-``counts[r]`` of the items it is
    allowed (``allowed_items[r]``, (I,) bool), duplicates removed.

    Returns:
        (candidates, stage): candidates (U, sum of counts) padded with NO_ITEM, in retriever order
        then rank (a fixed width, so compiled rankers see one shape); stage maps each retriever to
        its own top-N items (U, N) (NO_ITEM where none was left).
    """
    stage = {}
    for name in counts:
        stage[name], _ = retrieve_top_n(user_vectors[name], item_vectors[name], counts[name], block_size, seen,
                                        allowed_items[name])
    return first_occurrences(np.concatenate([stage[name] for name in counts], axis=1)), stage


def first_occurrences(items: np.ndarray) -> np.ndarray:
    """Each row's items without NO_ITEM and repeats, in order of first occurrence, packed to the
    left and padded with NO_ITEM (vectorized: a stable sort per row finds the repeats)."""
    order = np.argsort(items, axis=1, kind="stable")
    ordered = np.take_along_axis(items, order, axis=1)
    repeat = np.zeros(items.shape, bool)
    np.put_along_axis(repeat, order, np.pad(ordered[:, 1:] == ordered[:, :-1], ((0, 0), (1, 0))), axis=1)
    keep = (items != NO_ITEM) & ~repeat
    pack = np.argsort(~keep, axis=1, kind="stable")
    return np.where(np.take_along_axis(keep, pack, axis=1), np.take_along_axis(items, pack, axis=1), NO_ITEM)


def retrieval_scores(user_vectors: np.ndarray, item_vectors: np.ndarray, candidates: np.ndarray) -> np.ndarray:
    """(U, C) dot products of each user with its candidates (0 at NO_ITEM slots)."""
    safe = np.where(candidates == NO_ITEM, 0, candidates)
    return np.einsum("ud,ucd->uc", user_vectors, item_vectors[safe]).astype(np.float64)


def standardize(scores: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Per user (row), (score - mean) / std over the valid candidates; 0 where invalid or constant."""
    count = np.maximum(valid.sum(axis=1, keepdims=True), 1)
    values = np.where(valid, scores, 0.0)
    mean = values.sum(axis=1, keepdims=True) / count
    std = np.sqrt((np.where(valid, (scores - mean) ** 2, 0.0)).sum(axis=1, keepdims=True) / count)
    return np.where(valid & (std > 0), (scores - mean) / np.where(std > 0, std, 1.0), 0.0)


def blend(features: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """(U, C, M) standardized model scores x (M,) weights -> (U, C) blend scores."""
    return features @ np.asarray(weights, dtype=np.float64)


def ndcg_at_k(scores: np.ndarray, valid: np.ndarray, target_slot: np.ndarray, k: int) -> float:
    """Mean NDCG@k of one relevant candidate per user (``target_slot``, -1 when not retrieved: 0).

    Ties count against the target (it ranks below every candidate scoring the same), so a constant
    scorer earns nothing.
    """
    rows = np.arange(len(scores))
    has = target_slot >= 0
    target_score = scores[rows, np.maximum(target_slot, 0)]
    above = (valid & (scores >= target_score[:, None])).sum(axis=1) - 1  # minus the target itself
    gain = np.where(has & (above < k), 1.0 / np.log2(above + 2.0), 0.0)
    return float(gain.mean()) if len(gain) else 0.0


def simplex_grid(n_models: int, step: float) -> np.ndarray:
    """Every weight vector with entries in multiples of ``step`` that sum to 1: (G, M)."""
    units = int(round(1 / step))
    points = [c for c in itertools.product(range(units + 1), repeat=n_models) if sum(c) == units]
    return np.array(points, dtype=np.float64) / units


def fit_blend_weights(features: np.ndarray, valid: np.ndarray, target_slot: np.ndarray, k: int,
                      step: float) -> Tuple[np.ndarray, float, List[Tuple[Tuple[float, ...], float]]]:
    """The simplex weights with the best NDCG@k of the targets; ties go to the earliest grid point.

    Args:
        features: (U, C, M) standardized scores of M models for each user's C candidates.
        valid: (U, C) real candidate slots.
        target_slot: (U,) the slot of the user's validation item, -1 if no retriever found it.
    Returns:
        (weights (M,), its NDCG@k, [(weights, NDCG@k)] of every grid point).
    """
    grid = simplex_grid(features.shape[2], step)
    tried = [(tuple(w), ndcg_at_k(np.where(valid, blend(features, w), -np.inf), valid, target_slot, k))
             for w in grid]
    best = max(range(len(tried)), key=lambda i: (tried[i][1], -i))
    return grid[best], tried[best][1], tried


def top_k_rows(users: np.ndarray, candidates: np.ndarray, valid: np.ndarray, scores: np.ndarray,
               k: int) -> pd.DataFrame:
    """(user_idx, rank, item_idx, score) of each row's best ``k`` valid candidates; ties by item index."""
    from libs import schema as S

    masked = np.where(valid, scores, -np.inf)
    order = np.lexsort((candidates, -masked), axis=1)[:, :k]
    items = np.take_along_axis(candidates, order, axis=1)
    best = np.take_along_axis(masked, order, axis=1)
    keep = np.isfinite(best)
    ranks = np.cumsum(keep, axis=1)
    rows = np.nonzero(keep)
    return pd.DataFrame({S.USER_IDX: users[rows[0]].astype(np.int32), S.RANK: ranks[rows].astype(np.int32),
                         S.ITEM_IDX: items[rows].astype(np.int32), S.SCORE: best[rows].astype(np.float64)})
