"""SASRec (Kang & McAuley, "Self-Attentive Sequential Recommendation", ICDM 2018), trained the way
later work shows it works best: every position predicts its next item with a softmax over the
whole catalog (Petrov & Macdonald, "gSASRec", RecSys 2023; Klenitskiy & Vasilev, "Turning
Dross Into Gold Loss: is BERT4Rec really better than SASRec?", RecSys 2023).

Why SASRec rather than GRU4Rec here: causal self-attention trains all positions of a window in
parallel (no step-by-step recurrence), so an epoch costs less on CPUs, and its published figures on
ml-1m under full ranking are the higher ones.

Inputs are right-padded windows of a user's timeline, oldest first: SEQ_ITEMS (B, L), the
session-start flags SEQ_SESSION_STARTS (B, L) (1 where a new session starts, from the sessions
job's inactivity gap) and SEQ_LEN (B,). Positions are embedded by their distance from the latest
item, so the newest item always has position 0 whatever the window's length. The output are the
catalog logits of every position (B, L, I); the user vector for retrieval is the state at the last
real position, scored against the (tied) item embeddings with one dot product.
"""
from __future__ import annotations

import numpy as np
import tensorflow as tf

from libs import schema as S
from libs.models.inputs import model_inputs

INPUT_COLUMNS = [S.SEQ_ITEMS, S.SEQ_SESSION_STARTS, S.SEQ_LEN]
LABEL_COLUMN = S.TARGET_ITEMS
ENCODER = "sasrec_encoder"
_NEG_INF = -1e9

_register = tf.keras.utils.register_keras_serializable(package="nightrec")


