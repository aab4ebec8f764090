"""Feature transforms on hand-made interactions: vocabularies, hold-out, histories, negatives."""
import datetime as dt

import numpy as np
import pytest

from jobs import features as J
from libs import schema as S
from libs.features import history_windows, sample_negatives, stable_vocabulary, user_rng
from tests.conftest import make_config

pytestmark = pytest.mark.spark

DAY = dt.datetime(2024, 1, 15)


def _keys(spark, values, column):
    return spark.createDataFrame([(v,) for v in values], f"{column} string")


def _vocab(df, key, index):
    return {r[key]: r[index] for r in df.collect()}


def _marked(spark, rows, hold_out=True):
    """rows: (user_idx, item_idx, hours after DAY) -> interactions with the hold-out marked."""
    data = [(u, i, DAY + dt.timedelta(hours=h)) for u, i, h in rows]
    return J.mark_holdout(spark.createDataFrame(data, "user_idx int, item_idx int, event_ts timestamp"), hold_out)


def test_vocabulary_keeps_indices_and_appends_new_ids(spark):
    first = stable_vocabulary(_keys(spark, ["b", "a", "c", None, "a"], "item_id"), "item_id", "item_idx")
    assert _vocab(first, "item_id", "item_idx") == {"a": 1, "b": 2, "c": 3}  # 0 stays reserved
    second = stable_vocabulary(_keys(spark, ["d", "c", "e", "aa"], "item_id"), "item_id", "item_idx",
                               existing=first)
    assert _vocab(second, "item_id", "item_idx") == {"a": 1, "b": 2, "c": 3, "aa": 4, "d": 5, "e": 6}

    genres = stable_vocabulary(_keys(spark, ["Drama", "Action"], "genre"), "genre", "genre_idx", start=0)
    assert _vocab(genres, "genre", "genre_idx") == {"Action": 0, "Drama": 1}
    more = stable_vocabulary(_keys(spark, ["Comedy", "Drama"], "genre"), "genre", "genre_idx", genres, start=0)
    assert _vocab(more, "genre", "genre_idx") == {"Action": 0, "Drama": 1, "Comedy": 2}


def test_item_vocabulary_covers_catalog_and_events(spark):
    items = spark.createDataFrame([("m1", "Toy Story", ["Comedy"])],
                                  "item_id string, title string, genres array<string>")
    events = spark.createDataFrame([("u1", "m2")], "user_id string, item_id string")
    vocab = J.build_vocabularies(events, items, {})
    assert _vocab(vocab[S.VOCAB_ITEMS.name], S.ITEM_ID, S.ITEM_IDX) == {"m1": 1, "m2": 2}
    assert _vocab(vocab[S.VOCAB_TOKENS.name], S.TOKEN, S.TOKEN_IDX) == {"story": 1, "toy": 2}
    assert _vocab(vocab[S.VOCAB_USERS.name], S.USER_ID, S.USER_IDX) == {"u1": 1}


def test_holdout_is_each_users_latest_and_validation_the_one_before(spark):
    rows = [(1, 5, 1), (1, 7, 2), (1, 3, 2),   # tie at the latest time: the larger item index is held out
            (2, 4, 1), (2, 6, 2),               # two interactions: a test item, no validation item
            (3, 8, 1)]                          # a single interaction is never held out
    marked = _marked(spark, rows).collect()
    assert sorted((r[S.USER_IDX], r[S.ITEM_IDX]) for r in marked if r[J.IS_TEST]) == [(1, 7), (2, 6)]
    assert sorted((r[S.USER_IDX], r[S.ITEM_IDX]) for r in marked if r[J.IS_VALID]) == [(1, 3)]
    production = _marked(spark, rows, hold_out=False).collect()
    assert not any(r[J.IS_TEST] for r in production)
    assert sorted((r[S.USER_IDX], r[S.ITEM_IDX]) for r in production if r[J.IS_VALID]) == [(1, 7), (2, 6)]


def test_history_windows_pad_and_truncate():
    got = history_windows(np.array([5, 6, 7, 8]), np.array([1, 2, 4]), 3)
    assert got.tolist() == [[5, 0, 0], [5, 6, 0], [6, 7, 8]]


