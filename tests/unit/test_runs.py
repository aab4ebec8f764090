"""The runs table: one row per run, steps with the versions they read and wrote, resuming with
pins, the quality gate and the latest published night."""
import datetime as dt

import pytest

from libs import runs
from libs import schema as S
from libs.conf import GateConf
from tests.conftest import make_config

GATE = GateConf(metric="ndcg@10", max_drop=0.02, production_protocol=S.PROTOCOL_VALIDATION)


def _metric(model, protocol, value, metric="ndcg@10"):
    return {S.MODEL: model, S.PROTOCOL: protocol, S.METRIC: metric, S.METRIC_VALUE: value}


FULL = S.PROTOCOL_FULL_RANKING


def test_gate_in_evaluate_mode():
    night = [_metric(S.MODEL_FINAL, FULL, 0.10), _metric(S.MODEL_POPULARITY, FULL, 0.06),
             _metric(S.MODEL_FINAL, FULL, 0.01, "precision@10"), _metric("deep_cf", "ncf", 0.01)]
    result = runs.quality_gate(night, "evaluate", GATE, None)
    assert (result.passed, result.value) == (True, 0.10)
    assert runs.quality_gate(night, "evaluate", GATE, 0.12).passed        # 0.02 below: allowed
    dropped = runs.quality_gate(night, "evaluate", GATE, 0.1201)
    assert not dropped.passed and "more than gate.max_drop=0.02 below the last published night (0.1201)" \
        in dropped.message
    worse = [_metric(S.MODEL_FINAL, FULL, 0.06), _metric(S.MODEL_POPULARITY, FULL, 0.06)]
    result = runs.quality_gate(worse, "evaluate", GATE, None)
    assert not result.passed and "does not beat popularity (0.0600)" in result.message
    missing = runs.quality_gate([_metric(S.MODEL_POPULARITY, FULL, 0.06)], "evaluate", GATE, None)
    assert not missing.passed and missing.value is None and "['final']" in missing.message


def test_gate_in_production_mode_uses_the_validation_figures():
    valid = S.PROTOCOL_VALIDATION
    night = [_metric(S.MODEL_FINAL, valid, 0.09), _metric(S.MODEL_POPULARITY, valid, 0.04),
             _metric(S.MODEL_FINAL, FULL, 0.01)]   # a full-ranking row does not count in production
    result = runs.quality_gate(night, "production", GATE, None)
    assert (result.passed, result.value) == (True, 0.09)
    night[0] = _metric(S.MODEL_FINAL, valid, 0.04)
    assert not runs.quality_gate(night, "production", GATE, None).passed


@pytest.mark.spark
def test_run_rows_steps_resume_pins_and_latest_published(spark, store, warehouse):
    cfg = make_config(warehouse)
    store.write(spark.createDataFrame([(1,)], "id int"), "a")
    store.reads.clear(), store.writes.clear()
    book = runs.RunBook.start(store, cfg)
    store.read("a")
    store.write(spark.createDataFrame([(2,)], "id int"), "b")
    book.step_done("ingest", runs.now_utc(), {"b": 1, "skipped": "text"}, store)
    book.step_done("train", runs.now_utc(), {"deep_cf": {"run_id": "m1"}}, store)
    store.write(spark.createDataFrame([(3,)], "id int"), "b")  # a later commit (another run)

    (row,) = runs.rows(store)
    assert (row[S.RUN_ID], row[S.RUN_DATE], row[S.STATUS]) == ("test-run", dt.date(2024, 1, 15), S.RUN_RUNNING)
    assert [(s[S.STEP], s[S.ROWS], s[S.VERSIONS_READ], s[S.VERSIONS_WRITTEN]) for s in row[S.STEPS]] == [
        ("ingest", {"b": 1}, {"a": 0}, {"b": 0}), ("train", {}, {"a": 0}, {"b": 0})]
    assert row[S.MODEL_RUNS] == {"deep_cf": "m1"} and len(row[S.CONFIG_HASH]) == 16

    resumed_store = type(store)(spark, warehouse, backend="delta-rs")
    resumed = runs.RunBook.resume(resumed_store, "2024-01-15", ["ingest"])
    assert resumed.run_id == "test-run" and resumed_store.pins == {"a": 0, "b": 0}
    assert [r.id for r in resumed_store.read("b").collect()] == [2]  # the run's own version, not the newer one
    with pytest.raises(runs.RunError, match="has not completed step"):
        runs.RunBook.resume(resumed_store, "2024-01-15", ["ingest", "sessions"])
    with pytest.raises(runs.RunError, match="no earlier run of 2024-01-16"):
        runs.RunBook.resume(resumed_store, "2024-01-16", ["ingest"])

    assert runs.latest_published(store) is None
    resumed.finish(S.RUN_PUBLISHED, "ok", "ndcg@10", 0.1)
    other = runs.RunBook.start(store, make_config(warehouse, **{"run.run_id": "later"}))
    other.finish(S.RUN_GATE_FAILED, "worse", "ndcg@10", 0.01)
    published = runs.latest_published(store)
    assert (published[S.RUN_ID], published[S.GATE_VALUE], published[S.PUBLISHED_VERSIONS]) == \
        ("test-run", 0.1, {"a": 0, "b": 0})
    assert sorted((r[S.RUN_ID], r[S.STATUS]) for r in runs.rows(store)) == [
        ("later", S.RUN_GATE_FAILED), ("test-run", S.RUN_PUBLISHED)]

    # redoing the published run (--from-step) and failing the gate keeps what readers get
    redo_store = type(store)(spark, warehouse, backend="delta-rs")
    redo = runs.RunBook.resume(redo_store, "2024-01-15", ["ingest"], run_id="test-run")
    redo_store.write(spark.createDataFrame([(4,)], "id int"), "b")
    redo.step_done("train", runs.now_utc(), {}, redo_store)
    redo.finish(S.RUN_GATE_FAILED, "worse", "ndcg@10", 0.0)
    published = runs.latest_published(store)
    assert (published[S.RUN_ID], published[S.STATUS], published[S.PUBLISHED_VERSIONS]) == \
        ("test-run", S.RUN_GATE_FAILED, {"a": 0, "b": 0})
    assert published[S.TABLE_VERSIONS] == {"a": 0, "b": 2}
