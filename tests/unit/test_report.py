"""libs/report.py on hand-made metrics and item frames (no Spark)."""
import base64
import datetime as dt

import pandas as pd

from libs import report
from libs import schema as S

NIGHT = dt.date(2024, 1, 15)
COLUMNS = [S.MODEL, S.MODEL_RUN, S.PROTOCOL, S.METRIC, S.METRIC_VALUE, S.RUN_DATE]


def _metrics():
    rows = []
    for night, shift in ((dt.date(2024, 1, 14), -0.05), (NIGHT, 0.0)):
        rows += [
            ("final", "deep_cf=r1", "full_ranking", "ndcg@10", 0.25 + shift, night),
            ("final", "deep_cf=r1", "full_ranking", "recall@10", 0.5 + shift, night),
            ("final", "deep_cf=r1", "full_ranking", "catalog_coverage", 0.4131, night),
            ("final", "deep_cf=r1", "full_ranking", "users", 943.0, night),
            ("popularity", None, "full_ranking", "ndcg@10", 0.1, night),
            ("popularity", None, "full_ranking", "recall@10", 0.2, night),
            ("popularity", None, "full_ranking", "users", 943.0, night),
            ("deep_cf", "r1", "ncf", "hr@10", 0.6, night),
            ("deep_cf", "r1", "ncf", "ndcg@10", 0.35, night),
        ]
    rows += [
        ("final", "deep_cf=r1", "full_ranking", "ndcg@10 segment=few", 0.3, NIGHT),
        ("final", "deep_cf=r1", "full_ranking", "users segment=few", 400.0, NIGHT),
        ("final", "deep_cf=r1", "full_ranking", "ndcg@10 segment=many", 0.2, NIGHT),
        ("final", "deep_cf=r1", "full_ranking", "users segment=many", 543.0, NIGHT),
        ("final", "deep_cf=r1", "full_ranking", "users segment=new", 0.0, NIGHT),
    ]
    return pd.DataFrame(rows, columns=COLUMNS)


ITEMS = pd.DataFrame({S.ITEM_IDX: [1, 2, 3, 4], S.POPULARITY: [10, 5, 1, 0], "recommended": [3, 1, 0, 0]})


def test_figures_are_formatted_for_people():
    assert report.fmt_value("users", 943.0) == "943"
    assert report.fmt_value("users segment=few", 12345.0) == "12,345"
    assert report.fmt_value("users", 1.0) == "1"
    assert report.fmt_value("catalog_coverage", 0.4131) == "41.3%"
    assert report.fmt_value("ndcg@10", 0.25) == "0.250"
    assert report.fmt_value("ndcg@10", 1.0) == "1.000"
    assert report.fmt_value("ndcg@10", float("nan")) == ""


def test_models_keep_final_first_and_popularity_last_whatever_they_are():
    assert report.model_order(["popularity", "dien", "als", "final", "dien"]) == ["final", "als", "dien", "popularity"]


def test_protocol_tables_hold_every_model_and_metric_but_segments():
    night = _metrics()
    night = night[night[S.RUN_DATE] == NIGHT]
    tables = report.protocol_tables(night)
    assert list(tables) == ["full_ranking", "ncf"]
    full = tables["full_ranking"]
    assert list(full.index) == ["final", "popularity"]
    assert list(full.columns) == ["catalog_coverage", "ndcg@10", "recall@10", "users"]
    assert list(full.loc["final"]) == ["41.3%", "0.250", "0.500", "943"]
    assert list(full.loc["popularity"]) == ["", "0.100", "0.200", "943"]
    assert list(tables["ncf"].loc["deep_cf"]) == ["0.600", "0.350"]