def test_negatives_never_touched_reproducible_and_distinct():
    touched = np.array([2, 3, 5])
    draws = sample_negatives(user_rng(42, 7, 1), touched, 10, 50)
    assert len(draws) == 50 and set(draws) <= {1, 4, 6, 7, 8, 9, 10}
    assert np.array_equal(draws, sample_negatives(user_rng(42, 7, 1), touched, 10, 50))
    assert not np.array_equal(draws, sample_negatives(user_rng(43, 7, 1), touched, 10, 50))
    distinct = sample_negatives(user_rng(42, 7, 3), touched, 10, 99, distinct=True)
    assert sorted(distinct) == [1, 4, 6, 7, 8, 9, 10]  # only 7 untouched items exist
    assert len(sample_negatives(user_rng(42, 7, 1), np.arange(1, 11), 10, 5)) == 0


def test_cf_examples(spark):
    marked = _marked(spark, [(1, 1, 1), (1, 2, 2), (1, 3, 3), (1, 4, 4), (2, 9, 1)])
    rows = J.cf_examples(marked, num_items=12, negatives_per_positive=4, seed=42).collect()
    user1 = [r for r in rows if r[S.USER_IDX] == 1]
    # test item 4 is absent, validation item 3 is a positive of split valid (seen, never trained on)
    assert sorted((r[S.ITEM_IDX], r[S.SPLIT]) for r in user1 if r[S.LABEL] == 1.0) == \
        [(1, "train"), (2, "train"), (3, "valid")]
    negatives = [r for r in user1 if r[S.LABEL] == 0.0]
    assert len(negatives) == 8 and not {r[S.ITEM_IDX] for r in negatives} & {1, 2, 3, 4}
    assert {r[S.SPLIT] for r in negatives} == {S.SPLIT_TRAIN}
    assert len([r for r in rows if r[S.USER_IDX] == 2]) == 5
    again = J.cf_examples(marked, num_items=12, negatives_per_positive=4, seed=42).collect()
    assert sorted(map(tuple, again)) == sorted(map(tuple, rows))


def test_seq_examples_histories_targets_and_negatives(spark):
    marked = _marked(spark, [(1, 10, 1), (1, 11, 2), (1, 12, 3), (1, 13, 4), (2, 20, 1)])
    rows = J.seq_examples(marked, num_items=50, history_length=2, seed=42).collect()
    assert not [r for r in rows if r[S.USER_IDX] == 2]  # one interaction: no history to learn from
    positives = sorted((r[S.ITEM_IDX], r[S.HIST_ITEMS], r[S.HIST_LEN], r[S.SPLIT]) for r in rows if r[S.LABEL] == 1)
    assert positives == [(11, [10, 0], 1, "train"),     # padded on the right
                         (12, [10, 11], 2, "valid"),    # the second-latest: validation
                         (13, [11, 12], 2, "test")]     # held-out: truncated to the latest 2, oldest first
    by_hist = {}
    for r in rows:
        by_hist.setdefault((tuple(r[S.HIST_ITEMS]), r[S.SPLIT]), []).append(r)
    touched = {10, 11, 12, 13}
    for group in by_hist.values():  # each history has one positive and one sampled negative target
        assert sorted(r[S.LABEL] for r in group) == [0.0, 1.0]
        negative = [r for r in group if r[S.LABEL] == 0][0]
        assert negative[S.ITEM_IDX] not in touched and 1 <= negative[S.ITEM_IDX] <= 50
        assert group[0][S.HIST_NEG_ITEMS] == group[1][S.HIST_NEG_ITEMS]
    neg_hist = {r[S.ITEM_IDX]: r[S.HIST_NEG_ITEMS] for r in rows if r[S.LABEL] == 1}
    assert neg_hist[11][1] == 0 and neg_hist[11][0] not in touched | {0}  # 0 exactly at padding
    # one negative per timeline position: the window slides with the history
    assert neg_hist[12][0] == neg_hist[11][0] and neg_hist[13][0] == neg_hist[12][1]
    again = J.seq_examples(marked, num_items=50, history_length=2, seed=42).collect()
    assert sorted(map(str, again)) == sorted(map(str, rows))


