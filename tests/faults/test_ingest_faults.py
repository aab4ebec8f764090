"""Fault tests with real processes and real tables: an ingest killed (SIGKILL of its whole process
tree) at several moments of a table write, then rerun, leaves exactly the tables of an
uninterrupted run; two runs of one date started at once give one named conflict and no duplicated
or lost rows."""
import hashlib
import os
import random
import signal
import subprocess
import sys
import time

import pytest

from jobs import ingest
from libs import schema as S
from libs.runtime import JobContext
from libs.storage import PAUSE_ENV, STAGING_DIR, DeltaStore
from tests.conftest import ROOT, make_config

pytestmark = [pytest.mark.spark, pytest.mark.slow]

RUN_DATE = "2024-01-15"
RUN_ID = "fault-test"
TABLES = (S.EVENTS.name, S.ITEMS.name, S.USERS.name, S.QUARANTINE.name)
DAY = 86400
START = 1704153600  # 2024-01-02 00:00 UTC


@pytest.fixture(scope="module")
def drop(tmp_path_factory):
    """A synthetic drop in the ml-100k adapter's layout: 20,000 events of 13 days, 30 duplicates."""
    folder = tmp_path_factory.mktemp("drop")
    rng = random.Random(3)
    lines = [f"u{rng.randrange(300)}\t{rng.randrange(1, 201)}\t{rng.randrange(1, 6)}\t{START + rng.randrange(13 * DAY)}"
             for _ in range(20_000)]
    lines += lines[:30]
    (folder / "x.inter").write_text("\n".join(["user_id:token\titem_id:token\trating:float\ttimestamp:float"]
                                              + lines) + "\n")
    (folder / "x.item").write_text("\n".join(["item_id:token\tmovie_title:token_seq\trelease_year:token\tclass:token_seq"]
                                             + [f"{i}\tMovie {i}\t1990\tDrama" for i in range(1, 201)]) + "\n")
    (folder / "x.user").write_text("\n".join(["user_id:token\tage:token"] + [f"u{i}\t30" for i in range(300)]) + "\n")
    return {"dataset.interactions.path": str(folder / "x.inter"), "dataset.items.path": str(folder / "x.item"),
            "dataset.users.path": str(folder / "x.user"), "run.run_id": RUN_ID}


def _content(spark, warehouse):
    """Per table: (rows, sha256 of the sorted rows) read back through the Delta log."""
    store = DeltaStore(spark, warehouse, backend="delta-rs")
    out = {}
    for table in TABLES:
        rows = sorted(repr(tuple(r)) for r in store.read(table).collect())
        out[table] = (len(rows), hashlib.sha256("\n".join(rows).encode()).hexdigest())
    return out


@pytest.fixture(scope="module")
def reference(spark, drop, tmp_path_factory):
    warehouse = str(tmp_path_factory.mktemp("reference") / "warehouse")
    cfg = make_config(warehouse, **drop)
    ingest.run(JobContext(spark, cfg, DeltaStore(spark, warehouse, backend="delta-rs", run_id=RUN_ID)))
    content = _content(spark, warehouse)
    assert content[S.EVENTS.name][0] == 20_000 and content[S.QUARANTINE.name][0] == 30
    return content


def _start(warehouse, drop, env=None, log=None):
    """The nightly pipeline's ingest step in its own process group; output to ``log`` (a file)."""
    args = [sys.executable, "-m", "pipelines.nightly", "--to-step", "ingest", "--run-date", RUN_DATE,
            "--set", f"storage.warehouse={warehouse}", "--set", "spark.conf.spark.driver.memory=1g"]
    for key, value in drop.items():
        args += ["--set", f"{key}={value}"]
    return subprocess.Popen(args, cwd=ROOT, stdout=open(log, "w") if log else subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True,
                            start_new_session=True,  # its own process group: the JVM and workers die with it
                            env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})})


def _kill_when(proc, condition, timeout=120):
    deadline = time.monotonic() + timeout
    while not condition():
        assert proc.poll() is None, "the job ended before the moment to kill it"
        assert time.monotonic() < deadline, "the moment to kill never came"
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def _rerun(warehouse, drop):
    proc = _start(warehouse, drop)
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, out


def _spark_writing_events(root):
    staging = root / S.EVENTS.name / STAGING_DIR
    return staging.exists() and any((d / "_temporary").exists() for d in staging.iterdir())


@pytest.mark.parametrize("moment", ["spark tasks writing events", "events staged, not committed",
                                    "events committed, items staged"])
def test_sigkill_during_a_write_then_rerun_equals_an_uninterrupted_run(spark, drop, reference, tmp_path, moment):
    root = tmp_path / "warehouse"
    pause = {"events staged, not committed": f"{S.EVENTS.name}:600",
             "events committed, items staged": f"{S.ITEMS.name}:600"}.get(moment)
    log = tmp_path / "killed.log"
    proc = _start(root, drop, {PAUSE_ENV: pause} if pause else None, log)
    if pause:
        _kill_when(proc, lambda: "pausing 600s before the commit" in log.read_text())
    else:
        _kill_when(proc, lambda: _spark_writing_events(root))
    store = DeltaStore(spark, str(root), backend="delta-rs")
    committed_events = store.exists(S.EVENTS.name)
    assert committed_events == (moment == "events committed, items staged")
    assert not store.exists(S.ITEMS.name)
    if moment == "events staged, not committed":  # its files sit in the table folder, not in the log
        assert list((root / S.EVENTS.name).glob("event_month=*/*.parquet"))

    _rerun(root, drop)
    assert _content(spark, str(root)) == reference
    assert store.active_files(S.EVENTS.name) == store.active_files(S.EVENTS.name, 0)  # one copy, ever
    assert list((root / S.EVENTS.name / STAGING_DIR).iterdir()) == []  # dead staging removed


def test_two_runs_of_one_date_at_once_one_named_conflict_no_duplicates(spark, drop, reference, tmp_path):
    root = tmp_path / "warehouse"
    # both runs hold their staged events for 15 s, so their commits certainly overlap
    procs = [_start(root, drop, {PAUSE_ENV: f"{S.EVENTS.name}:15"}) for _ in range(2)]
    outputs = [p.communicate(timeout=300)[0] for p in procs]
    codes = sorted(p.returncode for p in procs)
    assert codes == [0, 1], outputs
    loser = outputs[[p.returncode for p in procs].index(1)]
    assert "ConcurrentWriteError: table events: another writer committed" in loser
    assert "Py4JJavaError" not in loser and "_temporary" not in loser
    assert _content(spark, str(root)) == reference
    _rerun(root, drop)  # the loser's rerun finds every event already there
    assert _content(spark, str(root)) == reference
    store = DeltaStore(spark, str(root), backend="delta-rs")
    assert store.active_files(S.EVENTS.name) == store.active_files(S.EVENTS.name, 0)
