"""The training job trains every model with two Horovod ranks over Petastorm shards of small Delta tables."""
import json
import os

import numpy as np
import pytest

from libs import schema as S
from libs.streaming import min_files_for_training

pytestmark = [pytest.mark.spark, pytest.mark.horovod]

N_USERS, N_ITEMS, HIST, TOKENS, GENRES, SEQ_L = 12, 30, 5, 3, 4, 4
EPOCHS, BATCH = 2, 16
MODELS = ["sasrec", "deep_cf", "dien", "content", "multvae", "dqn"]
WINDOWS = 20  # next_item_examples rows per user
SMALL_MODELS = {f"train.{m}.{key}": value for m in MODELS
                for key, value in (("embedding_dim", 8), ("hidden_units", "[8]"), ("batch_size", BATCH),
                                   ("epochs", EPOCHS), ("learning_rate", 0.01))}


def _history(rng, n):
    length = int(rng.integers(0, HIST + 1))
    items = [int(i) for i in rng.integers(1, N_ITEMS + 1, length)]
    return items + [0] * (HIST - length), length


def synthetic_tables(seed=0):
    """Rows of every table the training job reads, tiny and conforming to the TableSpecs."""
    rng = np.random.default_rng(seed)
    users, items = range(1, N_USERS + 1), range(1, N_ITEMS + 1)
    tables = {
        S.VOCAB_USERS: [(f"u{u}", u) for u in users],
        S.VOCAB_ITEMS: [(f"i{i}", i) for i in items],
        S.VOCAB_TOKENS: [(f"t{t}", t) for t in range(1, 11)],
        S.VOCAB_GENRES: [(f"g{g}", g) for g in range(GENRES)],
    }
    tables[S.USER_FEATURES] = [(u, 5, 5, None, None, 1.0, *_history(rng, HIST)) for u in users]
    tables[S.ITEM_FEATURES] = [
        (i, int(rng.integers(0, 50)), 3, None, 2.0, [int(t) for t in rng.integers(0, 11, TOKENS)],
         [float(g) for g in rng.integers(0, 2, GENRES)], 1990, int(rng.integers(0, 4))) for i in items]
    cf, seq, content = [], [], []
    for u in users:
        for _ in range(30):
            item, label = int(rng.integers(1, N_ITEMS + 1)), float(rng.integers(0, 2))
            hist, length = _history(rng, HIST)
            neg = [int(x) if h else 0 for x, h in zip(rng.integers(1, N_ITEMS + 1, HIST), hist)]
            split = S.SPLIT_TEST if len(seq) % 10 == 0 else S.SPLIT_TRAIN
            cf.append((u, item, label, S.SPLIT_TRAIN))
            seq.append((u, hist, neg, length, item, label, split))
            features = tables[S.ITEM_FEATURES][item - 1]
            content.append((u, hist, length, item, features[5], features[6], features[8], label, split))
    tables[S.CF_EXAMPLES], tables[S.SEQ_EXAMPLES], tables[S.CONTENT_EXAMPLES] = cf, seq, content

    def window():
        length = int(rng.integers(1, SEQ_L + 1))
        items = [int(i) for i in rng.integers(1, N_ITEMS + 1, length + 1)]
        pad = [0] * (SEQ_L - length)
        return items[:-1] + pad, [1] + [0] * (length - 1) + pad, length, items[1:] + pad

    tables[S.NEXT_ITEM_EXAMPLES] = [(u, *window(), S.SPLIT_TRAIN) for u in users for _ in range(WINDOWS)]
    sequences = []
    for u in users:
        items, starts, length, targets = window()
        sequences += [(u, S.SPLIT_VALID, items, starts, length, targets[length - 1]),
                      (u, S.SPLIT_SERVE, items, starts, length, 0)]
    tables[S.USER_SEQUENCES] = sequences
    tables[S.EVAL_CANDIDATES] = [(u, int(i), float(j == 0), "ncf") for u in users
                                 for j, i in enumerate(rng.choice(np.arange(1, N_ITEMS + 1), 12, replace=False))]
    return tables


