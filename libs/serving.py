"""Serving: each trained model turned, once per Python worker, into compiled inference functions.

The recommend job scores users in blocks of U users with C candidates each. Calling a Keras model
per (user, candidate) pair through ``predict`` repeats the user-side work C times and pays the
Keras data-adapter overhead on every call; instead every model gets:

* ``user_vectors(columns) -> (U, D)`` (retrievers): one compiled call per block;
* ``score_candidates(columns, candidates) -> (U, C)`` (rankers): the model's probability of every
  candidate, user-side work done once per user (see each model's ``candidate_scorer``; the default,
  :func:`pair_candidate_scorer`, runs the whole model on every pair in one compiled call).

Compiled functions have fixed input signatures, so they trace once per worker. Serving compiles
them with XLA (2-3x on CPU: fused element-wise steps, the host's vector units), which compiles once
per input *shape*: inputs are padded to whole blocks (:func:`pad_rows`) and the candidates have a
fixed width. XLA logs a few lines to stderr through absl, which ignores ``TF_CPP_MIN_LOG_LEVEL``
(``Compiled cluster using XLA!``, ``SetPriority unimplemented for this stream``: harmless), so only
executors use it, whose output goes to the run's log; driver-side scoring (training evaluation)
stays plain TensorFlow and keeps the console clean. :class:`Profile` sums, on the executors, the seconds each
serving step takes, through a Spark accumulator the driver reads.

Loaded models are kept per Python worker (:func:`per_worker`, keyed by model path): the recommend job
keeps their serving functions (:func:`served_model`), the train job's evaluation the plain Keras model
(:func:`loaded_model`, the same computation as :func:`libs.models.pair_scores` on a driver).
"""
from __future__ import annotations

import os
import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, Dict, Mapping, Optional, Tuple

import numpy as np

USER_BLOCK = 256     # users per serving call (XLA-compiled rankers pad to a multiple: one shape)
PAIR_BATCH = 16384  # (user, candidate) rows per compiled call of the default pair scorer


def pad_rows(array: np.ndarray, multiple: int) -> np.ndarray:
    """``array`` with zero rows appended up to a multiple of ``multiple`` rows (XLA compiles a
    function once per input shape: whole blocks keep it to one shape per worker)."""
    array = np.asarray(array)
    return np.pad(array, ((0, -len(array) % multiple),) + ((0, 0),) * (array.ndim - 1))


def input_signature(model, names=None) -> Dict[str, "tf.TensorSpec"]:  # noqa: F821
    """{input name: TensorSpec with an open batch dimension} of a Keras model's dict inputs."""
    import tensorflow as tf

    return {name: tf.TensorSpec((None,) + tuple(tensor.shape[1:]), tensor.dtype, name=name)
            for name, tensor in model.input.items() if names is None or name in names}


def pair_candidate_scorer(model, item_content: Mapping[str, np.ndarray]) -> Callable:
    """Default ranker serving: the whole model on every (user, candidate) pair, one XLA-compiled
    call per ``PAIR_BATCH`` pairs (the last batch padded: one shape). User columns repeat per candidate; item content columns are gathered
    by candidate; inputs only a training loss reads are zeros (they do not change the prediction)."""
    import tensorflow as tf

    from libs import schema as S

    signature = input_signature(model)
    predict = tf.function(lambda feed: model(feed, training=False), input_signature=[signature], jit_compile=True)

    def score(columns: Mapping[str, np.ndarray], candidates: np.ndarray) -> np.ndarray:
        n_users, width = candidates.shape
        items = np.maximum(candidates, 0).reshape(-1).astype(np.int32)
        feed = {}
        for name, spec in signature.items():
            dtype = spec.dtype.as_numpy_dtype
            if name == S.ITEM_IDX:
                feed[name] = items
            elif name in columns:
                feed[name] = np.repeat(np.asarray(columns[name], dtype), width, axis=0)
            elif name in item_content:
                feed[name] = np.asarray(item_content[name], dtype)[items]
            else:
                feed[name] = np.zeros((len(items),) + tuple(spec.shape[1:]), dtype)
        out = [predict({n: pad_rows(v[s:s + PAIR_BATCH], PAIR_BATCH) for n, v in feed.items()}).numpy().reshape(-1)
               for s in range(0, len(items), PAIR_BATCH)]
        flat = np.concatenate(out)[:len(items)] if out else np.zeros(0, np.float32)
        return flat.astype(np.float64).reshape(n_users, width)

    return score


@dataclass
class ServedModel:
    """A loaded model's serving functions; ``None`` for an ability the model lacks."""

    name: str
    user_vectors: Optional[Callable] = None      # (columns) -> (U, D) float32
    score_candidates: Optional[Callable] = None  # (columns, candidates (U, C)) -> (U, C) float64
    explain: Optional[Callable] = None           # (columns, items (U, K)) -> (U, K) history item idx, 0 = none


def serve(name: str, keras_model, item_content: Mapping[str, np.ndarray]) -> ServedModel:
    """The serving functions of a loaded model, as its registry entry defines them."""
    from libs import models as registry

    spec = registry.model_def(name)
    scorer = spec.candidate_scorer(keras_model, item_content) if spec.ranks else None
    return ServedModel(name,
                       spec.retrieval.user_encoder(keras_model, jit_compile=True) if spec.retrieval else None,
                       scorer, spec.explainer(keras_model, item_content, scorer) if spec.explainer else None)


