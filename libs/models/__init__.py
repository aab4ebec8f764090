"""Model registry: the one place that says what each model needs and can do.

For every model: its factory, training table, label and loss, the columns it reads, and its
abilities: *retrieve* (user and item vectors whose dot product ranks the whole catalog), *rank*
(score given (user, candidate) pairs), *score cold items* (items without interactions), and the
evaluation protocols that apply. Jobs ask the registry instead of comparing model names.

Importing this package registers every custom layer, which is all a saved model needs to reload
(``tf.keras.models.load_model(path, compile=False)``).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from libs import conf, schema as S
from libs.models import content, deep_cf, dien, dqn, multvae, sasrec
from libs.serving import pair_candidate_scorer

NCF_PROTOCOL, SEQUENCE_PROTOCOL = S.PROTOCOL_NCF, S.PROTOCOL_SEQUENCE


@dataclass(frozen=True)
class Retrieval:
    """How a model retrieves: ``user_encoder(model, jit_compile)`` builds (once) a function
    ``columns -> (U, D)`` reading ``user_columns`` (XLA-compiled when asked: serving does), and ``item_vectors(model, item_content) -> (I, D)`` is indexed by
    ITEM_IDX (``item_content``: column -> array by item index), so ``users @ items.T`` ranks the
    catalog."""

    user_columns: List[str]
    user_encoder: Callable
    item_vectors: Callable

    def user_vectors(self, model, columns) -> np.ndarray:
        """(U, D) user vectors; the encoder is built (and compiled) once per model object and
        kept on it (a training run scores validation every epoch)."""
        if getattr(model, "_nightrec_user_encoder", None) is None:
            model._nightrec_user_encoder = self.user_encoder(model)
        return model._nightrec_user_encoder(columns)


@dataclass(frozen=True)
class ModelDef:
    build: Callable            # (FeatureSpecs, ModelConf) -> tf.keras.Model
    table: S.TableSpec         # the training examples table
    input_columns: List[str]   # what the model reads (pairs for rankers, queries for sequence models)
    training_only_columns: Callable = lambda conf: []  # ModelConf -> columns read only by a training loss
    label: str = S.LABEL
    loss: object = "binary_crossentropy"
    ranks: bool = True         # scores (user, candidate) pairs with a probability
    scores_cold_items: bool = False  # its item side reads content only, so new items get real scores
    retrieval: Optional[Retrieval] = None
    protocols: Tuple[str, ...] = (NCF_PROTOCOL,)
    # rankers' serving: (model, item_content) -> ((query columns, candidates (U, C)) -> (U, C) probabilities)
    candidate_scorer: Callable = pair_candidate_scorer
    # explanations: (model, item_content, its served candidate scorer or None) -> ((query columns, items (U, K))
    # -> (U, K) item index of the history item it attends to most for each item, 0 = none); libs/explanations.py
    explainer: Optional[Callable] = None
    # rankers whose Keras output is not the pair probability: (model, pair columns) -> (N,) probabilities
    pair_scorer: Optional[Callable] = None


MODELS: Dict[str, ModelDef] = {
    "deep_cf": ModelDef(deep_cf.build_deep_cf, S.CF_EXAMPLES, deep_cf.INPUT_COLUMNS,
                        retrieval=Retrieval([S.USER_IDX], deep_cf.user_encoder,
                                            lambda model, _: deep_cf.retrieval_embeddings(model)[1])),
    "dien": ModelDef(dien.build_dien, S.SEQ_EXAMPLES, dien.INPUT_COLUMNS,
                     lambda conf: dien.AUX_COLUMNS if conf.use_aux_loss else [],
                     protocols=(NCF_PROTOCOL, SEQUENCE_PROTOCOL), candidate_scorer=dien.candidate_scorer,
                     explainer=dien.attention_explainer),
    "content": ModelDef(content.build_content, S.CONTENT_EXAMPLES, content.INPUT_COLUMNS, scores_cold_items=True,
                        retrieval=Retrieval(content.USER_COLUMNS, content.user_encoder, content.item_vectors),
                        candidate_scorer=content.candidate_scorer),
    "sasrec": ModelDef(sasrec.build_sasrec, S.NEXT_ITEM_EXAMPLES, sasrec.INPUT_COLUMNS, label=sasrec.LABEL_COLUMN,
                       loss=sasrec.masked_catalog_softmax, ranks=False,
                       retrieval=Retrieval(sasrec.INPUT_COLUMNS, sasrec.user_encoder,
                                           lambda model, _: sasrec.item_vectors(model)),
                       explainer=sasrec.history_explainer),
    "multvae": ModelDef(multvae.build_multvae, S.NEXT_ITEM_EXAMPLES, multvae.INPUT_COLUMNS,
                        label=multvae.LABEL_COLUMN, loss=multvae.multinomial_log_likelihood, ranks=False,
                        retrieval=Retrieval(multvae.INPUT_COLUMNS, multvae.user_encoder,
                                            lambda model, _: multvae.item_vectors(model))),
    # offline RL re-ranker (SQN): trained on the sasrec windows, ranks candidates by Q(s, a)
    "dqn": ModelDef(dqn.build_dqn, S.NEXT_ITEM_EXAMPLES, dqn.INPUT_COLUMNS, label=dqn.LABEL_COLUMN,
                    loss=sasrec.masked_catalog_softmax, candidate_scorer=dqn.candidate_scorer,
                    pair_scorer=dqn.pair_scorer, protocols=(NCF_PROTOCOL, S.PROTOCOL_RL_HOLDOUT)),
}
MODEL_NAMES = tuple(MODELS)
assert set(MODEL_NAMES) == set(conf.MODEL_NAMES), "libs.conf.MODEL_NAMES must list the registry's models"


def model_def(name: str) -> ModelDef:
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; known: {sorted(MODELS)}")
    return MODELS[name]


def build_model(name: str, specs, model_conf):
    """A fresh, uncompiled Keras model over a dict of inputs keyed by column."""
    return model_def(name).build(specs, model_conf)


def training_table(name: str) -> S.TableSpec:
    return model_def(name).table


def retrievers(names: Sequence[str]) -> List[str]:
    return [n for n in names if model_def(n).retrieval is not None]


def rankers(names: Sequence[str]) -> List[str]:
    return [n for n in names if model_def(n).ranks]


def explainers(names: Sequence[str]) -> List[str]:
    return [n for n in names if model_def(n).explainer is not None]


def inference_columns(name: str) -> List[str]:
    """Columns a model reads to score (user, item) pairs (rankers) or to encode a user (retrievers)."""
    spec = model_def(name)
    if spec.ranks:
        return list(spec.input_columns) + ([] if S.ITEM_IDX in spec.input_columns else [S.ITEM_IDX])
    return list(spec.retrieval.user_columns) + [S.ITEM_IDX]


def training_columns(name: str, model_conf) -> List[str]:
    """Columns read from the training table: the inputs, training-only inputs, and the label."""
    spec = model_def(name)
    return spec.input_columns + spec.training_only_columns(model_conf) + [spec.label]


def score(model, inputs: Mapping[str, np.ndarray], batch_size: int = 4096) -> np.ndarray:
    """Probabilities (N,) of a ranker for N rows given as column arrays ((N,) ids, (N, L) lists).

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


