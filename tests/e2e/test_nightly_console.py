"""What a person running the nightly pipeline from a shell sees: a short console, the rest in
the run's log file. Runs ``python -m pipelines.nightly`` as a subprocess, so the JVM, its log4j2
configuration and Horovod's rank output are set up as in production."""
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from pipelines.nightly import STEPS

ROOT = Path(__file__).resolve().parents[2]
RUN_DATE = "2024-01-15"


def _nightly(warehouse, *args):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "pipelines.nightly", "--run-date", RUN_DATE,
                           "--set", f"storage.warehouse={warehouse}", *args],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=1800)


def _log_path(console: str, warehouse: Path) -> Path:
    path = Path(re.search(r"(\S+/logs/\S+\.log)", console).group(1))
    assert path.parent == warehouse / "logs" and path.exists()
    return path


@pytest.mark.spark
def test_a_failed_run_prints_the_cause_and_the_log_path(tmp_path):
    warehouse = tmp_path / "warehouse"
    missing = tmp_path / "no-such-log.csv"
    done = _nightly(warehouse, "--set", f"dataset.interactions.path={missing}")  # the first step fails
    assert done.returncode == 1
    console = done.stdout + done.stderr
    assert len(console.splitlines()) <= 8, console
    assert "stopped at step 'ingest'" in done.stderr and str(missing) in done.stderr
    assert "--from-step ingest" in done.stderr                    # how to resume
    assert "Traceback" not in console
    log = _log_path(done.stderr, warehouse).read_text()
    assert "Traceback (most recent call last)" in log and str(missing) in log
    assert "libs.spark: spark 3.5" in log                         # the session started, quietly


@pytest.mark.spark
@pytest.mark.horovod
@pytest.mark.slow
def test_a_successful_run_prints_steps_epochs_and_the_summary_within_60_lines(tmp_path):
    warehouse = tmp_path / "warehouse"
    # the sequence retriever alone, 6 epochs: ~20 s of training on ml-100k, and it passes the gate
    done = _nightly(warehouse, "--set", "train.models=[sasrec]", "--set", "train.sasrec.epochs=6",
                    "--set", "recommend.retrievers={sasrec: 100}")
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    lines = done.stdout.splitlines()
    assert len(lines) <= 60, done.stdout
    for step in STEPS:
        assert sum(line.startswith(f"  {step} ") for line in lines) == 1, step
    epochs = [line for line in lines if re.match(r"\s+sasrec\s+epoch \d/6 \[#{20}\] 100%", line)]
    assert len(epochs) == 6                                       # not a line per tenth of an epoch
    assert f"nightly {RUN_DATE} finished in" in done.stdout
    report = Path(re.search(r"report: (\S+\.html)", done.stdout).group(1))
    assert report == warehouse / "reports" / f"evaluation-{RUN_DATE}.html" and report.exists()
    log = _log_path(done.stdout, warehouse).read_text()
    assert "[0]<stderr>:" in log and "[1]<stderr>:" in log       # both ranks' output, in the file only
    assert "jobs.evaluate: step evaluate: done" in log
