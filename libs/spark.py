"""The one place that builds the SparkSession.

Under spark-submit the master, memory and jars come from ``spark-submit.sh`` and ``conf/``; this
module only names the application and applies ``spark.conf`` from the config. Run directly
(``python -m pipelines.nightly``) it falls back to ``spark.master`` from the config.

When the run logs to a file (:func:`libs.log.setup_logging` with ``log_file``), the JVM logs there
too: ``conf/log4j2.properties`` replaces Spark's default log4j2 configuration (INFO to stderr),
from the JVM's start when this module launches it, or from the session's start under
spark-submit; and the JVM's raw stdout/stderr, which carry Spark's Python workers' output, go to
the same file.
"""
from __future__ import annotations

import logging
import os
import sys

from pyspark.sql import SparkSession

from libs.conf import Config, conf_dir
from libs.log import child_output_to_log, run_log_file

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
    conf = {**_DEFAULTS, **cfg.spark.conf}
    log_file = run_log_file()
    if log_file:
        conf["spark.ui.showConsoleProgress"] = "false"
        if not under_spark_submit():
            conf["spark.driver.extraJavaOptions"] = " ".join(
                filter(None, [conf.get("spark.driver.extraJavaOptions"), *_log4j_options(log_file)]))
    for key, value in conf.items():
        builder = builder.config(key, value)
    with child_output_to_log():
        spark = builder.getOrCreate()
    if log_file and under_spark_submit():
        _reconfigure_log4j(spark, log_file)
    else:
        spark.sparkContext.setLogLevel("WARN")
    log.info("spark %s, master %s, app %s", spark.version, spark.sparkContext.master,
             spark.sparkContext.appName)
    if not spark.sparkContext.master.startswith("local"):
        log.info("executor code: %s", executor_code_origins(spark))
    return spark


def code_origin() -> dict:
    """Where this process runs and imports the pipeline from: ``libs`` (from a shipped wheel:
    ``.../nightrec-*.zip/libs/__init__.py``), the interpreter, the working directory, PYTHONPATH."""
    import libs

    return {"libs": libs.__file__, "python": sys.executable, "cwd": os.getcwd(),
            "pythonpath": os.environ.get("PYTHONPATH", "")}


def executor_code_origins(spark: SparkSession, tasks: int = 0) -> list:
    """:func:`code_origin` of the executors' Python workers (one task per default slot), distinct:
    on a cluster the pipeline must come from what spark-submit ships, never a source tree."""
    n = tasks or spark.sparkContext.defaultParallelism
    rows = spark.sparkContext.parallelize(range(n), n).map(lambda _: code_origin()).collect()
    return [dict(t) for t in sorted({tuple(sorted(r.items())) for r in rows})]


def _log4j_options(log_file: str):
    """JVM options that make log4j2 write to ``log_file`` from the JVM's first line."""
    return [f'"-Dlog4j.configurationFile={conf_dir().resolve() / "log4j2.properties"}"',
            f'"-Dnightrec.log.file={log_file}"']


def _reconfigure_log4j(spark: SparkSession, log_file: str) -> None:
    """Under spark-submit the JVM already runs with its own log4j2 configuration: switch it to
    ours (its start-up lines stay wherever spark-submit's stderr goes)."""
    jvm = spark.sparkContext._jvm
    jvm.java.lang.System.setProperty("nightrec.log.file", log_file)
    location = jvm.java.io.File(str(conf_dir().resolve() / "log4j2.properties")).toURI()
    jvm.org.apache.logging.log4j.core.config.Configurator.reconfigure(location)