@pytest.fixture(scope="module")
def trained(spark, tmp_path_factory):
    """Feature tables written with >= 8 files each, and the job run for all three models."""
    from jobs import train
    from libs.runtime import JobContext
    from libs.storage import DeltaStore
    from tests.conftest import make_config

    warehouse = str(tmp_path_factory.mktemp("train") / "warehouse")
    store = DeltaStore(spark, warehouse, backend="delta-rs", run_id="test-run")
    for spec, rows in synthetic_tables().items():
        df = spark.createDataFrame(rows, spec.schema).repartition(min_files_for_training(2))
        store.write(df, spec.name)
    cfg = make_config(warehouse, **SMALL_MODELS, **{"train.num_proc": 2, "train.shuffle_buffer": 64})
    ctx = JobContext(spark, cfg, store)
    results = train.run(ctx, models=MODELS)
    return ctx, results


@pytest.mark.parametrize("name", MODELS)
class TestTrainedWithTwoRanks:
    def test_record_holds_versions_rows_losses_and_metrics(self, trained, name):
        from libs.model_store import ModelStore
        from libs.models import training_table

        ctx, results = trained
        store, table = ctx.store, training_table(name).name
        record = ModelStore(ctx.cfg.storage.warehouse).record(name)
        assert record["run_id"] == "test-run" == results[name]["run_id"]
        assert record["table_versions"][table] == store.version(table) == 0
        assert record["table_versions"][S.EVAL_CANDIDATES.name] == 0
        windows = N_USERS * WINDOWS
        rows = {"sasrec": windows, "multvae": windows, "dqn": windows, "deep_cf": N_USERS * 30}.get(name, N_USERS * 30)
        assert record["table_rows"][table] == rows
        train_rows = rows if name in ("sasrec", "multvae", "dqn", "deep_cf") else N_USERS * 30 - N_USERS * 3
        assert record["train_rows"] == train_rows
        assert record["num_proc"] == 2
        assert record["steps_per_epoch"] == train_rows // (BATCH * 2)
        assert record["hyper_parameters"]["embedding_dim"] == 8
        assert len(record["epoch_loss"]) == EPOCHS and all(np.isfinite(record["epoch_loss"]))
        assert len(record["examples_per_sec"]) == EPOCHS and min(record["examples_per_sec"]) > 0
        loss = {"sasrec": "masked_catalog_softmax", "dqn": "masked_catalog_softmax",
                "multvae": "multinomial_log_likelihood"}.get(name, "binary_crossentropy")
        # dien: its auxiliary loss; multvae: its KL term; dqn: its TD + CQL terms
        extra = {"dien": ["auxiliary_loss"], "multvae": ["multvae"], "dqn": ["sqn"]}.get(name, [])
        assert record["loss_terms"] == [loss] + extra
        retrieves = name not in ("dien", "dqn")  # retrievers pick their epoch on the validation queries
        assert ("best_epoch" in record) == retrieves
        if retrieves:
            assert [e["epoch"] for e in record["validation_by_epoch"]] == list(range(1, EPOCHS + 1))
            best = max(record["validation_by_epoch"], key=lambda e: e["ndcg@10"])["epoch"]
            assert record["best_epoch"] == best
        ncf = record["metrics"]["ncf"]
        assert 0.0 <= ncf["hr@10"] <= 1.0 and 0.0 <= ncf["ndcg@10"] <= ncf["hr@10"]
        assert ("sequence" in record["metrics"]) == (name == "dien")
        assert set(record["popularity_baseline"]) == {"ncf", "sequence"}

    def test_reloaded_model_predicts_as_the_kept_epochs_checkpoint(self, trained, name):
        import tensorflow as tf

        from jobs.train import FEATURE_TABLES
        from libs.feature_specs import FeatureSpecs
        from libs.model_store import ModelStore
        from libs.models import build_model, inference_columns, pair_scores
        from tests.eval_reference import collect_eval_data

        ctx, _ = trained
        models = ModelStore(ctx.cfg.storage.warehouse)
        assert models.latest_run(name) == "test-run"
        versions = {t.name: 0 for t in FEATURE_TABLES}
        specs = FeatureSpecs.from_store(ctx.store, ctx.cfg, versions)
        assert specs == FeatureSpecs(N_USERS + 1, N_ITEMS + 1, 11, GENRES, 4, HIST, TOKENS, SEQ_L)
        inputs = {c: v for c, v in collect_eval_data(ctx.store, versions, specs.n_users, specs.n_items)[0].items()
                  if c in inference_columns(name)}

        checkpointed = build_model(name, specs, getattr(ctx.cfg.train, name))
        kept = models.record(name).get("best_epoch", EPOCHS)
        checkpoint = os.path.join(models.checkpoint_dir(name, "test-run"), f"epoch-{kept:02d}")
        checkpointed.load_weights(checkpoint).expect_partial()
        expected = pair_scores(name, checkpointed, inputs)
        np.testing.assert_allclose(pair_scores(name, models.load(name), inputs), expected, rtol=1e-5, atol=1e-5)
        assert np.std(expected) > 0
        with open(os.path.join(models.run_dir(name, "test-run"), "record.json")) as fh:
            assert json.load(fh)["model"] == name
        tf.keras.backend.clear_session()

    def test_metrics_scored_on_the_executors_equal_the_driver_computation(self, trained, name):
        """The record's figures (users scored on the executors, one row back per protocol) equal the
        driver-side reference: every candidate row gathered here, pair_scores, libs.metrics."""
        from jobs.train import FEATURE_TABLES
        from libs.model_store import ModelStore
        from tests.eval_reference import collect_eval_data, model_reference

        ctx, results = trained
        candidates, _, seq_test = collect_eval_data(ctx.store, {t.name: 0 for t in FEATURE_TABLES},
                                                    N_USERS + 1, N_ITEMS + 1)
        expected = model_reference(name, ModelStore(ctx.cfg.storage.warehouse).load(name), candidates, seq_test)
        assert set(results[name]["metrics"]) == set(expected) == ({"ncf", "sequence"} if name == "dien" else {"ncf"})
        for protocol, figures in expected.items():
            assert results[name]["metrics"][protocol] == pytest.approx(figures, rel=1e-12, abs=1e-12), protocol


