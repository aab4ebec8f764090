"""Models, layers and metrics on tiny synthetic data (no Spark)."""
import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")

from libs import schema as S  # noqa: E402
from libs.conf import ModelConf  # noqa: E402
from libs.feature_specs import FeatureSpecs  # noqa: E402
from libs.metrics import auc, ncf_hit_ndcg  # noqa: E402
from libs.models import (build_model, model_def, pair_scores, retrieval_embeddings,  # noqa: E402
                         training_columns)
from libs.models.layers import (AttentionUnit, AUGRUCell, InterestEvolution, LengthMask,  # noqa: E402
                                MaskedMeanPooling)

SPECS = FeatureSpecs(n_users=9, n_items=13, n_tokens=11, n_genres=4, n_year_buckets=5,
                     history_length=5, title_max_tokens=3, sequence_length=4)


def synthetic_batch(n=64, seed=0):
    """Columns of every model input; label 1 when the item is even (something learnable)."""
    rng = np.random.default_rng(seed)
    lengths = rng.integers(0, SPECS.history_length + 1, n).astype(np.int32)
    steps = np.arange(SPECS.history_length)[None, :] < lengths[:, None]
    items = rng.integers(1, SPECS.n_items, n).astype(np.int32)
    seq_lengths = rng.integers(1, SPECS.sequence_length + 1, n).astype(np.int32)
    steps_seq = np.arange(SPECS.sequence_length)[None, :] < seq_lengths[:, None]
    first = rng.integers(1, SPECS.n_items, n)[:, None]
    seq_items = (((first - 1 + np.arange(SPECS.sequence_length)[None, :]) % (SPECS.n_items - 1) + 1)
                 * steps_seq).astype(np.int32)
    return {
        S.USER_IDX: rng.integers(1, SPECS.n_users, n).astype(np.int32),
        S.ITEM_IDX: items,
        S.HIST_ITEMS: (rng.integers(1, SPECS.n_items, (n, SPECS.history_length)) * steps).astype(np.int32),
        S.HIST_NEG_ITEMS: (rng.integers(1, SPECS.n_items, (n, SPECS.history_length)) * steps).astype(np.int32),
        S.HIST_LEN: lengths,
        S.TITLE_TOKENS: rng.integers(0, SPECS.n_tokens, (n, SPECS.title_max_tokens)).astype(np.int32),
        S.GENRE_MULTI_HOT: rng.integers(0, 2, (n, SPECS.n_genres)).astype(np.float32),
        S.YEAR_BUCKET: rng.integers(0, SPECS.n_year_buckets, n).astype(np.int32),
        S.LABEL: (items % 2 == 0).astype(np.float32),
        # sequences that count up (item + 1 follows item): something a sequence model can learn
        S.SEQ_ITEMS: seq_items, S.SEQ_SESSION_STARTS: (seq_items > 0).astype(np.int32) * (steps_seq[:, :1]),
        S.SEQ_LEN: seq_lengths, S.TARGET_ITEMS: np.where(seq_items > 0, seq_items % (SPECS.n_items - 1) + 1, 0)
        .astype(np.int32),
    }


