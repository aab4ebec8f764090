"""A night made worse on purpose is not published, and the last published night stays readable
(the recommendations version it published, through the runs table)."""
import pytest
from pyspark.sql import functions as F

from libs import runs
from libs import schema as S
from libs.storage import DeltaStore
from pipelines import nightly

pytestmark = [pytest.mark.spark, pytest.mark.horovod, pytest.mark.slow]

RUN_DATE = "2024-01-15"


def _night(warehouse, *sets):
    args = ["--env", "local", "--run-date", RUN_DATE, "--set", f"storage.warehouse={warehouse}",
            "--set", "train.models=[sasrec]", "--set", "train.sasrec.epochs=6",
            "--set", "recommend.retrievers={sasrec: 100}"]
    for text in sets:
        args += ["--set", text]
    return nightly.main(args)


def _published_recs(store):
    night = runs.latest_published(store)
    version = night[S.PUBLISHED_VERSIONS][S.RECOMMENDATIONS.name]
    recs = store.read(S.RECOMMENDATIONS.name, version).where(F.col(S.RUN_DATE) == night[S.RUN_DATE])
    return night, sorted(tuple(r) for r in recs.collect())


def test_a_worse_night_is_not_published_and_the_last_published_stays_readable(spark, warehouse):
    assert _night(warehouse) == 0
    store = DeltaStore(spark, warehouse, backend="delta-rs")
    first, recs = _published_recs(store)
    assert first[S.STATUS] == S.RUN_PUBLISHED and len(recs) == 9430
    assert [s[S.STEP] for s in first[S.STEPS]] == nightly.STEPS
    assert first[S.GATE_METRIC] == "ndcg@10" and first[S.MODEL_RUNS] == {"sasrec": first[S.RUN_ID]}

    # an untrained model (learning rate 0) recommends worse than popularity: the gate refuses it
    assert _night(warehouse, "train.sasrec.learning_rate=0.0") == nightly.EXIT_GATE_FAILED
    worse = max(runs.rows(store), key=lambda r: r[S.STARTED_AT])
    assert worse[S.STATUS] == S.RUN_GATE_FAILED and "does not beat popularity" in worse[S.MESSAGE]
    assert worse[S.GATE_VALUE] < first[S.GATE_VALUE]
    # the worse night replaced the date's partition in the latest version...
    latest = sorted(tuple(r) for r in store.read(S.RECOMMENDATIONS.name)
                    .where(F.col(S.RUN_DATE) == RUN_DATE).collect())
    assert latest != recs
    # ...but readers of the latest published night still get exactly the first night's rows
    again, kept = _published_recs(store)
    assert again[S.RUN_ID] == first[S.RUN_ID] and kept == recs
