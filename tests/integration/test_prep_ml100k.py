"""ingest -> sessions -> features on the real MovieLens 100K: table contracts and idempotent reruns."""
import pytest
from pyspark.sql import Window
from pyspark.sql import functions as F
from pyspark.sql import types as T

from libs import schema as S
from libs.runtime import JobContext
from libs.storage import DeltaStore
from libs.streaming import min_files_for_training
from pipelines.prep import run_prep
from tests.conftest import make_config

pytestmark = pytest.mark.spark

PREP_TABLES = [S.EVENTS, S.ITEMS, S.USERS, S.QUARANTINE, S.SESSIONS, S.VOCAB_USERS, S.VOCAB_ITEMS,
               S.VOCAB_TOKENS, S.VOCAB_GENRES, S.USER_FEATURES, S.ITEM_FEATURES, S.CF_EXAMPLES,
               S.SEQ_EXAMPLES, S.CONTENT_EXAMPLES, S.EVAL_CANDIDATES]


def _fingerprint(df):
    """(rows, order-independent sum of row hashes): equal contents give equal fingerprints."""
    hashable = [F.array_sort(F.map_entries(f.name)) if isinstance(f.dataType, T.MapType) else F.col(f.name)
                for f in df.schema.fields]
    row = df.select(F.xxhash64(*hashable).cast("decimal(38,0)").alias("h")).agg(F.count("h"), F.sum("h")).first()
    return row[0], row[1]


@pytest.fixture(scope="module")
def prepared(spark, tmp_path_factory):
    warehouse = str(tmp_path_factory.mktemp("prep") / "warehouse")
    cfg = make_config(warehouse)
    store = DeltaStore(spark, warehouse, backend="delta-rs", run_id=cfg.run.run_id)
    ctx = JobContext(spark, cfg, store)
    return ctx, run_prep(ctx)


def test_tables_meet_their_contracts(prepared):
    ctx, rows = prepared
    store = ctx.store
    for spec in PREP_TABLES:
        assert store.schema(spec.name) == spec.schema, spec.name
        assert store.partition_columns(spec.name) == list(spec.partition_by), spec.name
    assert (rows[S.EVENTS.name], rows[S.QUARANTINE.name]) == (100_000, 0)
    assert store.num_rows(S.EVENTS.name) == 100_000
    assert store.num_rows(S.VOCAB_USERS.name) == rows[S.USERS.name] == rows[S.USER_FEATURES.name] == 943
    assert store.num_rows(S.VOCAB_ITEMS.name) == rows[S.ITEMS.name] == rows[S.ITEM_FEATURES.name] == 1_682
    vocab = store.read(S.VOCAB_ITEMS.name).agg(F.min(S.ITEM_IDX), F.max(S.ITEM_IDX)).first()
    assert tuple(vocab) == (1, 1_682)  # contiguous, 0 reserved
    for spec in (S.CF_EXAMPLES, S.SEQ_EXAMPLES, S.CONTENT_EXAMPLES):
        assert len(store.active_files(spec.name)) >= min_files_for_training(ctx.cfg.train.num_proc)
    # 943 users hold out their latest (test) item; the second-latest is a validation positive with
    # no negatives, every other interaction a training positive with 4 negatives
    assert rows[S.CF_EXAMPLES.name] == (100_000 - 2 * 943) * 5 + 943
    assert rows[S.SEQ_EXAMPLES.name] == rows[S.CONTENT_EXAMPLES.name] == 2 * (100_000 - 943)
    assert store.read(S.SESSIONS.name).agg(F.sum(S.SESSION_LENGTH)).first()[0] == 100_000


def test_every_user_has_the_latest_item_and_99_untouched_negatives(prepared):
    ctx, _ = prepared
    store = ctx.store
    candidates = store.read(S.EVAL_CANDIDATES.name)
    per_user = candidates.groupBy(S.USER_IDX).agg(F.count("*").alias("n"), F.sum(S.LABEL).alias("pos"),
                                                  F.countDistinct(S.ITEM_IDX).alias("distinct"))
    assert per_user.count() == 943
    assert per_user.where("n != 100 OR pos != 1 OR distinct != 100").count() == 0
    events = (store.read(S.EVENTS.name).join(store.read(S.VOCAB_USERS.name), S.USER_ID)
              .join(store.read(S.VOCAB_ITEMS.name), S.ITEM_ID))
    newest = Window.partitionBy(S.USER_IDX).orderBy(F.desc(S.EVENT_TS), F.desc(S.ITEM_IDX))
    latest = (events.withColumn("rn", F.row_number().over(newest)).where("rn = 1")
              .select(S.USER_IDX, S.ITEM_IDX))
    held_out = candidates.where(F.col(S.LABEL) == 1).select(S.USER_IDX, S.ITEM_IDX)
    assert held_out.exceptAll(latest).count() == 0 and latest.exceptAll(held_out).count() == 0
    touched = events.select(S.USER_IDX, S.ITEM_IDX)
    assert candidates.where(F.col(S.LABEL) == 0).join(touched, [S.USER_IDX, S.ITEM_IDX]).count() == 0
    assert store.read(S.CF_EXAMPLES.name).where(F.col(S.LABEL) == 0).join(
        touched, [S.USER_IDX, S.ITEM_IDX]).count() == 0


def test_second_run_of_the_same_date_leaves_identical_tables(prepared):
    ctx, first_rows = prepared
    store = ctx.store
    before = {spec.name: (store.version(spec.name), _fingerprint(store.read(spec.name))) for spec in PREP_TABLES}
    assert run_prep(ctx) == first_rows
    for spec in PREP_TABLES:
        version, fingerprint = before[spec.name]
        assert store.version(spec.name) > version, spec.name
        assert _fingerprint(store.read(spec.name)) == fingerprint, spec.name
