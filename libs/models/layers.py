"""Small Keras layers the three models are built from.

Every layer is registered under the ``nightrec`` package and implements ``get_config``, so a saved
model reloads with ``tf.keras.models.load_model`` once :mod:`libs.models` is imported. Shapes use
B = batch, T = history length, D = embedding size, H = hidden size.
"""
from __future__ import annotations

from typing import Sequence

import tensorflow as tf

_register = tf.keras.utils.register_keras_serializable(package="nightrec")


def _l2(l2: float):
    return tf.keras.regularizers.l2(l2) if l2 else None


@_register
class MLP(tf.keras.layers.Layer):
    """A stack of dense layers (the MLP tower of NeuMF, He et al. 2017, and the heads of DIN/DIEN).

    Input (..., F) -> output (..., hidden_units[-1]).
    """

    def __init__(self, hidden_units: Sequence[int], activation: str = "relu", l2: float = 0.0,
                 dropout: float = 0.0, **kwargs):
        super().__init__(**kwargs)
        self.hidden_units = [int(u) for u in hidden_units]
        self.activation = activation
        self.l2 = float(l2)
        self.dropout = float(dropout)
        self.dense_layers = [tf.keras.layers.Dense(u, activation=activation, kernel_regularizer=_l2(l2),
                                                   name=f"dense_{i}")
                             for i, u in enumerate(self.hidden_units)]
        self.dropout_layers = [tf.keras.layers.Dropout(dropout) for _ in self.hidden_units] if dropout else []

    def call(self, inputs, training=None):
        x = inputs
        for i, dense in enumerate(self.dense_layers):
            x = dense(x)
            if self.dropout_layers:
                x = self.dropout_layers[i](x, training=training)
        return x

    def get_config(self):
        return {**super().get_config(), "hidden_units": self.hidden_units, "activation": self.activation,
                "l2": self.l2, "dropout": self.dropout}


@_register
class LengthMask(tf.keras.layers.Layer):
    """Lengths (B,) int -> boolean mask (B, maxlen), True for the first ``length`` steps."""

    def __init__(self, maxlen: int, **kwargs):
        super().__init__(**kwargs)
        self.maxlen = int(maxlen)

    def call(self, lengths):
        return tf.sequence_mask(tf.cast(lengths, tf.int32), self.maxlen)

    def get_config(self):
        return {**super().get_config(), "maxlen": self.maxlen}


@_register
class NonZeroMask(tf.keras.layers.Layer):
    """Right-padded ids (B, T) -> boolean mask (B, T), True where the id is not padding (0)."""

    def call(self, ids):
        return tf.not_equal(ids, 0)


@_register
class MaskedMeanPooling(tf.keras.layers.Layer):
    """Mean over the valid steps: values (B, T, D), mask (B, T) -> (B, D); zeros when none is valid."""

    def call(self, inputs):
        values, mask = inputs
        weights = tf.cast(mask, values.dtype)[..., tf.newaxis]
        total = tf.reduce_sum(values * weights, axis=1)
        return total / tf.maximum(tf.reduce_sum(weights, axis=1), 1.0)


@_register
class AttentionUnit(tf.keras.layers.Layer):
    """Target attention over a sequence: the local activation unit of DIN (Zhou et al. 2018), as DIEN uses it.

    Inputs: query (B, D), keys (B, T, D), mask (B, T) -> weights (B, T): a softmax over the valid
    steps of an MLP score of [q, k, q - k, q * k]; all zeros where the mask is all False.
    """

    def __init__(self, hidden_units: Sequence[int] = (36,), **kwargs):
        super().__init__(**kwargs)
        self.hidden_units = [int(u) for u in hidden_units]
        self.mlp = MLP(self.hidden_units, activation="sigmoid", name="mlp")
        self.score = tf.keras.layers.Dense(1, name="score")

    def call(self, inputs):
        query, keys, mask = inputs
        queries = tf.broadcast_to(query[:, tf.newaxis, :], tf.shape(keys))
        features = tf.concat([queries, keys, queries - keys, queries * keys], axis=-1)
        logits = tf.squeeze(self.score(self.mlp(features)), axis=-1)
        logits = tf.where(mask, logits, tf.fill(tf.shape(logits), -1e9))
        return tf.nn.softmax(logits, axis=-1) * tf.cast(mask, logits.dtype)

    def get_config(self):
        return {**super().get_config(), "hidden_units": self.hidden_units}


