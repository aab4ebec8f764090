"""The nightly pipeline on real MovieLens 100K, raw files to the recommendations table."""
import pytest
from pyspark.sql import functions as F

from libs import schema as S
from libs.runtime import make_context
from pipelines import nightly
from tests.conftest import make_config

pytestmark = [pytest.mark.spark, pytest.mark.horovod, pytest.mark.slow]

RUN_DATE = "2024-01-15"


def test_nightly_on_ml100k_meets_the_contract_and_beats_popularity(warehouse, capsys):
    assert nightly.main(["--env", "local", "--run-date", RUN_DATE, "--set", f"storage.warehouse={warehouse}"]) == 0
    assert "recommendations: " in capsys.readouterr().out

    ctx = make_context(make_config(warehouse))
    store = ctx.store
    recs = store.read(S.RECOMMENDATIONS.name).where(F.col(S.RUN_DATE) == RUN_DATE).cache()
    assert recs.columns == S.RECOMMENDATIONS.columns
    per_user = recs.groupBy(S.USER_ID).agg(F.count("*").alias("n"), F.min(S.RANK).alias("lo"),
                                           F.max(S.RANK).alias("hi"), F.countDistinct(S.ITEM_ID).alias("d"))
    assert per_user.count() == 943
    assert per_user.where("n != 10 or lo != 1 or hi != 10 or d != 10").count() == 0
    assert recs.where(~F.col(S.USER_ID).cast("int").between(1, 943)).count() == 0  # original ids

    seen = (store.read(S.CF_EXAMPLES.name).where(F.col(S.LABEL) > 0)
            .join(store.read(S.VOCAB_USERS.name), S.USER_IDX).join(store.read(S.VOCAB_ITEMS.name), S.ITEM_IDX)
            .select(S.USER_ID, S.ITEM_ID))
    assert recs.join(seen, [S.USER_ID, S.ITEM_ID]).count() == 0, "a seen item was recommended"

    metrics = {(r[S.MODEL], r[S.PROTOCOL], r[S.METRIC]): r[S.METRIC_VALUE]
               for r in store.read(S.METRICS.name).where(F.col(S.RUN_DATE) == RUN_DATE).collect()}
    for metric in ("precision@10", "ndcg@10"):
        ours, popular = metrics[("final", "full_ranking", metric)], metrics[("popularity", "full_ranking", metric)]
        assert ours > popular, f"{metric}: recommendations {ours:.4f} vs popularity {popular:.4f}"

    # a rerun of the date leaves one copy of the date's rows
    before = recs.count()
    assert nightly.main(["--env", "local", "--run-date", RUN_DATE, "--set", f"storage.warehouse={warehouse}",
                         "--from-step", "recommend"]) == 0
    assert store.read(S.RECOMMENDATIONS.name).where(F.col(S.RUN_DATE) == RUN_DATE).count() == before
