"""Model registry: factories, the columns each model reads, scoring and retrieval embeddings.

Importing this package registers every custom layer, which is all a saved model needs to reload
(``tf.keras.models.load_model(path, compile=False)``).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Dict, List, Mapping

import numpy as np

from libs import schema as S
from libs.models import content, deep_cf, dien


@dataclass(frozen=True)
class ModelDef:
    build: Callable            # (FeatureSpecs, ModelConf) -> tf.keras.Model
    table: S.TableSpec         # the training examples table
    inference_columns: List[str]
    training_only_columns: Callable  # ModelConf -> columns read only by a training loss


MODELS: Dict[str, ModelDef] = {
    "deep_cf": ModelDef(deep_cf.build_deep_cf, S.CF_EXAMPLES, deep_cf.INPUT_COLUMNS, lambda conf: []),
    "dien": ModelDef(dien.build_dien, S.SEQ_EXAMPLES, dien.INPUT_COLUMNS,
                     lambda conf: dien.AUX_COLUMNS if conf.use_aux_loss else []),
    "content": ModelDef(content.build_content, S.CONTENT_EXAMPLES, content.INPUT_COLUMNS, lambda conf: []),
}


def model_def(name: str) -> ModelDef:
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; known: {sorted(MODELS)}")
    return MODELS[name]


def build_model(name: str, specs, model_conf):
    """A fresh, uncompiled Keras model: dict of inputs keyed by column -> probability (B, 1)."""
    return model_def(name).build(specs, model_conf)


def training_table(name: str) -> S.TableSpec:
    return model_def(name).table


def inference_columns(name: str) -> List[str]:
    """Columns a model needs to score (user, item) pairs, e.g. ``[USER_IDX, ITEM_IDX]`` for deep_cf."""
    return list(model_def(name).inference_columns)


def training_columns(name: str, model_conf) -> List[str]:
    """Columns read from the training table: the inputs, training-only inputs, and LABEL."""
    spec = model_def(name)
    return spec.inference_columns + spec.training_only_columns(model_conf) + [S.LABEL]


def score(model, inputs: Mapping[str, np.ndarray], batch_size: int = 4096) -> np.ndarray:
    """Probabilities (N,) for N rows given as column arrays ((N,) ids, (N, L) lists).

    Inputs a model reads only for a training loss (DIEN's HIST_NEG_ITEMS) are filled with padding
    when absent; they do not change the prediction.
    """
    n = len(next(iter(inputs.values())))
    feed = {}
    for name, tensor in model.input.items():
        if name in inputs:
            feed[name] = np.asarray(inputs[name])
        else:
            feed[name] = np.zeros((n,) + tuple(tensor.shape[1:]), dtype=tensor.dtype.as_numpy_dtype)
    return model.predict(feed, batch_size=batch_size, verbose=0).reshape(-1)


def retrieval_embeddings(name: str, keras_model):
    """(user_matrix (n_users, D), item_matrix (n_items, D)) for dot-product retrieval.

    Rows are USER_IDX / ITEM_IDX (row 0 = padding). Only deep_cf has them: its GMF tower.
    """
    if name != "deep_cf":
        raise ValueError(f"retrieval embeddings exist for deep_cf only, not {name!r}")
    return deep_cf.retrieval_embeddings(keras_model)