def test_next_item_examples_cut_training_timelines_into_windows(spark):
    # user 1: train 10, 11, 12, 13, 14 (hours 1..5, a session gap before 13), valid 15, test 16
    hours = [1, 1.1, 1.2, 5, 5.1, 5.2, 5.3]
    marked = _marked(spark, [(1, 10 + i, h) for i, h in enumerate(hours)] + [(2, 20, 1), (2, 21, 2)])
    rows = sorted(J.next_item_examples(marked, sequence_length=3, gap_minutes=30).collect(),
                  key=lambda r: (r[S.USER_IDX], r[S.SEQ_LEN]))
    # cut from the end: inputs 11 12 13 -> targets 12 13 14, then 10 -> 11 (right-padded)
    assert [(r[S.SEQ_ITEMS], r[S.TARGET_ITEMS], r[S.SEQ_LEN], r[S.SEQ_SESSION_STARTS]) for r in rows] == [
        ([10, 0, 0], [11, 0, 0], 1, [1, 0, 0]),
        ([11, 12, 13], [12, 13, 14], 3, [0, 0, 1])]
    assert {r[S.SPLIT] for r in rows} == {S.SPLIT_TRAIN}  # user 2 has one training item: no window


def test_user_sequences_hold_the_validation_and_serving_queries(spark):
    marked = _marked(spark, [(1, 10, 1), (1, 11, 2), (1, 12, 3), (1, 13, 4), (2, 20, 1), (2, 21, 2)])
    got = {(r[S.USER_IDX], r[S.SPLIT]): (r[S.SEQ_ITEMS], r[S.SEQ_LEN], r[S.VALID_ITEM])
           for r in J.user_sequences(marked, sequence_length=2, gap_minutes=30).collect()}
    assert got == {(1, "valid"): ([10, 11], 2, 12),   # before the validation item 12
                   (1, "serve"): ([11, 12], 2, 0),    # before the test item 13: includes 12
                   (2, "serve"): ([20, 0], 1, 0)}     # test 21, no validation item
    production = {(r[S.USER_IDX], r[S.SPLIT]): r[S.SEQ_ITEMS] for r in J.user_sequences(
        _marked(spark, [(2, 20, 1), (2, 21, 2)], hold_out=False), sequence_length=2, gap_minutes=30).collect()}
    assert production == {(2, "valid"): [20, 0], (2, "serve"): [20, 21]}


def test_eval_candidates(spark):
    marked = _marked(spark, [(1, 1, 1), (1, 2, 2), (1, 3, 3), (2, 9, 1)])
    rows = J.eval_candidates(marked, num_items=104, eval_negatives=99, seed=42).collect()
    assert {r[S.USER_IDX] for r in rows} == {1}  # user 2 has nothing held out
    assert [r[S.ITEM_IDX] for r in rows if r[S.LABEL] == 1.0] == [3]
    negatives = [r[S.ITEM_IDX] for r in rows if r[S.LABEL] == 0.0]
    assert len(set(negatives)) == 99 and not set(negatives) & {1, 2, 3}
    assert {r[S.PROTOCOL] for r in rows} == {"ncf"}


def test_user_features(spark):
    marked = _marked(spark, [(1, 5, -12), (1, 6, 0), (1, 7, 12),
                             (2, 1, 1), (2, 2, 2), (2, 3, 3), (2, 4, 4), (2, 5, 5)])
    got = {r[S.USER_IDX]: r for r in J.user_features(marked, DAY.date(), history_length=3).collect()}
    assert (got[1][S.HIST_ITEMS], got[1][S.HIST_LEN], got[1][S.INTERACTION_COUNT]) == ([5, 6, 0], 2, 2)
    assert got[1][S.LAST_TS] == DAY and got[1][S.DAYS_SINCE_LAST] == 1.0  # from the end of the run date
    assert got[1][S.FIRST_TS] == DAY - dt.timedelta(hours=12)
    assert (got[2][S.HIST_ITEMS], got[2][S.HIST_LEN], got[2][S.DISTINCT_ITEMS]) == ([2, 3, 4], 3, 4)