@_register
class SASRecEncoder(tf.keras.layers.Layer):
    """Item windows -> causal self-attention states, and catalog logits with tied item embeddings.

    ``call([items (B, L), session_starts (B, L), lengths (B,)])`` -> logits (B, L, I) where
    position t scores the item that follows ``items[:, t]`` (padding item 0 gets -inf).
    :meth:`user_vectors` gives the state at the last real position (B, D).
    """

    def __init__(self, n_items: int, dim: int, maxlen: int, blocks: int = 2, heads: int = 1,
                 dropout: float = 0.2, **kwargs):
        super().__init__(**kwargs)
        self.n_items, self.dim, self.maxlen = int(n_items), int(dim), int(maxlen)
        self.blocks, self.heads, self.dropout = int(blocks), int(heads), float(dropout)
        init = tf.keras.initializers.TruncatedNormal(stddev=0.02)
        self.item_embedding = tf.keras.layers.Embedding(self.n_items, dim, embeddings_initializer=init,
                                                        name="item_embedding")
        self.position_embedding = tf.keras.layers.Embedding(self.maxlen, dim, embeddings_initializer=init,
                                                            name="position_embedding")
        self.session_embedding = tf.keras.layers.Embedding(2, dim, embeddings_initializer=init,
                                                           name="session_start_embedding")
        self.input_dropout = tf.keras.layers.Dropout(dropout)
        self.attention_norms, self.attentions, self.ffn_norms, self.ffns = [], [], [], []
        for i in range(self.blocks):
            self.attention_norms.append(tf.keras.layers.LayerNormalization(epsilon=1e-6, name=f"attention_norm_{i}"))
            self.attentions.append(tf.keras.layers.MultiHeadAttention(
                heads, dim // heads, dropout=dropout, name=f"attention_{i}"))
            self.ffn_norms.append(tf.keras.layers.LayerNormalization(epsilon=1e-6, name=f"ffn_norm_{i}"))
            self.ffns.append(tf.keras.Sequential([
                tf.keras.layers.Dense(dim, activation="gelu"), tf.keras.layers.Dropout(dropout),
                tf.keras.layers.Dense(dim), tf.keras.layers.Dropout(dropout)], name=f"ffn_{i}"))
        self.final_norm = tf.keras.layers.LayerNormalization(epsilon=1e-6, name="final_norm")

    def _embed(self, items, session_starts, lengths, training=None):
        """(x (B, L, D) embedded window, padding zeroed; real (B, L) bool)."""
        lengths = tf.reshape(tf.cast(lengths, tf.int32), [-1])
        steps = tf.range(tf.shape(items)[1])
        real = steps[None, :] < lengths[:, None]                                  # (B, L)
        from_latest = tf.where(real, lengths[:, None] - 1 - steps[None, :], 0)
        from_latest = tf.minimum(from_latest, self.maxlen - 1)
        x = (self.item_embedding(items) * (self.dim ** 0.5) + self.position_embedding(from_latest)
             + self.session_embedding(tf.clip_by_value(tf.cast(session_starts, tf.int32), 0, 1)))
        return self.input_dropout(x, training=training) * tf.cast(real, x.dtype)[:, :, None], real

    def _block(self, i, x, mask, training=None):
        h = self.attention_norms[i](x)
        x = x + self.attentions[i](h, h, use_causal_mask=True, training=training)
        return (x + self.ffns[i](self.ffn_norms[i](x), training=training)) * mask

    def states(self, items, session_starts, lengths, training=None):
        """(B, L, D) states; position t sees items[:, :t+1] only (causal), padding rows are zero."""
        x, real = self._embed(items, session_starts, lengths, training)
        mask = tf.cast(real, x.dtype)[:, :, None]
        for i in range(self.blocks):
            x = self._block(i, x, mask, training)
        return self.final_norm(x) * mask

    def call(self, inputs, training=None):
        items, session_starts, lengths = inputs
        states = self.states(items, session_starts, lengths, training=training)
        logits = tf.einsum("bld,id->bli", states, self.item_embedding.embeddings)
        padding_column = tf.one_hot(0, self.n_items, on_value=_NEG_INF, off_value=0.0, dtype=logits.dtype)
        return logits + padding_column

    def user_vectors(self, items, session_starts, lengths):
        """(B, D): the state at each window's last real position (the next-item query).

        Equal to ``states(...)`` at that position, but the last block computes that position only
        (its causal attention row over the window and its feed-forward): the other positions'
        outputs of the last block are never read.
        """
        x, real = self._embed(items, session_starts, lengths)
        mask = tf.cast(real, x.dtype)[:, :, None]
        for i in range(self.blocks - 1):
            x = self._block(i, x, mask)
        lengths = tf.reshape(tf.cast(lengths, tf.int32), [-1])
        last = tf.maximum(lengths - 1, 0)
        h = self.attention_norms[-1](x)
        query = tf.gather(h, last, axis=1, batch_dims=1)[:, None, :]                   # (B, 1, D)
        row = tf.range(tf.shape(items)[1])[None, None, :] <= last[:, None, None]       # (B, 1, L) causal row
        y = tf.gather(x, last, axis=1, batch_dims=1)[:, None, :] + self.attentions[-1](
            query, h, attention_mask=row)
        y = y + self.ffns[-1](self.ffn_norms[-1](y))
        return self.final_norm(y)[:, 0, :] * tf.cast(lengths > 0, y.dtype)[:, None]

    def get_config(self):
        return {**super().get_config(), "n_items": self.n_items, "dim": self.dim, "maxlen": self.maxlen,
                "blocks": self.blocks, "heads": self.heads, "dropout": self.dropout}


@_register
def masked_catalog_softmax(targets, logits):
    """Cross-entropy of the softmax over the catalog at every real position, averaged per window.

    Args:
        targets: (B, L) next item per position; 0 = padding (no loss).
        logits: (B, L, I).
    Returns:
        (B,) mean loss over each window's real positions.
    """
    targets = tf.cast(targets, tf.int32)
    mask = tf.cast(targets > 0, logits.dtype)
    losses = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=targets, logits=logits)
    return tf.reduce_sum(losses * mask, axis=-1) / tf.maximum(tf.reduce_sum(mask, axis=-1), 1.0)


def build_sasrec(specs, conf) -> tf.keras.Model:
    """SASRec over SEQ_ITEMS, SEQ_SESSION_STARTS (B, L), SEQ_LEN (B,) -> catalog logits (B, L, I)."""
    features = specs.features(conf.embedding_dim)
    inputs = model_inputs(features, INPUT_COLUMNS)
    encoder = SASRecEncoder(specs.n_items, conf.embedding_dim, specs.sequence_length, blocks=conf.blocks,
                            heads=conf.heads, dropout=conf.dropout, name=ENCODER)
    logits = encoder([inputs[S.SEQ_ITEMS], inputs[S.SEQ_SESSION_STARTS], inputs[S.SEQ_LEN]])
    return tf.keras.Model(inputs, logits, name="sasrec")


def user_encoder(model: tf.keras.Model, jit_compile: bool = False):
    """A function SEQ_* column arrays of U windows -> (U, D) next-item query vectors, compiled once
    (windows go in whole blocks of ``USER_BLOCK``, the last one padded: one shape for XLA)."""
    from libs.serving import USER_BLOCK, pad_rows

    encoder = model.get_layer(ENCODER)
    windows = tf.TensorSpec([None, model.input[S.SEQ_ITEMS].shape[1]], tf.int32)
    encode = tf.function(encoder.user_vectors, input_signature=[windows, windows, tf.TensorSpec([None], tf.int32)],
                         jit_compile=jit_compile)

    def user_vectors(columns) -> np.ndarray:
        out = []
        for start in range(0, len(columns[S.SEQ_LEN]), USER_BLOCK):
            block = [pad_rows(np.asarray(columns[c][start:start + USER_BLOCK], np.int32), USER_BLOCK)
                     for c in INPUT_COLUMNS]
            out.append(encode(*block).numpy()[:len(columns[S.SEQ_LEN]) - start])
        return np.concatenate(out) if out else np.zeros((0, encoder.dim), np.float32)

    return user_vectors


def item_vectors(model: tf.keras.Model) -> np.ndarray:
    """(I, D) item embeddings (row 0 = padding): ``user @ items.T`` are the model's next-item logits."""
    return model.get_layer(ENCODER).item_embedding.get_weights()[0]


def history_explainer(model: tf.keras.Model, item_content=None, scorer=None):
    """Serving: for each of the users' final items (U, K), the SEQ_ITEMS item whose state scores it
    highest -> (U, K) item indices (0: none).

    The weight of history position t for item i is ``state_t . embedding_i``: the logit the model
    itself gives i as the item after position t (the state at t has seen items up to t, causally),
    so the reason is the point of the history from which the model most expects the item. Not
    the last position's attention row: that is one distribution over the window for every
    candidate, so all K rows would get the same reason. Costs one pass of the encoder over the
    block's windows (the retrieval query reads the last position only) and a (K, D) x (D, L)
    product per user.
    """
    from libs.explanations import explain
    from libs.serving import USER_BLOCK, pad_rows

    encoder = model.get_layer(ENCODER)
    windows = tf.TensorSpec([None, model.input[S.SEQ_ITEMS].shape[1]], tf.int32)

    @tf.function(input_signature=[windows, windows, tf.TensorSpec([None], tf.int32),
                                  tf.TensorSpec([None, None], tf.int32)], jit_compile=True)
    def logits_per_position(items, session_starts, lengths, targets):
        states = encoder.states(items, session_starts, lengths)                          # (U, L, D)
        return tf.einsum("uld,ukd->ukl", states, encoder.item_embedding(targets))        # (U, K, L)

    def explain_items(columns, items):
        block = [pad_rows(np.asarray(columns[c], np.int32), USER_BLOCK) for c in INPUT_COLUMNS]
        targets = pad_rows(np.maximum(np.asarray(items), 0).astype(np.int32), USER_BLOCK)
        weights = logits_per_position(*block, targets).numpy()[:len(items)]
        return explain(weights, columns[S.SEQ_ITEMS], columns[S.SEQ_LEN])

    return explain_items
