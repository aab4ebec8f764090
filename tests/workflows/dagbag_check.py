"""Load workflows/ with Airflow's own DagBag (in .venv-airflow) and print what it found as JSON.

    AIRFLOW_HOME=/tmp/x .venv-airflow/bin/python tests/workflows/dagbag_check.py workflows
"""
import json
import sys

from airflow.dag_processing.dagbag import DagBag

bag = DagBag(dag_folder=sys.argv[1])
dags = {}
for dag_id, dag in bag.dags.items():
    dags[dag_id] = {
        "timetable": repr(dag.timetable),
        "max_active_runs": dag.max_active_runs,
        "order": [task.task_id for task in dag.topological_sort()],
        "tasks": {task.task_id: {"upstream": sorted(task.upstream_task_ids), "retries": task.retries,
                                 "command": task.bash_command, "on_failure": bool(task.on_failure_callback)}
                  for task in dag.tasks},
    }
print(json.dumps({"import_errors": {str(k): str(v) for k, v in bag.import_errors.items()}, "dags": dags}))
