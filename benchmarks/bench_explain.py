"""Cost of the reason column: the recommend job's scoring with and without explanations.

    python -m benchmarks.bench_explain [--dataset ml-100k] [--repeats 2]

Prepares features and trains the models into ``.bench/<dataset>`` when missing (as
``benchmarks.bench_recommend``), then runs the recommend job with fixed blend weights (every model
runs, so DIEN takes part and can explain) under ``recommend.explain_with`` = ``[]`` (no reasons),
``[dien]`` and ``[sasrec]``, in rounds after one warm-up run of each, and prints per setting the median
``score users`` seconds (driver wall time of scoring every user) and the executor seconds of the
explain step.
"""
from __future__ import annotations

import argparse
import statistics

from benchmarks.bench_recommend import bench_config, timed_recommend
from jobs import train
from libs import schema as S
from libs.model_store import ModelStore
from libs.runtime import make_context
from pipelines.prep import run_prep

WEIGHTS = "recommend.weights={sasrec: 0.4, deep_cf: 0.2, dien: 0.2, content: 0.2}"
SETTINGS = {"no reasons": "[]", "dien": "[dien]", "sasrec": "[sasrec]"}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dataset", default="ml-100k")
    parser.add_argument("--epochs", type=int, default=1, help="training epochs when models are missing")
    parser.add_argument("--warehouse", default=None)
    parser.add_argument("--repeats", type=int, default=2, help="timed rounds of the three settings")
    args = parser.parse_args(argv)
    args.warehouse = args.warehouse or f".bench/{args.dataset}"
    cfg = bench_config(args)
    ctx = make_context(cfg)
    if not ctx.store.exists(S.EVAL_CANDIDATES.name):
        run_prep(ctx)
    if not all(ModelStore(cfg.storage.warehouse).latest_run(m) for m in cfg.train.models):
        train.run(ctx)

    def run(setting):
        return timed_recommend(bench_config(args, "recommend.blend_users=0", WEIGHTS,
                                            f"recommend.explain_with={SETTINGS[setting]}"))

    for setting in SETTINGS:  # warm-up: JVM, Python workers, each explainer's XLA compilation (once per worker)
        run(setting)
    seconds = {s: [] for s in SETTINGS}
    explain = {s: [] for s in SETTINGS}
    for _ in range(args.repeats):
        for setting in SETTINGS:
            _, profile, _ = run(setting)
            seconds[setting].append(profile.wall_seconds["score users"])
            steps = profile.phase_executor_seconds.get("score users", {})
            explain[setting].append(sum(v for k, v in steps.items() if k.startswith("explain ")))
    users = ctx.store.read(S.VOCAB_USERS.name).count()
    print(f"\n== reasons: recommend 'score users' on {args.dataset} ({users:,} users), median of {args.repeats} ==")
    for setting in SETTINGS:
        print(f"  {setting:12} {statistics.median(seconds[setting]):6.1f}s   explain step (executors) "
              f"{statistics.median(explain[setting]):5.2f}s   runs: {', '.join(f'{s:.1f}' for s in seconds[setting])}")


if __name__ == "__main__":
    main()
