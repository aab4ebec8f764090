"""Column names and table schemas: the one place that defines every table's contract.

Jobs, readers and model factories import names from here instead of spelling strings, so a
renamed column is one edit. Each table's Spark schema sits next to its name and partitioning.
"""
from dataclasses import dataclass
from typing import Optional, Tuple

from pyspark.sql import types as T

# --- raw ids and event fields -------------------------------------------------------------
USER_ID = "user_id"              # original user id (string), as in the source
ITEM_ID = "item_id"              # original item id (string)
EVENT_TS = "event_ts"            # event time (timestamp, UTC)
EVENT_TYPE = "event_type"
VALUE = "value"                  # optional explicit value (a rating); implicit feedback ignores it
EVENT_DATE = "event_date"        # date of EVENT_TS (UTC)
EVENT_MONTH = "event_month"      # partition column of events: "YYYY-MM" of EVENT_DATE (README "Storage layout")
SOURCE_FILE = "source_file"
RUN_DATE = "run_date"            # partition column of per-run tables (date)
RUN_ID = "run_id"

# --- catalog ------------------------------------------------------------------------------
TITLE = "title"
GENRES = "genres"                # array<string>
YEAR = "year"
ATTRIBUTES = "attributes"        # map<string,string> of any other source columns

# --- quarantine ---------------------------------------------------------------------------
RAW_RECORD = "raw_record"
REASON = "reason"
SOURCE_TABLE = "source_table"    # which input the record came from: interactions, items, users

# --- sessions -----------------------------------------------------------------------------
SESSION_ID = "session_id"        # 0-based index of the session within the user's timeline
SESSION_START = "session_start"
SESSION_END = "session_end"
SESSION_LENGTH = "session_length"
ITEM_SEQUENCE = "item_sequence"  # array<string>, time-ordered items of the session

# --- features -----------------------------------------------------------------------------
USER_IDX = "user_idx"            # contiguous int index; 0 = padding/unknown
ITEM_IDX = "item_idx"
TOKEN = "token"
TOKEN_IDX = "token_idx"
GENRE = "genre"
GENRE_IDX = "genre_idx"
LABEL = "label"                  # float 0/1
SPLIT = "split"                  # "train" or "test"
HIST_ITEMS = "hist_items"        # array<int> length L, right-padded with 0
HIST_NEG_ITEMS = "hist_neg_items"  # array<int> length L: a sampled negative per history step (DIEN aux loss)
HIST_LEN = "hist_len"            # number of real (non-padding) history items
TITLE_TOKENS = "title_tokens"    # array<int> fixed length, right-padded with 0
GENRE_MULTI_HOT = "genre_multi_hot"  # array<float> of length = number of genres
YEAR_BUCKET = "year_bucket"      # int bucket index of YEAR; 0 = unknown
INTERACTION_COUNT = "interaction_count"
DISTINCT_ITEMS = "distinct_items"
FIRST_TS = "first_ts"
LAST_TS = "last_ts"
DAYS_SINCE_LAST = "days_since_last"
POPULARITY = "popularity"        # interactions of the item in training data
USER_COUNT = "user_count"
PROTOCOL = "protocol"            # eval_candidates: "ncf"
SEQ_ITEMS = "seq_items"          # array<int> length L_seq: a window of the user's timeline, oldest first, right-padded
SEQ_SESSION_STARTS = "seq_session_starts"  # array<int> aligned with SEQ_ITEMS: 1 where a new session starts
SEQ_LEN = "seq_len"              # number of real items in SEQ_ITEMS
TARGET_ITEMS = "target_items"    # array<int> aligned with SEQ_ITEMS: the item after each position (0 = none)
VALID_ITEM = "valid_item"        # the user's validation item (the last of SEQ_ITEMS), 0 when none

SPLIT_TRAIN = "train"
SPLIT_VALID = "valid"            # each user's second-latest interaction: tuning only, never trained on
SPLIT_TEST = "test"
SPLIT_SERVE = "serve"            # user_sequences: the query the recommendations are made from

# --- recommendations ----------------------------------------------------------------------
RANK = "rank"
SCORE = "score"
MODEL = "model"
MODEL_RUN = "model_run"
SOURCE = "source"                # how the row was produced: "ranked" or "fallback"
STAGE = "stage"                  # candidates: the retriever whose own ranking the row is
# recommendations' REASON (nullable; libs/explanations.py): "because_you_watched:<item_id>" (the history
# item the explaining model attended to most), "popular_recently" (fallback rows), null (unexplained)
REASON_BECAUSE_YOU_WATCHED = "because_you_watched:"
REASON_POPULAR_RECENTLY = "popular_recently"

