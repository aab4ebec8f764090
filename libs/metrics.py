"""Evaluation metrics: HR@K and NDCG@K under the NCF protocol, AUC, and the popularity baseline.

These run on the driver with numpy/pandas over a scored candidate table: the NCF protocol has 100
rows per user (ml-100k: 94,300 rows; ml-1m: 604,000), which fits comfortably in driver memory.
Larger catalogs or user bases should score and rank per user on the executors instead.
"""
from __future__ import annotations

from typing import Sequence, Tuple

import numpy as np
import pandas as pd


def ncf_hit_ndcg(users: Sequence, labels: Sequence, scores: Sequence, k: int = 10) -> Tuple[float, float]:
    """Mean HR@k and NDCG@k over users, each with exactly one positive (label 1) among its candidates.

    The positive's 0-based rank is the number of negatives scoring >= it: a tie ranks the positive
    below, so a constant scorer gets no credit. HR = rank < k; NDCG = 1 / log2(rank + 2) if rank < k.
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
    hit = rank < k
    return float(hit.mean()), float(np.where(hit, 1.0 / np.log2(rank + 2.0), 0.0).mean())


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