@pytest.mark.parametrize("name", ["sasrec", "deep_cf", "dien", "content", "multvae", "dqn"])
class TestEveryModel:
    conf = ModelConf(embedding_dim=8, hidden_units=[16, 8], learning_rate=0.01, l2=1e-6, dropout=0.0)

    def test_trains_predicts_saves_and_reloads_the_same(self, name, tmp_path):
        tf.keras.utils.set_random_seed(0)
        batch = synthetic_batch()
        spec = model_def(name)
        columns = [c for c in training_columns(name, self.conf) if c != spec.label]
        model = build_model(name, SPECS, self.conf)
        model.compile(tf.keras.optimizers.Adam(self.conf.learning_rate), spec.loss)
        history = model.fit({c: batch[c] for c in columns}, batch[spec.label], batch_size=16, epochs=3, verbose=0)
        assert np.all(np.isfinite(history.history["loss"]))
        assert history.history["loss"][-1] < history.history["loss"][0]

        before = pair_scores(name, model, batch)
        assert before.shape == (64,) and np.all(np.isfinite(before))
        if spec.ranks:
            assert np.all((before > 0) & (before < 1))
        path = str(tmp_path / f"{name}.keras")
        model.save(path)
        reloaded = tf.keras.models.load_model(path, compile=False)
        np.testing.assert_allclose(pair_scores(name, reloaded, batch), before, rtol=1e-5, atol=1e-5)

    def test_a_fresh_model_shares_no_layer_with_another(self, name):
        first, second = build_model(name, SPECS, self.conf), build_model(name, SPECS, self.conf)
        assert not {id(w) for w in first.weights} & {id(w) for w in second.weights}


@pytest.mark.parametrize("name", ["deep_cf", "dien", "content"])
def test_serving_scores_every_candidate_as_the_model_scores_the_pair(name):
    """A ranker's serving function (user-side work once per user, compiled) gives each (user,
    candidate) the probability ``model.predict`` gives the pair."""
    from libs.models import score
    from libs.serving import serve

    tf.keras.utils.set_random_seed(1)
    model = build_model(name, SPECS, ModelConf(embedding_dim=8, hidden_units=[16, 8], use_aux_loss=True))
    users = synthetic_batch(6, seed=3)
    rng = np.random.default_rng(4)
    candidates = rng.integers(1, SPECS.n_items, (6, 5)).astype(np.int64)
    candidates[0, 3:] = -1  # padding slots (NO_ITEM) are scored like item 0 and masked by the caller
    content = synthetic_batch(SPECS.n_items, seed=5)
    item_content = {c: content[c] for c in (S.TITLE_TOKENS, S.GENRE_MULTI_HOT, S.YEAR_BUCKET)}
    served = serve(name, model, item_content).score_candidates(users, candidates)

    rows = np.repeat(np.arange(6), 5)
    items = np.maximum(candidates, 0).reshape(-1)
    pairs = {c: (item_content[c][items] if c in item_content else users[c][rows]) for c in model.input}
    pairs[S.ITEM_IDX] = items.astype(np.int32)
    expected = score(model, pairs).reshape(6, 5)
    assert served.shape == (6, 5)
    np.testing.assert_allclose(served, expected, rtol=1e-5, atol=1e-6)


def test_dien_aux_loss_is_added_only_when_switched_on():
    batch = synthetic_batch(8)
    with_aux = build_model("dien", SPECS, ModelConf(embedding_dim=8, hidden_units=[8], use_aux_loss=True))
    without = build_model("dien", SPECS, ModelConf(embedding_dim=8, hidden_units=[8], use_aux_loss=False))
    feed = {c: batch[c] for c in training_columns("dien", ModelConf(use_aux_loss=True)) if c != S.LABEL}
    with_aux(feed, training=True)
    assert len(with_aux.losses) == 1 and float(with_aux.losses[0]) > 0
    without({c: v for c, v in feed.items() if c != S.HIST_NEG_ITEMS}, training=True)
    assert without.losses == []
    assert S.HIST_NEG_ITEMS not in without.input


def test_deep_cf_retrieval_embeddings_reproduce_the_gmf_logit_part():
    model = build_model("deep_cf", SPECS, ModelConf(embedding_dim=4, hidden_units=[8]))
    users, items = retrieval_embeddings("deep_cf", model, {S.USER_IDX: np.arange(SPECS.n_users)})
    assert users.shape == (SPECS.n_users, 4) and items.shape == (SPECS.n_items, 4)
    gmf = model.get_layer("gmf_user_embedding").get_weights()[0][3] * model.get_layer(
        "gmf_item_embedding").get_weights()[0][5]
    weights = model.get_layer("prediction").get_weights()[0][:4, 0]
    np.testing.assert_allclose(users[3] @ items[5], gmf @ weights, rtol=1e-5)


