"""Downstream readers read the latest recommendations that our storage layer wrote, with the
README's own examples (examples/readers/), and get the table's contract: its columns and types,
K rows per user, ranks 1..K.

deltalake, polars and duckdb run in .venv-readers (``make readers-env``), with current releases
that this project's pins (pyarrow 10 for Petastorm) would not allow; the Spark example without
Delta jars runs in the test session's Spark.
"""
import datetime as dt
import json
import runpy
import subprocess
from pathlib import Path

import pytest

from libs import schema as S

ROOT = Path(__file__).resolve().parents[2]
READERS_PY = ROOT / ".venv-readers" / "bin" / "python"
SPARK_EXAMPLE = ROOT / "examples" / "readers" / "spark_without_delta_jars.py"
EXAMPLES = sorted(p for p in (ROOT / "examples" / "readers").glob("*.py") if p != SPARK_EXAMPLE)

pytestmark = [pytest.mark.readers, pytest.mark.spark]
needs_readers_env = pytest.mark.skipif(
    not READERS_PY.exists(), reason=f"{READERS_PY} is missing: run `make readers-env` "
    "(deltalake, polars, duckdb from PyPI) to test the README's reader examples")

K = 3
USERS = ["u1", "u2", "u3"]
# Arrow types each reader may hand back for a Spark type of the contract
ARROW = {"string": {"string", "large_string", "string_view"}, "int": {"int32"}, "double": {"double"},
         "date": {"date32[day]"}}


@pytest.fixture(scope="module")
def warehouse_with_two_nights(spark, tmp_path_factory):
    """``warehouse/recommendations`` with the nights 2024-01-14 and 2024-01-15, written like the
    recommend job writes it (one partition replaced per night); the first night by a version
    before the nullable ``reason`` column (its files lack it), the second with it."""
    from pyspark.sql import types as T

    from libs.storage import DeltaStore

    root = tmp_path_factory.mktemp("readers")
    store = DeltaStore(spark, str(root / "warehouse"), backend="delta-rs", run_id="readers-test")
    old_schema = T.StructType([f for f in S.RECOMMENDATIONS.schema.fields if f.name != S.REASON])
    for night, first_item, schema in ((dt.date(2024, 1, 14), 1, old_schema),
                                      (dt.date(2024, 1, 15), 10, S.RECOMMENDATIONS.schema)):
        rows = [(user, rank, f"i{first_item + rank}", 1.0 / rank, "ranked", "deep_cf=r1", night)
                + ((f"{S.REASON_BECAUSE_YOU_WATCHED}i{rank}",) if schema is S.RECOMMENDATIONS.schema else ())
                for user in USERS for rank in range(1, K + 1)]
        store.write(spark.createDataFrame(rows, schema), S.RECOMMENDATIONS.name,
                    partition_by=list(S.RECOMMENDATIONS.partition_by), replace_where={S.RUN_DATE: [str(night)]})
    return root


@needs_readers_env
@pytest.mark.parametrize("example", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_reader_example_reads_the_latest_night_with_the_contract(example, warehouse_with_two_nights):
    done = subprocess.run([str(READERS_PY), str(ROOT / "tests" / "readers" / "harness.py"), str(example)],
                          cwd=warehouse_with_two_nights, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    latest = json.loads(done.stdout)

    assert latest["columns"] == S.RECOMMENDATIONS.columns
    for field in S.RECOMMENDATIONS.schema.fields:
        assert latest["types"][field.name] in ARROW[field.dataType.simpleString()], field.name
    rows = latest["rows"]
    assert {r["run_date"] for r in rows} == {"2024-01-15"}
    for user in USERS:
        mine = sorted((r["rank"], r["item_id"], r["reason"]) for r in rows if r["user_id"] == user)
        assert mine == [(rank, f"i{10 + rank}", f"because_you_watched:i{rank}") for rank in (1, 2, 3)], user
    assert len(rows) == K * len(USERS)


def test_spark_without_delta_jars_reads_the_latest_night_with_the_contract(spark, warehouse_with_two_nights,
                                                                             monkeypatch):
    monkeypatch.chdir(warehouse_with_two_nights)
    latest = runpy.run_path(str(SPARK_EXAMPLE), init_globals={"spark": spark})["latest"]
    assert latest.columns == S.RECOMMENDATIONS.columns
    assert [f.dataType for f in latest.schema.fields] == [f.dataType for f in S.RECOMMENDATIONS.schema.fields]
    rows = sorted((r[S.USER_ID], r[S.RANK], r[S.ITEM_ID], str(r[S.RUN_DATE]), r[S.REASON]) for r in latest.collect())
    assert rows == [(user, rank, f"i{10 + rank}", "2024-01-15", f"because_you_watched:i{rank}")
                    for user in USERS for rank in range(1, K + 1)]


@pytest.mark.parametrize("example", EXAMPLES + [SPARK_EXAMPLE], ids=lambda p: p.stem)
def test_the_readme_quotes_the_example_verbatim(example):
    assert f"```python\n{example.read_text()}```" in (ROOT / "README.md").read_text()
