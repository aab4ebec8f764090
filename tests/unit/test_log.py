"""libs/log.py: where a pipeline run's output goes (log file vs console)."""
import io
import logging
import subprocess
import sys

import pytest

from libs import log as runlog

RANK0_EPOCH = ("[0]<stderr>:2024-01-15 10:00:00,000 INFO [run=r date=d] nightrec.epoch:     deep_cf  epoch 1/3 "
               "[####################] 100%  loss 0.4000, 9,000 examples/s, 2.0s\n")
RANK0_TICK = ("[0]<stderr>:2024-01-15 10:00:00,000 INFO [run=r date=d] nightrec.progress:     deep_cf  epoch 1/3 "
              "[##########..........]  50%  loss 0.5000\n")
RANK1_WARNING = "[1]<stderr>:WARNING:tensorflow:Callback method `on_train_batch_end` is slow\n"


@pytest.fixture
def run_log(tmp_path):
    """A pipeline-style logging set-up writing to a temp log file; the test process's own logging
    set-up is restored afterwards."""
    root = logging.getLogger()
    saved, level = list(root.handlers), root.level
    for handler in saved:
        root.removeHandler(handler)
    path = tmp_path / "logs" / "run.log"
    runlog.setup_logging("run-1", "2024-01-15", log_file=str(path))
    yield path
    for handler in list(root.handlers):
        root.removeHandler(handler)
        handler.close()
    for handler in saved:
        root.addHandler(handler)
    root.setLevel(level)
    runlog._context.log_file = None
    logging.captureWarnings(False)


class _Console(io.StringIO):
    def __init__(self, tty):
        super().__init__()
        self._tty = tty

    def isatty(self):
        return self._tty


def test_rank_output_reassembles_chunks_and_draws_rank0_epochs_only(tmp_path):
    path = tmp_path / "run.log"
    console = _Console(tty=False)
    out = runlog.RankOutput(str(path), console)
    text = RANK1_WARNING + RANK0_TICK + RANK0_EPOCH + "[0]<stderr>:saved deep_cf\n"
    for start in range(0, len(text), 37):      # Horovod copies in chunks that cut lines anywhere
        out.write(text[start:start + 37])
    assert console.getvalue() == ("    deep_cf  epoch 1/3 [####################] 100%  loss 0.4000, "
                                  "9,000 examples/s, 2.0s\n")
    assert path.read_text() == text


def test_rank_output_redraws_the_bar_in_place_on_a_terminal(tmp_path):
    console = _Console(tty=True)
    out = runlog.RankOutput(str(tmp_path / "run.log"), console)
    out.write(RANK0_TICK + RANK0_EPOCH)
    tick, epoch = console.getvalue().split("\x1b[K", 1)
    assert tick == "\r    deep_cf  epoch 1/3 [##########..........]  50%  loss 0.5000"
    assert epoch.startswith("\r    deep_cf  epoch 1/3 [####################] 100%") and epoch.endswith("\x1b[K\n")


def test_a_partial_last_line_is_written_on_flush(tmp_path):
    path = tmp_path / "run.log"
    out = runlog.RankOutput(str(path), _Console(tty=False))
    out.write("[0]<stdout>:Cache cleanup complete.")
    assert not path.exists()
    out.flush()
    assert path.read_text() == "[0]<stdout>:Cache cleanup complete.\n"


def test_pipeline_logging_keeps_only_our_warnings_on_the_console(run_log, capsys):
    logging.getLogger("jobs.ingest").info("ingest: 100 rows")
    logging.getLogger("jobs.ingest").warning("%d%% of rows quarantined", 5)
    logging.getLogger("py4j.clientserver").warning("py4j noise")
    logging.getLogger("horovod").error("horovod noise")
    try:
        raise ValueError("boom")
    except ValueError:
        logging.getLogger("pipelines.nightly").exception("step train failed")
    console = capsys.readouterr().err.splitlines()
    assert console == ["WARNING jobs.ingest: 5% of rows quarantined", "ERROR pipelines.nightly: step train failed"]
    text = run_log.read_text()
    for expected in ("[run=run-1 date=2024-01-15] jobs.ingest: ingest: 100 rows", "py4j noise", "horovod noise",
                     "Traceback (most recent call last)", "ValueError: boom"):
        assert expected in text
    assert runlog.run_log_file() == str(run_log)


def test_a_child_started_inside_child_output_to_log_writes_to_the_log(run_log, capfd):
    with runlog.child_output_to_log():
        subprocess.run([sys.executable, "-c", "import sys; print('jvm out'); print('jvm err', file=sys.stderr)"],
                       check=True)
    print("after")
    captured = capfd.readouterr()
    assert "jvm" not in captured.out + captured.err
    assert "after" in captured.out
    assert run_log.read_text() == "jvm out\njvm err\n"


def test_log_file_is_under_the_warehouse(tmp_path):
    assert runlog.log_file_for(str(tmp_path), "r1") == str(tmp_path / "logs" / "r1.log")
    assert runlog.log_file_for("s3a://b/wh", "r1").endswith("nightrec-logs/r1.log")