def test_sasrec_is_causal_a_position_never_sees_its_future():
    from libs.models.sasrec import ENCODER

    tf.keras.utils.set_random_seed(0)
    encoder = build_model("sasrec", SPECS, ModelConf(embedding_dim=8, dropout=0.0)).get_layer(ENCODER)
    items = tf.constant([[3, 5, 7, 9]])
    starts, lengths = tf.constant([[1, 0, 0, 1]]), tf.constant([4])
    changed = tf.constant([[3, 5, 2, 11]])  # positions 2 and 3 differ
    before = encoder.states(items, starts, lengths).numpy()
    after = encoder.states(changed, starts, lengths).numpy()
    np.testing.assert_allclose(before[0, :2], after[0, :2], rtol=1e-6, atol=1e-6)
    assert not np.allclose(before[0, 2], after[0, 2])
    # the query of a window is its last real position; what lies in the padding changes nothing
    short = encoder.user_vectors(tf.constant([[3, 5, 0, 0]]), tf.constant([[1, 0, 0, 0]]), tf.constant([2]))
    noisy = encoder.user_vectors(tf.constant([[3, 5, 8, 8]]), tf.constant([[1, 0, 1, 1]]), tf.constant([2]))
    np.testing.assert_allclose(short.numpy(), noisy.numpy(), rtol=1e-5, atol=1e-5)


def test_sasrec_loss_ignores_padding_and_user_item_dot_is_the_logit():
    from libs.models.sasrec import item_vectors, masked_catalog_softmax, user_encoder

    logits = tf.math.log(tf.constant([[[1e-9, 0.5, 0.5], [1e-9, 0.9, 0.1]]]))   # (1, 2, 3)
    loss = masked_catalog_softmax(tf.constant([[1, 0]]), logits).numpy()
    np.testing.assert_allclose(loss, [-np.log(0.5)], rtol=1e-5)  # position 2 is padding
    model = build_model("sasrec", SPECS, ModelConf(embedding_dim=8, dropout=0.0))
    batch = synthetic_batch(4)
    columns = {c: batch[c] for c in (S.SEQ_ITEMS, S.SEQ_SESSION_STARTS, S.SEQ_LEN)}
    full = model(columns).numpy()                                  # (4, L, I)
    dots = user_encoder(model)(columns) @ item_vectors(model).T     # (4, I)
    last = full[np.arange(4), batch[S.SEQ_LEN] - 1]
    np.testing.assert_allclose(dots[:, 1:], last[:, 1:], rtol=1e-4, atol=1e-4)
    assert np.all(last[:, 0] < -1e8)  # the padding item is never predicted


def test_multvae_multinomial_log_likelihood_by_hand():
    from libs.models.multvae import multinomial_log_likelihood

    # catalog of 3 real items (index 0 = padding, at -inf); softmax over items 1..3 = 0.5, 0.3, 0.2
    logits = tf.math.log(tf.constant([[1e-30, 0.5, 0.3, 0.2]] * 2))
    # the set {1, 3} (padding and a repeat count nothing): -(log 0.5 + log 0.2) = 0.6931 + 1.6094 = 2.3026
    loss = multinomial_log_likelihood(tf.constant([[1, 3, 0], [3, 1, 3]]), logits).numpy()
    np.testing.assert_allclose(loss, [2.302585, 2.302585], rtol=1e-5)


