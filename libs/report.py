"""The evaluation report: one self-contained HTML page per run, plots embedded as PNG.

Pure functions of pandas frames (no Spark): :func:`render_html` takes

- ``metrics``: rows of the ``metrics`` table (model, model_run, protocol, metric, metric_value,
  run_date) of the last nights, the report's night included. Models, stages and protocols are
  whatever the rows hold; segment figures are the metrics named ``<metric> segment=<name>``
  (:mod:`libs.evaluation_segments`).
- ``items``: one row per catalog item: ``popularity`` (training interactions) and
  ``recommended`` (how many users have it in their top K that night).
- ``reasons`` (optional): the night's recommendation rows per reason kind (``kind``, ``rows``;
  :func:`reason_shares`).
"""
from __future__ import annotations

import base64
import datetime as dt
import html
import io
import os
import re
from typing import Dict, List, Optional, Sequence

import numpy as np
import pandas as pd

from libs import diversity as D, schema as S
from libs.evaluation_segments import MANY, NEW_DAYS, SEGMENT_TAG, SEGMENTS, SOME

MAIN_METRIC = re.compile(r"^(ndcg|recall|hr|auc)(@\d+)?$")
COVERAGE = "catalog_coverage"
COUNTS = {"users"}


def fmt_value(metric: str, value: float) -> str:
    """A figure as people read it: counts as integers (943), coverage as a percentage (41.3%),
    rates with three decimals (0.123)."""
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return ""
    base = metric.split(SEGMENT_TAG)[0]
    if base == COVERAGE:
        return f"{100 * value:.1f}%"
    if base in COUNTS or (float(value).is_integer() and abs(value) > 1):
        return f"{int(round(value)):,}"
    return f"{value:.3f}"


def model_order(models: Sequence[str]) -> List[str]:
    """The recommendations table (final) first, the popularity baseline last, others by name."""
    rank = {S.MODEL_FINAL: 0, S.MODEL_POPULARITY: 2}
    return sorted(set(models), key=lambda m: (rank.get(m, 1), m))


def is_segment(metric: str) -> bool:
    return SEGMENT_TAG in metric


def main_metrics(metrics: Sequence[str]) -> List[str]:
    """The headline figures of a protocol (NDCG, recall, HR, AUC); all figures if none match."""
    names = sorted(set(metrics))
    return [m for m in names if MAIN_METRIC.match(m)] or [m for m in names if m != "users"]


def protocol_tables(night: pd.DataFrame) -> Dict[str, pd.DataFrame]:
    """Per protocol, a models x metrics table of formatted figures (segment figures excluded)."""
    overall = night[~night[S.METRIC].map(is_segment)]
    tables = {}
    for protocol, group in overall.groupby(S.PROTOCOL, sort=True):
        table = group.pivot_table(index=S.MODEL, columns=S.METRIC, values=S.METRIC_VALUE, aggfunc="first")
        table = table.loc[model_order(table.index)]
        tables[protocol] = pd.DataFrame({m: [fmt_value(m, v) for v in table[m]] for m in table.columns},
                                        index=table.index)
    return tables


def segment_table(night: pd.DataFrame) -> pd.DataFrame:
    """Segments x (model, metric) of the full-ranking segment figures, formatted."""
    seg = night[night[S.METRIC].map(is_segment)].copy()
    if seg.empty:
        return pd.DataFrame()
    seg[["base", "segment"]] = seg[S.METRIC].str.split(SEGMENT_TAG, n=1, expand=True)
    table = seg.pivot_table(index="segment", columns=[S.MODEL, "base"], values=S.METRIC_VALUE, aggfunc="first")
    table = table.reindex([s for s in SEGMENTS if s in table.index])
    table = table.reindex(columns=[(m, b) for m in model_order(seg[S.MODEL]) for b in sorted(seg["base"].unique())
                                   if (m, b) in table.columns])
    return pd.DataFrame({col: [fmt_value(col[1], v) for v in table[col]] for col in table.columns}, index=table.index)


def diversity_table(night: pd.DataFrame, k: int) -> pd.DataFrame:
    """Models x (NDCG@k, catalog coverage, the list metrics of :mod:`libs.diversity`) of the
    full-ranking rows, formatted; empty when the night has no list metrics."""
    names = [f"ndcg@{k}", COVERAGE, *D.LIST_METRICS]
    rows = night[(night[S.PROTOCOL] == S.PROTOCOL_FULL_RANKING) & night[S.METRIC].isin(names)]
    if not rows[S.METRIC].isin(D.LIST_METRICS).any():
        return pd.DataFrame()
    table = rows.pivot_table(index=S.MODEL, columns=S.METRIC, values=S.METRIC_VALUE, aggfunc="first")
    table = table.reindex(index=model_order(table.index), columns=[n for n in names if n in table.columns])
    return pd.DataFrame({m: [fmt_value(m, v) for v in table[m]] for m in table.columns}, index=table.index)


