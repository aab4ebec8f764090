"""The recommend job on a small hand-made warehouse with real (small, untrained) saved models.

Users u1..u5 (index 1..5), items i1..i8 (index 1..8). i8 never had an interaction (cold: only the
content retriever, whose item tower reads content alone, may return it). u4 has seen every other
item, u5 has no history (fallback).
"""
import datetime as dt

import pytest
from pyspark.sql import functions as F

from libs import schema as S
from libs.runtime import make_context
from tests.conftest import make_config

pytestmark = pytest.mark.spark

K = 3
MODELS = ("sasrec", "deep_cf", "dien", "content")
CONF = {"recommend.k": K, "recommend.retrievers": "{sasrec: 5, content: 5}", "recommend.blend_users": 0,
        "recommend.weights": "{sasrec: 0.4, deep_cf: 0.2, dien: 0.2, content: 0.2}"}
RUN_DATE = dt.date(2024, 1, 15)
SEEN = {1: [1, 2], 2: [3], 3: [1, 4, 5], 4: [1, 2, 3, 4, 5, 6, 7]}
# events for the fallback: within the last 30 days up to the run date, i2 and i6 have 2 interactions, i3 one
RECENT = [("u1", "i2"), ("u2", "i2"), ("u3", "i6"), ("u4", "i6"), ("u1", "i3")]
OLD = [("u1", "i1")] * 5  # popular long ago: outside the fallback window


def _write_fixture_tables(spark, store):
    def write(spec, rows):
        store.write(S.conform(spark.createDataFrame(rows, spec.schema), spec), spec.name,
                    partition_by=list(spec.partition_by))

    write(S.VOCAB_USERS, [(f"u{i}", i) for i in range(1, 6)])
    write(S.VOCAB_ITEMS, [(f"i{i}", i) for i in range(1, 9)])
    write(S.VOCAB_TOKENS, [("t1", 1), ("t2", 2), ("t3", 3), ("t4", 4)])
    ts = dt.datetime(2024, 1, 10)
    write(S.USER_FEATURES, [
        (u, len(items), len(items), ts, ts, 5.0, (items[-3:] + [0, 0, 0])[:3], min(len(items), 3))
        for u, items in SEEN.items()])
    popularity = {i: sum(i in items for items in SEEN.values()) for i in range(1, 9)}
    write(S.ITEM_FEATURES, [
        (i, popularity[i], popularity[i], ts if popularity[i] else None, 1.0, [i % 4 + 1, 0],
         [float(i % 2), float(i % 3 == 0), 1.0], 1990 + i, i % 2 + 1) for i in range(1, 9)])
    write(S.CF_EXAMPLES, [(u, i, 1.0, "train") for u, items in SEEN.items() for i in items]
          + [(1, 8, 0.0, "train")])
    write(S.USER_SEQUENCES, [(u, "serve", (items[-3:] + [0, 0, 0])[:3], [1, 0, 0], min(len(items), 3), 0)
                             for u, items in SEEN.items()])
    write(S.EVENTS, [_event(u, i, dt.date(2024, 1, 10)) for u, i in RECENT]
          + [_event(u, i, dt.date(2023, 6, 1)) for u, i in OLD])


def _event(user, item, day):
    return (user, item, dt.datetime(day.year, day.month, day.day), "rating", None, "f", "r", day,
            day.strftime("%Y-%m"))


def _save_untrained_models(cfg):
    from libs import models as registry
    from libs.feature_specs import FeatureSpecs
    from libs.model_store import ModelStore

    specs = FeatureSpecs(n_users=6, n_items=9, n_tokens=5, n_genres=3, n_year_buckets=3,
                         history_length=3, title_max_tokens=2, sequence_length=3)
    store = ModelStore(cfg.storage.warehouse)
    for name in MODELS:
        model = registry.build_model(name, specs, getattr(cfg.train, name))
        store.save(name, "r1", model, {"specs": specs.to_dict()})
        store.publish(name, "r1")


