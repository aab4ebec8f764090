"""The Airflow DAG (workflows/) as Airflow itself loads it: no import errors, one task per
pipeline step in the pipeline's order, each a spark-submit.sh call for the logical date.

Airflow lives in its own environment (``make airflow-env``: .venv-airflow); the DagBag runs there
in a subprocess. ``make airflow-dags-test`` runs the whole DAG for one date.
"""
import json
import os
import subprocess
from pathlib import Path

import pytest

from pipelines.nightly import STEPS

ROOT = Path(__file__).resolve().parents[2]
AIRFLOW_PY = ROOT / ".venv-airflow" / "bin" / "python"

pytestmark = [
    pytest.mark.airflow,
    pytest.mark.skipif(not AIRFLOW_PY.exists(), reason=f"{AIRFLOW_PY} is missing: run `make airflow-env` "
                       "(Apache Airflow from PyPI) to load workflows/ with Airflow's DagBag"),
]


@pytest.fixture(scope="module")
def dagbag(tmp_path_factory):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "NIGHTREC_"))}
    env.update(AIRFLOW_HOME=str(tmp_path_factory.mktemp("airflow-home")), AIRFLOW__CORE__LOAD_EXAMPLES="False")
    done = subprocess.run([str(AIRFLOW_PY), str(ROOT / "tests" / "workflows" / "dagbag_check.py"),
                           str(ROOT / "workflows")], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_the_dag_loads_without_import_errors(dagbag):
    assert dagbag["import_errors"] == {}
    assert list(dagbag["dags"]) == ["nightrec_nightly"]


def test_one_task_per_step_in_the_pipelines_order(dagbag):
    dag = dagbag["dags"]["nightrec_nightly"]
    assert dag["order"] == STEPS
    for before, step in zip([None] + STEPS, STEPS):
        assert dag["tasks"][step]["upstream"] == ([before] if before else [])
    assert dag["max_active_runs"] == 1
    assert "0 2 * * *" in dag["timetable"]


def test_each_task_submits_its_step_for_the_logical_date_with_retries_and_a_failure_callback(dagbag):
    tasks = dagbag["dags"]["nightrec_nightly"]["tasks"]
    for step in STEPS:
        assert tasks[step]["command"] == (f"cd {ROOT} && ./spark-submit.sh --master 'local[*]' pipelines.nightly "
                                          f"--run-date {{{{ ds }}}} --from-step {step} --to-step {step}")
        assert tasks[step]["retries"] == 2
        assert tasks[step]["on_failure"]
