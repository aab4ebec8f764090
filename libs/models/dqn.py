"""Offline deep Q-learning re-ranker: SQN (Xin, Karatzoglou, Arapakis & Jose, "Self-Supervised
Reinforcement Learning for Recommender Systems", SIGIR 2020) over the SASRec encoder.

Recommendation as an MDP learned from the logs: the state s_t is the user's history up to position
t of a window (the causal SASRec state), the action a_t the logged next item, the next state
s_{t+1} = s_t + a_t (the state one position later: the windows already hold every transition).

Reward (:func:`window_rewards`): 1 for the logged next item, plus ``repeat_bonus ** k`` for each of
the next ``horizon - 1`` events that repeats the same item k steps later (a user coming back to an
item is worth more than a single touch; on MovieLens, one rating per item, it never fires and the
reward is 1).

Off-policy method: SQN's shared encoder with two heads, a supervised softmax over the catalog (the
self-supervised head, SASRec's loss) and a Q head trained by one-step double Q-learning on the
logged transitions. As in SQN's reference code, there are two Q heads, each the other's target
network (gradient stopped): Q1 is regressed on r + gamma * Q2(s', argmax_a Q1(s', a)) and Q2 on the
mirror target (:func:`double_q_targets`; van Hasselt, "Double Q-learning", NeurIPS 2010), both in
every step. Logged data only say what the logged action was worth, so a conservative term (CQL:
Kumar et al., NeurIPS 2020) ``logsumexp_a Q(s, a) - Q(s, a_t)`` keeps Q low on the items the
logs never took in that state.

A window's last position is left to the supervised head: its next state lies in the next window
(the newest window's last item ends the training timeline). So no in-window transition is terminal.

The Keras model's output is the supervised head's catalog logits (B, L, I), trained with
SASRec's loss on TARGET_ITEMS; the TD and CQL terms are the layer's ``add_loss`` (training only).
As a ranker the model scores (user, candidate) by sigmoid(Q(s, a)), Q the mean of both heads at the
window's last real position (monotone in Q: the ranking is Q's).
"""
from __future__ import annotations

import dataclasses

import numpy as np
import tensorflow as tf

from libs import schema as S
from libs.models.inputs import model_inputs
from libs.models.sasrec import SASRecEncoder

INPUT_COLUMNS = [S.SEQ_ITEMS, S.SEQ_SESSION_STARTS, S.SEQ_LEN]
LABEL_COLUMN = S.TARGET_ITEMS
LAYER = "sqn"
_NEG_INF = -1e9

_register = tf.keras.utils.register_keras_serializable(package="nightrec")


def window_rewards(actions, horizon: int, repeat_bonus: float):
    """Rewards (B, T) of logged actions (B, T) (0 = no action).

    r_t = 1 + sum_{k=1}^{horizon-1} repeat_bonus**k * [actions[t+k] == actions[t]] for a real
    action, 0 for padding.
    """
    actions = tf.cast(actions, tf.int32)
    steps = tf.shape(actions)[1]
    real = actions > 0
    rewards = tf.cast(real, tf.float32)
    for k in range(1, int(horizon)):
        later = tf.concat([actions[:, k:], tf.zeros_like(actions)], axis=1)[:, :steps]
        rewards += (float(repeat_bonus) ** k) * tf.cast(real & tf.equal(later, actions), tf.float32)
    return rewards


def double_q_targets(rewards, q_online_next, q_target_next, done, gamma: float):
    """One-step double-DQN targets y = r + gamma * (1 - done) * Q_target(s', argmax_a Q_online(s', a)).

    Args:
        rewards, done: (...,) reward and 1 where s' ends the episode (then y = r).
        q_online_next, q_target_next: (..., I) both heads' Q of the next state.
    Returns:
        (...,) targets, gradient stopped.
    """
    best = tf.argmax(q_online_next, axis=-1, output_type=tf.int32)
    value = tf.reduce_sum(q_target_next * tf.one_hot(best, tf.shape(q_target_next)[-1], dtype=q_target_next.dtype),
                          axis=-1)
    not_done = 1.0 - tf.cast(done, value.dtype)
    return tf.stop_gradient(tf.cast(rewards, value.dtype) + gamma * not_done * value)


