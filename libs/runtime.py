"""What every job's ``main(argv)`` does before its own work: args, config, logging, Spark, store.

A job module defines ``run(ctx: JobContext) -> dict`` (table name -> rows written) and
``main(argv=None)`` that calls :func:`job_main`. Pipelines build one context and call ``run`` of
each job in order inside one Spark application.
"""
from __future__ import annotations

import argparse
import logging
from dataclasses import dataclass, field
from typing import Callable, Dict, Optional, Sequence

from libs.conf import Config, ConfigError, add_common_args, config_from_args
from libs.log import setup_logging


@dataclass
class JobContext:
    spark: "pyspark.sql.SparkSession"  # noqa: F821
    cfg: Config
    store: "libs.storage.DeltaStore"  # noqa: F821
    args: Optional[argparse.Namespace] = None
    model_runs: Dict[str, str] = field(default_factory=dict)  # model -> run pinned for this nightly run

    def model_run(self, name: str) -> Optional[str]:
        """The model store run of ``name`` this nightly run trained (or resumed with), else the
        model's latest published run; None if there is none."""
        if name in self.model_runs:
            return self.model_runs[name]
        from libs.model_store import ModelStore

        return ModelStore(self.store.root).latest_run(name)


def make_context(cfg: Config, args: Optional[argparse.Namespace] = None) -> JobContext:
    from libs.spark import get_spark
    from libs.storage import DeltaStore

    setup_logging(cfg.run.run_id, cfg.run.date)
    spark = get_spark(cfg)
    return JobContext(spark, cfg, DeltaStore.from_config(spark, cfg), args)


def job_main(description: str, run: Callable[[JobContext], Dict[str, int]],
             argv: Optional[Sequence[str]] = None,
             add_args: Optional[Callable[[argparse.ArgumentParser], None]] = None) -> Dict[str, int]:
    parser = add_common_args(argparse.ArgumentParser(description=description))
    if add_args:
        add_args(parser)
    args = parser.parse_args(argv)
    try:
        cfg = config_from_args(args)
    except ConfigError as exc:
        parser.exit(2, f"configuration error: {exc}\n")
    ctx = make_context(cfg, args)
    logging.getLogger(run.__module__).info("%s: run %s, date %s, warehouse %s", description,
                                           cfg.run.run_id, cfg.run.date, ctx.store.root)
    return run(ctx)
