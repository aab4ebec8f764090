"""Apache Airflow DAG of the nightly pipeline: one task per step, each through ``spark-submit.sh``.

Every task is ``./spark-submit.sh --master $NIGHTREC_SPARK_MASTER pipelines.nightly --run-date
{{ ds }} --from-step STEP --to-step STEP``: its own Spark application for the DAG run's logical
date. A step reads the committed tables of the steps before it and replaces its own output for
that date, so a retry, or clearing a task and the ones after it in the UI, redoes exactly that
part of the night (the same resume ``--from-step`` gives on the command line).

Environment of the Airflow workers:
    NIGHTREC_HOME          the checkout (default: the folder above this file)
    NIGHTREC_SPARK_MASTER  spark-submit's master (default ``local[*]``; e.g. ``yarn``)
    NIGHTREC_ARGS          more arguments for every step (e.g. ``--env cluster --set storage.warehouse=s3a://b/wh``)
"""
from __future__ import annotations

import logging
import os
import shlex
from datetime import timedelta
from pathlib import Path

import pendulum
from airflow.providers.standard.operators.bash import BashOperator
from airflow.sdk import DAG

log = logging.getLogger(__name__)

DAG_ID = "nightrec_nightly"
STEPS = ["ingest", "sessions", "features", "train", "recommend", "evaluate"]  # pipelines.nightly.STEPS
HOME = os.environ.get("NIGHTREC_HOME", str(Path(__file__).resolve().parent.parent))
MASTER = os.environ.get("NIGHTREC_SPARK_MASTER", "local[*]")
EXTRA_ARGS = os.environ.get("NIGHTREC_ARGS", "")


def step_command(step: str) -> str:
    """The shell command of one step for the logical date ``{{ ds }}`` (rendered by Airflow)."""
    return (f"cd {shlex.quote(HOME)} && ./spark-submit.sh --master {shlex.quote(MASTER)} pipelines.nightly "
            f"--run-date {{{{ ds }}}} --from-step {step} --to-step {step} {EXTRA_ARGS}").rstrip()


def on_failure(context) -> None:
    """Say which step of which night failed and how to resume it by hand; hook alerting in here."""
    ti = context["task_instance"]
    log.error("nightrec %s: step %s failed after %s tries (%s). Resume with: cd %s && ./spark-submit.sh "
              "--master '%s' pipelines.nightly --run-date %s --from-step %s %s (or clear the task and its "
              "downstream tasks in Airflow)", context["ds"], ti.task_id, ti.try_number, context.get("exception"),
              HOME, MASTER, context["ds"], ti.task_id, EXTRA_ARGS)


with DAG(
    dag_id=DAG_ID,
    description="nightrec: ingest -> sessions -> features -> train -> recommend -> evaluate",
    schedule="0 2 * * *",            # 02:00 UTC; Airflow 3 sets the logical date {{ ds }} to that day
    start_date=pendulum.datetime(2024, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,               # nights share the model store and the vocabularies: one at a time
    default_args={"retries": 2, "retry_delay": timedelta(minutes=10), "on_failure_callback": on_failure},
    tags=["nightrec"],
) as dag:
    previous = None
    for name in STEPS:
        task = BashOperator(task_id=name, bash_command=step_command(name),
                            execution_timeout=timedelta(hours=4))
        if previous is not None:
            previous >> task
        previous = task