def test_list_metrics_get_their_own_table_beside_ndcg_and_coverage():
    night = _metrics()
    night = night[night[S.RUN_DATE] == NIGHT]
    assert report.diversity_table(night, 10).empty  # a night without list metrics: no table
    extra = pd.DataFrame([("final", "deep_cf=r1", "full_ranking", "intra_list_diversity", 0.71234, NIGHT),
                          ("final", "deep_cf=r1", "full_ranking", "popularity_percentile", 0.9, NIGHT),
                          ("popularity", None, "full_ranking", "intra_list_diversity", 0.5, NIGHT)], columns=COLUMNS)
    night = pd.concat([night, extra], ignore_index=True)
    table = report.diversity_table(night, 10)
    assert list(table.columns) == ["ndcg@10", "catalog_coverage", "intra_list_diversity", "popularity_percentile"]
    assert list(table.loc["final"]) == ["0.250", "41.3%", "0.712", "0.900"]
    assert list(table.loc["popularity"]) == ["0.100", "", "0.500", ""]
    page = report.render_html(night, ITEMS, NIGHT, 10)
    assert "Diversity of the lists" in page and "<td>0.712</td>" in page


def test_segment_table_orders_segments_and_formats_counts():
    night = _metrics()
    table = report.segment_table(night[night[S.RUN_DATE] == NIGHT])
    assert list(table.index) == ["few", "many", "new"]
    assert list(table.columns) == [("final", "ndcg@10"), ("final", "users")]
    assert list(table[("final", "users")]) == ["400", "543", "0"]
    assert list(table[("final", "ndcg@10")]) == ["0.300", "0.200", ""]


def test_popularity_summary_by_hand():
    summary = report.popularity_summary(ITEMS)
    assert summary["items recommended"] == 2
    assert summary["catalog_coverage"] == 0.5
    assert summary["recommendation slots"] == 4
    assert summary["share of slots on the 10% most popular items"] == 0.75  # item 1: 3 of 4 slots
    assert summary["median popularity, catalog"] == 3.0                     # median of 10, 5, 1, 0
    assert summary["median popularity, recommended (per slot)"] == 10.0     # 10, 10, 10, 5


def test_main_metrics_pick_the_headline_figures():
    assert report.main_metrics(["users", "recall@10", "ndcg@10", "catalog_coverage"]) == ["ndcg@10", "recall@10"]
    assert report.main_metrics(["auc", "users"]) == ["auc"]
    assert report.main_metrics(["logloss", "users"]) == ["logloss"]


def test_html_page_is_self_contained_with_four_plots():
    page = report.render_html(_metrics(), ITEMS, NIGHT, k=10)
    assert "<h1>Evaluation 2024-01-15</h1>" in page
    assert "Top 10 recommendations of 943 evaluated users" in page
    assert "Trend over the last 2 night(s)" in page
    assert "943.0" not in page and "http" not in page
    images = page.split("data:image/png;base64,")[1:]
    assert len(images) == 4
    for image in images:
        assert base64.b64decode(image.split('"')[0])[:8] == b"\x89PNG\r\n\x1a\n"


def test_report_path_is_under_the_warehouse(tmp_path):
    assert report.report_path(str(tmp_path), "2024-01-15") == str(tmp_path / "reports" / "evaluation-2024-01-15.html")
    assert report.report_path("s3a://bucket/wh", "2024-01-15") is None


def test_reason_shares_by_hand_and_on_the_page():
    reasons = pd.DataFrame({"kind": ["popular_recently", "because_you_watched", "none"], "rows": [10, 85, 5]})
    table = report.reason_shares(reasons)
    # 85 + 10 + 5 = 100 rows: 85.0%, 10.0%, 5.0%, in the fixed order of the kinds
    assert list(table.index) == ["because_you_watched", "popular_recently", "none"]
    assert table["rows"].tolist() == ["85", "10", "5"] and table["share"].tolist() == ["85.0%", "10.0%", "5.0%"]
    # 3 of 8 rows: 37.5%; a kind the report does not know comes last
    other = report.reason_shares(pd.DataFrame({"kind": ["later_kind", "none"], "rows": [5, 3]}))
    assert list(other.index) == ["none", "later_kind"] and other["share"].tolist() == ["37.5%", "62.5%"]
    page = report.render_html(_metrics(), ITEMS, NIGHT, k=10, reasons=reasons)
    assert "Reasons shown with the recommendations" in page and "<td>85.0%</td>" in page
    assert "Reasons shown" not in report.render_html(_metrics(), ITEMS, NIGHT, k=10)
