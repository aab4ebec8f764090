"""Explanations: the history item of highest attention, from hand-worked weights and from real
tiny DIEN and SASRec models (no Spark)."""
import numpy as np
import pytest

from libs.explanations import explain


def test_explain_picks_the_highest_weight_of_the_real_positions_ties_to_the_latest():
    history = np.array([[11, 12, 13, 0],    # 3 real items, one padding slot
                        [21, 22, 0, 0],     # 2 real items
                        [0, 0, 0, 0]])      # no history
    lengths = np.array([3, 2, 0])
    weights = np.array([
        # user 0: candidate 0 attends most to position 1 (0.5 > 0.3 > 0.2) -> item 12;
        # candidate 1 ties 0.4 at positions 0 and 2 -> the latest, position 2 -> item 13
        [[0.3, 0.5, 0.2, 0.0], [0.4, 0.2, 0.4, 0.0]],
        # user 1: padding positions 2, 3 hold the largest weights (0.9) but are never chosen;
        # candidate 0 ties 0.05 at real positions 0 and 1 -> position 1 -> item 22; candidate 1: 0.7 -> item 21
        [[0.05, 0.05, 0.9, 0.9], [0.7, 0.1, 0.9, 0.0]],
        # user 2: no real position -> 0 (no reason)
        [[0.1, 0.2, 0.3, 0.4], [0.4, 0.3, 0.2, 0.1]],
    ])
    got = explain(weights, history, lengths)
    assert got.dtype == np.int32
    assert got.tolist() == [[12, 13], [22, 21], [0, 0]]


def test_explain_works_on_logits_too_negative_and_all_equal():
    # logits (not softmax weights): -1.0 > -2.0 at position 0 -> item 5; all equal -> latest real (position 1) -> 6
    assert explain(np.array([[[-1.0, -2.0, 7.0], [3.0, 3.0, 3.0]]]), np.array([[5, 6, 0]]), np.array([2])).tolist() \
        == [[5, 6]]


tf = pytest.importorskip("tensorflow")

from libs import schema as S  # noqa: E402
from libs.conf import ModelConf  # noqa: E402
from libs.models import build_model, model_def  # noqa: E402
from libs.serving import serve  # noqa: E402
from tests.unit.test_models import SPECS, synthetic_batch  # noqa: E402

CONF = ModelConf(embedding_dim=8, hidden_units=[16, 8], dropout=0.0)


def _users_and_items(n_users=6, k=3, seed=3):
    users = synthetic_batch(n_users, seed=seed)
    users[S.HIST_LEN][0] = 0                      # one user without history: no reason
    users[S.HIST_ITEMS][0] = 0
    items = np.random.default_rng(seed + 1).integers(1, SPECS.n_items, (n_users, k)).astype(np.int64)
    return users, items


def test_dien_reason_is_the_history_item_of_the_models_own_target_attention():
    tf.keras.utils.set_random_seed(2)
    model = build_model("dien", SPECS, CONF)
    users, items = _users_and_items()
    served = serve("dien", model, {})
    fresh = served.explain(users, items)

    # the Keras model's own attention layer, pair by pair: (U * K, T) weights, then the argmax by hand
    attention = tf.keras.Model(model.inputs, model.get_layer("target_attention").output)
    rows = np.repeat(np.arange(len(items)), items.shape[1])
    pairs = {c: users[c][rows] for c in model.input if c != S.ITEM_IDX}
    pairs[S.ITEM_IDX] = items.reshape(-1).astype(np.int32)
    weights = attention.predict(pairs, verbose=0).reshape(items.shape + (SPECS.history_length,))
    np.testing.assert_array_equal(fresh, explain(weights, users[S.HIST_ITEMS], users[S.HIST_LEN]))

    # every reason is one of the user's real history items; the user without history gets none
    for u in range(len(items)):
        real = set(users[S.HIST_ITEMS][u, :users[S.HIST_LEN][u]].tolist())
        assert set(fresh[u].tolist()) <= (real or {0})
    assert fresh[0].tolist() == [0, 0, 0]

    # after the scorer ranked a block holding the items, its attention is reused: the same reasons
    candidates = np.concatenate([items, np.full((len(items), 2), -1)], axis=1)
    served.score_candidates(users, candidates)
    np.testing.assert_array_equal(served.explain(users, items), fresh)


def test_sasrec_reason_is_the_history_position_whose_state_scores_the_item_highest():
    tf.keras.utils.set_random_seed(3)
    model = build_model("sasrec", SPECS, CONF)
    users, items = _users_and_items()
    users[S.SEQ_LEN][0] = 0
    users[S.SEQ_ITEMS][0] = 0
    got = serve("sasrec", model, {}).explain(users, items)

    encoder = model.get_layer("sasrec_encoder")
    states = encoder.states(users[S.SEQ_ITEMS], users[S.SEQ_SESSION_STARTS], users[S.SEQ_LEN]).numpy()  # (U, L, D)
    embeddings = encoder.item_embedding.get_weights()[0]
    logits = np.einsum("uld,ukd->ukl", states, embeddings[items])   # the logit of item k after position l
    np.testing.assert_array_equal(got, explain(logits, users[S.SEQ_ITEMS], users[S.SEQ_LEN]))
    for u in range(len(items)):
        real = set(users[S.SEQ_ITEMS][u, :users[S.SEQ_LEN][u]].tolist())
        assert set(got[u].tolist()) <= (real or {0})
    assert got[0].tolist() == [0, 0, 0]


def test_the_registry_says_which_models_explain():
    from libs.models import explainers

    assert explainers(["deep_cf", "dien", "content", "sasrec"]) == ["dien", "sasrec"]
    assert model_def("deep_cf").explainer is None
