"""Diversity: maximal marginal relevance re-ranking and the list metrics of a recommendations table.

Pure numpy over blocks of users, so the recommend job runs it on the executors (inside
``mapInPandas``), the evaluate job per block of users, and benchmarks and tests call it directly.

Re-ranking (Carbonell & Goldstein 1998, MMR) of one user's candidates, knob ``lambda`` =
``recommend.diversity`` in [0, 1]: pick K items greedily, each time

    argmax_i  (1 - lambda) * rel(i) - lambda * max_{j picked} sim(i, j)

* ``rel``: the blend score min-max rescaled to [0, 1] over the user's candidates (all 1 when the
  blend is constant);
* ``sim(i, j)``: the mean, over the similarity sources (genre multi-hot; the first retriever's item
  vectors), of the cosine of the two items' vectors clipped to [0, 1] (anti-similar counts as
  unrelated, not as a bonus); an item without genres has cosine 0 to every item;
* ties go to the lower item index, as in :func:`libs.ranking.top_k_rows`.

The score of a picked item is its gain plus lambda, in [0, 1]; gains never increase from one pick
to the next (an item's max similarity only grows), so score order is rank order. ``lambda = 0``
picks by relevance alone; the recommend job then skips this module entirely (today's table).

List metrics, over the lists of K items of the users in a table (metric names are the constants
below; ``catalog_coverage``, distinct recommended items / vocabulary items, is the evaluate job's):

* ``intra_list_diversity``: for each user with 2+ items, the mean over unordered pairs of items of
  the list of 1 - cosine(genre multi-hot of i, genre multi-hot of j); averaged over those users.
* ``genre_coverage``: for each user, distinct genres of the list / genres of the catalog (genres
  that at least one catalog item has); averaged over users.
* ``genre_coverage_table``: distinct genres of all recommended items together / genres of the catalog.
* ``popularity_percentile``: for each user, the mean over the list of each item's training
  popularity percentile among the catalog's items, (items less popular + half the items as popular)
  / catalog items; averaged over users. The catalog's own mean is 0.5 by construction, so above
  0.5 the table leans to popular items.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Sequence, Tuple

import numpy as np
import pandas as pd

from libs.ranking import NO_ITEM, top_k_rows

INTRA_LIST_DIVERSITY = "intra_list_diversity"
GENRE_COVERAGE = "genre_coverage"
GENRE_COVERAGE_TABLE = "genre_coverage_table"
POPULARITY_PERCENTILE = "popularity_percentile"
PER_USER_METRICS = (INTRA_LIST_DIVERSITY, GENRE_COVERAGE, POPULARITY_PERCENTILE)  # averaged over users
LIST_METRICS = PER_USER_METRICS + (GENRE_COVERAGE_TABLE,)


def unit_rows(vectors: np.ndarray) -> np.ndarray:
    """Vectors scaled to length 1 along the last axis; zero vectors stay zero."""
    norms = np.linalg.norm(vectors, axis=-1, keepdims=True)
    return np.where(norms > 0, vectors / np.where(norms > 0, norms, 1.0), 0.0)


def relevance(scores: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """(U, C) scores min-max rescaled to [0, 1] per user over its valid candidates (1 where the
    user's scores are all equal; 0 at invalid slots)."""
    low = np.where(valid, scores, np.inf).min(axis=1, keepdims=True)
    high = np.where(valid, scores, -np.inf).max(axis=1, keepdims=True)
    span = high - low
    rescaled = np.where(span > 0, (scores - low) / np.where(span > 0, span, 1.0), 1.0)
    return np.where(valid, rescaled, 0.0)


def mmr(candidates: np.ndarray, valid: np.ndarray, scores: np.ndarray, k: int, diversity: float,
        sources: Sequence[np.ndarray]) -> Tuple[np.ndarray, np.ndarray]:
    """Maximal marginal relevance re-ranking of a block of users (see the module docstring).

    Args:
        candidates: (U, C) item indices, NO_ITEM at padding.
        valid: (U, C) real candidate slots.
        scores: (U, C) the blend scores (any scale: rescaled per user here).
        k: items to pick per user.
        diversity: lambda in [0, 1].
        sources: similarity sources, each (I, D_s) indexed by item index (e.g. genre multi-hot,
            a retriever's item vectors); their cosines are averaged.
    Returns:
        (items (U, k), scores (U, k)) in pick order, NO_ITEM / -inf where a user ran out of candidates.
    """
    n_users, width = candidates.shape
    safe = np.where(valid, candidates, 0)
    vectors = [unit_rows(np.asarray(s, np.float64)[safe]) for s in sources]  # each (U, C, D_s)
    rel = relevance(scores, valid)
    available = valid.copy()
    max_sim = np.zeros((n_users, width))
    rows = np.arange(n_users)
    items = np.full((n_users, k), NO_ITEM, np.int64)
    gains = np.full((n_users, k), -np.inf)
    for t in range(min(k, width)):  # one vectorized step per pick, never per candidate pair
        gain = np.where(available, (1.0 - diversity) * rel - diversity * max_sim, -np.inf)
        best = gain.max(axis=1)
        choice = np.where(gain == best[:, None], candidates, np.iinfo(np.int64).max).argmin(axis=1)
        found = np.isfinite(best)
        items[:, t] = np.where(found, candidates[rows, choice], NO_ITEM)
        gains[:, t] = np.where(found, best + diversity, -np.inf)
        available[rows, choice] = False
        sim = np.mean([np.clip(np.einsum("ud,ucd->uc", v[rows, choice], v), 0.0, 1.0) for v in vectors], axis=0) \
            if vectors else np.zeros((n_users, width))
        max_sim = np.maximum(max_sim, sim)
    return items, gains


def diversified_top_k(users: np.ndarray, candidates: np.ndarray, valid: np.ndarray, scores: np.ndarray, k: int,
                      diversity: float, sources: Sequence[np.ndarray]) -> pd.DataFrame:
    """(user_idx, rank, item_idx, score) of each user's K items: :func:`libs.ranking.top_k_rows` of
    ``scores`` when ``diversity`` is 0 (exactly, nothing else runs), else the :func:`mmr` picks with
    their scores (which decrease with rank, ties by item index, as top_k_rows orders them)."""
    if diversity <= 0:
        return top_k_rows(users, candidates, valid, scores, k)
    items, gains = mmr(candidates, valid, scores, k, diversity, sources)
    return top_k_rows(users, items, items != NO_ITEM, gains, k)


@dataclass
class Catalog:
    """What the list metrics know of the catalog, indexed by item index.

    Attributes:
        genres: (I, G) genre multi-hot (rows outside the catalog are ignored).
        percentile: (I,) training popularity percentile among catalog items (0 outside it).
        genre_count: genres that at least one catalog item has.
    """

    genres: np.ndarray
    percentile: np.ndarray
    genre_count: int


def catalog(items: np.ndarray, popularity: np.ndarray, genres: np.ndarray) -> Catalog:
    """The :class:`Catalog` of the catalog items ``items`` (N,) with their training ``popularity``
    (N,) and genre multi-hot ``genres`` (N, G)."""
    items = np.asarray(items, np.int64)
    popularity = np.asarray(popularity, np.float64)
    genres = np.asarray(genres, np.float64)
    size = int(items.max(initial=0)) + 1
    order = np.sort(popularity)
    below = np.searchsorted(order, popularity, side="left")
    same = np.searchsorted(order, popularity, side="right") - below
    dense_genres = np.zeros((size, genres.shape[1]))
    dense_genres[items] = genres
    percentile = np.zeros(size)
    percentile[items] = (below + 0.5 * same) / max(len(items), 1)
    return Catalog(dense_genres, percentile, int((genres > 0).any(axis=0).sum()))


def item_catalog(items: pd.DataFrame) -> Catalog:
    """The :class:`Catalog` of ``item_features`` rows (ITEM_IDX, POPULARITY, GENRE_MULTI_HOT), one per item."""
    from libs import schema as S

    genres = np.stack(items[S.GENRE_MULTI_HOT].to_numpy()) if len(items) else np.zeros((0, 0))
    return catalog(items[S.ITEM_IDX].to_numpy(), items[S.POPULARITY].to_numpy(), genres)


def per_user_list_metrics(lists: np.ndarray, cat: Catalog) -> Dict[str, np.ndarray]:
    """Each user's intra-list diversity, genre coverage and popularity percentile (NaN where
    undefined: fewer than 2 items for diversity, none for the others).

    Args:
        lists: (U, K) recommended item indices, NO_ITEM at padding.
    """
    present = lists != NO_ITEM
    safe = np.where(present, lists, 0)
    n = present.sum(axis=1)
    genres = np.where(present[:, :, None], cat.genres[safe], 0.0)            # (U, K, G)
    unit = unit_rows(genres)
    cosine = np.einsum("ukg,ulg->ukl", unit, unit)                          # (U, K, K)
    pair = present[:, :, None] & present[:, None, :] & ~np.eye(lists.shape[1], dtype=bool)[None]
    pairs = n * (n - 1)                                                     # ordered pairs i != j
    ild = np.where(pairs > 0, np.where(pair, 1.0 - cosine, 0.0).sum(axis=(1, 2)) / np.maximum(pairs, 1), np.nan)
    covered = (genres > 0).any(axis=1).sum(axis=1)
    coverage = np.where(n > 0, covered / max(cat.genre_count, 1), np.nan)
    popularity = np.where(n > 0, np.where(present, cat.percentile[safe], 0.0).sum(axis=1) / np.maximum(n, 1), np.nan)
    return {INTRA_LIST_DIVERSITY: ild, GENRE_COVERAGE: coverage, POPULARITY_PERCENTILE: popularity}


def table_genre_coverage(items: np.ndarray, cat: Catalog) -> float:
    """Genres of the distinct recommended ``items`` together / genres of the catalog."""
    items = np.asarray(items, np.int64)
    return float((cat.genres[items[items != NO_ITEM]] > 0).any(axis=0).sum() / max(cat.genre_count, 1))


def list_metrics(lists: np.ndarray, cat: Catalog) -> Dict[str, float]:
    """Every metric of :data:`LIST_METRICS` of a whole table held in memory, lists (U, K)."""
    per_user = per_user_list_metrics(lists, cat)
    figures = {name: float(np.nanmean(v)) if np.isfinite(v).any() else 0.0 for name, v in per_user.items()}
    figures[GENRE_COVERAGE_TABLE] = table_genre_coverage(np.unique(lists), cat)
    return figures
