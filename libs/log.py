"""Logging with the run id and run date in every line, and a timer for job steps."""
from __future__ import annotations

import contextlib
import logging
import sys
import time

_FORMAT = "%(asctime)s %(levelname)s [run=%(run_id)s date=%(run_date)s] %(name)s: %(message)s"


class _RunContext(logging.Filter):
    run_id = "-"
    run_date = "-"

    def filter(self, record):
        record.run_id = self.run_id
        record.run_date = self.run_date
        return True


_context = _RunContext()


def _is_py4j_retry(record: logging.LogRecord) -> bool:
    """py4j (java_gateway.GatewayClient.send_command) retries a command on a fresh connection when
    a pooled one was reset, and logs that at INFO on the *root* logger with a full traceback. It
    happens when Horovod's Spark driver threads start; the retry succeeds, so it is noise."""
    return (record.name == "root" and record.levelno == logging.INFO
            and record.getMessage() == "Exception while sending command.")


def setup_logging(run_id: str = "-", run_date: str = "-", level: int = logging.INFO) -> None:
    """Configure the root logger once per process; later calls only update the run context."""
    _context.run_id, _context.run_date = run_id, run_date
    root = logging.getLogger()
    if not any(getattr(h, "_nightrec", False) for h in root.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter(_FORMAT))
        handler.addFilter(_context)
        handler.addFilter(lambda record: not _is_py4j_retry(record))
        handler._nightrec = True
        root.addHandler(handler)
        root.setLevel(level)
        for noisy in ("py4j", "urllib3", "tensorflow", "absl", "petastorm", "h5py"):
            logging.getLogger(noisy).setLevel(logging.WARNING)


class StepResult:
    """Filled in by the body of :func:`step` so the closing log line can report row counts."""

    def __init__(self):
        self.rows = {}

    def add(self, name: str, count: int) -> None:
        self.rows[name] = count


@contextlib.contextmanager
def step(logger: logging.Logger, name: str):
    """Log ``name`` with its row counts and seconds when the block ends (or fails)."""
    result = StepResult()
    start = time.perf_counter()
    logger.info("step %s: started", name)
    try:
        yield result
    except Exception:
        logger.error("step %s: FAILED after %.1fs", name, time.perf_counter() - start)
        raise
    counts = ", ".join(f"{k}={v:,}" for k, v in result.rows.items()) or "no rows counted"
    logger.info("step %s: done in %.1fs (%s)", name, time.perf_counter() - start, counts)