def test_multvae_kl_term_and_its_annealed_weight_by_hand():
    from libs.models.multvae import AUTOENCODER, kl_divergence, kl_weight

    # KL(N(mu, e^lv) || N(0, 1)) = 0.5 * sum(e^lv + mu^2 - 1 - lv):
    # mu = (1, 0), lv = (0, log 2): 0.5 * ((1 + 1 - 1 - 0) + (2 + 0 - 1 - 0.6931)) = 0.5 * 1.3069 = 0.6534
    kl = kl_divergence(tf.constant([[1.0, 0.0], [0.0, 0.0]]), tf.constant([[0.0, np.log(2.0)], [0.0, 0.0]]))
    np.testing.assert_allclose(kl.numpy(), [0.653426, 0.0], rtol=1e-5)
    # min(beta, step / steps) with beta 0.2 over 10 steps: 0, 0.1, 0.2 (capped) at steps 0, 1, 5
    assert [float(kl_weight(s, 0.2, 10)) for s in (0, 1, 5)] == pytest.approx([0.0, 0.1, 0.2])

    conf = ModelConf(embedding_dim=4, hidden_units=[8], dropout=0.0, kl_beta=0.2, kl_anneal_steps=10)
    model = build_model("multvae", SPECS, conf)
    items = tf.constant(synthetic_batch(6)[S.SEQ_ITEMS])
    model(items, training=True)                  # step 0: weight 0
    assert float(model.losses[0]) == 0.0
    layer = model.get_layer(AUTOENCODER)
    mu, log_var = layer.encode(items, training=False)
    model(items, training=True)                  # step 1: weight 0.1 times the batch's mean KL
    np.testing.assert_allclose(float(model.losses[0]), 0.1 * float(tf.reduce_mean(kl_divergence(mu, log_var))),
                               rtol=1e-5)
    assert int(layer.step.numpy()) == 2
    model(items, training=False)                 # inference adds no loss and does not count a step
    assert model.losses == [] and int(layer.step.numpy()) == 2


def test_multvae_user_item_dot_is_the_decoders_logit():
    from libs.models.multvae import item_vectors, user_encoder

    tf.keras.utils.set_random_seed(0)
    model = build_model("multvae", SPECS, ModelConf(embedding_dim=4, hidden_units=[16, 8], dropout=0.5))
    windows = synthetic_batch(5)[S.SEQ_ITEMS]
    logits = model({S.SEQ_ITEMS: windows}, training=False).numpy()        # (5, I): the latent's mean, no dropout
    users, items = user_encoder(model)({S.SEQ_ITEMS: windows}), item_vectors(model)
    assert users.shape == (5, 16 + 1) and items.shape == (SPECS.n_items, 16 + 1)   # decoder mirrors [16, 8]
    np.testing.assert_allclose(users[:, -1], 1.0)                            # the bias column
    np.testing.assert_allclose(users @ items.T[:, 1:], logits[:, 1:], rtol=1e-4, atol=1e-4)
    assert np.all(logits[:, 0] < -1e8)                                       # padding is never predicted


def test_multvae_never_returns_its_own_input_items_as_candidates():
    """The autoencoder scores its input items highest (here forced: +100 on their output bias),
    and they are the query's seen items, which union_candidates excludes."""
    from libs.models.multvae import AUTOENCODER
    from libs.ranking import NO_ITEM, union_candidates

    model = build_model("multvae", SPECS, ModelConf(embedding_dim=4, hidden_units=[8], dropout=0.0))
    windows = np.array([[2, 5, 7, 0], [3, 3, 0, 0]], np.int32)
    output = model.get_layer(AUTOENCODER).output_layer
    kernel, bias = output.get_weights()
    bias[[2, 3, 5, 7]] += 100.0
    output.set_weights([kernel, bias])
    users, items = retrieval_embeddings("multvae", model, {S.SEQ_ITEMS: windows})
    allowed = {"multvae": np.ones(SPECS.n_items, bool)}

    unmasked, _ = union_candidates({"multvae": users}, {"multvae": items}, {"multvae": 4}, 4,
                                   [[], []], allowed)
    assert set(unmasked[0]) == set(unmasked[1]) == {2, 3, 5, 7}  # without the mask the inputs come first
    seen = [w[w > 0] for w in windows]  # what recommend.queries' SEEN holds for a window (a superset of it)
    candidates, stage = union_candidates({"multvae": users}, {"multvae": items}, {"multvae": 11}, 4, seen, allowed)
    for row, window in enumerate(windows):
        real = candidates[row][candidates[row] != NO_ITEM]
        assert not set(real) & set(window[window > 0]) and 0 not in real
        assert len(real) == SPECS.n_items - 1 - len(set(window[window > 0]))  # every other item comes back
    np.testing.assert_array_equal(stage["multvae"], candidates)


