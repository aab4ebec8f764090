"""NeuMF (He et al., "Neural Collaborative Filtering", WWW 2017): GMF and MLP towers fused."""
from __future__ import annotations

import tensorflow as tf

from libs import schema as S
from libs.models.inputs import embedding_table, model_inputs
from libs.models.layers import MLP

INPUT_COLUMNS = [S.USER_IDX, S.ITEM_IDX]
GMF_USER_EMBEDDING = "gmf_user_embedding"
GMF_ITEM_EMBEDDING = "gmf_item_embedding"
PREDICTION = "prediction"


def build_deep_cf(specs, conf) -> tf.keras.Model:
    """NeuMF over USER_IDX (B,) and ITEM_IDX (B,) -> P(interaction) (B, 1).

    GMF: u_g ⊙ i_g (B, D). MLP: [u_m, i_m] (B, 2D) through ``conf.hidden_units``. The prediction
    layer is one sigmoid unit over [GMF, MLP], so its first D weights weigh the GMF tower
    (used by :func:`retrieval_embeddings`).
    """
    features = specs.features(conf.embedding_dim)
    user, item = features[S.USER_IDX], features[S.ITEM_IDX]
    inputs = model_inputs(features, INPUT_COLUMNS)
    gmf = tf.keras.layers.Multiply(name="gmf")([
        embedding_table(user, conf.l2, GMF_USER_EMBEDDING)(inputs[S.USER_IDX]),
        embedding_table(item, conf.l2, GMF_ITEM_EMBEDDING)(inputs[S.ITEM_IDX])])
    mlp_in = tf.keras.layers.Concatenate(name="mlp_input")([
        embedding_table(user, conf.l2, "mlp_user_embedding")(inputs[S.USER_IDX]),
        embedding_table(item, conf.l2, "mlp_item_embedding")(inputs[S.ITEM_IDX])])
    mlp = MLP(conf.hidden_units, l2=conf.l2, name="mlp_tower")(mlp_in)
    fused = tf.keras.layers.Concatenate(name="neumf")([gmf, mlp])
    output = tf.keras.layers.Dense(1, activation="sigmoid", name=PREDICTION)(fused)
    return tf.keras.Model(inputs, output, name="deep_cf")


def retrieval_embeddings(model: tf.keras.Model):
    """GMF factors: user (n_users, D) and item (n_items, D) with user @ item.T = the GMF logit part.

    The item factors are scaled by the prediction layer's GMF weights, so a dot product ranks
    items as the GMF tower of the full model does.
    """
    users = model.get_layer(GMF_USER_EMBEDDING).get_weights()[0]
    items = model.get_layer(GMF_ITEM_EMBEDDING).get_weights()[0]
    gmf_weights = model.get_layer(PREDICTION).get_weights()[0][: items.shape[1], 0]
    return users, items * gmf_weights[None, :]


def user_encoder(model: tf.keras.Model, jit_compile: bool = False):
    """USER_IDX columns -> (U, D) GMF user factors (rows of :func:`retrieval_embeddings`: a lookup,
    nothing to compile)."""
    import numpy as np

    users = retrieval_embeddings(model)[0]
    return lambda columns: users[np.asarray(columns[S.USER_IDX])]
