#!/usr/bin/env bash
# A standalone Spark cluster on this machine: one master and two workers, separate JVMs started
# with the pinned pyspark's own sbin/spark-daemon.sh, all bound to 127.0.0.1.
#
#   ./standalone-cluster.sh up       start master + workers, wait until both workers are ALIVE
#   ./standalone-cluster.sh down     stop them (SIGTERM, then wait; SIGKILL after 30 s)
#   ./standalone-cluster.sh status   the master's view (workers, cores, running apps)
#   ./standalone-cluster.sh env      pack .venv into .cluster/environment.tar.gz (executors' Python)
#
# make cluster-up / cluster-down / cluster-env / cluster-nightly call these (README "Standalone
# cluster on one machine"). Settings (environment variables, defaults in brackets):
#   NIGHTREC_CLUSTER_DIR [.cluster]   pids, logs, worker work dirs, the packed env, the warehouse
#   NIGHTREC_CLUSTER_PORT [7077]      master port; the master UI is NIGHTREC_CLUSTER_UI_PORT [8080],
#                                     workers use the next ports (7078/8081, 7079/8082)
#   NIGHTREC_CLUSTER_WORKER_MEMORY [3g] per worker (its executor gets spark.executor.memory of it)
#   NIGHTREC_CLUSTER_TIMEOUT_S [90]   how long `up` waits for the workers to register
set -euo pipefail
cd "$(dirname "$0")"

DIR="${NIGHTREC_CLUSTER_DIR:-.cluster}"
mkdir -p "$DIR" && DIR="$(cd "$DIR" && pwd)"
PORT="${NIGHTREC_CLUSTER_PORT:-7077}"
UI_PORT="${NIGHTREC_CLUSTER_UI_PORT:-8080}"
WORKERS=2
WORKER_CORES=1
WORKER_MEMORY="${NIGHTREC_CLUSTER_WORKER_MEMORY:-3g}"
TIMEOUT_S="${NIGHTREC_CLUSTER_TIMEOUT_S:-90}"
HOST=127.0.0.1
MASTER_URL="spark://$HOST:$PORT"
PY="$PWD/.venv/bin/python"
MASTER_CLASS=org.apache.spark.deploy.master.Master
WORKER_CLASS=org.apache.spark.deploy.worker.Worker

spark_home() {
  # The pip pyspark package is a Spark distribution (bin/spark-class, sbin/spark-daemon.sh, jars/).
  # Resolved through the .venv symlink, so the daemons never name this checkout.
  "$PY" -c 'import os, pyspark; print(os.path.realpath(os.path.dirname(pyspark.__file__)))'
}

# The daemons (and so the executors they launch) start with a clean environment: no PYTHONPATH
# (it names the source tree), no virtualenv on PATH, so executors can only use what
# spark-submit ships (the wheel, conf.zip and the packed environment).
daemon() {
  local home; home="$(spark_home)"
  env -i HOME="$HOME" USER="${USER:-$(id -un)}" PATH=/usr/local/bin:/usr/bin:/bin \
    ${JAVA_HOME:+JAVA_HOME="$JAVA_HOME"} LANG=C.UTF-8 \
    SPARK_HOME="$home" SPARK_CONF_DIR="$DIR/conf" SPARK_LOCAL_IP="$HOST" SPARK_LOCAL_HOSTNAME="$HOST" \
    SPARK_PID_DIR="$DIR/pids" SPARK_LOG_DIR="$DIR/logs" SPARK_IDENT_STRING=nightrec \
    SPARK_DAEMON_MEMORY=512m TF_CPP_MIN_LOG_LEVEL=1 \
    "$home/sbin/spark-daemon.sh" "$@"
}

pid_file() { echo "$DIR/pids/spark-nightrec-$1-$2.pid"; }

running() {  # class instance
  local f; f="$(pid_file "$1" "$2")"
  [[ -f "$f" ]] && kill -0 "$(cat "$f")" 2>/dev/null
}

master_json() {
  "$PY" - "$HOST" "$UI_PORT" <<'PYEOF'
import json, sys, urllib.request
try:
    with urllib.request.urlopen(f"http://{sys.argv[1]}:{sys.argv[2]}/json/", timeout=3) as r:
        print(json.dumps(json.load(r)))
except Exception:
    sys.exit(1)
PYEOF
}

alive_workers() {
  master_json 2>/dev/null | "$PY" -c 'import json,sys; print(sum(w["state"] == "ALIVE" for w in json.load(sys.stdin)["workers"]))' \
    2>/dev/null || echo 0
}

