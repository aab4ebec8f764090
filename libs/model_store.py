"""The model store: ``<warehouse>/models/<model>/<run_id>/`` holds ``model.keras``, ``record.json``
and ``checkpoints/``; ``<warehouse>/models/<model>/LATEST`` names the run to serve.

A run is published (LATEST moved to it) only after it was saved and evaluated, so readers never
pick up a half-written run. Paths go through ``tf.io.gfile``, so any filesystem TensorFlow can
write (local, HDFS, GCS, S3 with the plugin) works.
"""
from __future__ import annotations

import json
import logging
from typing import Optional

from libs.conf import join_path
from libs.storage import local_path, to_uri

log = logging.getLogger(__name__)

MODEL_FILE = "model.keras"
RECORD_FILE = "record.json"
LATEST_FILE = "LATEST"


def load_model_at(path: str):
    """Load a saved model file, uncompiled (scoring needs no optimizer)."""
    import tensorflow as tf

    import libs.models  # noqa: F401  (registers the custom layers)

    return tf.keras.models.load_model(path, compile=False)


class ModelStore:
    """Saved models and their JSON records under ``<warehouse_root>/models``."""

    def __init__(self, warehouse_root: str):
        uri = to_uri(warehouse_root)
        self.root = join_path(local_path(uri) or uri, "models")  # tf.io.gfile wants plain local paths

    def run_dir(self, model: str, run_id: str) -> str:
        return join_path(self.root, model, run_id)

    def model_path(self, model: str, run_id: str) -> str:
        """The saved model file of a run, for :func:`load_model_at` (e.g. on executors)."""
        return join_path(self.run_dir(model, run_id), MODEL_FILE)

    def checkpoint_dir(self, model: str, run_id: str) -> str:
        return join_path(self.run_dir(model, run_id), "checkpoints")

    def save(self, model: str, run_id: str, keras_model, record: dict) -> str:
        """Write the Keras model (without optimizer state) and its record; returns the run folder."""
        import tensorflow as tf

        run_dir = self.run_dir(model, run_id)
        tf.io.gfile.makedirs(run_dir)
        keras_model.save(self.model_path(model, run_id))
        self._write_json(join_path(run_dir, RECORD_FILE), {"model": model, "run_id": run_id, **record})
        log.info("saved %s run %s to %s", model, run_id, run_dir)
        return run_dir

    def save_record(self, model: str, run_id: str, record: dict) -> str:
        """Write a run that is only a record (e.g. the fitted blend) and publish it; returns its folder."""
        import tensorflow as tf

        run_dir = self.run_dir(model, run_id)
        tf.io.gfile.makedirs(run_dir)
        self._write_json(join_path(run_dir, RECORD_FILE), {"model": model, "run_id": run_id, **record})
        self.publish(model, run_id)
        return run_dir

    def publish(self, model: str, run_id: str) -> None:
        """Point LATEST of ``model`` at ``run_id``."""
        import tensorflow as tf

        if not tf.io.gfile.exists(join_path(self.run_dir(model, run_id), RECORD_FILE)):
            raise FileNotFoundError(f"no saved run {run_id} of model {model} under {self.root}")
        self._write_text(join_path(self.root, model, LATEST_FILE), run_id)

    def latest_run(self, model: str) -> Optional[str]:
        import tensorflow as tf

        path = join_path(self.root, model, LATEST_FILE)
        if not tf.io.gfile.exists(path):
            return None
        with tf.io.gfile.GFile(path) as fh:
            return fh.read().strip() or None

    def _resolve(self, model: str, run_id: Optional[str]) -> str:
        run_id = run_id or self.latest_run(model)
        if not run_id:
            raise FileNotFoundError(f"model {model} has no published run under {self.root}")
        return run_id

    def load(self, model: str, run_id: Optional[str] = None):
        """The saved Keras model of ``run_id`` (default: the latest published), uncompiled."""
        return load_model_at(self.model_path(model, self._resolve(model, run_id)))

    def record(self, model: str, run_id: Optional[str] = None) -> dict:
        import tensorflow as tf

        path = join_path(self.run_dir(model, self._resolve(model, run_id)), RECORD_FILE)
        with tf.io.gfile.GFile(path) as fh:
            return json.load(fh)

    def update_metrics(self, model: str, run_id: str, metrics: dict) -> dict:
        """Merge ``metrics`` ({protocol: {metric: value}}) into the record's ``metrics``."""
        record = self.record(model, run_id)
        return self.update_record(model, run_id, {"metrics": {**record.get("metrics", {}), **metrics}})

    def update_record(self, model: str, run_id: str, fields: dict) -> dict:
        """Set top-level ``fields`` of a run's record and return the updated record."""
        record = {**self.record(model, run_id), **fields}
        self._write_json(join_path(self.run_dir(model, run_id), RECORD_FILE), record)
        return record

    @staticmethod
    def _write_json(path: str, data: dict) -> None:
        ModelStore._write_text(path, json.dumps(data, indent=2, sort_keys=True, default=str))

    @staticmethod
    def _write_text(path: str, text: str) -> None:
        """Write to a temporary name, then rename, so readers never see a partial file."""
        import tensorflow as tf

        tmp = path + ".tmp"
        with tf.io.gfile.GFile(tmp, "w") as fh:
            fh.write(text)
        tf.io.gfile.rename(tmp, path, overwrite=True)
