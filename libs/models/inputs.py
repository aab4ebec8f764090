"""Keras inputs and embedding tables made from typed feature specs."""
from __future__ import annotations

from typing import Dict, Iterable

import tensorflow as tf

from libs.feature_specs import DenseFeat, Feature, SparseFeat, VarLenSparseFeat


def model_inputs(features: Dict[str, Feature], names: Iterable[str]) -> Dict[str, tf.keras.Input]:
    """One named ``tf.keras.Input`` per column: (B,) for ids, (B, maxlen) for lists, (B, n) for dense."""
    inputs = {}
    for name in names:
        feat = features[name]
        if isinstance(feat, SparseFeat):
            shape = ()
        elif isinstance(feat, VarLenSparseFeat):
            shape = (feat.maxlen,)
        elif isinstance(feat, DenseFeat):
            shape = (feat.dimension,) if feat.dimension else ()
        else:
            raise TypeError(f"unknown feature type {type(feat).__name__} for {name}")
        inputs[name] = tf.keras.Input(shape=shape, dtype=feat.dtype, name=name)
    return inputs


def embedding_table(feat, l2: float = 0.0, name: str = "") -> tf.keras.layers.Embedding:
    """A fresh embedding table (vocabulary_size, embedding_dim) for ``feat``; row 0 is padding."""
    regularizer = tf.keras.regularizers.l2(l2) if l2 else None
    return tf.keras.layers.Embedding(feat.vocabulary_size, feat.embedding_dim,
                                     embeddings_initializer=tf.keras.initializers.RandomNormal(stddev=0.05),
                                     embeddings_regularizer=regularizer,
                                     name=name or f"{feat.table_name}_embedding")
