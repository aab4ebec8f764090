"""Evaluation metrics: HR@K and NDCG@K under the NCF protocol, AUC, and the popularity baseline.

The tie rule of the NCF protocol lives here once (:func:`ncf_positive_ranks`, :func:`hit_ndcg`):
the train job applies it per user on the executors (:mod:`libs.evaluation_protocols`), and
:func:`ncf_hit_ndcg` / :func:`auc` are the same figures over arrays in memory (tests, small data).
"""
from __future__ import annotations

from typing import Sequence, Tuple

import numpy as np
import pandas as pd


def ncf_positive_ranks(users: Sequence, labels: Sequence, scores: Sequence) -> Tuple[np.ndarray, np.ndarray]:
    """(users, 0-based rank of each user's positive) for users with exactly one positive (label > 0).

    The rank is the number of the user's negatives scoring >= the positive: a tie ranks the positive
    below, so a constant scorer gets no credit. Users without a positive are left out.
    """
    frame = pd.DataFrame({"user": np.asarray(users), "label": np.asarray(labels, dtype=np.float64),
                          "score": np.asarray(scores, dtype=np.float64)})
    positives = frame[frame["label"] > 0]
    if positives["user"].duplicated().any():
        raise ValueError("NCF protocol expects one positive per user")
    positive_score = positives.set_index("user")["score"]
    negatives = frame[frame["label"] <= 0]
    above = (negatives["score"].to_numpy() >= negatives["user"].map(positive_score).to_numpy())
    rank = (pd.Series(above, index=negatives["user"].to_numpy()).groupby(level=0).sum()
            .reindex(positive_score.index, fill_value=0).to_numpy())
    return positive_score.index.to_numpy(), rank


def hit_ndcg(rank: np.ndarray, k: int = 10) -> Tuple[np.ndarray, np.ndarray]:
    """Per-user HR@k (rank < k) and NDCG@k (1 / log2(rank + 2) if rank < k, else 0) as floats."""
    hit = np.asarray(rank) < k
    return hit.astype(np.float64), np.where(hit, 1.0 / np.log2(np.asarray(rank) + 2.0), 0.0)


def ncf_hit_ndcg(users: Sequence, labels: Sequence, scores: Sequence, k: int = 10) -> Tuple[float, float]:
    """Mean HR@k and NDCG@k over users, each with exactly one positive (label 1) among its candidates
    (ranks and ties: :func:`ncf_positive_ranks`)."""
    hit, ndcg = hit_ndcg(ncf_positive_ranks(users, labels, scores)[1], k)
    return float(hit.mean()), float(ndcg.mean())


def auc(labels: Sequence, scores: Sequence) -> float:
    """Area under the ROC curve (Mann-Whitney U; ties count one half)."""
    labels = np.asarray(labels, dtype=np.float64) > 0
    ranks = pd.Series(np.asarray(scores, dtype=np.float64)).rank(method="average").to_numpy()
    n_pos, n_neg = labels.sum(), (~labels).sum()
    if n_pos == 0 or n_neg == 0:
        raise ValueError("AUC needs both positive and negative examples")
    return float((ranks[labels].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def popularity_scores(items: Sequence[int], popularity: pd.Series) -> np.ndarray:
    """Popularity baseline: each item's training interactions (ITEM_FEATURES.POPULARITY), 0 if unseen.

    Args:
        items: ITEM_IDX per candidate row.
        popularity: POPULARITY indexed by ITEM_IDX.
    """
    return pd.Series(np.asarray(items)).map(popularity).fillna(0).to_numpy(dtype=np.float64)