# --- metrics ------------------------------------------------------------------------------
METRIC = "metric"
METRIC_VALUE = "metric_value"
EVALUATED_AT = "evaluated_at"
# names in the metrics table that the quality gate, the report and downstream readers rely on
PROTOCOL_FULL_RANKING = "full_ranking"   # every unseen item ranked, each user's held-out item
PROTOCOL_NCF = "ncf"                     # the held-out item among 99 never-touched items (He et al. 2017)
PROTOCOL_SEQUENCE = "sequence"           # next-item AUC against a sampled negative (DIEN)
PROTOCOL_VALIDATION = "validation_full_ranking"  # each user's validation item, every item it did not
                                         # train on ranked; written in both modes (the blend fit's figures)
PROTOCOL_RL_HOLDOUT = "rl_holdout"        # dqn vs its supervised twin on held-out users' next items (libs.rl_comparison)
MODEL_FINAL = "final"                    # the recommendations table itself
MODEL_RL_SUPERVISED = "dqn_supervised"   # rl_holdout: the dqn architecture trained with its softmax head only
MODEL_POPULARITY = "popularity"          # the popularity baseline of the same run


@dataclass(frozen=True)
class TableSpec:
    """A Delta table of the warehouse: its name (folder), schema and partition columns."""

    name: str
    schema: T.StructType
    partition_by: Tuple[str, ...] = ()
    description: str = ""

    @property
    def columns(self):
        return [f.name for f in self.schema.fields]


def _f(name, dtype, nullable=True):
    return T.StructField(name, dtype, nullable)


_S, _I, _L, _D, _F = T.StringType(), T.IntegerType(), T.LongType(), T.DoubleType(), T.FloatType()
_TS, _DATE = T.TimestampType(), T.DateType()
_INTS, _FLOATS, _STRS = T.ArrayType(_I, False), T.ArrayType(_F, False), T.ArrayType(_S, False)

EVENTS = TableSpec("events", T.StructType([
    _f(USER_ID, _S, False), _f(ITEM_ID, _S, False), _f(EVENT_TS, _TS, False),
    _f(EVENT_TYPE, _S, False), _f(VALUE, _D), _f(SOURCE_FILE, _S), _f(RUN_ID, _S),
    _f(EVENT_DATE, _DATE, False), _f(EVENT_MONTH, _S, False),
]), (EVENT_MONTH,), "validated, deduplicated interactions")

ITEMS = TableSpec("items", T.StructType([
    _f(ITEM_ID, _S, False), _f(TITLE, _S), _f(GENRES, _STRS), _f(YEAR, _I),
    _f(ATTRIBUTES, T.MapType(_S, _S)),
]), (), "item catalog snapshot")

USERS = TableSpec("users", T.StructType([
    _f(USER_ID, _S, False), _f(ATTRIBUTES, T.MapType(_S, _S)),
]), (), "user table snapshot")

QUARANTINE = TableSpec("quarantine", T.StructType([
    _f(SOURCE_TABLE, _S, False), _f(RAW_RECORD, _S), _f(REASON, _S, False), _f(SOURCE_FILE, _S),
    _f(RUN_ID, _S), _f(RUN_DATE, _DATE, False),
]), (RUN_DATE,), "rejected input rows with the reason, per run date")

SESSIONS = TableSpec("sessions", T.StructType([
    _f(USER_ID, _S, False), _f(SESSION_ID, _I, False), _f(SESSION_START, _TS, False),
    _f(SESSION_END, _TS, False), _f(SESSION_LENGTH, _I, False), _f(ITEM_SEQUENCE, _STRS, False),
]), (), "per-user sessions split by an inactivity gap")

VOCAB_USERS = TableSpec("vocab_users", T.StructType([
    _f(USER_ID, _S, False), _f(USER_IDX, _I, False)]), (), "user id -> stable index (1..)")
VOCAB_ITEMS = TableSpec("vocab_items", T.StructType([
    _f(ITEM_ID, _S, False), _f(ITEM_IDX, _I, False)]), (), "item id -> stable index (1..)")
VOCAB_TOKENS = TableSpec("vocab_tokens", T.StructType([
    _f(TOKEN, _S, False), _f(TOKEN_IDX, _I, False)]), (), "title token -> stable index (1..)")
VOCAB_GENRES = TableSpec("vocab_genres", T.StructType([
    _f(GENRE, _S, False), _f(GENRE_IDX, _I, False)]), (), "genre -> position in the multi-hot (0..)")