@_register
class SQN(tf.keras.layers.Layer):
    """SASRec encoder + supervised softmax head + two Q heads (see the module docstring).

    ``call([items (B, L), session_starts (B, L), lengths (B,)])`` -> supervised logits (B, L, I);
    in training it adds ``td_weight * TD + cql_weight * CQL`` over the window's transitions.
    :meth:`last_q` and :meth:`last_logits` give each head's (B, I) scores at the last real position.
    """

    def __init__(self, n_items: int, dim: int, maxlen: int, blocks: int = 2, heads: int = 1,
                 dropout: float = 0.2, gamma: float = 0.5, horizon: int = 5, repeat_bonus: float = 0.5,
                 td_weight: float = 1.0, cql_weight: float = 1.0, **kwargs):
        super().__init__(**kwargs)
        self.gamma, self.horizon, self.repeat_bonus = float(gamma), int(horizon), float(repeat_bonus)
        self.td_weight, self.cql_weight = float(td_weight), float(cql_weight)
        self.encoder = SASRecEncoder(n_items, dim, maxlen, blocks=blocks, heads=heads, dropout=dropout,
                                     name="encoder")
        # without RL terms (the supervised twin) nothing trains the Q heads: frozen, not warned about
        self.q_trainable = bool(self.td_weight or self.cql_weight)
        self.q_projections = [tf.keras.layers.Dense(dim, name=f"q{i}_projection", trainable=self.q_trainable)
                              for i in (1, 2)]

    def build(self, input_shape):
        for projection in self.q_projections:  # built here: the inference graph never calls them
            projection.build((None, self.encoder.dim))
        self.q_biases = [self.add_weight(name=f"q{i}_bias", shape=(self.encoder.n_items,), initializer="zeros",
                                        trainable=self.q_trainable)
                         for i in (1, 2)]
        super().build(input_shape)

    def _q(self, head: int, states):
        """Q (..., I) of one head from states (..., D); the padding item gets -inf."""
        q = tf.tensordot(self.q_projections[head](states), self.encoder.item_embedding.embeddings, [[-1], [1]])
        return q + self.q_biases[head] + tf.one_hot(0, self.encoder.n_items, on_value=_NEG_INF, off_value=0.0)

    def call(self, inputs, training=None):
        items, session_starts, lengths = inputs
        encoder = self.encoder
        states = encoder.states(items, session_starts, lengths, training=training)    # (B, L, D)
        logits = tf.einsum("bld,id->bli", states, encoder.item_embedding.embeddings)
        logits += tf.one_hot(0, encoder.n_items, on_value=_NEG_INF, off_value=0.0, dtype=logits.dtype)
        if training and self.q_trainable:
            self.add_loss(self.rl_loss(items, states))
        return logits

    def rl_loss(self, items, states):
        """Mean TD (both heads) and CQL terms over the in-window transitions t -> t + 1."""
        items = tf.cast(items, tf.int32)
        actions = items[:, 1:]                                   # a_t = the item at t + 1, 0 = none
        valid = tf.cast(actions > 0, tf.float32)                 # (B, L-1)
        rewards = window_rewards(actions, self.horizon, self.repeat_bonus)
        q = [self._q(h, states) for h in (0, 1)]                 # 2 x (B, L, I)
        now, nxt = [x[:, :-1] for x in q], [x[:, 1:] for x in q]
        no_terminal = tf.zeros_like(rewards)
        targets = [double_q_targets(rewards, nxt[0], nxt[1], no_terminal, self.gamma),
                   double_q_targets(rewards, nxt[1], nxt[0], no_terminal, self.gamma)]
        picked = tf.one_hot(actions, self.encoder.n_items) * valid[:, :, None]   # (B, L-1, I); padding: none
        loss = 0.0
        for h in (0, 1):
            # Q(s_t, a_t) as a one-hot product: dense, where a batched gather's gradient was slow on CPU
            taken = tf.reduce_sum(tf.where(picked > 0, now[h], 0.0), axis=-1)
            td = tf.square(taken - targets[h])
            cql = tf.reduce_logsumexp(now[h], axis=-1) - taken
            loss += tf.reduce_sum((self.td_weight * td + self.cql_weight * cql) * valid)
        return 0.5 * loss / tf.maximum(tf.reduce_sum(valid), 1.0)

    def last_q(self, items, session_starts, lengths):
        """(B, I): Q(s, a) of every item a, mean of both heads, s = the window's last real position."""
        state = self.encoder.user_vectors(items, session_starts, lengths)
        return 0.5 * (self._q(0, state) + self._q(1, state))

    def last_logits(self, items, session_starts, lengths):
        """(B, I): the supervised head's next-item logits at the last real position."""
        state = self.encoder.user_vectors(items, session_starts, lengths)
        return tf.matmul(state, self.encoder.item_embedding.embeddings, transpose_b=True)

    def get_config(self):
        encoder = self.encoder
        return {**super().get_config(), "n_items": encoder.n_items, "dim": encoder.dim, "maxlen": encoder.maxlen,
                "blocks": encoder.blocks, "heads": encoder.heads, "dropout": encoder.dropout, "gamma": self.gamma,
                "horizon": self.horizon, "repeat_bonus": self.repeat_bonus, "td_weight": self.td_weight,
                "cql_weight": self.cql_weight}


