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


def candidate_scorer(model: tf.keras.Model, item_content=None):
    """Serving: DIEN's P(click) of each user's C candidates, user-side work done once per user.

    The interest extractor (a GRU over the history), the history mean and the user embedding read
    the user alone: they run once per user (U, T, D). Per (user, candidate) pair run only what
    depends on the candidate: the target attention and the AUGRU. Both start with a matmul that is
    linear in its inputs, so the history's share of it is also computed once per user:
    attention's first layer over [q, k, q - k, q * k] is q (Wq + Wd) + k (Wk - Wd) + (q * k) Wp + b,
    and the AUGRU's input projection states @ kernel + bias reads the states only. The same weights
    and activations as the model; scores agree with ``model.predict`` to float32 rounding.
    XLA-compiled (about 2x on CPU, for the fused AUGRU steps); blocks are padded to whole
    ``USER_BLOCK`` s of users so each worker compiles once (the candidates' width is fixed too).
    """
    import numpy as np

    from libs.serving import USER_BLOCK, pad_rows

    item_table, user_table = model.get_layer("item_embedding"), model.get_layer("user_embedding")
    extractor, attention = model.get_layer("interest_extractor"), model.get_layer("target_attention")
    cell = model.get_layer("interest_evolution").rnn.cell
    head, prediction = model.get_layer("head"), model.get_layer("prediction")
    first, *deeper = attention.mlp.dense_layers
    w_query, w_key, w_diff, w_product = tf.split(first.kernel, 4, axis=0)
    steps = int(model.input[S.HIST_ITEMS].shape[1])
    ids, lists = tf.TensorSpec([None], tf.int32), tf.TensorSpec([None, steps], tf.int32)

    def target_attention(states, mask, target):
        """The target attention of every candidate over the states: (U, C, T), 0 at padding."""
        # q (Wq + Wd) + (q * k) Wp = q (Wq + Wd + diag(k) Wp): one (C, D) @ (D, T * A) matmul per user
        per_step = (w_query + w_diff)[None, None] + states[..., None] * w_product[None, None]  # (U, T, D, A)
        pre = (tf.einsum("ucd,utda->ucta", target, per_step)
               + (tf.einsum("utd,da->uta", states, w_key - w_diff) + first.bias)[:, None, :, :])
        hidden = first.activation(pre)                                                  # (U, C, T, A)
        for layer in deeper:
            hidden = layer(hidden)
        # the Dense(1) score layers as multiply-and-sum: XLA fuses it with the activation (2x here)
        logits = tf.reduce_sum(hidden * attention.score.kernel[:, 0], -1) + attention.score.bias[0]  # (U, C, T)
        step_mask = tf.broadcast_to(mask[:, None, :], tf.shape(logits))
        logits = tf.where(step_mask, logits, tf.fill(tf.shape(logits), -1e9))
        return tf.nn.softmax(logits, axis=-1) * tf.cast(step_mask, logits.dtype)

    candidate_lists = tf.TensorSpec([None, None], tf.int32)

    @tf.function(input_signature=[ids, lists, ids, candidate_lists], jit_compile=True)
    def score(users, history_items, history_len, candidates):
        mask = tf.sequence_mask(history_len, steps)                                    # (U, T)
        history = item_table(history_items)                                             # (U, T, D)
        states = extractor(history, mask=mask)                                          # (U, T, H)
        weights = tf.cast(mask, history.dtype)[..., None]
        pooled = tf.reduce_sum(history * weights, 1) / tf.maximum(tf.reduce_sum(weights, 1), 1.0)
        target = item_table(candidates)                                                 # (U, C, D)
        focus = target_attention(states, mask, target)                                  # (U, C, T)

        projected = tf.einsum("uth,hk->utk", states, cell.kernel) + cell.bias          # (U, T, 3H)
        h = tf.zeros(tf.concat([tf.shape(target)[:2], [cell.units]], 0), states.dtype)  # (U, C, H)
        for t in range(steps):  # AUGRUCell.call with the input share precomputed per user
            x_update, x_reset, x_candidate = tf.split(projected[:, None, t, :], 3, axis=-1)
            h_update, h_reset, h_candidate = tf.split(tf.einsum("uch,hk->uck", h, cell.recurrent_kernel), 3, -1)
            update = focus[:, :, t, None] * tf.sigmoid(x_update + h_update)
            reset = tf.sigmoid(x_reset + h_reset)
            candidate = tf.tanh(x_candidate + reset * h_candidate)
            h = tf.where(mask[:, None, t, None], (1.0 - update) * h + update * candidate, h)

        shape = tf.shape(target)
        head_in = tf.concat([tf.broadcast_to(user_table(users)[:, None, :], shape), target, h,
                             tf.broadcast_to(pooled[:, None, :], shape), target * h], axis=-1)
        return prediction.activation(tf.reduce_sum(head(head_in) * prediction.kernel[:, 0], -1)
                                     + prediction.bias[0]), focus                          # (U, C), (U, C, T)

    @tf.function(input_signature=[lists, ids, candidate_lists], jit_compile=True)
    def attention_only(history_items, history_len, candidates):
        mask = tf.sequence_mask(history_len, steps)
        return target_attention(extractor(item_table(history_items), mask=mask), mask, item_table(candidates))

    last = {}  # the latest block's candidates and their attention, for :func:`attention_explainer`

    def score_candidates(columns, candidates):
        inputs = [pad_rows(np.asarray(columns[c], np.int32), USER_BLOCK) for c in (S.USER_IDX, S.HIST_ITEMS, S.HIST_LEN)]
        items = pad_rows(np.maximum(candidates, 0).astype(np.int32), USER_BLOCK)
        probabilities, focus = score(*inputs, items)
        last.update(history=columns[S.HIST_ITEMS], candidates=candidates, focus=focus.numpy()[:len(candidates)])
        return probabilities.numpy()[:len(candidates)].astype(np.float64)

    def attention_of(columns, items):
        """(U, K, T) attention of ``items`` (U, K): the scorer's own when it just scored a block
        holding them (no second pass), else the extractor and the attention unit run again."""
        if last and last["history"] is columns[S.HIST_ITEMS] and len(items) == len(last["candidates"]):
            hit = last["candidates"][:, :, None] == items[:, None, :]                   # (U, C, K)
            if (hit.any(axis=1) | (items <= 0)).all():  # items <= 0: empty slots, their reason unused
                return np.take_along_axis(last["focus"], hit.argmax(axis=1)[:, :, None], axis=1)
        inputs = [pad_rows(np.asarray(columns[c], np.int32), USER_BLOCK) for c in (S.HIST_ITEMS, S.HIST_LEN)]
        padded = pad_rows(np.maximum(items, 0).astype(np.int32), USER_BLOCK)
        return attention_only(*inputs, padded).numpy()[:len(items)]

    score_candidates.attention_of = attention_of
    return score_candidates


def attention_explainer(model: tf.keras.Model, item_content=None, scorer=None):
    """Serving: the HIST_ITEMS item with the highest target attention (the weight the AUGRU's
    update gate gets) for each of the users' final items (U, K) -> (U, K) item indices (0: none).

    With ``scorer`` (this model's :func:`candidate_scorer`, as the recommend job serves it), the
    attention its last block computed is reused: no user-side or attention work runs twice.
    """
    import numpy as np

    from libs.explanations import explain

    attention_of = (scorer or candidate_scorer(model, item_content)).attention_of

    def explain_items(columns, items):
        items = np.asarray(items)
        return explain(attention_of(columns, items), columns[S.HIST_ITEMS], columns[S.HIST_LEN])

    return explain_items
