"""Why a recommendation: the user's history item a model attended to most for it.

The recommendations table's ``reason`` column (:data:`libs.schema.REASON`, nullable string) holds

* ``because_you_watched:<item_id>``: a ranked row, explained by the *original* id of the history
  item with the highest attention weight for the recommended item, in the first model of
  ``recommend.explain_with`` that took part in the night's ranking and can explain
  (the registry's ``explainer``);
* ``popular_recently``: a fallback row (a user without history got the recent best sellers);
* null: a ranked row no model could explain (none of ``recommend.explain_with`` took part), and
  every row written before the column existed.

A flat string rather than a struct: every downstream reader filters and groups it the same way
(``reason LIKE 'because_you_watched:%'``, ``startswith`` in polars, ``split_part`` in DuckDB) with
no nested-type support needed, and a nullable string is the one schema change every Delta
reader accepts on an old table.
"""
from __future__ import annotations

import numpy as np


def explain(weights: np.ndarray, history: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Item index of the history position with the highest weight, for each (user, candidate).

    Args:
        weights: (U, C, L) attention weights (or any score monotone in them) of each candidate
            over the user's history positions.
        history: (U, L) item indices, oldest first, right-padded with 0.
        lengths: (U,) real positions of each history; padding positions are never chosen.
    Returns:
        (U, C) int32 item indices; ties go to the latest position; 0 for a user without history.
    """
    weights = np.asarray(weights, np.float64)
    n_users, _, steps = weights.shape
    real = np.arange(steps)[None, :] < np.asarray(lengths)[:, None]              # (U, L)
    masked = np.where(real[:, None, :], weights, -np.inf)
    # argmax takes the first maximum: searched from the latest position backwards, ties go to the latest
    position = steps - 1 - np.argmax(masked[:, :, ::-1], axis=-1)                 # (U, C)
    items = np.take_along_axis(np.asarray(history), position, axis=1)
    return np.where(real.any(axis=1)[:, None], items, 0).astype(np.int32)

