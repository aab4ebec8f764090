"""DIEN (Zhou et al., "Deep Interest Evolution Network for Click-Through Rate Prediction", AAAI 2019)."""
from __future__ import annotations

import tensorflow as tf

from libs import schema as S
from libs.models.inputs import embedding_table, model_inputs
from libs.models.layers import (MLP, AttentionUnit, AuxiliaryInterestLoss, InterestEvolution, LengthMask,
                                MaskedMeanPooling)

INPUT_COLUMNS = [S.USER_IDX, S.ITEM_IDX, S.HIST_ITEMS, S.HIST_LEN]
AUX_COLUMNS = [S.HIST_NEG_ITEMS]   # inputs only the auxiliary loss reads (zeros at inference)


def input_columns(conf, training: bool):
    return INPUT_COLUMNS + (AUX_COLUMNS if training and conf.use_aux_loss else [])


def build_dien(specs, conf) -> tf.keras.Model:
    """DIEN over USER_IDX (B,), ITEM_IDX (B,), HIST_ITEMS (B, T), HIST_LEN (B,) -> P(click) (B, 1).

    Interest extractor: a GRU over the history item embeddings (B, T, D) -> states (B, T, D), trained
    with the auxiliary loss against HIST_NEG_ITEMS (B, T) when ``conf.use_aux_loss``. Interest
    evolution: AUGRU over the states with attention on the target item -> (B, D). Head: MLP over
    [user, target, evolved interest, mean history, target ⊙ evolved].
    """
    features = specs.features(conf.embedding_dim)
    inputs = model_inputs(features, input_columns(conf, training=True))
    item_table = embedding_table(features[S.ITEM_IDX], conf.l2, "item_embedding")
    user = embedding_table(features[S.USER_IDX], conf.l2, "user_embedding")(inputs[S.USER_IDX])
    target = item_table(inputs[S.ITEM_IDX])
    history = item_table(inputs[S.HIST_ITEMS])
    mask = LengthMask(features[S.HIST_ITEMS].maxlen, name="history_mask")(inputs[S.HIST_LEN])

    states = tf.keras.layers.GRU(conf.embedding_dim, return_sequences=True,
                                 name="interest_extractor")(history, mask=mask)
    if conf.use_aux_loss:
        negatives = item_table(inputs[S.HIST_NEG_ITEMS])
        states = AuxiliaryInterestLoss(conf.aux_loss_weight, name="auxiliary_loss")(
            [states, history, negatives, mask])
    attention = AttentionUnit(name="target_attention")([target, states, mask])
    evolved = InterestEvolution(conf.embedding_dim, name="interest_evolution")([states, attention, mask])
    pooled = MaskedMeanPooling(name="history_mean")([history, mask])
    interaction = tf.keras.layers.Multiply(name="target_x_interest")([target, evolved])
    head_in = tf.keras.layers.Concatenate(name="head_input")([user, target, evolved, pooled, interaction])
    hidden = MLP(conf.hidden_units, l2=conf.l2, name="head")(head_in)
    output = tf.keras.layers.Dense(1, activation="sigmoid", name="prediction")(hidden)
    return tf.keras.Model(inputs, output, name="dien")
