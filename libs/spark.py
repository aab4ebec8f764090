"""The one place that builds the SparkSession.

Under spark-submit the master, memory and jars come from ``spark-submit.sh`` and ``conf/``; this
module only names the application and applies ``spark.conf`` from the config. Run directly
(``python -m pipelines.nightly``) it falls back to ``spark.master`` from the config.
"""
from __future__ import annotations

import logging
import os
import sys

from pyspark.sql import SparkSession

from libs.conf import Config

log = logging.getLogger(__name__)

# Defaults that make local runs quiet and deterministic; conf/*.yaml can override any of them.
_DEFAULTS = {
    "spark.sql.session.timeZone": "UTC",
    "spark.sql.sources.partitionOverwriteMode": "dynamic",
    "spark.ui.showConsoleProgress": "true",
    "spark.sql.execution.arrow.pyspark.enabled": "true",
    "spark.sql.parquet.outputTimestampType": "TIMESTAMP_MICROS",  # readable by pyarrow/petastorm/delta-rs
}


def under_spark_submit() -> bool:
    return "SPARK_SUBMIT_OPTS" in os.environ or os.environ.get("SPARK_ENV_LOADED") == "1" \
        or "PYSPARK_GATEWAY_PORT" in os.environ


def get_spark(cfg: Config) -> SparkSession:
    """Return the active session or build one from ``cfg.spark``."""
    active = SparkSession.getActiveSession()
    if active is not None:
        return active
    builder = SparkSession.builder.appName(f"{cfg.spark.app_name}-{cfg.run.run_id}")
    if cfg.spark.master and not under_spark_submit():
        builder = builder.master(cfg.spark.master)
        if cfg.spark.master.startswith("local"):
            # Python workers must use this interpreter (the venv with pandas/TensorFlow), not
            # whatever `python3` is first on PATH.
            os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    for key, value in {**_DEFAULTS, **cfg.spark.conf}.items():
        builder = builder.config(key, value)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("WARN")
    log.info("spark %s, master %s, app %s", spark.version, spark.sparkContext.master,
             spark.sparkContext.appName)
    return spark
