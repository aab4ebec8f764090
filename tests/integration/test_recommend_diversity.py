"""The recommend job with MMR re-ranking (recommend.diversity), on the hand-made warehouse and small
untrained models of tests/integration/test_recommend.py."""
import numpy as np
import pytest
from pyspark.sql import functions as F

from libs import schema as S
from libs.runtime import make_context
from tests.conftest import make_config
from tests.integration.test_recommend import CONF, K, MODELS, RUN_DATE, SEEN, _save_untrained_models, \
    _write_fixture_tables

pytestmark = pytest.mark.spark

MODEL_CONF = {"recommend.block_size": 3, "train.models": "[sasrec, deep_cf, dien, content]",
              **{f"train.{m}.embedding_dim": 4 for m in MODELS}, **{f"train.{m}.hidden_units": "[8]" for m in MODELS}}


@pytest.fixture(scope="module")
def diverse_warehouse(spark, tmp_path_factory):
    path = str(tmp_path_factory.mktemp("recommend-diversity") / "warehouse")
    cfg = make_config(path, **CONF, **MODEL_CONF)
    _write_fixture_tables(spark, make_context(cfg).store)
    _save_untrained_models(cfg)
    return path


def _run(warehouse, diversity):
    """(context, ranked rows sorted by user and rank: (user_idx, rank, item_idx, score)) of one run."""
    from jobs import recommend

    ctx = make_context(make_config(warehouse, **CONF, **MODEL_CONF, **{"recommend.diversity": diversity}))
    recommend.run(ctx)
    rows = (ctx.store.read(S.RECOMMENDATIONS.name).where((F.col(S.RUN_DATE) == F.lit(RUN_DATE))
                                                          & (F.col(S.SOURCE) == "ranked"))
            .join(ctx.store.read(S.VOCAB_USERS.name), S.USER_ID).join(ctx.store.read(S.VOCAB_ITEMS.name), S.ITEM_ID)
            .select(S.USER_IDX, S.RANK, S.ITEM_IDX, S.SCORE).orderBy(S.USER_IDX, S.RANK).collect())
    return ctx, [tuple(r) for r in rows]


@pytest.fixture(scope="module")
def plain(diverse_warehouse):
    return _run(diverse_warehouse, 0.0)


@pytest.fixture(scope="module")
def diverse(diverse_warehouse, plain):  # after the plain run: the last run's table is lambda 0.8's
    return _run(diverse_warehouse, 0.8)


def _blended_candidates(ctx):
    """The serving users' candidates and blend probabilities, recomputed on the driver."""
    from jobs import recommend
    from libs.ranking import blend
    from libs.serving import Profile

    assets, _ = recommend.load_assets(ctx, ctx.store.read(S.ITEM_FEATURES.name), 8)
    assets.weights = np.array([ctx.cfg.recommend.weights[m] for m in assets.blend_models])
    frame = recommend.queries(ctx.store.read(S.USER_SEQUENCES.name), S.SPLIT_SERVE,
                              recommend.seen_items(ctx.store.read(S.CF_EXAMPLES.name))).toPandas()
    frame = frame.sort_values(S.USER_IDX, ignore_index=True)
    candidates, valid, features, _ = recommend.candidate_features(frame, assets, Profile(ctx.spark.sparkContext))
    blended = 1.0 / (1.0 + np.exp(-blend(features, assets.weights)))
    return assets, frame[S.USER_IDX].to_numpy(), candidates, valid, blended


def _as_rows(frame):
    return [(int(u), int(r), int(i), float(s)) for u, r, i, s in
            frame[[S.USER_IDX, S.RANK, S.ITEM_IDX, S.SCORE]].itertuples(index=False)]


def test_diversity_keeps_k_distinct_unseen_items_per_user_in_score_order(diverse):
    _, rows = diverse
    by_user = {}
    for user, rank, item, score in rows:
        by_user.setdefault(user, []).append((rank, item, score))
    assert sorted(by_user) == sorted(SEEN)
    for user, seen in SEEN.items():
        ranks, items, scores = zip(*by_user[user])
        assert len(items) == len(set(items)) == min(K, 8 - len(seen)), f"user {user}: {items}"
        assert not set(items) & set(seen) and ranks == tuple(range(1, len(items) + 1))
        assert list(scores) == sorted(scores, reverse=True) and all(0.0 <= s <= 1.0 for s in scores)


def test_diversity_zero_is_the_blend_top_k_and_above_zero_the_mmr_picks(plain, diverse):
    from jobs import recommend
    from libs.diversity import mmr
    from libs.ranking import NO_ITEM, top_k_rows

    ctx, plain = plain
    assets, users, candidates, valid, blended = _blended_candidates(ctx)
    # lambda 0: the table of the code before diversity existed (top-K of the blend, ties by item index)
    expected = _as_rows(top_k_rows(users, candidates, valid, blended, K))
    assert [r[:3] for r in plain] == [r[:3] for r in expected]
    np.testing.assert_allclose([r[3] for r in plain], [r[3] for r in expected], rtol=1e-6)

    _, diverse = diverse
    items, gains = mmr(candidates, valid, blended, K, 0.8, recommend.similarity_sources(assets))
    picked = [(int(u), t + 1, int(i)) for u, row in zip(users, items) for t, i in enumerate(row) if i != NO_ITEM]
    assert [r[:3] for r in diverse] == picked
    np.testing.assert_allclose([r[3] for r in diverse], gains[items != NO_ITEM], rtol=1e-6)
    assert [r[:3] for r in diverse] != [r[:3] for r in plain], "lambda 0.8 changed no list of this fixture"


def test_the_benchmark_s_curve_evaluates_the_job_s_lists(spark, plain):
    from benchmarks.bench_diversity import diversity_curve
    from libs.diversity import INTRA_LIST_DIVERSITY

    ctx, plain = plain
    lists = {}
    for user, _, item, _ in plain:
        lists.setdefault(user, []).append(item)
    # held out: user 1 the job's rank-1 item, user 2 its rank-2 item, user 3 an item it has seen (a miss)
    held = [(1, lists[1][0], 1.0, "ncf"), (2, lists[2][1], 1.0, "ncf"), (3, SEEN[3][0], 1.0, "ncf")]
    ctx.store.write(S.conform(spark.createDataFrame(held, S.EVAL_CANDIDATES.schema), S.EVAL_CANDIDATES),
                    S.EVAL_CANDIDATES.name)
    zero, diverse = diversity_curve(ctx, (0, 0.8))
    # lambda 0 is the job's table: recall 2/3; NDCG (1 + 1/log2(3) + 0) / 3 = (1 + 0.63093) / 3 = 0.54364;
    # catalog coverage: distinct items of the ranked lists / 8 items
    assert zero["lambda"] == 0.0 and zero[f"recall@{K}"] == pytest.approx(2 / 3)
    assert zero[f"ndcg@{K}"] == pytest.approx(0.5436436)
    assert zero["catalog_coverage"] == len({i for items in lists.values() for i in items}) / 8
    assert diverse["lambda"] == 0.8 and 0.0 <= diverse[INTRA_LIST_DIVERSITY] <= 1.0