def popularity_summary(items: pd.DataFrame) -> Dict[str, float]:
    """Coverage and popularity bias of one night's recommendations over the catalog."""
    recommended = items[items["recommended"] > 0]
    slots = items["recommended"].sum()
    top = items.nlargest(max(1, len(items) // 10), "popularity")
    return {
        "catalog items": float(len(items)),
        "items recommended": float(len(recommended)),
        COVERAGE: len(recommended) / max(len(items), 1),
        "recommendation slots": float(slots),
        "share of slots on the 10% most popular items": float(top["recommended"].sum() / slots) if slots else 0.0,
        "median popularity, catalog": float(items["popularity"].median()),
        "median popularity, recommended (per slot)": float(np.median(np.repeat(
            items["popularity"].to_numpy(), items["recommended"].to_numpy().astype(int)))) if slots else 0.0,
    }


REASON_KINDS = ("because_you_watched", "popular_recently", "none")  # the report's order; "none": a null reason


def reason_shares(reasons: pd.DataFrame) -> pd.DataFrame:
    """Rows and share of the night's recommendation rows per reason kind (README "Explanations"),
    formatted; kinds in :data:`REASON_KINDS` order, any other kind after them."""
    counts = reasons.groupby("kind")["rows"].sum()
    kinds = [k for k in REASON_KINDS if k in counts.index] + sorted(set(counts.index) - set(REASON_KINDS))
    total = counts.sum()
    return pd.DataFrame({"rows": [fmt_value("users", float(counts[k])) for k in kinds],
                         "share": [f"{100 * counts[k] / total:.1f}%" for k in kinds]}, index=kinds)


# --- plots ---------------------------------------------------------------------------------------

def _figure(width: float, height: float):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams.update({"font.size": 10, "axes.titlesize": 11, "axes.spines.top": False,
                         "axes.spines.right": False})
    return plt.figure(figsize=(width, height), dpi=110)


def _legend(fig, handles, labels):
    """One legend for all subplots, in a row above them."""
    fig.legend(handles, labels, loc="upper center", ncol=min(len(labels), 6), frameon=False)
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.35 / fig.get_figheight()))
    return fig


def _png(fig) -> str:
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def _colors(models: Sequence[str]) -> Dict[str, str]:
    palette = ["#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22"]
    colors, i = {}, 0
    for model in models:
        if model == S.MODEL_POPULARITY:
            colors[model] = "#7f7f7f"
        else:
            colors[model], i = palette[i % len(palette)], i + 1
    return colors


