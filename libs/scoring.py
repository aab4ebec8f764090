"""Top-K building blocks shared by the recommend job and its benchmark (pure numpy, no Spark).

Retrieval scores a block of users against all items with embedding dot products, one item block
at a time, keeping only a partial top-N per block (as Spark ALS ``recommendForAll`` does), so memory
is O(users x (block + N)) instead of O(users x items); ordering is by score, then item index, so
equal scores never reorder. Ranking the candidates is :mod:`libs.ranking`.
"""
from __future__ import annotations

from typing import Dict, Optional, Sequence, Tuple

import numpy as np


def exclusion_pairs(seen: Sequence[Sequence[int]]) -> Tuple[np.ndarray, np.ndarray]:
    """Flatten per-user seen item lists into (row, item) index arrays."""
    lengths = np.fromiter((len(s) for s in seen), dtype=np.int64, count=len(seen))
    rows = np.repeat(np.arange(len(seen)), lengths)
    items = np.concatenate([np.asarray(s, dtype=np.int64) for s in seen]) if lengths.sum() else \
        np.zeros(0, dtype=np.int64)
    return rows, items


def retrieve_top_n(user_vectors: np.ndarray, item_vectors: np.ndarray, n: int, block_size: int,
                   seen: Optional[Sequence[Sequence[int]]] = None,
                   allowed_items: Optional[np.ndarray] = None) -> Tuple[np.ndarray, np.ndarray]:
    """Top-``n`` items per user by dot product, scanning items in blocks.

    Args:
        user_vectors: (U, d) user embeddings.
        item_vectors: (I, d) item embeddings indexed by item index (row 0 = padding).
        seen: per user, item indices to exclude.
        allowed_items: (I,) bool; False items are never returned (row 0 is always excluded).

    Returns:
        (items, scores), each (U, n), best first; slots beyond the available items hold
        item -1 and score -inf.
    """
    n_users, n_items = len(user_vectors), len(item_vectors)
    allowed = np.ones(n_items, dtype=bool) if allowed_items is None else allowed_items.astype(bool).copy()
    allowed[0] = False
    seen_rows, seen_items = exclusion_pairs(seen) if seen is not None else (np.zeros(0, int), np.zeros(0, int))
    best_items = np.full((n_users, 0), -1, dtype=np.int64)
    best_scores = np.full((n_users, 0), -np.inf, dtype=np.float32)
    for start in range(0, n_items, block_size):
        stop = min(start + block_size, n_items)
        scores = (user_vectors @ item_vectors[start:stop].T).astype(np.float32)  # (U, b)
        scores[:, ~allowed[start:stop]] = -np.inf
        in_block = (seen_items >= start) & (seen_items < stop)
        scores[seen_rows[in_block], seen_items[in_block] - start] = -np.inf
        keep = min(n, stop - start)
        top = np.argpartition(-scores, keep - 1, axis=1)[:, :keep]
        cand_items = np.concatenate([best_items, top + start], axis=1)
        cand_scores = np.concatenate([best_scores, np.take_along_axis(scores, top, axis=1)], axis=1)
        order = _row_order(cand_items, cand_scores)[:, :n]
        best_items = np.take_along_axis(cand_items, order, axis=1)
        best_scores = np.take_along_axis(cand_scores, order, axis=1)
    best_items[~np.isfinite(best_scores)] = -1
    return best_items, best_scores


def _row_order(items: np.ndarray, scores: np.ndarray) -> np.ndarray:
    # lexsort on the last axis: primary key -score, secondary item index; -inf rows sink last
    return np.lexsort((items, -scores), axis=1)


def model_run_label(runs: Dict[str, str]) -> str:
    """``deep_cf=<run>;dien=<run>`` for the recommendations' MODEL_RUN column."""
    return ";".join(f"{name}={run}" for name, run in sorted(runs.items()))