@pytest.fixture(scope="module")
def ctx(spark, tmp_path_factory):
    warehouse = str(tmp_path_factory.mktemp("recommend") / "warehouse")
    cfg = make_config(warehouse, **{
        **CONF, "recommend.block_size": 3, "train.models": "[sasrec, deep_cf, dien, content]",
        **{f"train.{m}.embedding_dim": 4 for m in MODELS},
        **{f"train.{m}.hidden_units": "[8]" for m in MODELS}})
    context = make_context(cfg)
    _write_fixture_tables(spark, context.store)
    _save_untrained_models(cfg)
    return context


def _recs(ctx, run_date=RUN_DATE):
    df = ctx.store.read(S.RECOMMENDATIONS.name).where(F.col(S.RUN_DATE) == F.lit(run_date))
    return sorted(tuple(r) for r in df.select(S.USER_ID, S.RANK, S.ITEM_ID, S.SCORE, S.SOURCE, S.MODEL_RUN).collect())


def test_every_user_gets_k_unseen_items_with_original_ids(ctx):
    from jobs import recommend

    rows = recommend.run(ctx)
    recs = _recs(ctx)
    assert rows == {S.RECOMMENDATIONS.name: len(recs)}
    by_user = {}
    for user, rank, item, score, source, model_run in recs:
        by_user.setdefault(user, []).append((rank, item, score, source))
        assert model_run == "content=r1;deep_cf=r1;dien=r1;sasrec=r1"
    assert sorted(by_user) == ["u1", "u2", "u3", "u4", "u5"]
    for user_idx, seen in SEEN.items():
        items = [item for _, item, _, _ in by_user[f"u{user_idx}"]]
        assert not {f"i{i}" for i in seen} & set(items), f"u{user_idx} got a seen item"
        assert len(items) == min(K, 8 - len(seen))
        ranks = [rank for rank, *_ in by_user[f"u{user_idx}"]]
        scores = [score for _, _, score, _ in by_user[f"u{user_idx}"]]
        assert ranks == list(range(1, len(ranks) + 1)) and scores == sorted(scores, reverse=True)
    # u4 has seen every warm item: only the cold item, which the content retriever returns, is left
    assert [(item, source) for _, item, _, source in by_user["u4"]] == [("i8", "ranked")]
    assert all(0.0 <= score <= 1.0 for _, _, score, source in sum(by_user.values(), []) if source == "ranked")

    stages = ctx.store.read(S.CANDIDATES.name).where(F.col(S.RUN_DATE) == F.lit(RUN_DATE)).collect()
    assert {r[S.STAGE] for r in stages} == {"sasrec", "content"}  # each retriever's own top-K
    for r in stages:
        assert r[S.ITEM_IDX] not in SEEN[r[S.USER_IDX]] and 1 <= r[S.RANK] <= K
        assert r[S.STAGE] == "content" or r[S.ITEM_IDX] != 8, "an id-based retriever returned a cold item"


def test_user_without_history_gets_recent_popular_fallback(ctx):
    from jobs import recommend

    recommend.run(ctx)
    fallback = [(rank, item, score, source) for user, rank, item, score, source, _ in _recs(ctx) if user == "u5"]
    # last 30 days up to the run date: i2 and i6 twice (tie -> lower index first), i3 once; i1 is older
    assert fallback == [(1, "i2", 2.0, "fallback"), (2, "i6", 2.0, "fallback"), (3, "i3", 1.0, "fallback")]


def test_fallback_window_ends_at_the_last_event_date_up_to_the_run_date(spark, store):
    from jobs.recommend import fallback_window

    days = [dt.date(2023, 6, 1), dt.date(2023, 12, 20), dt.date(2024, 1, 10), dt.date(2024, 1, 20),
            dt.date(2024, 2, 1)]
    store.write(spark.createDataFrame([_event("u1", "i1", d) for d in days], S.EVENTS.schema), S.EVENTS.name,
                partition_by=list(S.EVENTS.partition_by))
    # later dates (a late replay) are ignored, also inside the run date's month; the window spans months
    assert fallback_window(store, RUN_DATE, 30) == (dt.date(2024, 1, 10), ["2023-12", "2024-01"])
    assert fallback_window(store, RUN_DATE, 5) == (dt.date(2024, 1, 10), ["2024-01"])
    assert fallback_window(store, dt.date(2024, 1, 5), 30) == (dt.date(2023, 12, 20), ["2023-12"])
    assert fallback_window(store, dt.date(2023, 1, 1), 30) == (None, [])