def plot_protocols(night: pd.DataFrame) -> Optional[str]:
    """Grouped bars: per protocol, the main metrics of every model; base64 PNG."""
    overall = night[~night[S.METRIC].map(is_segment)]
    protocols = sorted(overall[S.PROTOCOL].unique())
    if not protocols:
        return None
    models = model_order(overall[S.MODEL])
    colors = _colors(models)
    cols = min(3, len(protocols))
    rows = -(-len(protocols) // cols)
    fig = _figure(4.2 * cols, 3.4 * rows + 0.35)
    for i, protocol in enumerate(protocols):
        ax = fig.add_subplot(rows, cols, i + 1)
        group = overall[overall[S.PROTOCOL] == protocol]
        metrics = main_metrics(group[S.METRIC])
        present = [m for m in models if m in set(group[S.MODEL])]
        width = 0.8 / max(len(present), 1)
        for j, model in enumerate(present):
            values = [group[(group[S.MODEL] == model) & (group[S.METRIC] == m)][S.METRIC_VALUE].max()
                      for m in metrics]
            bars = ax.bar(np.arange(len(metrics)) + (j - (len(present) - 1) / 2) * width, values, width,
                          label=model, color=colors[model])
            ax.bar_label(bars, labels=[fmt_value(m, v) for m, v in zip(metrics, values)], fontsize=8, padding=1)
        ax.set_xticks(np.arange(len(metrics)), metrics)
        ax.set_title(protocol)
        ax.margins(y=0.15)
    import matplotlib.patches as mpatches

    return _png(_legend(fig, [mpatches.Patch(color=colors[m]) for m in models], models))


def plot_trend(history: pd.DataFrame, protocol: str = S.PROTOCOL_FULL_RANKING) -> Optional[str]:
    """Lines over run dates of ``protocol``'s main metrics, one per model; base64 PNG."""
    rows = history[(history[S.PROTOCOL] == protocol) & ~history[S.METRIC].map(is_segment)]
    metrics = main_metrics(rows[S.METRIC])
    if rows.empty or not metrics:
        return None
    import matplotlib.dates as mdates

    models = model_order(rows[S.MODEL])
    colors = _colors(models)
    fig = _figure(4.6 * len(metrics), 3.6)
    for i, metric in enumerate(metrics):
        ax = fig.add_subplot(1, len(metrics), i + 1)
        for model in models:
            series = (rows[(rows[S.MODEL] == model) & (rows[S.METRIC] == metric)]
                      .groupby(S.RUN_DATE)[S.METRIC_VALUE].max().sort_index())
            if not series.empty:
                ax.plot(pd.to_datetime(series.index), series.to_numpy(), marker="o", label=model, color=colors[model])
        ax.set_title(f"{protocol}: {metric}")
        dates = pd.to_datetime(sorted(rows[S.RUN_DATE].unique()))
        ax.set_xlim(dates[0] - pd.Timedelta(days=1), dates[-1] + pd.Timedelta(days=1))
        ax.xaxis.set_major_locator(mdates.DayLocator() if len(dates) <= 8 else mdates.AutoDateLocator(maxticks=8))
        ax.xaxis.set_major_formatter(mdates.DateFormatter("%Y-%m-%d"))
        ax.tick_params(axis="x", labelrotation=30)
        ax.set_ylim(0, rows[rows[S.METRIC] == metric][S.METRIC_VALUE].max() * 1.15)
    return _png(_legend(fig, *fig.axes[0].get_legend_handles_labels()))


def plot_popularity(items: pd.DataFrame) -> Optional[str]:
    """Histogram over item popularity (log bins): the catalog's items against the night's
    recommendation slots; base64 PNG."""
    if items.empty:
        return None
    popularity = items["popularity"].to_numpy(float)
    edges = np.unique(np.concatenate([[0, 1], np.ceil(np.geomspace(1, max(popularity.max(), 2) + 1, 12))]))
    catalog, _ = np.histogram(popularity, bins=edges)
    slots, _ = np.histogram(popularity, bins=edges, weights=items["recommended"].to_numpy(float))
    fig = _figure(9, 3.4)
    ax = fig.add_subplot(1, 1, 1)
    x = np.arange(len(catalog))
    ax.bar(x - 0.2, 100 * catalog / max(catalog.sum(), 1), 0.4, label="catalog items", color="#7f7f7f")
    ax.bar(x + 0.2, 100 * slots / max(slots.sum(), 1), 0.4, label="recommendation slots", color="#1f77b4")
    ax.set_xticks(x, [f"{lo:.0f}-{hi - 1:.0f}" if hi - lo > 1 else f"{lo:.0f}"   # bins are [lo, hi)
                      for lo, hi in zip(edges[:-1], edges[1:])], rotation=30)
    ax.set_xlabel("item popularity (training interactions)")
    ax.set_ylabel("% of total")
    ax.legend(frameon=False)
    fig.tight_layout()
    return _png(fig)


def plot_segments(night: pd.DataFrame) -> Optional[str]:
    """Bars of each model's main full-ranking metrics by user segment; base64 PNG."""
    seg = night[night[S.METRIC].map(is_segment)].copy()
    if seg.empty:
        return None
    seg[["base", "segment"]] = seg[S.METRIC].str.split(SEGMENT_TAG, n=1, expand=True)
    metrics = [m for m in main_metrics(seg["base"]) if m != "users"]
    segments = [s for s in SEGMENTS if s in set(seg["segment"])]
    models = model_order(seg[S.MODEL])
    colors = _colors(models)
    fig = _figure(4.6 * len(metrics), 3.6)
    width = 0.8 / len(models)
    for i, metric in enumerate(metrics):
        ax = fig.add_subplot(1, len(metrics), i + 1)
        for j, model in enumerate(models):
            values = [seg[(seg[S.MODEL] == model) & (seg["base"] == metric) & (seg["segment"] == s)][S.METRIC_VALUE].max()
                      for s in segments]
            ax.bar(np.arange(len(segments)) + (j - (len(models) - 1) / 2) * width, np.nan_to_num(values), width,
                   label=model, color=colors[model])
        ax.set_xticks(np.arange(len(segments)), segments)
        ax.set_title(f"{metric} by user segment")
    return _png(_legend(fig, *fig.axes[0].get_legend_handles_labels()))


# --- the page ------------------------------------------------------------------------------------

_CSS = """body{font-family:sans-serif;max-width:1100px;margin:2em auto;color:#222}
table{border-collapse:collapse;margin:.5em 0 1.5em}th,td{border:1px solid #ccc;padding:3px 8px}
td{text-align:right}th{background:#f3f3f3}td:first-child{text-align:left}img{max-width:100%}
.note{color:#555;font-size:90%}"""


def _table(frame: pd.DataFrame, index_name: str) -> str:
    if isinstance(frame.columns, pd.MultiIndex):
        head = "".join(f"<th>{html.escape(' '.join(c))}</th>" for c in frame.columns)
    else:
        head = "".join(f"<th>{html.escape(str(c))}</th>" for c in frame.columns)
    body = "".join("<tr><td>" + html.escape(str(idx)) + "</td>" + "".join(f"<td>{html.escape(v)}</td>" for v in row)
                   + "</tr>" for idx, row in zip(frame.index, frame.to_numpy()))
    return f"<table><tr><th>{html.escape(index_name)}</th>{head}</tr>{body}</table>"


def _img(png: Optional[str], alt: str) -> str:
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{png}">' if png else \
        f'<p class="note">No figures for {html.escape(alt)}.</p>'


def render_html(metrics: pd.DataFrame, items: pd.DataFrame, run_date: dt.date, k: int,
                reasons: Optional[pd.DataFrame] = None) -> str:
    """The report page of ``run_date`` (see the module docstring for the frames)."""
    metrics = metrics.assign(**{S.RUN_DATE: pd.to_datetime(metrics[S.RUN_DATE]).dt.date})
    night = metrics[metrics[S.RUN_DATE] == run_date]
    nights = sorted(metrics[S.RUN_DATE].unique())
    final = night[night[S.MODEL] == S.MODEL_FINAL][S.MODEL_RUN].dropna()
    users = night[(night[S.MODEL] == S.MODEL_FINAL) & (night[S.METRIC] == "users")][S.METRIC_VALUE]
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>Evaluation {run_date}</title>"
             f"<style>{_CSS}</style></head><body><h1>Evaluation {run_date}</h1>",
             f"<p>Top {k} recommendations of {fmt_value('users', users.iloc[0]) if len(users) else 'no'} evaluated "
             f"users, each against the user's held-out latest interaction. Models: "
             f"{html.escape(final.iloc[0]) if len(final) else 'n/a'}.</p>",
             "<h2>Every model and stage on every protocol</h2>", _img(plot_protocols(night), "protocols")]
    for protocol, table in protocol_tables(night).items():
        parts += [f"<h3>{html.escape(protocol)}</h3>", _table(table, "model")]
    parts += [f"<h2>Trend over the last {len(nights)} night(s)</h2>", _img(plot_trend(metrics), "the trend")]
    parts += ["<h2>Catalog coverage and popularity bias</h2>", _img(plot_popularity(items), "popularity")]
    summary = popularity_summary(items) if not items.empty else {}
    parts.append(_table(pd.DataFrame({"value": [fmt_value(n, v) for n, v in summary.items()]},
                                     index=list(summary)), "recommendations of the night"))
    lists = diversity_table(night, k)
    parts += [] if lists.empty else [
        "<h3>Diversity of the lists</h3>", _table(lists, "model"),
        "<p class='note'>intra_list_diversity: mean over a list's item pairs of 1 - genre cosine; genre_coverage: "
        "share of the catalog's genres in a user's list (mean over users), _table: in all lists together; "
        "popularity_percentile: mean training-popularity percentile of the recommended items (the catalog's: "
        "0.5). Definitions: libs/diversity.py.</p>"]
    if reasons is not None and not reasons.empty:
        parts += ["<h2>Reasons shown with the recommendations</h2>", _table(reason_shares(reasons), "reason"),
                  "<p class='note'>because_you_watched: the history item the explaining model attended to most; "
                  "popular_recently: fallback rows (users without history); none: ranked rows no model of "
                  "recommend.explain_with could explain.</p>"]
    seg = segment_table(night)
    parts += ["<h2>By user segment</h2>", _img(plot_segments(night), "segments"),
              _table(seg, "segment") if not seg.empty else "",
              f"<p class='note'>Segments by training interactions: few &lt; {SOME} &le; some &lt; {MANY} &le; many; "
              f"new: first interaction within the last {NEW_DAYS} days of the training data, or none.</p>",
              "<p class='note'>full_ranking: every unseen item ranked; recall@K = hit rate with one held-out "
              "item; NDCG@K with ideal DCG 1. Other protocols as recorded by training (README, Evaluation).</p>",
              "</body></html>"]
    return "\n".join(parts)


def report_path(warehouse: str, run_date: str) -> Optional[str]:
    """``<warehouse>/reports/evaluation-<date>.html``; None when the warehouse is not local."""
    from libs.conf import join_path
    from libs.storage import local_path, to_uri

    folder = local_path(join_path(to_uri(warehouse), "reports"))
    return os.path.join(folder, f"evaluation-{run_date}.html") if folder else None
