"""Shared fixtures: one local SparkSession per test session, a fresh warehouse per test."""
import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("NIGHTREC_CONF_DIR", str(ROOT / "conf"))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("PYSPARK_PYTHON", sys.executable)


@pytest.fixture(scope="session")
def spark(tmp_path_factory):
    from pyspark.sql import SparkSession

    from libs.log import setup_logging

    setup_logging("test", "-")
    session = (SparkSession.builder.master("local[2]").appName("nightrec-tests")
               .config("spark.sql.shuffle.partitions", "2")
               .config("spark.default.parallelism", "2")
               .config("spark.ui.enabled", "false")
               .config("spark.ui.showConsoleProgress", "false")
               .config("spark.sql.session.timeZone", "UTC")
               .config("spark.sql.parquet.outputTimestampType", "TIMESTAMP_MICROS")
               .config("spark.sql.execution.arrow.pyspark.enabled", "true")
               .config("spark.driver.memory", "4g")
               .config("spark.sql.warehouse.dir", str(tmp_path_factory.mktemp("spark-warehouse")))
               .getOrCreate())
    session.sparkContext.setLogLevel("ERROR")
    yield session
    session.stop()


@pytest.fixture
def warehouse(tmp_path):
    return str(tmp_path / "warehouse")


@pytest.fixture
def store(spark, warehouse):
    from libs.storage import DeltaStore

    return DeltaStore(spark, warehouse, backend="delta-rs", run_id="test-run")


def make_config(warehouse, **overrides):
    """A validated Config for tests: local env, ml-100k adapter, warehouse in a temp dir."""
    from libs.conf import load_config

    sets = [f"storage.warehouse={warehouse}", "run.date=2024-01-15", "run.run_id=test-run"]
    sets += [f"{k}={v}" for k, v in overrides.items()]
    return load_config(env="local", overrides=sets)