def test_popularity_baseline_on_the_executors_equals_the_driver_computation(trained):
    from jobs.train import FEATURE_TABLES
    from tests.eval_reference import collect_eval_data, popularity_reference

    ctx, results = trained
    candidates, popularity, seq_test = collect_eval_data(ctx.store, {t.name: 0 for t in FEATURE_TABLES},
                                                         N_USERS + 1, N_ITEMS + 1)
    expected = popularity_reference(candidates, popularity, seq_test)
    assert set(results["popularity"]) == set(expected) == {"ncf", "sequence"}
    for protocol, figures in expected.items():
        assert results["popularity"][protocol] == pytest.approx(figures, rel=1e-12, abs=1e-12), protocol


def test_warm_start_inherits_the_published_run_and_trains_fewer_epochs(trained, tmp_path):
    """The next night (another run id) starts from the published weights: the record says so, the
    epoch budget is train.warm_start_epochs, and a retriever scores the inherited weights first."""
    import shutil

    from jobs import train
    from libs.model_store import ModelStore
    from libs.runtime import JobContext
    from libs.storage import DeltaStore
    from tests.conftest import make_config

    ctx, _ = trained
    warehouse = str(tmp_path / "warehouse")  # a copy, so the module's published runs stay as they are
    shutil.copytree(ctx.cfg.storage.warehouse, warehouse)
    cfg = make_config(warehouse, **SMALL_MODELS, **{"train.num_proc": 2, "train.shuffle_buffer": 64,
                                                    "run.run_id": "next-night", "train.warm_start": "true",
                                                    "train.warm_start_epochs": 1})
    train.run(JobContext(ctx.spark, cfg, DeltaStore(ctx.spark, warehouse, backend="delta-rs", run_id="next-night")),
              models=["sasrec", "dien"])

    models = ModelStore(warehouse)
    for name in ("sasrec", "dien"):
        record = models.record(name)
        assert record["run_id"] == "next-night"
        assert record["warm_start"] == {"applied": True, "from_run": "test-run", "grown_vocabularies": {}}
        assert record["epochs_budget"] == 1 and len(record["epoch_loss"]) == 1
    validation = models.record("sasrec")["validation_by_epoch"]
    assert [e["epoch"] for e in validation] == [0, 1]  # 0: the inherited weights
    inherited = models.record("sasrec", "test-run")["validation_by_epoch"]
    kept = models.record("sasrec", "test-run")["best_epoch"]
    assert validation[0]["ndcg@10"] == inherited[kept - 1]["ndcg@10"]