def test_output_is_deterministic_and_a_rerun_replaces_the_date(ctx):
    from jobs import recommend

    recommend.run(ctx)
    first = _recs(ctx)
    recommend.run(ctx)
    assert _recs(ctx) == first, "same models and data must give the same rows"
    assert ctx.store.read(S.RECOMMENDATIONS.name).count() == len(first), "rerun must replace, not append"
    other = make_context(make_config(ctx.cfg.storage.warehouse, **{
        "run.date": "2024-01-16", **CONF, "train.models": "[sasrec, deep_cf, dien, content]"}))
    recommend.run(other)
    # read through the other run's store: a store pins the versions its own run wrote
    assert other.store.read(S.RECOMMENDATIONS.name).count() == 2 * len(first)
    assert _recs(other, RUN_DATE) == first, "another date's run must leave this date's rows as they are"


def test_compiled_serving_ranks_as_pair_by_pair_prediction_does(ctx):
    """The serving path (user-side work once per user, compiled functions, zero-weight models
    skipped) gives the rows the original path gives: every (user, candidate) pair through
    ``model.predict``, every model's standardized score blended, top-K by blend then item index."""
    import numpy as np

    from jobs import recommend
    from libs import models as registry
    from libs.model_store import ModelStore
    from libs.ranking import blend, query_columns, retrieval_scores, standardize, top_k_rows
    from libs.serving import Profile

    recommend.run(ctx)
    got = (ctx.store.read(S.RECOMMENDATIONS.name).where((F.col(S.RUN_DATE) == F.lit(RUN_DATE))
                                                         & (F.col(S.SOURCE) == "ranked"))
           .join(ctx.store.read(S.VOCAB_USERS.name), S.USER_ID).join(ctx.store.read(S.VOCAB_ITEMS.name), S.ITEM_ID)
           .select(S.USER_IDX, S.RANK, S.ITEM_IDX, S.SCORE).toPandas()
           .sort_values([S.USER_IDX, S.RANK], ignore_index=True))

    assets, _ = recommend.load_assets(ctx, ctx.store.read(S.ITEM_FEATURES.name), 8)
    assets.weights = np.array([ctx.cfg.recommend.weights[m] for m in assets.blend_models])
    cf = ctx.store.read(S.CF_EXAMPLES.name)
    frame = recommend.queries(ctx.store.read(S.USER_SEQUENCES.name), S.SPLIT_SERVE,
                              recommend.seen_items(cf)).toPandas().sort_values(S.USER_IDX, ignore_index=True)
    candidates, valid, _, _ = recommend.candidate_features(frame, assets, Profile(ctx.spark.sparkContext))
    columns = query_columns(frame, assets.history_length)
    rows, slots = np.nonzero(valid)
    items = candidates[rows, slots]
    features = np.zeros(candidates.shape + (len(assets.blend_models),))
    models = ModelStore(ctx.cfg.storage.warehouse)
    for m, name in enumerate(assets.blend_models):
        model = models.load(name, "r1")
        spec = registry.model_def(name)
        if name in assets.retrievers:
            users = spec.retrieval.user_vectors(model, columns)
            scores = retrieval_scores(np.asarray(users, np.float32), assets.item_vectors[name], candidates)
        else:
            inputs = {c: (columns[c][rows] if c in columns else assets.item_content[c][items])
                      for c in registry.inference_columns(name) if c != S.ITEM_IDX}
            inputs[S.ITEM_IDX] = items.astype(np.int32)
            scores = np.zeros(candidates.shape)
            scores[rows, slots] = registry.score(model, inputs)
        features[:, :, m] = standardize(scores, valid)
    blended = 1.0 / (1.0 + np.exp(-blend(features, assets.weights)))
    expected = top_k_rows(frame[S.USER_IDX].to_numpy(), candidates, valid, blended, K)

    assert got[[S.USER_IDX, S.RANK, S.ITEM_IDX]].values.tolist() == \
        expected[[S.USER_IDX, S.RANK, S.ITEM_IDX]].values.tolist()
    np.testing.assert_allclose(got[S.SCORE], expected[S.SCORE], rtol=1e-5)


