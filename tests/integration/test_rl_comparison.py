"""The evaluate job's rl_holdout rows (libs.rl_comparison.evaluation_rows) from small real Delta tables."""
import datetime as dt

import pytest
from pyspark.sql import functions as F

from libs import schema as S

pytestmark = pytest.mark.spark

TABLES = (S.VOCAB_USERS, S.VOCAB_ITEMS, S.VOCAB_TOKENS, S.USER_FEATURES, S.ITEM_FEATURES, S.NEXT_ITEM_EXAMPLES,
          S.USER_SEQUENCES)
SMALL = {"train.dqn.embedding_dim": 8, "train.dqn.batch_size": 16, "train.dqn.horizon": 1,
         "train.dqn.holdout_buckets": 2, "train.dqn.comparison_epochs": 1, "train.dqn.comparison_negatives": 5}


def test_rows_of_the_dqn_and_its_supervised_twin_on_the_held_out_users(spark, store, warehouse):
    from libs.rl_comparison import SUPERVISED, evaluation_rows
    from tests.conftest import make_config
    from tests.integration.test_train_horovod import synthetic_tables

    for spec, rows in synthetic_tables().items():
        if spec in TABLES:
            store.write(spark.createDataFrame(rows, spec.schema), spec.name)
    cfg = make_config(warehouse, **SMALL)
    run_date = dt.date(2024, 1, 15)
    assert evaluation_rows(store, cfg, ["sasrec", "deep_cf"], run_date, lambda name: "run") == []

    rows = evaluation_rows(store, cfg, ["sasrec", "dqn"], run_date, lambda name: f"{name}-run")
    # 2654435761 is odd, so bucket 0 of 2 holds the even users; a query needs horizon + 2 = 3 items
    held = (store.read(S.USER_SEQUENCES.name).where((F.col(S.SPLIT) == S.SPLIT_SERVE) & (F.col(S.USER_IDX) % 2 == 0)
                                                    & (F.col(S.SEQ_LEN) >= 3)).count())
    assert held > 0
    figures = {(model, metric): value for model, _, _, metric, value, _ in rows}
    assert {r[0] for r in rows} == {"dqn", SUPERVISED}
    assert {r[1] for r in rows} == {"dqn-run"} and {r[2] for r in rows} == {S.PROTOCOL_RL_HOLDOUT}
    assert {r[5] for r in rows} == {run_date}
    for model in ("dqn", SUPERVISED):
        assert figures[(model, "users")] == held
        assert 0.0 <= figures[(model, "ndcg@10")] <= 1.0 and 0.0 <= figures[(model, "hits@10_next1")] <= 1.0
    assert len(rows) == 6