def test_item_features(spark, tmp_path):
    cfg = make_config(str(tmp_path), **{"features.title_max_tokens": 3})
    items = spark.createDataFrame([
        ("a", "The Good, the Bad and the Ugly", ["Western", "Action"], 1966),
        ("b", "Heat", ["Action"], 1899),
        ("d", None, [], None),
    ], "item_id string, title string, genres array<string>, year int")
    events = spark.createDataFrame([("u", "c")], "user_id string, item_id string")
    vocab = J.build_vocabularies(events, items, {})
    # held out: user 1's item 2 and user 2's item 1, so training has a twice (one user) and c once
    marked = _marked(spark, [(1, 1, 1), (1, 1, 2), (1, 2, 3), (2, 3, 1), (2, 1, 2)])
    got = {r[S.ITEM_IDX]: r for r in J.item_features(
        marked, items, vocab[S.VOCAB_ITEMS.name], vocab[S.VOCAB_TOKENS.name], vocab[S.VOCAB_GENRES.name],
        2, cfg).collect()}
    tokens = _vocab(vocab[S.VOCAB_TOKENS.name], S.TOKEN, S.TOKEN_IDX)
    assert tokens == {"and": 1, "bad": 2, "good": 3, "heat": 4, "the": 5, "ugly": 6}
    a, b, c, d = (got[i] for i in (1, 2, 3, 4))  # item vocabulary: a, b, c (events only), d
    assert (a[S.TITLE_TOKENS], b[S.TITLE_TOKENS], c[S.TITLE_TOKENS], d[S.TITLE_TOKENS]) == \
        ([5, 3, 5], [4, 0, 0], [0, 0, 0], [0, 0, 0])   # truncated to 3, right-padded
    assert (a[S.GENRE_MULTI_HOT], b[S.GENRE_MULTI_HOT], c[S.GENRE_MULTI_HOT]) == \
        ([1.0, 1.0], [1.0, 0.0], [0.0, 0.0])           # Action=0, Western=1
    assert [(x[S.YEAR], x[S.YEAR_BUCKET]) for x in (a, b, c)] == [(1966, 14), (1899, 1), (None, 0)]
    assert [(x[S.POPULARITY], x[S.USER_COUNT]) for x in (a, b, c, d)] == [(2, 1), (0, 0), (1, 1), (0, 0)]
    assert b[S.DAYS_SINCE_LAST] is None and a[S.LAST_TS] == DAY + dt.timedelta(hours=2)


def test_every_item_of_a_query_window_is_among_the_items_it_excludes(spark):
    """A retriever that reads the window's items (multvae reconstructs them, so they score high)
    never gets them back: the recommend job's SEEN list of a query holds every window item."""
    from jobs import recommend

    # user 1: 12 validation, 13 test; user 3 watches 30 again as its validation item, 32 is its test
    marked = _marked(spark, [(1, 10, 1), (1, 11, 2), (1, 12, 3), (1, 13, 4),
                             (3, 30, 1), (3, 31, 2), (3, 30, 3), (3, 32, 4)])
    cf = J.cf_examples(marked, num_items=40, negatives_per_positive=1, seed=42)
    sequences = J.user_sequences(marked, sequence_length=2, gap_minutes=30)
    got = {}
    for split, seen in ((S.SPLIT_SERVE, recommend.seen_items(cf)),
                        (S.SPLIT_VALID, recommend.seen_items(cf, [S.SPLIT_TRAIN]))):
        for r in recommend.queries(sequences, split, seen).collect():
            got[(r[S.USER_IDX], split)] = (r[S.SEQ_ITEMS], r[recommend.SEEN])
    assert got == {(1, "serve"): ([11, 12], [10, 11, 12]),  # the validation item is in both
                   (1, "valid"): ([10, 11], [10, 11]),
                   (3, "serve"): ([31, 30], [30, 31]),
                   (3, "valid"): ([30, 31], [30, 31])}
    assert all(set(window) <= set(seen) for window, seen in got.values())
