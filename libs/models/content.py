"""Content two-tower model (the YouTube/TFRS two-tower retrieval pattern, Yi et al. RecSys 2019).

The item tower sees only content (title tokens, genres, release-year bucket), so an item that never
appeared in training still gets a vector; the user tower encodes the user's history.
"""
from __future__ import annotations

import tensorflow as tf

from libs import schema as S
from libs.models.inputs import embedding_table, model_inputs
from libs.models.layers import MLP, DotScore, LengthMask, MaskedMeanPooling, NonZeroMask

USER_COLUMNS = [S.HIST_ITEMS, S.HIST_LEN]
ITEM_COLUMNS = [S.TITLE_TOKENS, S.GENRE_MULTI_HOT, S.YEAR_BUCKET]
INPUT_COLUMNS = USER_COLUMNS + ITEM_COLUMNS


def build_content(specs, conf) -> tf.keras.Model:
    """Two towers -> sigmoid(scaled cosine) (B, 1).

    User tower: mean of HIST_ITEMS embeddings (B, T, D) over HIST_LEN -> MLP -> (B, D).
    Item tower: [mean TITLE_TOKENS embedding (B, D), dense(GENRE_MULTI_HOT) (B, D),
    YEAR_BUCKET embedding (B, D)] -> MLP -> (B, D).
    """
    d = conf.embedding_dim
    features = specs.features(d)
    inputs = model_inputs(features, INPUT_COLUMNS)

    history = embedding_table(features[S.HIST_ITEMS], conf.l2, "history_item_embedding")(inputs[S.HIST_ITEMS])
    history_mask = LengthMask(features[S.HIST_ITEMS].maxlen, name="history_mask")(inputs[S.HIST_LEN])
    user_pooled = MaskedMeanPooling(name="history_mean")([history, history_mask])
    user_vector = tf.keras.layers.Dense(d, name="user_vector")(
        MLP(conf.hidden_units, l2=conf.l2, name="user_tower")(user_pooled))

    tokens = embedding_table(features[S.TITLE_TOKENS], conf.l2, "title_token_embedding")(inputs[S.TITLE_TOKENS])
    title = MaskedMeanPooling(name="title_mean")([tokens, NonZeroMask(name="title_mask")(inputs[S.TITLE_TOKENS])])
    genres = tf.keras.layers.Dense(d, use_bias=False, name="genre_projection")(inputs[S.GENRE_MULTI_HOT])
    year = embedding_table(features[S.YEAR_BUCKET], conf.l2, "year_embedding")(inputs[S.YEAR_BUCKET])
    item_in = tf.keras.layers.Concatenate(name="item_content")([title, genres, year])
    item_vector = tf.keras.layers.Dense(d, name="item_vector")(
        MLP(conf.hidden_units, l2=conf.l2, name="item_tower")(item_in))

    logit = DotScore(normalize=True, name="score")([user_vector, item_vector])
    output = tf.keras.layers.Activation("sigmoid", name="prediction")(logit)
    return tf.keras.Model(inputs, output, name="content")


def _unit(vectors):
    import numpy as np

    return vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)


def user_encoder(model: tf.keras.Model, jit_compile: bool = False):
    """A function HIST_ITEMS, HIST_LEN columns -> (U, D) unit user-tower vectors (cosine ranking =
    the model's ranking), compiled once (rows padded to whole ``USER_BLOCK`` s: one shape for XLA)."""
    import numpy as np

    from libs.serving import USER_BLOCK, pad_rows

    tower = tf.keras.Model([model.input[c] for c in USER_COLUMNS], model.get_layer("user_vector").output)
    encode = tf.function(lambda items, lengths: tower([items, lengths], training=False), input_signature=[
        tf.TensorSpec([None, model.input[S.HIST_ITEMS].shape[1]], tf.int32), tf.TensorSpec([None], tf.int32)],
        jit_compile=jit_compile)

    def user_vectors(columns):
        n = len(columns[S.HIST_LEN])
        return _unit(encode(*(pad_rows(np.asarray(columns[c], np.int32), USER_BLOCK) for c in USER_COLUMNS))
                     .numpy()[:n])

    return user_vectors


def item_vectors(model: tf.keras.Model, item_content) -> "np.ndarray":
    """(I, D) unit item-tower vectors from each item's content alone (new items included)."""
    import numpy as np

    tower = tf.keras.Model([model.input[c] for c in ITEM_COLUMNS], model.get_layer("item_vector").output)
    return _unit(tower.predict([np.asarray(item_content[c]) for c in ITEM_COLUMNS], batch_size=4096, verbose=0))


def candidate_scorer(model: tf.keras.Model, item_content):
    """Serving: sigmoid(scale * cosine + bias) of each user's candidates, the user tower run once per
    user and the item tower once per item (the model's own score layer, on the towers' outputs)."""
    import numpy as np

    items = item_vectors(model, item_content)
    users_of = user_encoder(model, jit_compile=True)
    scale, bias = (float(w) for w in model.get_layer("score").get_weights())

    def score(columns, candidates):
        cosine = np.einsum("ud,ucd->uc", users_of(columns), items[np.maximum(candidates, 0)])
        return 1.0 / (1.0 + np.exp(-(scale * cosine.astype(np.float64) + bias)))

    return score
