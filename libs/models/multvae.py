"""Mult-VAE (Liang, Krishnan, Hoffman & Jebara, "Variational Autoencoders for Collaborative
Filtering", WWW 2018), the authors' ``vae_cf`` recipe: the user's items as a multi-hot vector,
L2-normalized, dropout 0.5, a 600-unit tanh layer to a 200-d Gaussian latent (mean and log
variance), decoded by a 600-unit tanh layer to catalog logits; the loss is the multinomial
log-likelihood (a softmax over the catalog) plus the KL term, its weight annealed from 0 up to
beta = 0.2 (``kl_beta``) at ``1 / kl_anneal_steps`` per training step.

Training table: the sequence windows of ``next_item_examples`` (no table of its own). Each row is
a window of the user's training timeline of at most ``features.sequence_length`` items; its items
are the input set and its TARGET_ITEMS (the window shifted by one: every item after the first,
plus the item that follows the window) are the multinomial targets, so the model learns to
reconstruct a user's set and the next item with it. Why windows rather than one row per user with
the whole history: serving reads the same window (``user_sequences``' latest L items), so the
model is trained on the input it is served, and users with long histories give several rows (as
they give sasrec) instead of one very dense one; the table already exists, versioned and sharded
like the other training tables.

Retrieval: the decoder's output layer ``logits = h W + b`` with ``h = tanh(mu W1 + b1)`` (the
decoder's hidden layers applied to the encoder mean) is a dot product: the user vector is
``[h, 1]`` and item i's vector is ``[W[:, i], b[i]]`` (the bias column trick), so
``users @ items.T`` are the model's logits at inference (no sampling). The input items score high
(an autoencoder reconstructs its input); they are the user's seen items, which retrieval excludes.
"""
from __future__ import annotations

import numpy as np
import tensorflow as tf

from libs import schema as S
from libs.models.inputs import model_inputs

INPUT_COLUMNS = [S.SEQ_ITEMS]
LABEL_COLUMN = S.TARGET_ITEMS
AUTOENCODER = "multvae"
_NEG_INF = -1e9

_register = tf.keras.utils.register_keras_serializable(package="nightrec")


def multi_hot(items, n_items: int):
    """Right-padded item ids (B, L) -> binary (B, n_items) float32; padding item 0 and repeats
    count once at most, column 0 is always 0. A scatter, not a (B, L, I) one-hot."""
    items = tf.cast(items, tf.int32)
    rows = tf.broadcast_to(tf.range(tf.shape(items)[0])[:, None], tf.shape(items))
    indices = tf.reshape(tf.stack([rows, items], axis=-1), [-1, 2])
    counts = tf.scatter_nd(indices, tf.ones([tf.shape(indices)[0]], tf.float32), [tf.shape(items)[0], n_items])
    return tf.minimum(counts, 1.0) * tf.one_hot(0, n_items, on_value=0.0, off_value=1.0)


def kl_divergence(mu, log_var):
    """KL(N(mu, exp(log_var)) || N(0, I)) of each row: (B, D), (B, D) -> (B,)."""
    return 0.5 * tf.reduce_sum(tf.exp(log_var) + tf.square(mu) - 1.0 - log_var, axis=-1)


def kl_weight(step, beta: float, anneal_steps: int):
    """The annealed KL weight at training step ``step`` (0-based): min(beta, step / anneal_steps)."""
    return tf.minimum(tf.cast(beta, tf.float32), tf.cast(step, tf.float32) / float(anneal_steps))