up() {
  mkdir -p "$DIR/conf" "$DIR/pids" "$DIR/logs" "$DIR/work"
  if running "$MASTER_CLASS" 1; then
    echo "master already running (pid $(cat "$(pid_file "$MASTER_CLASS" 1)"))"
  else
    daemon start "$MASTER_CLASS" 1 --host "$HOST" --port "$PORT" --webui-port "$UI_PORT" >/dev/null
  fi
  for i in $(seq 1 "$WORKERS"); do
    if running "$WORKER_CLASS" "$i"; then continue; fi
    mkdir -p "$DIR/work/worker-$i"
    daemon start "$WORKER_CLASS" "$i" --host "$HOST" --port $((PORT + i)) --webui-port $((UI_PORT + i)) \
      --cores "$WORKER_CORES" --memory "$WORKER_MEMORY" --work-dir "$DIR/work/worker-$i" "$MASTER_URL" >/dev/null
  done
  local waited=0
  while [[ "$(alive_workers)" -lt "$WORKERS" ]]; do
    if (( waited >= TIMEOUT_S )); then
      echo "ERROR: $WORKERS workers did not register with $MASTER_URL within ${TIMEOUT_S}s" \
           "(NIGHTREC_CLUSTER_TIMEOUT_S); ALIVE: $(alive_workers). Logs: $DIR/logs" >&2
      tail -n 5 "$DIR"/logs/*.out >&2 || true
      exit 1
    fi
    sleep 2; waited=$((waited + 2))
  done
  echo "standalone cluster up: $MASTER_URL ($WORKERS workers x $WORKER_CORES core, $WORKER_MEMORY;" \
       "UI http://$HOST:$UI_PORT; logs $DIR/logs)"
}

down() {
  local stopped=0
  for i in $(seq "$WORKERS" -1 1) master; do
    local cls=$WORKER_CLASS inst=$i
    [[ "$i" == master ]] && cls=$MASTER_CLASS inst=1
    local f; f="$(pid_file "$cls" "$inst")"
    [[ -f "$f" ]] || continue
    local pid; pid="$(cat "$f")"
    if kill -0 "$pid" 2>/dev/null; then
      daemon stop "$cls" "$inst" >/dev/null || true
      for _ in $(seq 1 30); do kill -0 "$pid" 2>/dev/null || break; sleep 1; done
      if kill -0 "$pid" 2>/dev/null; then
        echo "WARNING: $cls $inst (pid $pid) ignored SIGTERM for 30 s; killing it" >&2
        kill -9 "$pid" 2>/dev/null || true
      fi
      stopped=$((stopped + 1))
    fi
    rm -f "$f"
  done
  echo "standalone cluster down ($stopped daemon(s) stopped)"
}

status() {
  if ! master_json >/dev/null 2>&1; then echo "no master answers on http://$HOST:$UI_PORT"; exit 1; fi
  master_json | "$PY" -c "$(cat <<'PYEOF'
import json, sys
m = json.load(sys.stdin)
print(f"{m['url']}: {m['status']}, {m['aliveworkers']} worker(s) alive, cores {m['coresused']}/{m['cores']} used")
for w in m["workers"]:
    print(f"  {w['id']} {w['state']} cores {w['coresused']}/{w['cores']} memory {w['memoryused']}/{w['memory']} MB")
for a in m["activeapps"]:
    print(f"  app {a['id']} {a['name']} {a['state']} cores {a['cores']}")
PYEOF
)"
}

pack_env() {
  # venv-pack refuses a venv with editable installs; ours has one (`pip install -e .`, pointing at
  # the source tree), which is exactly what executors must not see: it is left out of the archive
  # (easy-install.pth and nightrec.egg-link) and the refusal is skipped for it alone.
  local out="$DIR/environment.tar.gz" packer="$PWD/.venv-pack/bin/python"
  if [[ ! -x "$packer" ]]; then
    python3.11 -m venv .venv-pack
    .venv-pack/bin/python -m pip install --quiet -r requirements-cluster.txt
  fi
  local stamp="$DIR/environment.stamp" want
  want="$(ls .venv/.installed-* 2>/dev/null | xargs -n1 basename)"
  if [[ -f "$out" && -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then
    echo "packed environment up to date: $out"; return
  fi
  "$packer" - "$(readlink -f .venv)" "$out" <<'PYEOF'
import os, sys, venv_pack.core as core

prefix, out = sys.argv[1:]
site = "lib/python3.11/site-packages"
editable = {os.path.join(site, "easy-install.pth"), os.path.join(site, "nightrec.egg-link")}
checked = core.check_no_editable_packages
core.check_no_editable_packages = lambda context: None  # checked below, without our own editable install
env = core.Env(prefix)
for pattern in [*editable, f"{site}/__editable__*nightrec*", f"{site}/cmake/*", f"{site}/recbole*",
                f"{site}/pyspark/jars/*", ".installed-*"]:
    env = env.exclude(pattern)
left = [f.target for f in env.files if f.target.endswith(".pth")]
for target in left:
    with open(os.path.join(prefix, target)) as fh:
        outside = [l.strip() for l in fh if l.strip() and not l.startswith(("#", "import"))
                   and not os.path.normpath(os.path.join(prefix, os.path.dirname(target), l.strip())).startswith(prefix)]
    if outside:
        sys.exit(f"{target} points outside the venv ({outside}): an editable install executors would import")
env.pack(output=out, compress_level=1, force=True)
print(f"packed {len(env.files)} files of {prefix} into {out}")
PYEOF
  echo "$want" > "$stamp"
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  status) status ;;
  env) pack_env ;;
  *) sed -n '2,17p' "$0"; exit 2 ;;
esac