def build_dqn(specs, conf) -> tf.keras.Model:
    """SQN over SEQ_ITEMS, SEQ_SESSION_STARTS (B, L), SEQ_LEN (B,) -> supervised logits (B, L, I).

    ``conf`` is a :class:`libs.conf.DQNConf`; a plain ModelConf gets DQNConf's RL defaults.
    """
    from libs.conf import DQNConf

    rl = conf if isinstance(conf, DQNConf) else DQNConf()
    inputs = model_inputs(specs.features(conf.embedding_dim), INPUT_COLUMNS)
    layer = SQN(specs.n_items, conf.embedding_dim, specs.sequence_length, blocks=conf.blocks, heads=conf.heads,
                dropout=conf.dropout, gamma=rl.gamma, horizon=rl.horizon, repeat_bonus=rl.repeat_bonus,
                td_weight=rl.td_weight, cql_weight=rl.cql_weight, name=LAYER)
    return tf.keras.Model(inputs, layer([inputs[c] for c in INPUT_COLUMNS]), name="dqn")


def supervised_conf(conf):
    """The same model with the RL terms off: the supervised ranker SQN is compared with."""
    return dataclasses.replace(conf, td_weight=0.0, cql_weight=0.0)


def head_scorer(model: tf.keras.Model, head: str = "q"):
    """``(columns of U windows) -> (U, I)`` scores of one head at the last real position: ``"q"``
    (Q values) or ``"supervised"`` (softmax logits); windows go in blocks of ``USER_BLOCK``."""
    from libs.serving import USER_BLOCK, pad_rows

    layer = model.get_layer(LAYER)
    method = layer.last_q if head == "q" else layer.last_logits
    windows = tf.TensorSpec([None, model.input[S.SEQ_ITEMS].shape[1]], tf.int32)
    compiled = tf.function(method, input_signature=[windows, windows, tf.TensorSpec([None], tf.int32)])

    def scores(columns) -> np.ndarray:
        n = len(columns[S.SEQ_LEN])
        out = []
        for start in range(0, n, USER_BLOCK):
            block = [pad_rows(np.asarray(columns[c][start:start + USER_BLOCK], np.int32), USER_BLOCK)
                     for c in INPUT_COLUMNS]
            out.append(compiled(*block).numpy()[:n - start])
        return np.concatenate(out) if out else np.zeros((0, layer.encoder.n_items), np.float32)

    return scores


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(x, -60.0, 60.0)))


def pair_scorer(model: tf.keras.Model, inputs) -> np.ndarray:
    """(N,) sigmoid(Q(s, a)) of N (window, ITEM_IDX) rows, each distinct window encoded once."""
    windows = {c: np.asarray(inputs[c]) for c in INPUT_COLUMNS}
    keys = np.concatenate([v.reshape(len(v), -1) for v in windows.values()], axis=1)
    _, first, inverse = np.unique(keys, axis=0, return_index=True, return_inverse=True)
    q = head_scorer(model)({c: v[first] for c, v in windows.items()})
    items = np.asarray(inputs[S.ITEM_IDX]).astype(np.int64)
    return _sigmoid(q[inverse.reshape(-1), items].astype(np.float64))


def candidate_scorer(model: tf.keras.Model, item_content=None):
    """Serving: sigmoid(Q) of each user's C candidates, the state encoded once per user."""
    scores = head_scorer(model)

    def score(columns, candidates: np.ndarray) -> np.ndarray:
        q = scores(columns)
        return _sigmoid(np.take_along_axis(q, np.maximum(candidates, 0), axis=1).astype(np.float64))

    return score
