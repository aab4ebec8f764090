"""The offline RL re-ranker (SQN): Q-targets, rewards, the rl_holdout metrics, by hand (no Spark)."""
import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")

from libs import schema as S  # noqa: E402
from libs.conf import DQNConf  # noqa: E402
from libs.feature_specs import FeatureSpecs  # noqa: E402
from libs.models import build_model, pair_scores  # noqa: E402
from libs.models.dqn import LAYER, double_q_targets, supervised_conf, window_rewards  # noqa: E402
from libs.rl_comparison import SUPERVISED, cut_queries, holdout_mask, rl_comparison, rl_metrics  # noqa: E402

SPECS = FeatureSpecs(n_users=9, n_items=13, n_tokens=11, n_genres=4, n_year_buckets=5,
                     history_length=5, title_max_tokens=3, sequence_length=6)
CONF = DQNConf(embedding_dim=8, learning_rate=0.01, batch_size=8, dropout=0.0, gamma=0.5, horizon=3,
               holdout_buckets=3, comparison_negatives=4)


def test_double_q_target_of_a_hand_made_transition():
    # s' Q values over items 0..3 (item 0 = padding): the online head picks argmax = item 2 (0.9);
    # the target head evaluates item 2: 0.6, not its own max 2.0 (item 3): that is double DQN.
    # y = r + gamma * Q_target(s', 2) = 1 + 0.5 * 0.6 = 1.3; terminal: y = r = 1.0
    online = tf.constant([[-1e9, 0.2, 0.9, 0.4], [-1e9, 0.2, 0.9, 0.4]])
    target = tf.constant([[0.0, 1.0, 0.6, 2.0], [0.0, 1.0, 0.6, 2.0]])
    y = double_q_targets(tf.constant([1.0, 1.0]), online, target, tf.constant([0.0, 1.0]), gamma=0.5)
    np.testing.assert_allclose(y.numpy(), [1.3, 1.0], rtol=1e-6)


def test_reward_of_a_hand_made_window():
    # actions 3 5 3 7 3 (then padding), horizon N = 3 (the action and the 2 next events), bonus 0.5:
    # t=0: 3 recurs at t+2 -> 1 + 0.5**2 = 1.25; t=1: 5 never again -> 1; t=2: 3 recurs at t+2 -> 1.25;
    # t=3: 7 -> 1; t=4: 3 recurs only beyond the window -> 1; t=5: padding -> 0
    rewards = window_rewards(tf.constant([[3, 5, 3, 7, 3, 0]]), horizon=3, repeat_bonus=0.5)
    np.testing.assert_allclose(rewards.numpy(), [[1.25, 1.0, 1.25, 1.0, 1.0, 0.0]])
    # horizon 1: only the logged action counts
    np.testing.assert_allclose(window_rewards(tf.constant([[3, 3, 0]]), 1, 0.5).numpy(), [[1.0, 1.0, 0.0]])


def test_hits_within_next_n_and_next_item_ndcg_on_two_users():
    # k = 2, N = 2.
    # user A: scores rank 11 (0.9), 12 (0.8) on top; future {12, 10}: one hit of min(2, 2) -> 0.5;
    #         the next item 12 is at rank 2 -> NDCG 1 / log2(3) = 0.6309
    # user B: 20 and 21 tie at 0.5, the smaller item index first -> top [20, 21]; future {20, 21}:
    #         2 hits -> 1.0; the next item 20 is at rank 1 -> NDCG 1
    candidates = np.array([[10, 11, 12, 13], [20, 21, 22, 23]])
    scores = np.array([[0.1, 0.9, 0.8, 0.2], [0.5, 0.5, 0.1, 0.0]])
    future = np.array([[12, 10], [20, 21]])
    metrics = rl_metrics(scores, candidates, future, k=2)
    assert metrics["hits@2_next2"] == pytest.approx((0.5 + 1.0) / 2)
    assert metrics["ndcg@2"] == pytest.approx((1 / np.log2(3) + 1.0) / 2)
    # a future event counts once however many top slots hold its item: 1 of min(2, 1) -> 1.0, not 2.0
    assert rl_metrics(np.array([[0.9, 0.8, 0.1]]), np.array([[5, 5, 6]]), np.array([[5]]), k=2)["hits@2_next1"] == 1.0


