"""The standalone-cluster settings: task slots of a spark:// master, the Horovod ranks' Python,
and conf/standalone.yaml (train.num_proc = the application's cores)."""
import sys

from libs.conf import load_config
from libs.training import rank_python, task_slots


class _Conf(dict):
    def get(self, key, default=None):
        return super().get(key, default)


class _Spark:
    def __init__(self, master, **conf):
        self.sparkContext = type("SC", (), {"master": master, "getConf": lambda _self: _Conf(conf)})()


def test_a_standalone_masters_task_slots_are_its_max_cores_over_task_cpus():
    assert task_slots(_Spark("spark://127.0.0.1:7077", **{"spark.cores.max": "2"})) == 2
    assert task_slots(_Spark("spark://127.0.0.1:7077", **{"spark.cores.max": "4", "spark.task.cpus": "2"})) == 2
    assert task_slots(_Spark("spark://127.0.0.1:7077")) is None  # every core the cluster has: unknown up front


def test_ranks_start_with_the_executors_python_when_one_is_shipped():
    shipped = _Spark("spark://127.0.0.1:7077", **{"spark.pyspark.python": "./environment/bin/python"})
    assert rank_python(shipped) == "./environment/bin/python"
    assert rank_python(_Spark("local[2]")) == sys.executable


def test_standalone_conf_runs_one_rank_per_application_core():
    cfg = load_config(env="standalone", overrides=["run.date=2024-01-15"])
    assert cfg.train.num_proc == int(cfg.spark.conf["spark.cores.max"]) == 2
    assert cfg.spark.conf["spark.executor.cores"] == "1"
    assert cfg.spark.conf["spark.driver.host"] == "127.0.0.1"
    assert cfg.storage.backend == "delta-rs"
