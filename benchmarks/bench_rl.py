"""The offline RL re-ranker (dqn, SQN) against its supervised twin, protocol rl_holdout.

    python -m benchmarks.bench_rl [--dataset ml-1m] [--epochs 3]     (or: make bench-rl ARGS=...)

On the feature tables of a warehouse (prepared under ``.bench/<dataset>`` when missing): holds out
one hash bucket of users from both trainings, trains the DQN and the same architecture with only
its softmax head for the same epochs, and prints, on the held-out users' next ``train.dqn.horizon``
items, hits@10 within those N items and NDCG@10 of the next item, both models re-ranking the same
candidates (:mod:`libs.rl_comparison`).
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Optional

from libs import schema as S
from libs.conf import load_config
from libs.feature_specs import FeatureSpecs
from libs.rl_comparison import SUPERVISED, read_inputs, rl_comparison
from libs.runtime import make_context


def rl_vs_supervised(ctx, epochs: Optional[int] = None, k: int = 10) -> dict:
    """The rl_holdout comparison on ``ctx``'s warehouse (its latest feature tables), printed;
    returns :func:`libs.rl_comparison.rl_comparison`'s result."""
    conf = ctx.cfg.train.dqn
    start = time.perf_counter()
    windows, serving = read_inputs(ctx.store)
    specs = FeatureSpecs.from_store(ctx.store, ctx.cfg)
    result = rl_comparison(specs, conf, windows, serving, k=k, seed=ctx.cfg.train.shuffle_seed, epochs=epochs)
    n = conf.horizon
    print(f"\n== rl_holdout: {result['users']:,} held-out users (1 of {conf.holdout_buckets} buckets), "
          f"{result['train_windows']:,} training windows, {result['epochs']} epoch(s) each, "
          f"candidates = next {n} + {conf.comparison_negatives} never-touched items, "
          f"{time.perf_counter() - start:.0f}s ==")
    print(f"{'':28}{f'hits@{k} in next {n}':>18}{f'ndcg@{k} next item':>20}{'train+score s':>15}")
    for name, label in (("dqn", "dqn (SQN: softmax + double Q + CQL)"), (SUPERVISED, "supervised (softmax head)")):
        figures = result[name]
        print(f"{label:28.28}{figures[f'hits@{k}_next{n}']:>18.4f}{figures[f'ndcg@{k}']:>20.4f}"
              f"{result['seconds'][name]:>15.0f}")
    return result


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dataset", default="ml-100k")
    parser.add_argument("--warehouse", default=None, help="default .bench/<dataset>")
    parser.add_argument("--epochs", type=int, default=None, help="default train.dqn.comparison_epochs")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args(argv)
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    cfg = load_config(env="local", dataset=args.dataset, overrides=[
        f"storage.warehouse={args.warehouse or f'.bench/{args.dataset}'}", "run.date=2003-03-01", *args.overrides])
    ctx = make_context(cfg)
    if not ctx.store.exists(S.USER_SEQUENCES.name):
        from pipelines.prep import run_prep

        run_prep(ctx)
    return rl_vs_supervised(ctx, args.epochs)


if __name__ == "__main__":
    main()