# --- layers -------------------------------------------------------------------------------------

def test_length_mask_and_masked_mean_pooling():
    mask = LengthMask(3)(tf.constant([0, 2]))
    assert mask.numpy().tolist() == [[False, False, False], [True, True, False]]
    values = tf.constant([[[1.0], [2.0], [3.0]], [[1.0], [3.0], [100.0]]])
    np.testing.assert_allclose(MaskedMeanPooling()([values, mask]).numpy(), [[0.0], [2.0]])


def test_attention_unit_weights_sum_to_one_over_valid_steps_only():
    mask = tf.constant([[True, True, False, False], [False, False, False, False]])
    weights = AttentionUnit([4])([tf.ones((2, 3)), tf.random.normal((2, 4, 3)), mask]).numpy()
    assert weights.shape == (2, 4)
    np.testing.assert_allclose(weights.sum(axis=1), [1.0, 0.0], atol=1e-6)
    assert np.all(weights[0, 2:] == 0)


def test_augru_with_zero_attention_keeps_the_state_and_evolution_shape():
    cell = AUGRUCell(3)
    state = tf.constant([[0.5, -0.5, 0.1]])
    new_state, _ = cell(tf.concat([tf.random.normal((1, 2)), tf.zeros((1, 1))], axis=-1), [state])
    np.testing.assert_allclose(new_state.numpy(), state.numpy(), rtol=1e-6)
    evolved = InterestEvolution(6)([tf.random.normal((2, 4, 3)), tf.fill((2, 4), 0.25),
                                    tf.constant([[True] * 4, [True, False, False, False]])])
    assert evolved.shape == (2, 6)


# --- metrics (values worked out by hand) -----------------------------------------------------

def test_hit_ratio_and_ndcg_by_hand_with_ties_ranked_below():
    # user 1: positive 0.9 beats both negatives -> rank 0 -> HR 1, NDCG 1
    # user 2: negatives 0.8 and 0.5 (tie with the positive 0.5) -> rank 2 -> in top 3: NDCG 1/log2(4) = 0.5
    # user 3: negatives 0.7, 0.6 above the positive 0.1 -> rank 2, but with k=2 a miss
    users = [1, 1, 1, 2, 2, 2, 3, 3, 3]
    labels = [1, 0, 0, 0, 1, 0, 0, 0, 1]
    scores = [0.9, 0.2, 0.3, 0.8, 0.5, 0.5, 0.7, 0.6, 0.1]
    hr, ndcg = ncf_hit_ndcg(users, labels, scores, k=3)
    assert hr == pytest.approx(1.0)
    assert ndcg == pytest.approx((1.0 + 0.5 + 0.5) / 3)
    hr2, ndcg2 = ncf_hit_ndcg(users, labels, scores, k=2)
    assert hr2 == pytest.approx(1 / 3)
    assert ndcg2 == pytest.approx(1 / 3)


def test_all_equal_scores_put_the_positive_last():
    hr, ndcg = ncf_hit_ndcg([7] * 4, [0, 1, 0, 0], [0.5] * 4, k=3)
    assert hr == 0.0 and ndcg == 0.0


def test_auc_by_hand_with_a_tie_counting_half():
    # positives 0.9, 0.4; negatives 0.4, 0.1: pairs (0.9>0.4, 0.9>0.1, 0.4=0.4 -> 1/2, 0.4>0.1) = 3.5/4
    assert auc([1, 1, 0, 0], [0.9, 0.4, 0.4, 0.1]) == pytest.approx(0.875)
    assert auc([0, 1], [0.2, 0.3]) == pytest.approx(1.0)