_worker_cache: Dict[Tuple[str, str], object] = {}  # (kind, model path) -> what was built, per Python worker


def hold_tensorflow_to_task_cores() -> None:
    """TensorFlow's thread pools set to ``OMP_NUM_THREADS`` (Spark sets it to ``spark.task.cpus`` for
    its Python workers), else every concurrent task runs one thread per core of the machine. Only
    possible before the process's first TensorFlow op; a no-op after it (or outside Spark)."""
    import tensorflow as tf

    threads = int(os.environ.get("OMP_NUM_THREADS", "0"))
    if threads:
        try:
            tf.config.threading.set_intra_op_parallelism_threads(threads)
            tf.config.threading.set_inter_op_parallelism_threads(threads)
        except RuntimeError:  # TensorFlow already ran in this process (not a fresh Spark worker)
            pass


def per_worker(kind: str, path: str, build: Callable[[], object]):
    """``build()``, once per Python worker for ``(kind, path)``: Spark reuses Python workers across
    tasks and stages, so a model is loaded (and compiled) once per worker, not per task or batch.
    Keyed by path: a model store path names one run's saved model, written once."""
    key = (kind, path)
    if key not in _worker_cache:
        if not _worker_cache:
            hold_tensorflow_to_task_cores()
        _worker_cache[key] = build()
    return _worker_cache[key]


def served_model(name: str, path: str, item_content: Mapping[str, np.ndarray],
                 timer: Optional[Callable] = None) -> ServedModel:
    """The serving functions (:func:`serve`) of the saved model at ``path``, once per Python worker;
    ``timer`` (e.g. ``lambda: profile.timed("load models")``) times the load."""
    def build():
        from libs.model_store import load_model_at

        return serve(name, load_model_at(path), item_content)

    if timer is not None and ("serve", path) not in _worker_cache:
        with timer():  # the first load of this worker includes importing TensorFlow
            return per_worker("serve", path, build)
    return per_worker("serve", path, build)


def loaded_model(path: str):
    """The saved Keras model at ``path``, loaded once per Python worker (plain TensorFlow, no XLA)."""
    from libs.model_store import load_model_at

    return per_worker("keras", path, lambda: load_model_at(path))


class _MergeDicts:
    """AccumulatorParam of {key: number} dicts merged by ``combine`` (module level, so executors
    unpickle it by name)."""

    def __init__(self, combine):
        self.combine = combine

    def zero(self, value):
        return {}

    def addInPlace(self, a, b):
        for key, value in b.items():
            a[key] = self.combine(a[key], value) if key in a else value
        return a


def _add(a, b):
    return a + b


class Profile:
    """Where a recommend run's time goes: executor seconds per serving step, and driver wall time
    per job phase.

    Executors time their steps with :meth:`timed` and :meth:`flush` the sums into a Spark
    accumulator after each batch (:attr:`executor_seconds`; they add up across parallel tasks, so
    with 2 cores busy they are about twice the wall time they cover). The driver times its phases
    with :meth:`wall` (:attr:`wall_seconds`).
    """

    def __init__(self, spark_context):
        self._accumulator = spark_context.accumulator({}, _MergeDicts(_add))
        self._peaks = spark_context.accumulator({}, _MergeDicts(max))
        self._local: Dict[str, float] = {}
        self.wall_seconds: Dict[str, float] = {}
        self.phase_executor_seconds: Dict[str, Dict[str, float]] = {}

    def __getstate__(self):  # what executors get: the accumulators
        return {"_accumulator": self._accumulator, "_peaks": self._peaks, "_local": {}, "wall_seconds": {},
                "phase_executor_seconds": {}}

    @contextmanager
    def timed(self, key: str):
        start = time.perf_counter()
        try:
            yield
        finally:
            self._local[key] = self._local.get(key, 0.0) + time.perf_counter() - start

    def flush(self) -> None:
        """Send this worker's sums, and its peak resident memory so far, to the driver."""
        import resource

        if self._local:
            self._accumulator.add(self._local)
            self._local = {}
        self._peaks.add({"python worker peak MiB": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024})

    @contextmanager
    def wall(self, key: str):
        """Time a driver phase, and the executor seconds its Spark actions reported
        (:attr:`phase_executor_seconds`)."""
        start, before = time.perf_counter(), self.executor_seconds
        try:
            yield
        finally:
            self.wall_seconds[key] = self.wall_seconds.get(key, 0.0) + time.perf_counter() - start
            spent = {step: seconds - before.get(step, 0.0) for step, seconds in self.executor_seconds.items()}
            spent = {step: seconds for step, seconds in spent.items() if seconds > 0}
            if spent:
                self.phase_executor_seconds[key] = spent

    @property
    def executor_seconds(self) -> Dict[str, float]:
        return dict(self._accumulator.value)

    @property
    def peaks(self) -> Dict[str, float]:
        return dict(self._peaks.value)

    def summary(self) -> str:
        """One line: ``phase 1.2s (executors: step 3.4s, ...), ...; peak ...``."""
        def fmt(values, unit=""):
            return ", ".join(f"{k} {v:.1f}{unit}" for k, v in values.items())

        phases = [f"{phase} {seconds:.1f}s" + (f" (executors: {fmt(self.phase_executor_seconds[phase], 's')})"
                                                if phase in self.phase_executor_seconds else "")
                  for phase, seconds in self.wall_seconds.items()]
        return f"{', '.join(phases)}; {fmt(self.peaks)}"
