"""The diversity curve: relevance against list diversity for each MMR lambda (``recommend.diversity``).

    python -m benchmarks.bench_diversity --warehouse .bench/ml-1m --dataset ml-1m --run-date 2003-03-01
    (or: make bench-diversity ARGS="--warehouse ... --run-date ...")

On a warehouse with a trained night (feature tables, models in the model store), the serving
users' candidates and blend scores are computed once, on the driver, with the recommend job's own
serving code and the night's blend weights (its ``blend`` record, else fitted again); then for every
knob the final top-K is picked as the job picks it (:func:`libs.diversity.diversified_top_k`) and
evaluated under the evaluate job's full-ranking protocol: recall@K and NDCG@K of each user's
held-out latest interaction (users without history, the job's fallback, count as misses; MovieLens
has none), catalog coverage, and the list metrics of :mod:`libs.diversity`.
"""
from __future__ import annotations

import argparse
import logging
import time
from typing import Dict, List, Optional, Sequence

import numpy as np
from pyspark.sql import functions as F

from libs import diversity as D
from libs import schema as S
from libs.metrics import hit_ndcg
from libs.ranking import BLEND_RECORD, NO_ITEM, blend
from libs.runtime import JobContext

log = logging.getLogger(__name__)

KNOBS = (0, 0.1, 0.2, 0.3, 0.5, 0.7)


def night_blend(ctx: JobContext) -> Optional[dict]:
    """The blend record of ``run.run_id`` when its recommend step saved one (the models it used
    are the latest published ones), else of the run date's latest night in the ``runs`` table,
    pinning ``ctx`` to that night's model runs; None if there is neither."""
    from libs import runs
    from libs.model_store import ModelStore

    models = ModelStore(ctx.cfg.storage.warehouse)

    def record(run_id):
        import tensorflow as tf

        try:
            return models.record(BLEND_RECORD, run_id)
        except (FileNotFoundError, OSError, tf.errors.NotFoundError):  # the model store reads through tf.io.gfile
            return None

    own = record(ctx.cfg.run.run_id)
    if own is not None:
        return own
    night = [r for r in runs.rows(ctx.store) if r[S.RUN_DATE] == ctx.cfg.run_date]
    if not night:
        return None
    latest = max(night, key=lambda r: r[S.STARTED_AT])
    ctx.model_runs = dict(latest[S.MODEL_RUNS] or {})
    return record(latest[S.RUN_ID])


def blended_candidates(ctx: JobContext):
    """(assets, users (U,), candidates (U, C), valid (U, C), blend probabilities (U, C)) of every
    user with a serving query, as the recommend job computes them before its top-K."""
    from jobs import recommend  # its serving assets and candidate scoring: no library holds them yet
    from libs.serving import USER_BLOCK, Profile

    store, profile = ctx.store, Profile(ctx.spark.sparkContext)
    fit = night_blend(ctx)
    assets, _ = recommend.load_assets(ctx, store.read(S.ITEM_FEATURES.name), store.read(S.VOCAB_ITEMS.name).count())
    cf = store.read(S.CF_EXAMPLES.name).where(F.col(S.LABEL) > 0).select(S.USER_IDX, S.ITEM_IDX, S.LABEL, S.SPLIT)
    if fit is None or set(fit["weights"]) != set(assets.blend_models):
        log.info("no blend record of the night for %s: fitting the blend again", assets.blend_models)
        fit = recommend.blend_weights(ctx, assets, store.read(S.USER_SEQUENCES.name), cf, profile)
    assets.weights = np.array([fit["weights"][m] for m in assets.blend_models])
    frame = (recommend.queries(store.read(S.USER_SEQUENCES.name), S.SPLIT_SERVE, recommend.seen_items(cf))
             .toPandas().sort_values(S.USER_IDX, ignore_index=True))  # one row per user
    blocks = []
    for start in range(0, len(frame), USER_BLOCK):
        candidates, valid, features, _ = recommend.candidate_features(frame.iloc[start:start + USER_BLOCK], assets,
                                                                      profile, assets.weights)
        blocks.append((candidates, valid, 1.0 / (1.0 + np.exp(-blend(features, assets.weights)))))
    width = max([b[0].shape[1] for b in blocks] or [0])

    def stacked(i, fill):
        return np.concatenate([np.pad(b[i], ((0, 0), (0, width - b[i].shape[1])), constant_values=fill)
                               for b in blocks]) if blocks else np.zeros((0, width))

    return assets, frame[S.USER_IDX].to_numpy(np.int64), stacked(0, NO_ITEM), stacked(1, False), stacked(2, 0.0)


