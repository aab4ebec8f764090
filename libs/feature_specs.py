"""Typed feature specs (DeepCTR style) that the model factories consume.

:class:`FeatureSpecs` holds what the vocab and feature tables fix (vocabulary sizes, list lengths);
:meth:`FeatureSpecs.features` turns it into one typed record per model input for a given embedding
size. Index 0 of every vocabulary is padding/unknown, so ``vocabulary_size = max index + 1``.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Dict, Optional, Union

from libs import schema as S


@dataclass(frozen=True)
class SparseFeat:
    """One categorical id per example: input (B,) int32 -> embedding (B, embedding_dim)."""

    name: str
    vocabulary_size: int
    embedding_dim: int
    embedding_name: Optional[str] = None   # share the table of another feature (default: own)
    dtype: str = "int32"

    @property
    def table_name(self) -> str:
        return self.embedding_name or self.name


@dataclass(frozen=True)
class VarLenSparseFeat:
    """A right-padded id list: input (B, maxlen) int32 -> embeddings (B, maxlen, embedding_dim).

    ``length_name`` names the input holding the number of real ids (the rest are 0 padding).
    """

    name: str
    vocabulary_size: int
    embedding_dim: int
    maxlen: int
    length_name: Optional[str] = None
    embedding_name: Optional[str] = None
    dtype: str = "int32"

    @property
    def table_name(self) -> str:
        return self.embedding_name or self.name


@dataclass(frozen=True)
class DenseFeat:
    """Real values per example: input (B, dimension) (or (B,) when ``dimension`` is 0)."""

    name: str
    dimension: int = 1
    dtype: str = "float32"


Feature = Union[SparseFeat, VarLenSparseFeat, DenseFeat]


@dataclass(frozen=True)
class FeatureSpecs:
    """Sizes of every model input, read once from the feature tables of one run."""

    n_users: int            # USER_IDX vocabulary size (max index + 1)
    n_items: int            # ITEM_IDX vocabulary size
    n_tokens: int           # TITLE_TOKENS vocabulary size
    n_genres: int           # length of GENRE_MULTI_HOT
    n_year_buckets: int     # YEAR_BUCKET vocabulary size
    history_length: int     # L of HIST_ITEMS / HIST_NEG_ITEMS
    title_max_tokens: int   # length of TITLE_TOKENS
    sequence_length: int = 50  # L_seq of SEQ_ITEMS (the sequence model's window)

    def features(self, embedding_dim: int) -> Dict[str, Feature]:
        """Every model input keyed by its column name; history lists share the item table."""
        d = embedding_dim
        feats = [
            SparseFeat(S.USER_IDX, self.n_users, d),
            SparseFeat(S.ITEM_IDX, self.n_items, d),
            VarLenSparseFeat(S.HIST_ITEMS, self.n_items, d, self.history_length,
                             length_name=S.HIST_LEN, embedding_name=S.ITEM_IDX),
            VarLenSparseFeat(S.HIST_NEG_ITEMS, self.n_items, d, self.history_length,
                             length_name=S.HIST_LEN, embedding_name=S.ITEM_IDX),
            DenseFeat(S.HIST_LEN, 0, "int32"),
            VarLenSparseFeat(S.TITLE_TOKENS, self.n_tokens, d, self.title_max_tokens),
            DenseFeat(S.GENRE_MULTI_HOT, self.n_genres),
            SparseFeat(S.YEAR_BUCKET, self.n_year_buckets, d),
            VarLenSparseFeat(S.SEQ_ITEMS, self.n_items, d, self.sequence_length,
                             length_name=S.SEQ_LEN, embedding_name=S.ITEM_IDX),
            VarLenSparseFeat(S.SEQ_SESSION_STARTS, 2, d, self.sequence_length, length_name=S.SEQ_LEN),
            DenseFeat(S.SEQ_LEN, 0, "int32"),
        ]
        return {f.name: f for f in feats}

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "FeatureSpecs":
        return cls(**data)

    @classmethod
    def from_store(cls, store, cfg, versions: Optional[Dict[str, int]] = None) -> "FeatureSpecs":
        """Sizes from the vocab tables, USER_FEATURES and ITEM_FEATURES at ``versions`` (default: latest).

        List lengths come from the tables (what the models will be fed), the configuration's
        ``features.history_length`` / ``title_max_tokens`` only when the tables are empty.

        Args:
            store: a :class:`libs.storage.DeltaStore`.
            cfg: the :class:`libs.conf.Config`.
        """
        from pyspark.sql import functions as F

        versions = versions or {}

        def read(spec):
            return store.read(spec.name, versions.get(spec.name))

        def max_plus_one(spec, column):
            return int(read(spec).agg(F.max(column)).first()[0] or 0) + 1

        history_length = read(S.USER_FEATURES).agg(F.max(F.size(S.HIST_ITEMS))).first()[0]
        item_row = read(S.ITEM_FEATURES).agg(F.max(S.YEAR_BUCKET), F.max(F.size(S.GENRE_MULTI_HOT)),
                                             F.max(F.size(S.TITLE_TOKENS)), F.max(S.ITEM_IDX)).first()
        return cls(
            n_users=max_plus_one(S.VOCAB_USERS, S.USER_IDX),
            n_items=max(max_plus_one(S.VOCAB_ITEMS, S.ITEM_IDX), int(item_row[3] or 0) + 1),
            n_tokens=max_plus_one(S.VOCAB_TOKENS, S.TOKEN_IDX),
            n_genres=int(item_row[1] or 0),
            n_year_buckets=int(item_row[0] or 0) + 1,
            history_length=int(history_length or cfg.features.history_length),
            title_max_tokens=int(item_row[2] or cfg.features.title_max_tokens),
            sequence_length=int(read(S.USER_SEQUENCES).agg(F.max(F.size(S.SEQ_ITEMS))).first()[0]
                                or cfg.features.sequence_length),
        )
