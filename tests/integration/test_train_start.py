"""More Horovod ranks than Spark task slots fails the train step in bounded time, never a hang."""
import threading
import time

import pytest

from libs.conf import ModelConf
from libs.training import TrainingStartError, TrainTask, run_training, task_slots

pytestmark = [pytest.mark.spark, pytest.mark.horovod]


def _task(warehouse):
    return TrainTask(model="deep_cf", run_id="r", run_date="2024-01-15", specs=None, conf=ModelConf(),
                     files=[], train_rows=0, warehouse=warehouse)


def test_more_ranks_than_task_slots_fails_at_once_with_what_to_change(spark, warehouse):
    assert task_slots(spark) == 2  # the test session is local[2]
    start = time.perf_counter()
    with pytest.raises(TrainingStartError, match=r"train.num_proc=3 .* has 2 task slot\(s\): set --set "
                                                 r"train.num_proc=2 or give Spark more cores"):
        run_training(_task(warehouse), num_proc=3)
    assert time.perf_counter() - start < 5


def test_ranks_that_cannot_start_fail_after_the_start_timeout(spark, warehouse):
    """Both slots are busy with another job, so the two ranks cannot start: Horovod's start timeout
    (train.start_timeout_s) ends the wait with a clear error instead of its 600 s default."""
    sc = spark.sparkContext
    sc.setJobGroup("busy", "occupies every task slot")
    busy = threading.Thread(target=lambda: _swallow(lambda: sc.parallelize(range(2), 2)
                                                    .foreach(lambda _: time.sleep(60))))
    busy.start()
    try:
        time.sleep(3)  # the busy tasks hold both slots
        start = time.perf_counter()
        with pytest.raises(TrainingStartError, match=r"did not all start within train.start_timeout_s=8s"):
            run_training(_task(warehouse), num_proc=2, start_timeout_s=8)
        assert time.perf_counter() - start < 30
    finally:
        sc.cancelAllJobs()
        busy.join()


def _swallow(fn):
    try:
        fn()
    except Exception:  # the busy job is cancelled on purpose
        pass