@_register
class MultVAE(tf.keras.layers.Layer):
    """Item windows -> catalog logits through a variational autoencoder of the window's item set.

    ``call(items (B, L))`` -> logits (B, I), padding item 0 at -inf. In training the latent is
    sampled (reparameterization) and ``kl_weight(step) * mean KL`` is added with ``add_loss``;
    ``step`` counts training calls (a non-trainable weight, saved with the model). At inference
    the latent is the mean. :meth:`user_vectors` gives ``[h, 1]`` (B, H + 1).
    """

    def __init__(self, n_items: int, hidden_units=(600,), latent_dim: int = 200, dropout: float = 0.5,
                 kl_beta: float = 0.2, kl_anneal_steps: int = 200_000, l2: float = 0.0, **kwargs):
        super().__init__(**kwargs)
        self.n_items, self.latent_dim = int(n_items), int(latent_dim)
        self.hidden_units = [int(u) for u in hidden_units]
        self.dropout, self.kl_beta, self.kl_anneal_steps = float(dropout), float(kl_beta), int(kl_anneal_steps)
        self.l2 = float(l2)
        regularizer = tf.keras.regularizers.l2(l2) if l2 else None

        def dense(units, activation, name):  # biases: vae_cf's truncated normal (0.001), one per layer
            return tf.keras.layers.Dense(units, activation=activation, kernel_regularizer=regularizer,
                                         bias_initializer=tf.keras.initializers.TruncatedNormal(stddev=0.001),
                                         name=name)

        self.input_dropout = tf.keras.layers.Dropout(dropout)
        self.encoder = [dense(u, "tanh", f"encoder_{i}") for i, u in enumerate(self.hidden_units)]
        self.latent = dense(2 * self.latent_dim, None, "latent")  # mean and log variance
        self.decoder = [dense(u, "tanh", f"decoder_{i}") for i, u in enumerate(reversed(self.hidden_units))]
        self.output_layer = dense(self.n_items, None, "output")

    def build(self, input_shape):
        self.step = self.add_weight(name="anneal_step", shape=(), dtype=tf.int64, initializer="zeros",
                                    trainable=False)
        super().build(input_shape)

    def encode(self, items, training=None):
        """(mu, log_var), each (B, latent_dim), of the windows' item sets."""
        x = tf.math.l2_normalize(multi_hot(items, self.n_items), axis=-1)  # an empty window stays 0
        h = self.input_dropout(x, training=training)
        for layer in self.encoder:
            h = layer(h)
        mu, log_var = tf.split(self.latent(h), 2, axis=-1)
        return mu, log_var

    def decode_hidden(self, z):
        """(B, H): the decoder's hidden layers (the user vector before the bias column)."""
        for layer in self.decoder:
            z = layer(z)
        return z

    def call(self, items, training=None):
        mu, log_var = self.encode(items, training=training)
        z = mu
        if training:
            z = mu + tf.exp(0.5 * log_var) * tf.random.normal(tf.shape(mu))
            self.add_loss(kl_weight(self.step, self.kl_beta, self.kl_anneal_steps)
                          * tf.reduce_mean(kl_divergence(mu, log_var)))
            self.step.assign_add(1)
        logits = self.output_layer(self.decode_hidden(z))
        return logits + tf.one_hot(0, self.n_items, on_value=_NEG_INF, off_value=0.0, dtype=logits.dtype)

    def user_vectors(self, items):
        """(B, H + 1): ``[h(mu), 1]``, so that its dot product with :meth:`item_vectors` is the logit."""
        h = self.decode_hidden(self.encode(items, training=False)[0])
        return tf.concat([h, tf.ones_like(h[:, :1])], axis=-1)

    def item_vectors(self) -> np.ndarray:
        """(I, H + 1): each item's output weights and, last, its bias (row 0 = padding)."""
        kernel, bias = self.output_layer.get_weights()
        return np.concatenate([kernel.T, bias[:, None]], axis=1)

    def get_config(self):
        return {**super().get_config(), "n_items": self.n_items, "hidden_units": self.hidden_units,
                "latent_dim": self.latent_dim, "dropout": self.dropout, "kl_beta": self.kl_beta,
                "kl_anneal_steps": self.kl_anneal_steps, "l2": self.l2}


@_register
def multinomial_log_likelihood(targets, logits):
    """Mult-VAE's reconstruction loss: minus the multinomial log-likelihood of the target item set.

    Args:
        targets: (B, L) item ids of the set (0 = padding; a repeated item counts once).
        logits: (B, I) catalog logits.
    Returns:
        (B,) ``-sum_i x_i log softmax(logits)_i`` with x the multi-hot of ``targets``.
    """
    x = multi_hot(targets, logits.shape[-1])
    return -tf.reduce_sum(tf.nn.log_softmax(logits, axis=-1) * x, axis=-1)


def build_multvae(specs, conf) -> tf.keras.Model:
    """Mult-VAE over SEQ_ITEMS (B, L) -> catalog logits (B, I); hidden_units are the encoder's
    layers (the decoder mirrors them), embedding_dim the latent size."""
    inputs = model_inputs(specs.features(conf.embedding_dim), INPUT_COLUMNS)
    autoencoder = MultVAE(specs.n_items, conf.hidden_units, conf.embedding_dim, dropout=conf.dropout,
                          kl_beta=conf.kl_beta, kl_anneal_steps=conf.kl_anneal_steps, l2=conf.l2, name=AUTOENCODER)
    return tf.keras.Model(inputs, autoencoder(inputs[S.SEQ_ITEMS]), name="multvae")


def user_encoder(model: tf.keras.Model, jit_compile: bool = False):
    """A function SEQ_ITEMS of U windows -> (U, H + 1) user vectors, compiled once (windows go in
    whole blocks of ``USER_BLOCK``, the last one padded: one shape for XLA)."""
    from libs.serving import USER_BLOCK, pad_rows

    autoencoder = model.get_layer(AUTOENCODER)
    windows = tf.TensorSpec([None, model.input[S.SEQ_ITEMS].shape[1]], tf.int32)
    encode = tf.function(autoencoder.user_vectors, input_signature=[windows], jit_compile=jit_compile)

    def user_vectors(columns) -> np.ndarray:
        items = np.asarray(columns[S.SEQ_ITEMS], np.int32)
        out = [encode(pad_rows(items[start:start + USER_BLOCK], USER_BLOCK)).numpy()[:len(items) - start]
               for start in range(0, len(items), USER_BLOCK)]
        return np.concatenate(out) if out else np.zeros((0, autoencoder.hidden_units[0] + 1), np.float32)

    return user_vectors


def item_vectors(model: tf.keras.Model) -> np.ndarray:
    """(I, H + 1) item vectors: ``user_vectors @ item_vectors.T`` are the inference logits."""
    return model.get_layer(AUTOENCODER).item_vectors()
