#!/usr/bin/env bash
# Run a job or pipeline through spark-submit, locally or on a cluster.
#
#   ./spark-submit.sh [--master MASTER] [--env local|cluster] [--deploy-mode client|cluster] MODULE [ARGS...]
#
#   ./spark-submit.sh --master 'local[*]' pipelines.nightly --run-date 2024-01-15
#   ./spark-submit.sh --master yarn --env cluster pipelines.nightly --run-date 2024-01-15
#   ./spark-submit.sh jobs.ingest --set ingest.max_bad_ratio=0.01
#
# It builds the executor bundle (a wheel of libs/jobs/pipelines, never committed) into dist/,
# ships it with --py-files (as dist/nightrec-*.zip: PySpark imports only .zip/.egg/.jar py-files)
# and conf/ with --archives, and turns the spark.conf entries of
# conf/base.yaml + conf/<env>.yaml into --conf flags (driver memory must be known before the JVM
# starts, so these cannot be set from inside the job). On a cluster, executors need a Python with
# the pinned stack: set PYSPARK_ENV_ARCHIVE to a venv-pack/conda-pack archive and it is shipped as
# ./environment (see README).
set -euo pipefail
cd "$(dirname "$0")"

MASTER="" ; ENV_NAME="" ; DEPLOY_MODE="client"
while [[ $# -gt 0 ]]; do
  case "$1" in
    --master) MASTER="$2"; shift 2 ;;
    --env) ENV_NAME="$2"; shift 2 ;;
    --deploy-mode) DEPLOY_MODE="$2"; shift 2 ;;
    -h|--help) sed -n '2,16p' "$0"; exit 0 ;;
    *) break ;;
  esac
done
[[ $# -ge 1 ]] || { echo "usage: $0 [--master M] [--env E] MODULE [ARGS...]" >&2; exit 2; }
MODULE="$1"; shift
APP_FILE="${MODULE//.//}.py"
[[ -f "$APP_FILE" ]] || { echo "ERROR: no module $MODULE ($APP_FILE)" >&2; exit 2; }
if [[ -z "$ENV_NAME" ]]; then
  if [[ -z "$MASTER" || "$MASTER" == local* ]]; then ENV_NAME=local; else ENV_NAME=cluster; fi
fi
MASTER="${MASTER:-local[*]}"

make --no-print-directory setup dist >/dev/null
PY="$PWD/.venv/bin/python"
WHEEL="$(ls -t dist/nightrec-*.whl | head -1)"
# PySpark puts only .zip/.egg/.jar py-files on the Python workers' sys.path (a .whl is shipped but
# never importable there): ship the wheel's bytes under a .zip name (pure Python, so zipimport reads it).
BUNDLE="${WHEEL%.whl}.zip"
cp "$WHEEL" "$BUNDLE"
rm -f dist/conf.zip && (cd conf && "$PY" -c "import shutil; shutil.make_archive('../dist/conf', 'zip', '.')")

mapfile -t SPARK_CONF < <("$PY" - "$ENV_NAME" <<'PYEOF'
import sys
from libs.conf import _read_yaml, conf_dir, deep_merge
d = conf_dir()
merged = deep_merge(_read_yaml(d / "base.yaml"), _read_yaml(d / f"{sys.argv[1]}.yaml"))
for key, value in (merged.get("spark", {}).get("conf") or {}).items():
    print(f"{key}={value}")
PYEOF
)
ARCHIVES="dist/conf.zip#conf"
ARGS=(--master "$MASTER" --deploy-mode "$DEPLOY_MODE" --name "nightrec-${MODULE}" --py-files "$BUNDLE")
for kv in "${SPARK_CONF[@]}"; do
  case "$kv" in
    spark.driver.memory=*) ARGS+=(--driver-memory "${kv#*=}") ;;
    *) ARGS+=(--conf "$kv") ;;
  esac
done
if [[ "$MASTER" == local* ]]; then
  export PYSPARK_PYTHON="$PY" PYSPARK_DRIVER_PYTHON="$PY" NIGHTREC_CONF_DIR="$PWD/conf"
else
  # Horovod's ranks are processes of their own, started from a Spark task's environment: they do
  # not get the sys.path PySpark's worker builds from the py-files, so the bundle is on the
  # executors' PYTHONPATH too (relative: each executor's work dir holds it, and ranks start there).
  ARGS+=(--conf "spark.executorEnv.PYTHONPATH=$(basename "$BUNDLE")")
  if [[ -n "${PYSPARK_ENV_ARCHIVE:-}" ]]; then
    ARCHIVES+=",${PYSPARK_ENV_ARCHIVE}#environment"
    # spark.pyspark.python is what executors start their Python workers with (and what
    # libs/training.py starts the Horovod ranks with): the unpacked archive in their work dir.
    ARGS+=(--conf spark.pyspark.python=./environment/bin/python
           --conf spark.executorEnv.PYSPARK_PYTHON=./environment/bin/python
           --conf spark.yarn.appMasterEnv.PYSPARK_PYTHON=./environment/bin/python)
    export PYSPARK_PYTHON=./environment/bin/python
    if [[ "$DEPLOY_MODE" == client ]]; then
      # The driver runs here, where ./environment does not exist: it keeps this checkout's venv.
      ARGS+=(--conf spark.pyspark.driver.python="$PY")
      export PYSPARK_DRIVER_PYTHON="$PY"
    fi
  fi
fi
ARGS+=(--archives "$ARCHIVES" --conf spark.executorEnv.NIGHTREC_CONF_DIR=conf --conf spark.yarn.appMasterEnv.NIGHTREC_CONF_DIR=conf)

exec "$PWD/.venv/bin/spark-submit" "${ARGS[@]}" "$APP_FILE" --env "$ENV_NAME" "$@"
