"""Logging with the run id and run date in every line, the log file of a pipeline run, and a timer
for job steps.

A job run alone, a test and every Horovod rank log everything to stderr. A pipeline run calls
:func:`setup_logging` with a log file: then every record, ours and every library's, goes to that
file, and the console keeps only what a person should read: the lines the pipeline prints itself,
rank 0's training progress (drawn by :class:`RankOutput`) and warnings or errors of our own code.
Output that bypasses Python's logging reaches the same file through :func:`child_output_to_log`
(the JVM's raw stdout/stderr, which also carry Spark's Python workers' output) and
:class:`RankOutput` (what Horovod forwards from its ranks).
"""
from __future__ import annotations

import contextlib
import io
import logging
import os
import sys
import threading
import time
from typing import Optional, Tuple

_FORMAT = "%(asctime)s %(levelname)s [run=%(run_id)s date=%(run_date)s] %(name)s: %(message)s"
# Loggers of this project: only their warnings and errors reach the console of a pipeline run.
_OUR_LOGGERS = ("libs", "jobs", "pipelines", "workflows")
# Rank 0 logs its training progress on these two loggers; RankOutput draws them on the console.
PROGRESS_LOGGER = "nightrec.progress"   # a bar every tenth of an epoch
EPOCH_LOGGER = "nightrec.epoch"         # lines the console keeps: closing epoch lines, a model's summary


class _RunContext(logging.Filter):
    run_id = "-"
    run_date = "-"
    log_file: Optional[str] = None

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


def _ours_and_actionable(record: logging.LogRecord) -> bool:
    return record.levelno >= logging.WARNING and record.name.split(".")[0] in _OUR_LOGGERS


class _CauseOnly(logging.Formatter):
    """The console's format: level, logger and message; tracebacks stay in the log file."""

    def format(self, record):
        return f"{record.levelname} {record.name}: {record.getMessage()}"


class _Stderr(logging.StreamHandler):
    """A handler writing to whatever ``sys.stderr`` is when a record comes (pytest swaps it)."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, _):
        pass


def setup_logging(run_id: str = "-", run_date: str = "-", level: int = logging.INFO,
                  log_file: Optional[str] = None) -> None:
    """Configure the root logger: everything to stderr, or, with ``log_file``, everything to that
    file and only our own warnings and errors to stderr. Later calls without ``log_file`` only
    update the run context; a call with a new ``log_file`` replaces the handlers."""
    _context.run_id, _context.run_date = run_id, run_date
    root = logging.getLogger()
    ours = [h for h in root.handlers if getattr(h, "_nightrec", False)]
    if log_file:
        log_file = os.path.abspath(log_file)
    if ours and (log_file is None or log_file == _context.log_file):
        return
    for handler in ours:
        root.removeHandler(handler)
        handler.close()
    if log_file:
        os.makedirs(os.path.dirname(log_file), exist_ok=True)
        to_file = logging.FileHandler(log_file, mode="a", encoding="utf-8")
        to_file.setFormatter(logging.Formatter(_FORMAT))
        console = _Stderr()
        console.setFormatter(_CauseOnly())
        console.addFilter(_ours_and_actionable)
        handlers = [to_file, console]
        logging.captureWarnings(True)   # Python warnings of libraries: to the file, as py.warnings
        # TensorFlow's C++ INFO lines; read when TensorFlow loads, here and in the processes this
        # one starts (the JVM, its Python workers, Horovod ranks inherit the environment).
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")
    else:
        to_stderr = logging.StreamHandler(sys.stderr)
        to_stderr.setFormatter(logging.Formatter(_FORMAT))
        handlers = [to_stderr]
    for handler in handlers:
        handler.addFilter(_context)
        handler.addFilter(lambda record: not _is_py4j_retry(record))
        handler._nightrec = True
        root.addHandler(handler)
    _context.log_file = log_file
    root.setLevel(level)
    for noisy in ("py4j", "urllib3", "tensorflow", "absl", "petastorm", "h5py"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def run_log_file() -> Optional[str]:
    """The log file of this process's pipeline run, or None when logging goes to stderr."""
    return _context.log_file


def log_file_for(warehouse: str, run_id: str) -> str:
    """``<warehouse>/logs/<run_id>.log``; for a warehouse that is not on a local disk, the same
    name under the temp folder (a log file is written by one process on one machine)."""
    import tempfile

    from libs.conf import join_path
    from libs.storage import local_path, to_uri

    folder = local_path(join_path(to_uri(warehouse), "logs")) or os.path.join(tempfile.gettempdir(), "nightrec-logs")
    return os.path.join(folder, f"{run_id}.log")


@contextlib.contextmanager
def child_output_to_log():
    """Point file descriptors 1 and 2 at the run's log file while the block runs, so a child
    process started inside it (the JVM behind the SparkSession) writes its raw stdout and stderr
    there for its whole life; this process gets its own descriptors back afterwards."""
    if _context.log_file is None:
        yield
        return
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    target = os.open(_context.log_file, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.dup2(target, 1)
        os.dup2(target, 2)
        yield
    finally:
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for fd in (*saved, target):
            os.close(fd)


class RankOutput(io.TextIOBase):
    """One of the two streams given to ``horovod.spark.run(stdout=..., stderr=...)``.

    Horovod copies each rank's output into it in chunks of any size (``shutil.copyfileobj``),
    lines prefixed ``[index]<stderr>:``, from one thread per stream, possibly after ``run``
    returned. Every complete line goes to the run's log file; rank 0's progress lines
    (:data:`PROGRESS_LOGGER`, :data:`EPOCH_LOGGER`) are drawn on ``console``: one line per epoch,
    redrawn in place while the epoch runs when the console is a terminal, only the closing line
    otherwise.
    """

    _lock = threading.Lock()  # the two streams share the log file and the console

    def __init__(self, log_file: str, console=None):
        super().__init__()
        self._log_file = log_file
        self._console = console or sys.stdout
        self._tty = self._console.isatty()
        self._pending = ""

    def write(self, text: str) -> int:
        *lines, self._pending = (self._pending + text).split("\n")
        if lines:
            self._emit(lines)
        return len(text)

    def flush(self) -> None:
        if self._pending:
            lines, self._pending = [self._pending], ""
            self._emit(lines)

    def _emit(self, lines) -> None:
        with self._lock:
            with open(self._log_file, "a", encoding="utf-8") as fh:  # no handle left open for late lines
                fh.writelines(line + "\n" for line in lines)
            for line in lines:
                for logger, final in ((EPOCH_LOGGER, True), (PROGRESS_LOGGER, False)):
                    at = line.find(f" {logger}: ")
                    if at >= 0:
                        self._draw(line[at + len(logger) + 3:].rstrip("\r"), final)
                        break

    def _draw(self, line: str, final: bool) -> None:
        if self._tty:
            self._console.write(f"\r{line}\x1b[K" + ("\n" if final else ""))
        elif final:
            self._console.write(line + "\n")
        self._console.flush()


def rank_outputs() -> Tuple[Optional[RankOutput], Optional[RankOutput]]:
    """(stdout, stderr) :class:`RankOutput` streams for this run's log file, or (None, None)
    without one (Horovod then leaves rank output on the Spark workers' stderr)."""
    if _context.log_file is None:
        return None, None
    return RankOutput(_context.log_file), RankOutput(_context.log_file)


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
