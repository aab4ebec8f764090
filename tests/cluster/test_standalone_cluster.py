"""The nightly on a real standalone Spark cluster (master + two 1-core workers on 127.0.0.1) against
a ``local[2]`` run of the same date and seed: the prepared tables must be equal, row for row.

Needs the cluster (``make cluster-up``) and the packed executors' environment (``make
cluster-env``); ``make cluster-test`` does both and runs this file. Without
``NIGHTREC_CLUSTER_MASTER`` it is skipped: the cluster run is the whole nightly (minutes on 2 cores).
"""
import ast
import glob
import os
import re
import socket
import subprocess
import time
from pathlib import Path
from urllib.parse import urlparse

import pytest
from pyspark.sql import functions as F
from pyspark.sql import types as T

from libs import schema as S
from libs.storage import DeltaStore

pytestmark = [pytest.mark.cluster, pytest.mark.spark, pytest.mark.horovod, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
RUN_DATE = "2024-01-15"
RUN_ID = "2024-01-15-cluster-vs-local"  # one run id for both: events carry it
MASTER = os.environ.get("NIGHTREC_CLUSTER_MASTER", "")
ENV_ARCHIVE = os.environ.get("PYSPARK_ENV_ARCHIVE") or str(ROOT / ".cluster" / "environment.tar.gz")
# What ingest, sessions and features write: the tables training reads.
PREPARED = [S.EVENTS, S.ITEMS, S.USERS, S.QUARANTINE, S.SESSIONS, S.VOCAB_USERS, S.VOCAB_ITEMS, S.VOCAB_TOKENS,
            S.VOCAB_GENRES, S.USER_FEATURES, S.ITEM_FEATURES, S.CF_EXAMPLES, S.SEQ_EXAMPLES, S.CONTENT_EXAMPLES,
            S.NEXT_ITEM_EXAMPLES, S.USER_SEQUENCES, S.EVAL_CANDIDATES]


def _master_answers(url: str) -> bool:
    parsed = urlparse(url)
    try:
        with socket.create_connection((parsed.hostname, parsed.port or 7077), timeout=3):
            return True
    except OSError:
        return False


@pytest.fixture(scope="module")
def cluster_master():
    if not MASTER:
        pytest.skip("NIGHTREC_CLUSTER_MASTER is not set: run `make cluster-test` (starts the standalone cluster "
                    "on 127.0.0.1 and packs the executors' environment), or `make cluster-up cluster-env` and "
                    "NIGHTREC_CLUSTER_MASTER=spark://127.0.0.1:7077")
    if not _master_answers(MASTER):
        pytest.skip(f"no standalone master answers at {MASTER}: `make cluster-up`")
    if not os.path.exists(ENV_ARCHIVE):
        pytest.skip(f"no packed executors' environment at {ENV_ARCHIVE}: `make cluster-env`")
    return MASTER


def _submit(master: str, env_name: str, warehouse: str, *args: str, env=None) -> tuple:
    cmd = [str(ROOT / "spark-submit.sh"), "--master", master, "--env", env_name, "pipelines.nightly",
           "--run-date", RUN_DATE, "--set", f"storage.warehouse={warehouse}", "--set", f"run.run_id={RUN_ID}", *args]
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, env={**os.environ, **(env or {})}, capture_output=True, text=True,
                          timeout=3600)
    seconds = time.perf_counter() - start
    assert proc.returncode == 0, f"{' '.join(cmd)} exited {proc.returncode}:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return seconds, proc.stdout


def _comparable(df):
    """Maps cannot be compared by set operations: as entry arrays sorted by key."""
    return df.select([F.array_sort(F.map_entries(f.name)).alias(f.name) if isinstance(f.dataType, T.MapType)
                      else F.col(f.name) for f in df.schema.fields])


def _origins(log_text: str, label: str) -> list:
    found = []
    for match in re.finditer(rf"{label}: (\[.*\]|\{{.*\}})$", log_text, re.M):
        value = ast.literal_eval(match.group(1))
        found += value if isinstance(value, list) else [value]
    return found


def _assert_shipped_code(origin: dict) -> None:
    """The pipeline came from the shipped bundle in the executor's work dir, nothing else."""
    assert re.search(r"nightrec-[^/]+\.zip/libs/__init__\.py$", origin["libs"]), origin
    assert "/work/" in origin["cwd"] and "/app-" in origin["cwd"], origin  # <worker work dir>/<app>/<executor>
    assert origin["python"].startswith(origin["cwd"] + "/environment/"), origin  # the packed env
    for entry in filter(None, origin["pythonpath"].split(os.pathsep)):
        assert not (Path(entry) / "libs" / "__init__.py").exists(), f"a source tree on PYTHONPATH: {entry}"
        assert not entry.startswith(str(ROOT) + "/libs"), entry


def test_nightly_on_standalone_cluster_prepares_the_same_tables_as_local(cluster_master, tmp_path, spark):
    cluster_wh, local_wh = str(tmp_path / "cluster"), str(tmp_path / "local")
    cluster_s, _ = _submit(cluster_master, "standalone", cluster_wh,
                           env={"PYSPARK_ENV_ARCHIVE": ENV_ARCHIVE, "SPARK_LOCAL_IP": "127.0.0.1"})
    local_s, _ = _submit("local[2]", "local", local_wh, "--to-step", "features")
    print(f"\nnightly on {cluster_master}: {cluster_s:.0f}s (all steps); local[2]: {local_s:.0f}s (to features)")

    log_text = "\n".join(Path(p).read_text() for p in glob.glob(f"{cluster_wh}/logs/*.log"))
    executors, ranks = _origins(log_text, "executor code"), _origins(log_text, "rank code")
    assert executors and ranks, "the run's log names no executor / Horovod rank code origin"
    for origin in executors + ranks:
        _assert_shipped_code(origin)
    assert len(re.findall(r"training \w+ on 2 rank\(s\)", log_text)) >= 1  # train.num_proc=2 ranks on the executors

    cluster, local = DeltaStore(spark, cluster_wh, "delta-rs"), DeltaStore(spark, local_wh, "delta-rs")
    for table in PREPARED:
        assert cluster.exists(table.name) == local.exists(table.name), table.name
        if not local.exists(table.name):
            continue
        a, b = _comparable(cluster.read(table.name)).cache(), _comparable(local.read(table.name)).cache()
        assert a.count() == b.count(), f"{table.name}: {a.count()} rows on the cluster, {b.count()} locally"
        only_cluster, only_local = a.exceptAll(b), b.exceptAll(a)
        assert only_cluster.count() == 0 and only_local.count() == 0, (
            f"{table.name}: {only_cluster.count()} rows only on the cluster, e.g. {only_cluster.take(2)}; "
            f"{only_local.count()} only locally, e.g. {only_local.take(2)}")
        a.unpersist(), b.unpersist()