USER_FEATURES = TableSpec("user_features", T.StructType([
    _f(USER_IDX, _I, False), _f(INTERACTION_COUNT, _I, False), _f(DISTINCT_ITEMS, _I, False),
    _f(FIRST_TS, _TS), _f(LAST_TS, _TS), _f(DAYS_SINCE_LAST, _F), _f(HIST_ITEMS, _INTS, False),
    _f(HIST_LEN, _I, False),
]), (), "per-user activity; HIST_ITEMS = latest L training items, oldest first")

ITEM_FEATURES = TableSpec("item_features", T.StructType([
    _f(ITEM_IDX, _I, False), _f(POPULARITY, _I, False), _f(USER_COUNT, _I, False), _f(LAST_TS, _TS),
    _f(DAYS_SINCE_LAST, _F), _f(TITLE_TOKENS, _INTS, False), _f(GENRE_MULTI_HOT, _FLOATS, False),
    _f(YEAR, _I), _f(YEAR_BUCKET, _I, False),
]), (), "per-item popularity and content features")

CF_EXAMPLES = TableSpec("cf_examples", T.StructType([
    _f(USER_IDX, _I, False), _f(ITEM_IDX, _I, False), _f(LABEL, _F, False), _f(SPLIT, _S, False),
]), (), "positives (all but the held-out) plus N sampled negatives each")

SEQ_EXAMPLES = TableSpec("seq_examples", T.StructType([
    _f(USER_IDX, _I, False), _f(HIST_ITEMS, _INTS, False), _f(HIST_NEG_ITEMS, _INTS, False),
    _f(HIST_LEN, _I, False), _f(ITEM_IDX, _I, False), _f(LABEL, _F, False), _f(SPLIT, _S, False),
]), (), "DIEN examples: history before the target, target (pos or sampled neg), aux negatives")

CONTENT_EXAMPLES = TableSpec("content_examples", T.StructType([
    _f(USER_IDX, _I, False), _f(HIST_ITEMS, _INTS, False), _f(HIST_LEN, _I, False),
    _f(ITEM_IDX, _I, False), _f(TITLE_TOKENS, _INTS, False), _f(GENRE_MULTI_HOT, _FLOATS, False),
    _f(YEAR_BUCKET, _I, False), _f(LABEL, _F, False), _f(SPLIT, _S, False),
]), (), "content two-tower examples: seq targets joined with the target's content")

NEXT_ITEM_EXAMPLES = TableSpec("next_item_examples", T.StructType([
    _f(USER_IDX, _I, False), _f(SEQ_ITEMS, _INTS, False), _f(SEQ_SESSION_STARTS, _INTS, False),
    _f(SEQ_LEN, _I, False), _f(TARGET_ITEMS, _INTS, False), _f(SPLIT, _S, False),
]), (), "sequence model windows of the training timelines: every position's next item is a target")

USER_SEQUENCES = TableSpec("user_sequences", T.StructType([
    _f(USER_IDX, _I, False), _f(SPLIT, _S, False), _f(SEQ_ITEMS, _INTS, False),
    _f(SEQ_SESSION_STARTS, _INTS, False), _f(SEQ_LEN, _I, False), _f(VALID_ITEM, _I, False),
]), (), "per user, the latest L_seq items before the validation item (split=valid, VALID_ITEM = "
        "that item) and before serving time (split=serve: all but the test item in evaluate mode)")

EVAL_CANDIDATES = TableSpec("eval_candidates", T.StructType([
    _f(USER_IDX, _I, False), _f(ITEM_IDX, _I, False), _f(LABEL, _F, False),
    _f(PROTOCOL, _S, False),
]), (), "NCF protocol: per user the held-out item (label 1) and 99 never-touched items (label 0)")

RECOMMENDATIONS = TableSpec("recommendations", T.StructType([
    _f(USER_ID, _S, False), _f(RANK, _I, False), _f(ITEM_ID, _S, False), _f(SCORE, _D, False),
    _f(SOURCE, _S, False), _f(MODEL_RUN, _S, False), _f(RUN_DATE, _DATE, False),
    _f(REASON, _S),  # added last and nullable: tables written before it gain it, their rows read null
]), (RUN_DATE,), "top-K per user; rank 1 is best; reason: why the row (libs/explanations.py)")

CANDIDATES = TableSpec("candidates", T.StructType([
    _f(USER_IDX, _I, False), _f(STAGE, _S, False), _f(RANK, _I, False), _f(ITEM_IDX, _I, False),
    _f(SCORE, _D, False), _f(RUN_DATE, _DATE, False),
]), (RUN_DATE,), "each retriever's own top-K per user (the retrieval stage alone, for evaluation)")

