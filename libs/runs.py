"""The ``runs`` table: one row per nightly run, its steps, the Delta versions they read and wrote,
the model runs, the quality gate and whether the night was published.

:class:`RunBook` keeps the row of one run and rewrites it after every step (optimistic
concurrency: a write that loses against another run's update re-reads and retries). Resuming a run
(``--from-step``) loads its row and pins the store to the versions its completed steps used, so
every later step reads what the run's own earlier steps wrote. :func:`quality_gate` decides
publishing from the ``metrics`` table; :func:`latest_published` is what downstream readers use.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional

from pyspark.sql import functions as F

from libs import schema as S
from libs.conf import Config, GateConf
from libs.storage import NO_TABLE, ConcurrentWriteError, DeltaStore

log = logging.getLogger(__name__)

WRITE_ATTEMPTS = 5


class RunError(RuntimeError):
    """A run cannot be resumed or recorded."""


def code_version() -> str:
    """``git describe`` of the checkout this code runs from, else the installed package version."""
    root = Path(__file__).resolve().parent.parent
    try:
        out = subprocess.run(["git", "describe", "--always", "--dirty", "--tags"], cwd=root, capture_output=True,
                             text=True, timeout=10)
        if out.returncode == 0 and out.stdout.strip():
            return out.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        pass
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("nightrec")
    except PackageNotFoundError:
        return "unknown"


def config_hash(cfg: Config) -> str:
    """sha256 (16 hex) of the resolved configuration without the run id: equal hashes, equal settings."""
    data = cfg.to_dict()
    data["run"] = {k: v for k, v in data["run"].items() if k != "run_id"}
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()[:16]


def now_utc() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)


def _int_rows(result: dict) -> Dict[str, int]:
    return {k: int(v) for k, v in (result or {}).items() if isinstance(v, int) and not isinstance(v, bool)}


class RunBook:
    """The ``runs`` row of one run, written through its own store (its writes are not the run's)."""

    def __init__(self, store: DeltaStore, row: dict):
        self.store = DeltaStore(store.spark, store.root, store.backend, row[S.RUN_ID])
        self.row = row

    @classmethod
    def start(cls, store: DeltaStore, cfg: Config) -> "RunBook":
        """A new run of ``cfg.run.date``, recorded as running."""
        row = {S.RUN_ID: cfg.run.run_id, S.RUN_DATE: cfg.run_date, S.RUN_MODE: cfg.recommend.mode,
               S.DATASET: cfg.dataset_name, S.CODE_VERSION: code_version(), S.CONFIG_HASH: config_hash(cfg),
               S.STATUS: S.RUN_RUNNING, S.STARTED_AT: now_utc(), S.ENDED_AT: None, S.STEPS: [],
               S.TABLE_VERSIONS: {}, S.MODEL_RUNS: {}, S.GATE_METRIC: None, S.GATE_VALUE: None,
               S.PUBLISHED_AT: None, S.PUBLISHED_VERSIONS: None, S.MESSAGE: None}
        book = cls(store, row)
        book.save()
        return book

    @classmethod
    def resume(cls, store: DeltaStore, run_date: str, steps_before: List[str],
               run_id: Optional[str] = None) -> "RunBook":
        """The latest run of ``run_date`` (or ``run_id``), its completed ``steps_before`` kept.

        Pins ``store`` to the versions those steps read and wrote, so the resumed steps read what
        the run itself wrote (not newer versions another run committed since). A run published
        before keeps its PUBLISHED_VERSIONS until the resumed run passes the gate again.
        """
        runs = rows(store)
        candidates = [r for r in runs if (r[S.RUN_ID] == run_id if run_id else str(r[S.RUN_DATE]) == run_date)]
        if not candidates:
            raise RunError(f"no earlier run of {run_id or run_date} in the runs table to resume; "
                           "run the date without --from-step")
        row = max(candidates, key=lambda r: r[S.STARTED_AT])
        done = {s[S.STEP]: s for s in row[S.STEPS] if s[S.STATUS] == S.STEP_DONE}
        missing = [name for name in steps_before if name not in done]
        if missing:
            raise RunError(f"run {row[S.RUN_ID]} has not completed step(s) {missing}; resume from "
                           f"--from-step {missing[0]}")
        pins: Dict[str, int] = {}
        for name in steps_before:
            pins.update(done[name][S.VERSIONS_READ] or {})
        for name in steps_before:
            pins.update(done[name][S.VERSIONS_WRITTEN] or {})
        store.pins.update(pins)
        row = {**row, S.STEPS: [done[name] for name in steps_before], S.STATUS: S.RUN_RUNNING,
               S.TABLE_VERSIONS: pins, S.ENDED_AT: None, S.MESSAGE: None}
        log.info("resuming run %s of %s at its pinned versions %s", row[S.RUN_ID], run_date, pins)
        book = cls(store, row)
        book.save()
        return book

    @property
    def run_id(self) -> str:
        return self.row[S.RUN_ID]

    @property
    def model_runs(self) -> Dict[str, str]:
        return dict(self.row[S.MODEL_RUNS] or {})

    def step_done(self, name: str, started: dt.datetime, result: dict, run_store: DeltaStore) -> None:
        """Record a finished step: rows, the versions it read and wrote, model runs (train)."""
        self.row[S.STEPS] = [s for s in self.row[S.STEPS] if s[S.STEP] != name] + [{
            S.STEP: name, S.STATUS: S.STEP_DONE, S.STARTED_AT: started, S.ENDED_AT: now_utc(),
            S.ROWS: _int_rows(result), S.VERSIONS_READ: dict(run_store.reads),
            S.VERSIONS_WRITTEN: dict(run_store.writes)}]
        self.row[S.TABLE_VERSIONS] = {**(self.row[S.TABLE_VERSIONS] or {}), **run_store.pins}
        models = {m: v["run_id"] for m, v in (result or {}).items() if isinstance(v, dict) and "run_id" in v}
        if models:
            self.row[S.MODEL_RUNS] = {**self.model_runs, **models}
        self.save()

    def finish(self, status: str, message: Optional[str] = None, gate_metric: Optional[str] = None,
               gate_value: Optional[float] = None) -> None:
        self.row.update({S.STATUS: status, S.ENDED_AT: now_utc(), S.MESSAGE: message, S.GATE_METRIC: gate_metric,
                         S.GATE_VALUE: gate_value})
        if status == S.RUN_PUBLISHED:
            self.row[S.PUBLISHED_AT] = self.row[S.ENDED_AT]
            self.row[S.PUBLISHED_VERSIONS] = dict(self.row[S.TABLE_VERSIONS] or {})
        self.save()

    def save(self) -> None:
        """Replace this run's row; another run's concurrent update makes it re-read and retry."""
        spark = self.store.spark
        for attempt in range(1, WRITE_ATTEMPTS + 1):
            base = self.store.latest_version(S.RUNS.name)
            others = [r for r in rows(self.store, base) if r[S.RUN_ID] != self.run_id]
            df = spark.createDataFrame(others + [self.row], S.RUNS.schema)
            try:
                self.store.write(df.coalesce(1), S.RUNS.name, base_version=NO_TABLE if base is None else base,
                                 expected_rows=len(others) + 1)
                return
            except ConcurrentWriteError:
                if attempt == WRITE_ATTEMPTS:
                    raise
                log.info("runs table changed under run %s; retrying its update (%d)", self.run_id, attempt)


def rows(store: DeltaStore, version: Optional[int] = None) -> List[dict]:
    """Every run as a dict (empty if the runs table does not exist yet)."""
    if version is None:
        version = store.latest_version(S.RUNS.name)
    if version is None:
        return []
    return [r.asDict(recursive=True) for r in store.read(S.RUNS.name, version).collect()]


def latest_published(store: DeltaStore) -> Optional[dict]:
    """The runs row of the latest published night, or None. Its PUBLISHED_VERSIONS say which
    version of each table (e.g. recommendations, filtered on its run date) that night published."""
    published = [r for r in rows(store) if r[S.PUBLISHED_AT] is not None]
    return max(published, key=lambda r: r[S.PUBLISHED_AT]) if published else None


@dataclass
class GateResult:
    passed: bool
    value: Optional[float]
    message: str


def quality_gate(metrics: List[dict], mode: str, gate: GateConf, last_published: Optional[float]) -> GateResult:
    """Decide from a night's ``metrics`` rows (dicts with MODEL, PROTOCOL, METRIC, METRIC_VALUE).

    MODEL_FINAL (the recommendations) must beat MODEL_POPULARITY on ``gate.metric`` of
    PROTOCOL_FULL_RANKING (evaluate mode: the test items) or of ``gate.production_protocol``
    (production mode, nothing held out for testing: default PROTOCOL_VALIDATION, each user's
    validation item, which no model trained on), and may not fall more than ``gate.max_drop``
    below ``last_published``.
    """
    protocol = S.PROTOCOL_FULL_RANKING if mode == "evaluate" else gate.production_protocol
    figures = {r[S.MODEL]: r[S.METRIC_VALUE] for r in metrics
               if r[S.PROTOCOL] == protocol and r[S.METRIC] == gate.metric}
    missing = [m for m in (S.MODEL_FINAL, S.MODEL_POPULARITY) if m not in figures]
    if missing:
        return GateResult(False, None, f"no {protocol}/{gate.metric} figure for {missing} in the metrics table")
    value, baseline = figures[S.MODEL_FINAL], figures[S.MODEL_POPULARITY]
    what = f"{protocol} {gate.metric} {S.MODEL_FINAL} = {value:.4f}"
    if value <= baseline:
        return GateResult(False, value, f"{what} does not beat popularity ({baseline:.4f})")
    if last_published is not None and value < last_published - gate.max_drop:
        return GateResult(False, value, f"{what} is more than gate.max_drop={gate.max_drop} below the last "
                                        f"published night ({last_published:.4f})")
    return GateResult(True, value, f"{what} beats popularity ({baseline:.4f})"
                      + ("" if last_published is None else f", last published {last_published:.4f}"))


def night_metrics(store: DeltaStore, run_date: dt.date) -> List[dict]:
    """The metrics rows of ``run_date`` at the store's pinned (this run's) version."""
    if store.version(S.METRICS.name) is None:
        return []
    return [r.asDict() for r in store.read(S.METRICS.name).where(F.col(S.RUN_DATE) == F.lit(run_date)).collect()]