def pair_scores(name: str, model, inputs: Mapping[str, np.ndarray]) -> np.ndarray:
    """(N,) scores of N (user, item) rows: a ranker's probability, else the retrieval dot product."""
    spec = model_def(name)
    if spec.ranks:
        return (spec.pair_scorer or score)(model, inputs)
    # rows repeat each user once per candidate: encode every distinct user once
    user_columns = {c: np.asarray(inputs[c]) for c in spec.retrieval.user_columns}
    keys = np.concatenate([v.reshape(len(v), -1) for v in user_columns.values()], axis=1)
    _, first, inverse = np.unique(keys, axis=0, return_index=True, return_inverse=True)
    users = spec.retrieval.user_vectors(model, {c: v[first] for c, v in user_columns.items()})[inverse.reshape(-1)]
    items = spec.retrieval.item_vectors(model, None)[np.asarray(inputs[S.ITEM_IDX])]  # non-rankers: id vectors
    return np.einsum("nd,nd->n", users, items).astype(np.float64)


def retrieval_embeddings(name: str, keras_model, user_inputs: Mapping[str, np.ndarray],
                         item_content: Optional[Mapping[str, np.ndarray]] = None):
    """(user vectors (U, D) for the rows of ``user_inputs``, item vectors (n_items, D))."""
    spec = model_def(name)
    if spec.retrieval is None:
        raise ValueError(f"model {name!r} does not retrieve; retrievers: {retrievers(MODEL_NAMES)}")
    users = spec.retrieval.user_vectors(keras_model, {c: user_inputs[c] for c in spec.retrieval.user_columns})
    return (np.asarray(users, np.float32),
            np.asarray(spec.retrieval.item_vectors(keras_model, item_content), np.float32))