METRICS = TableSpec("metrics", T.StructType([
    _f(MODEL, _S, False), _f(MODEL_RUN, _S), _f(PROTOCOL, _S, False), _f(METRIC, _S, False),
    _f(METRIC_VALUE, _D, False), _f(RUN_DATE, _DATE, False),
]), (RUN_DATE,), "evaluation figures per model, protocol and run date")

ALL_TABLES = {t.name: t for t in [
    EVENTS, ITEMS, USERS, QUARANTINE, SESSIONS, VOCAB_USERS, VOCAB_ITEMS, VOCAB_TOKENS,
    VOCAB_GENRES, USER_FEATURES, ITEM_FEATURES, CF_EXAMPLES, SEQ_EXAMPLES, CONTENT_EXAMPLES,
    NEXT_ITEM_EXAMPLES, USER_SEQUENCES, EVAL_CANDIDATES, RECOMMENDATIONS, CANDIDATES, METRICS]}


def conform(df, spec: TableSpec, strict: bool = True):
    """Select ``spec``'s columns in order, cast to its types; raise if a column is missing."""
    from pyspark.sql import functions as F

    missing = [c for c in spec.columns if c not in df.columns]
    if missing:
        raise ValueError(f"table {spec.name}: missing columns {missing}; have {df.columns}")
    extra = [c for c in df.columns if c not in spec.columns]
    if strict and extra:
        raise ValueError(f"table {spec.name}: unexpected columns {extra}")
    return df.select([F.col(f.name).cast(f.dataType).alias(f.name) for f in spec.schema.fields])


def table_spec(name: str) -> Optional[TableSpec]:
    return ALL_TABLES.get(name)


# --- runs (one row per nightly run; libs/runs.py) -------------------------------------------
RUN_MODE = "mode"                # recommend.mode: evaluate | production
DATASET = "dataset"
CODE_VERSION = "code_version"    # git describe, else the package version
CONFIG_HASH = "config_hash"      # sha256 of the resolved config without the run id
STATUS = "status"
STARTED_AT = "started_at"
ENDED_AT = "ended_at"
STEPS = "steps"                  # array of STEP_RECORD, in pipeline order
STEP = "step"
ROWS = "rows"                    # map<string,bigint>: the step's row counts
VERSIONS_READ = "versions_read"  # map<string,bigint>: table -> Delta version read
VERSIONS_WRITTEN = "versions_written"
TABLE_VERSIONS = "table_versions"  # map<string,bigint>: every table version the run used (its pins)
MODEL_RUNS = "model_runs"        # map<string,string>: model -> model store run
GATE_METRIC = "gate_metric"
GATE_VALUE = "gate_value"
PUBLISHED_AT = "published_at"    # when the run was last published (kept if a resumed redo fails the gate)
PUBLISHED_VERSIONS = "published_versions"  # map<string,bigint>: the table versions readers get from it
MESSAGE = "message"

RUN_RUNNING = "running"
RUN_FAILED = "failed"
RUN_COMPLETED = "completed"      # every step done; not gated (a partial --to-step run) or gate off
RUN_GATE_FAILED = "gate_failed"
RUN_PUBLISHED = "published"      # passed the quality gate: what downstream readers take
STEP_DONE = "done"

STEP_RECORD = T.StructType([
    _f(STEP, _S, False), _f(STATUS, _S, False), _f(STARTED_AT, _TS), _f(ENDED_AT, _TS),
    _f(ROWS, T.MapType(_S, _L)), _f(VERSIONS_READ, T.MapType(_S, _L)), _f(VERSIONS_WRITTEN, T.MapType(_S, _L)),
])

RUNS = TableSpec("runs", T.StructType([
    _f(RUN_ID, _S, False), _f(RUN_DATE, _DATE, False), _f(RUN_MODE, _S), _f(DATASET, _S), _f(CODE_VERSION, _S),
    _f(CONFIG_HASH, _S), _f(STATUS, _S, False), _f(STARTED_AT, _TS), _f(ENDED_AT, _TS),
    _f(STEPS, T.ArrayType(STEP_RECORD, False)), _f(TABLE_VERSIONS, T.MapType(_S, _L)),
    _f(MODEL_RUNS, T.MapType(_S, _S)), _f(GATE_METRIC, _S), _f(GATE_VALUE, _D), _f(PUBLISHED_AT, _TS),
    _f(PUBLISHED_VERSIONS, T.MapType(_S, _L)), _f(MESSAGE, _S),
]), (), "one row per nightly run: steps, Delta versions read and written, model runs, gate, publishing")