@_register
class AUGRUCell(tf.keras.layers.Layer):
    """GRU with attentional update gate (AUGRU, DIEN: Zhou et al. 2019, eq. 6): u' = a * u.

    Step input (B, D + 1): the item state and, last, its attention weight a; state (B, H).
    """

    def __init__(self, units: int, **kwargs):
        super().__init__(**kwargs)
        self.units = int(units)
        self.state_size = self.units
        self.output_size = self.units

    def build(self, input_shape):
        input_dim = int(input_shape[-1]) - 1
        self.kernel = self.add_weight(name="kernel", shape=(input_dim, 3 * self.units),
                                      initializer="glorot_uniform")
        self.recurrent_kernel = self.add_weight(name="recurrent_kernel", shape=(self.units, 3 * self.units),
                                                initializer="orthogonal")
        self.bias = self.add_weight(name="bias", shape=(3 * self.units,), initializer="zeros")
        super().build(input_shape)

    def call(self, inputs, states):
        x, attention = inputs[:, :-1], inputs[:, -1:]
        h = states[0]
        x_update, x_reset, x_candidate = tf.split(tf.matmul(x, self.kernel) + self.bias, 3, axis=-1)
        h_update, h_reset, h_candidate = tf.split(tf.matmul(h, self.recurrent_kernel), 3, axis=-1)
        update = attention * tf.sigmoid(x_update + h_update)
        reset = tf.sigmoid(x_reset + h_reset)
        candidate = tf.tanh(x_candidate + reset * h_candidate)
        new_h = (1.0 - update) * h + update * candidate
        return new_h, [new_h]

    def get_config(self):
        return {**super().get_config(), "units": self.units}


@_register
class InterestEvolution(tf.keras.layers.Layer):
    """DIEN's interest evolving layer: an AUGRU over the interest states driven by target attention.

    Inputs: states (B, T, H), attention (B, T), mask (B, T) -> final evolved interest (B, units),
    the state after the last valid step (zeros for an empty history).
    """

    def __init__(self, units: int, **kwargs):
        super().__init__(**kwargs)
        self.units = int(units)
        self.rnn = tf.keras.layers.RNN(AUGRUCell(self.units), name="augru")

    def call(self, inputs):
        states, attention, mask = inputs
        return self.rnn(tf.concat([states, attention[..., tf.newaxis]], axis=-1), mask=mask)

    def get_config(self):
        return {**super().get_config(), "units": self.units}


@_register
class AuxiliaryInterestLoss(tf.keras.layers.Layer):
    """DIEN's auxiliary loss (Zhou et al. 2019, eq. 3): interest state h_t must tell the next clicked
    item e_{t+1} from a sampled negative e'_{t+1}: -log σ(h_t·e_{t+1}) - log(1 - σ(h_t·e'_{t+1})),
    averaged over steps whose next item is real, times ``weight``; added with ``add_loss`` in training.

    Inputs: states (B, T, D), clicked (B, T, D), negatives (B, T, D), mask (B, T).
    Output: ``states`` unchanged (the layer only contributes the loss).
    """

    def __init__(self, weight: float = 1.0, **kwargs):
        super().__init__(**kwargs)
        self.weight = float(weight)

    def call(self, inputs, training=None):
        states, clicked, negatives, mask = inputs
        if training:
            current = states[:, :-1, :]
            pos_logits = tf.reduce_sum(current * clicked[:, 1:, :], axis=-1)
            neg_logits = tf.reduce_sum(current * negatives[:, 1:, :], axis=-1)
            step_mask = tf.cast(mask[:, 1:], states.dtype)
            per_step = (tf.nn.sigmoid_cross_entropy_with_logits(tf.ones_like(pos_logits), pos_logits)
                        + tf.nn.sigmoid_cross_entropy_with_logits(tf.zeros_like(neg_logits), neg_logits))
            loss = tf.reduce_sum(per_step * step_mask) / tf.maximum(tf.reduce_sum(step_mask), 1.0)
            self.add_loss(self.weight * loss)
        return states

    def get_config(self):
        return {**super().get_config(), "weight": self.weight}


@_register
class DotScore(tf.keras.layers.Layer):
    """Two-tower score: u (B, D), v (B, D) -> logit (B, 1).

    With ``normalize`` the cosine is scaled by a learned temperature and shifted by a learned bias
    (a cosine alone is bounded in [-1, 1], too narrow for a sigmoid); else the plain dot product.
    """

    def __init__(self, normalize: bool = True, **kwargs):
        super().__init__(**kwargs)
        self.normalize = bool(normalize)

    def build(self, input_shape):
        if self.normalize:
            self.scale = self.add_weight(name="scale", shape=(), initializer=tf.keras.initializers.Constant(5.0))
            self.bias = self.add_weight(name="bias", shape=(), initializer="zeros")
        super().build(input_shape)

    def call(self, inputs):
        users, items = inputs
        if not self.normalize:
            return tf.reduce_sum(users * items, axis=-1, keepdims=True)
        cosine = tf.reduce_sum(tf.math.l2_normalize(users, -1) * tf.math.l2_normalize(items, -1),
                               axis=-1, keepdims=True)
        return self.scale * cosine + self.bias

    def get_config(self):
        return {**super().get_config(), "normalize": self.normalize}