def full_ranking(lists: np.ndarray, users: np.ndarray, truth: Dict[int, int], k: int, n_items: int) -> Dict[str, float]:
    """recall@K, NDCG@K over the users of ``truth`` (user -> held-out item; a user without a list
    misses) and catalog coverage (distinct listed items / ``n_items``), as jobs/evaluate.py counts."""
    position = {int(u): row for row, u in enumerate(users)}
    ranks = np.full(len(truth), k)
    for n, (user, item) in enumerate(truth.items()):
        if user in position:
            hit = np.nonzero(lists[position[user]] == item)[0]
            ranks[n] = hit[0] if len(hit) else k
    recall, ndcg = hit_ndcg(ranks, k)
    listed = np.unique(lists[lists != NO_ITEM])
    return {f"recall@{k}": float(recall.mean()) if len(truth) else 0.0,
            f"ndcg@{k}": float(ndcg.mean()) if len(truth) else 0.0, "catalog_coverage": len(listed) / max(n_items, 1)}


def diversity_curve(ctx: JobContext, knobs: Sequence[float] = KNOBS) -> List[Dict[str, float]]:
    """Per knob: lambda, recall@K, NDCG@K, catalog coverage, the list metrics and the seconds of the
    re-ranking; printed as a table and returned (candidates are computed once for all knobs)."""
    from jobs.recommend import similarity_sources

    store, k = ctx.store, ctx.cfg.recommend.k
    start = time.perf_counter()
    assets, users, candidates, valid, scores = blended_candidates(ctx)
    candidate_seconds = time.perf_counter() - start
    truth = {int(r[0]): int(r[1]) for r in store.read(S.EVAL_CANDIDATES.name).where(F.col(S.LABEL) > 0)
             .select(S.USER_IDX, S.ITEM_IDX).collect()}  # each user's held-out latest interaction
    n_items = store.read(S.VOCAB_ITEMS.name).count()
    catalog = D.item_catalog(store.read(S.ITEM_FEATURES.name).select(S.ITEM_IDX, S.POPULARITY, S.GENRE_MULTI_HOT)
                             .toPandas())
    sources = similarity_sources(assets)
    curve = []
    for knob in knobs:
        start = time.perf_counter()
        top = D.diversified_top_k(users, candidates, valid, scores, k, float(knob), sources)
        seconds = time.perf_counter() - start
        lists = np.full((len(users), k), NO_ITEM, np.int64)
        row = np.searchsorted(users, top[S.USER_IDX].to_numpy())
        lists[row, top[S.RANK].to_numpy() - 1] = top[S.ITEM_IDX].to_numpy()
        curve.append({"lambda": float(knob), **full_ranking(lists, users, truth, k, n_items),
                      **D.list_metrics(lists, catalog), "rerank_seconds": seconds})
    names = [f"recall@{k}", f"ndcg@{k}", D.INTRA_LIST_DIVERSITY, D.GENRE_COVERAGE, D.GENRE_COVERAGE_TABLE,
             "catalog_coverage", D.POPULARITY_PERCENTILE, "rerank_seconds"]
    print(f"\n== diversity curve: {len(users):,} users with history, {len(truth):,} evaluated, {n_items:,} items, "
          f"K={k}, candidates of {dict(assets.retrievers)} blended by {assets.blend_models} "
          f"({candidate_seconds:.0f}s once) ==")
    print(f"{'lambda':>7}" + "".join(f"{n:>{max(len(n), 8) + 2}}" for n in names))
    for point in curve:
        print(f"{point['lambda']:>7.2f}" + "".join(f"{point[n]:>{max(len(n), 8) + 2}.4f}" for n in names))
    print(f"({D.POPULARITY_PERCENTILE}: mean training-popularity percentile of the recommended items; the "
          "catalog's is 0.5)")
    return curve


def main(argv=None):
    from libs.conf import load_config
    from libs.runtime import make_context

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--warehouse", required=True, help="a warehouse with a trained night")
    parser.add_argument("--dataset", default="ml-1m")
    parser.add_argument("--run-date", required=True, help="the trained night's run date (YYYY-MM-DD)")
    parser.add_argument("--run-id", default="bench-diversity",
                        help="the night's run id when the warehouse has no runs table (e.g. bench_recommend's 'bench')")
    parser.add_argument("--knobs", default=",".join(str(v) for v in KNOBS), help="MMR lambdas, comma-separated")
    args = parser.parse_args(argv)
    cfg = load_config(env="local", dataset=args.dataset, overrides=[
        f"storage.warehouse={args.warehouse}", f"run.date={args.run_date}", f"run.run_id={args.run_id}"])
    return diversity_curve(make_context(cfg), [float(v) for v in args.knobs.split(",") if v])


if __name__ == "__main__":
    main()
