"""Collect with Spark what the evaluation report shows, render it (:mod:`libs.report`), write it."""
from __future__ import annotations

import datetime as dt
import logging
import os
from typing import Optional

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from libs import schema as S
from libs.report import render_html, report_path

log = logging.getLogger(__name__)

NIGHTS = 30  # the trend covers the metrics of this many latest run dates


def metrics_history(store, run_date: dt.date, nights: int = NIGHTS):
    """pandas rows of the ``metrics`` table for the ``nights`` latest run dates up to ``run_date``."""
    metrics = store.read(S.METRICS.name).where(F.col(S.RUN_DATE) <= F.lit(run_date))
    dates = [r[0] for r in metrics.select(S.RUN_DATE).distinct().orderBy(F.desc(S.RUN_DATE)).limit(nights).collect()]
    return metrics.where(F.col(S.RUN_DATE).isin(dates)).toPandas()


def item_exposure(store, recs: DataFrame, k: int):
    """pandas (item_idx, popularity, recommended): every catalog item's training popularity and
    the number of users with it in their top ``k`` of ``recs`` (user_idx, rank, item_idx)."""
    counts = recs.where(F.col(S.RANK) <= k).groupBy(S.ITEM_IDX).agg(F.count("*").alias("recommended"))
    return (store.read(S.ITEM_FEATURES.name).select(S.ITEM_IDX, S.POPULARITY)
            .join(counts, S.ITEM_IDX, "left").fillna(0, ["recommended"]).toPandas())


def reason_counts(store, run_date: dt.date):
    """pandas (kind, rows): the run date's recommendation rows per reason kind (because_you_watched,
    popular_recently, none for null; a table written before the column existed: all none)."""
    recs = store.read(S.RECOMMENDATIONS.name).where(F.col(S.RUN_DATE) == F.lit(run_date))
    reason = F.col(S.REASON) if S.REASON in recs.columns else F.lit(None).cast("string")
    kind = (F.when(reason.isNull(), F.lit("none"))
            .when(reason.startswith(S.REASON_BECAUSE_YOU_WATCHED), F.lit(S.REASON_BECAUSE_YOU_WATCHED.rstrip(":")))
            .otherwise(reason))
    return recs.groupBy(kind.alias("kind")).agg(F.count("*").alias("rows")).toPandas()


def publish_report(store, warehouse: str, run_date: dt.date, recs: DataFrame, k: int) -> Optional[str]:
    """Write ``<warehouse>/reports/evaluation-<date>.html`` from the ``metrics`` table (after the
    night's rows are written) and the night's recommendations; return its path (None for a
    warehouse that is not local)."""
    path = report_path(warehouse, str(run_date))
    if path is None:
        log.warning("warehouse %s is not local: no HTML report written", warehouse)
        return None
    page = render_html(metrics_history(store, run_date), item_exposure(store, recs, k), run_date, k,
                       reason_counts(store, run_date))
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as fh:
        fh.write(page)
    log.info("evaluation report: %s", path)
    return path