def test_cut_leaves_the_latest_n_items_as_the_future():
    windows = {S.SEQ_ITEMS: np.array([[4, 5, 6, 7, 8, 9], [1, 2, 3, 4, 0, 0]]),
               S.SEQ_SESSION_STARTS: np.array([[1, 0, 0, 1, 0, 0], [1, 0, 0, 0, 0, 0]]),
               S.SEQ_LEN: np.array([6, 4])}
    cut = cut_queries(windows, horizon=3)          # the second window (4 < 3 + 2 items) is skipped
    assert cut["rows"].tolist() == [0]
    assert cut[S.SEQ_ITEMS].tolist() == [[4, 5, 6, 0, 0, 0]] and cut[S.SEQ_LEN].tolist() == [3]
    assert cut[S.SEQ_SESSION_STARTS].tolist() == [[1, 0, 0, 0, 0, 0]]
    assert cut["future"].tolist() == [[7, 8, 9]]


def test_holdout_bucket_is_a_stable_hash_of_the_user():
    # 0 * 2654435761 = 0 -> bucket 0 (held out); 1 -> 2654435761 % 10 = 1; 3 -> 7963307283 % 2**32 =
    # 3668339987 -> bucket 7; 10 -> 26544357610 % 2**32 = 774553834 -> bucket 4
    assert holdout_mask(np.array([0, 1, 3, 10]), 10).tolist() == [True, False, False, False]
    assert abs(holdout_mask(np.arange(1, 10001), 10).mean() - 0.1) < 0.01


def test_rl_terms_are_added_in_training_only_and_off_for_the_supervised_twin():
    tf.keras.utils.set_random_seed(0)
    batch = {S.SEQ_ITEMS: tf.constant([[3, 5, 7, 0, 0, 0]]), S.SEQ_SESSION_STARTS: tf.constant([[1, 0, 0, 0, 0, 0]]),
             S.SEQ_LEN: tf.constant([3])}
    model = build_model("dqn", SPECS, CONF)
    model(batch, training=False)
    assert model.losses == []
    model(batch, training=True)
    assert len(model.losses) == 1 and float(model.losses[0]) > 0
    twin = build_model("dqn", SPECS, supervised_conf(CONF))
    twin(batch, training=True)
    assert twin.losses == []


def test_serving_scores_candidates_as_pair_scores_does():
    from libs.serving import serve

    tf.keras.utils.set_random_seed(1)
    model = build_model("dqn", SPECS, CONF)
    rng = np.random.default_rng(2)
    lengths = np.array([6, 2, 4], np.int32)
    items = (rng.integers(1, SPECS.n_items, (3, 6)) * (np.arange(6)[None, :] < lengths[:, None])).astype(np.int32)
    users = {S.SEQ_ITEMS: items, S.SEQ_SESSION_STARTS: (items > 0).astype(np.int32), S.SEQ_LEN: lengths}
    candidates = rng.integers(1, SPECS.n_items, (3, 5)).astype(np.int64)
    served = serve("dqn", model, {}).score_candidates(users, candidates)
    rows = np.repeat(np.arange(3), 5)
    pairs = {c: v[rows] for c, v in users.items()}
    pairs[S.ITEM_IDX] = candidates.reshape(-1).astype(np.int32)
    np.testing.assert_allclose(served, pair_scores("dqn", model, pairs).reshape(3, 5), rtol=1e-5)
    assert np.all((served > 0) & (served < 1))


def test_rl_comparison_holds_out_the_users_bucket_from_both_trainings():
    # 12 users, item i + 1 follows item i; hash bucket 0 of 3 holds users 0, 6 and 7
    # (6 * 2654435761 % 2**32 = 3041712678 = 3 * 1013904226; 7 -> 1401181143 = 3 * 467060381)
    users = np.arange(12)
    held = holdout_mask(users, 3)
    assert np.flatnonzero(held).tolist() == [0, 6, 7]
    starts = (np.arange(12) % 6) + 1
    items = np.array([[(s + t - 1) % 12 + 1 for t in range(6)] for s in starts], np.int32)
    windows = {S.USER_IDX: users.astype(np.int32), S.SEQ_ITEMS: items[:, :6],
               S.SEQ_SESSION_STARTS: np.zeros((12, 6), np.int32), S.SEQ_LEN: np.full(12, 6, np.int32),
               S.TARGET_ITEMS: (items % 12 + 1).astype(np.int32)}
    result = rl_comparison(SPECS, CONF, windows, windows, k=2, epochs=1)
    assert result["train_windows"] == int((~held).sum())
    assert result["users"] == int(held.sum())     # every held-out window has 6 >= horizon + 2 items
    for name in ("dqn", SUPERVISED):
        assert set(result[name]) == {"hits@2_next3", "ndcg@2"}
        assert all(0.0 <= v <= 1.0 for v in result[name].values())
