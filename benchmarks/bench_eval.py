"""Benchmark the train job's evaluation: on the executors (now) against the driver-side gather (before).

    python -m benchmarks.bench_eval --warehouse /tmp/wh [--repeat 2]

On a warehouse that holds the feature tables and published runs (``pipelines.prep`` then
``jobs.train``), prints per model (every published one, and popularity) the seconds of
``jobs.train.evaluate_model`` / ``popularity_metrics`` (executors) and of the driver reference
(:mod:`tests.eval_reference`: every candidate row and its inputs collected, scored with
``pair_scores``), the figures of both and their largest difference, and what reached the driver:
the rows and array bytes the reference collects against one row per protocol. The reference's
collection is timed once (the old job collected once for all models); its per-model seconds load
the model on the driver and score. Every figure is measured in this run.
"""
from __future__ import annotations

import argparse
import time


def _diff(a: dict, b: dict) -> float:
    return max(abs(a[p][m] - b[p][m]) for p in a for m in a[p]) if set(a) == set(b) else float("inf")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--warehouse", required=True)
    parser.add_argument("--repeat", type=int, default=2, help="passes of the distributed evaluation")
    args = parser.parse_args(argv)

    from jobs import train
    from libs.conf import MODEL_NAMES, load_config
    from libs.evaluation_protocols import EvalTables
    from libs.feature_specs import FeatureSpecs
    from libs.model_store import ModelStore
    from libs.runtime import make_context
    from tests.eval_reference import collect_eval_data, model_reference, popularity_reference

    ctx = make_context(load_config(env="local", overrides=[f"storage.warehouse={args.warehouse}"]))
    store = ctx.store
    versions = {t.name: store.version(t.name) for t in train.FEATURE_TABLES}
    specs = FeatureSpecs.from_store(store, ctx.cfg, versions)
    models = ModelStore(store.root)
    runs = {m: models.latest_run(m) for m in MODEL_NAMES if models.latest_run(m)}

    start = time.perf_counter()
    candidates, popularity, seq_test = collect_eval_data(store, versions, specs.n_users, specs.n_items)
    collect_s = time.perf_counter() - start
    collected_bytes = sum(a.nbytes for a in candidates.values()) + sum(a.nbytes for a in seq_test.values())
    print(f"driver reference collects {len(candidates['label']):,} candidate rows + {len(seq_test['label']):,} "
          f"sequence rows, {collected_bytes / 2**20:.1f} MiB of arrays, in {collect_s:.1f}s; the executors' "
          f"evaluation returns 1 row per protocol")

    before, figures_before = {}, {}
    start = time.perf_counter()
    figures_before["popularity"] = popularity_reference(candidates, popularity, seq_test)
    before["popularity"] = time.perf_counter() - start
    for name, run in runs.items():
        start = time.perf_counter()
        figures_before[name] = model_reference(name, models.load(name, run), candidates, seq_test)
        before[name] = time.perf_counter() - start

    tables = EvalTables.read(store, versions)
    after = {name: [] for name in ["popularity", *runs]}
    figures_after = {}
    for _ in range(args.repeat):
        start = time.perf_counter()
        figures_after["popularity"] = train.popularity_metrics(ctx, tables)
        after["popularity"].append(time.perf_counter() - start)
        for name, run in runs.items():
            start = time.perf_counter()
            figures_after[name] = train.evaluate_model(ctx, name, models.model_path(name, run), tables).metrics
            after[name].append(time.perf_counter() - start)

    print(f"{'model':<11} {'driver s':>9} {'executors s (passes)':>22}  max |diff|  figures (executors)")
    for name in after:
        passes = " / ".join(f"{s:.1f}" for s in after[name])
        shown = ", ".join(f"{p}/{m}={v:.6f}" for p, f in figures_after[name].items() for m, v in f.items())
        print(f"{name:<11} {before[name]:>9.1f} {passes:>22}  {_diff(figures_before[name], figures_after[name]):.1e}"
              f"     {shown}")
    print(f"driver reference: + {collect_s:.1f}s collection, once for all models")


if __name__ == "__main__":
    main()