def test_every_row_has_a_reason_and_an_old_table_without_the_column_takes_them(ctx, tmp_path):
    """Ranked rows: ``because_you_watched:<id>`` of one of the user's history items (DIEN explains:
    it has blend weight 0.2); fallback rows: ``popular_recently``. A warehouse whose recommendations
    table predates the column gains it with this write; its old night reads back null."""
    import shutil

    from jobs import recommend
    from pyspark.sql import types as T

    warehouse = tmp_path / "warehouse"
    shutil.copytree(ctx.cfg.storage.warehouse, warehouse)
    shutil.rmtree(warehouse / S.RECOMMENDATIONS.name, ignore_errors=True)
    old = make_context(make_config(str(warehouse), **{**CONF, "train.models": "[sasrec, deep_cf, dien, content]"}))
    old_schema = T.StructType([f for f in S.RECOMMENDATIONS.schema.fields if f.name != S.REASON])
    old_night = dt.date(2024, 1, 1)
    old.store.write(ctx.spark.createDataFrame([("u1", 1, "i3", 0.5, "ranked", "deep_cf=r0", old_night)], old_schema),
                    S.RECOMMENDATIONS.name, partition_by=[S.RUN_DATE], replace_where={S.RUN_DATE: [str(old_night)]})

    recommend.run(old)
    table = old.store.read(S.RECOMMENDATIONS.name)
    assert table.columns == S.RECOMMENDATIONS.columns
    rows = table.select(S.USER_ID, S.RUN_DATE, S.SOURCE, S.REASON).collect()
    assert [r[S.REASON] for r in rows if r[S.RUN_DATE] == old_night] == [None]
    night = [r for r in rows if r[S.RUN_DATE] == RUN_DATE]
    assert night and {r[S.REASON] for r in night if r[S.SOURCE] == "fallback"} == {S.REASON_POPULAR_RECENTLY}
    for r in night:
        if r[S.SOURCE] == "ranked":
            user = int(r[S.USER_ID][1:])
            history = {f"i{i}" for i in SEEN[user][-3:]}  # the serving query: the latest 3 items
            assert r[S.REASON].startswith(S.REASON_BECAUSE_YOU_WATCHED), r
            assert r[S.REASON][len(S.REASON_BECAUSE_YOU_WATCHED):] in history, r

    # the evaluation report's counts per kind: u5's 3 fallback rows, every other row explained; the old night: none
    from libs.evaluation_report import reason_counts

    counts = dict(reason_counts(old.store, RUN_DATE).itertuples(index=False))
    assert counts == {"popular_recently": 3, "because_you_watched": len(night) - 3}
    assert dict(reason_counts(old.store, old_night).itertuples(index=False)) == {"none": 1}


def test_the_explaining_model_is_the_first_listed_that_took_part_in_the_ranking():
    import numpy as np

    from jobs.recommend import ServingAssets, explaining_model

    assets = ServingAssets(K, 8, {"sasrec": 5}, {}, {}, {}, {}, ["sasrec", "deep_cf", "dien"],
                           weights=np.array([0.5, 0.5, 0.0]))
    assert explaining_model(["dien", "sasrec"], assets) == "sasrec"  # dien's weight 0: not run, not used
    assets.weights = np.array([0.0, 0.5, 0.5])
    assert explaining_model(["dien", "sasrec"], assets) == "dien"
    assert explaining_model(["sasrec"], assets) == "sasrec"          # a retriever took part even at weight 0
    assert explaining_model([], assets) is None                       # ranked rows get a null reason
    assets.retrievers = {"deep_cf": 5}
    assert explaining_model(["sasrec"], assets) is None


def test_a_model_that_cannot_explain_in_explain_with_is_a_clear_error(spark, tmp_path):
    from jobs import recommend

    cfg = make_config(str(tmp_path / "warehouse"), **{**CONF, "recommend.explain_with": "[deep_cf, dien]"})
    with pytest.raises(ValueError, match=r"recommend.explain_with: \['deep_cf'\] cannot explain.*\['dien', 'sasrec'\]"):
        recommend.load_assets(make_context(cfg), None, 8)
