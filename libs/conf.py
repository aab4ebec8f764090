"""Configuration: ``conf/base.yaml`` + ``conf/<env>.yaml`` + ``conf/datasets/<dataset>.yaml`` + ``--set``.

The merged YAML is turned into a typed, validated :class:`Config`. An unknown key or a value of the
wrong type fails at start-up with the dotted key path in the message, not deep inside a job.
"""
from __future__ import annotations

import argparse
import copy
import dataclasses
import datetime as dt
import os
import re
import typing
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional

import yaml

CONF_DIR_ENV = "NIGHTREC_CONF_DIR"
MODEL_NAMES = ("sasrec", "deep_cf", "dien", "content", "multvae", "dqn")  # the keys of libs.models.MODELS (checked there)
RUN_DATE_PATTERN = re.compile(r"\d{4}-\d{2}-\d{2}")


class ConfigError(ValueError):
    """A configuration file or override is invalid."""


# --- the schema of the configuration --------------------------------------------------------

@dataclass
class RunConf:
    date: Optional[str] = None          # YYYY-MM-DD; default: today (UTC)
    run_id: Optional[str] = None        # default: <date>-<random>


@dataclass
class SparkConf:
    app_name: str = "nightrec"
    master: Optional[str] = None        # only used outside spark-submit (which sets the master)
    conf: Dict[str, str] = field(default_factory=dict)


@dataclass
class StorageConf:
    warehouse: str = "warehouse"        # root folder/URI of all Delta tables and the model store
    backend: str = "auto"               # auto | spark | delta-rs
    rows_per_file: int = 2_000_000      # appended events: one file per this many rows (and per month touched)
    compact_min_files: int = 16         # after an append, a partition with this many files or more is compacted
    target_file_mb: int = 128           # size compaction aims at


@dataclass
class SourceConf:
    """One raw input (interactions, items or users) of a dataset adapter."""

    path: Optional[str] = None          # file, folder or glob; "pkg:<package>/<relative path>" for data shipped in a pip package
    format: str = "csv"                 # csv | json | parquet
    delimiter: str = ","
    header: bool = True
    columns: Dict[str, str] = field(default_factory=dict)   # our column -> source column
    constants: Dict[str, str] = field(default_factory=dict)  # our column -> constant value
    timestamp_format: str = "epoch_seconds"  # epoch_seconds | epoch_millis | iso
    list_delimiter: str = "|"           # separator inside multi-valued fields (genres)
    year_from_title: bool = False       # parse a trailing "(1995)" from the title when no year column


@dataclass
class DatasetConf:
    name: str = ""
    root: Optional[str] = None          # folder that relative source paths are under (default: the working dir)
    interactions: SourceConf = field(default_factory=SourceConf)
    items: SourceConf = field(default_factory=SourceConf)
    users: Optional[SourceConf] = None


@dataclass
class IngestConf:
    event_types: List[str] = field(default_factory=lambda: ["rating", "click", "view", "purchase"])
    max_bad_ratio: float = 0.05         # fail (and write nothing) above this share of quarantined rows
    require_item_in_catalog: bool = True
    max_days_before_run_date: int = 18262  # events dated earlier than run date - this are quarantined (50 years)
    max_days_after_run_date: int = 1       # ... or later than run date + this (clock skew across time zones)
    min_value: Optional[float] = None      # declared range of VALUE (e.g. a rating scale); None: unbounded
    max_value: Optional[float] = None
    allow_empty_input: bool = False        # an interactions input with no data rows fails unless true


@dataclass
class SessionsConf:
    gap_minutes: int = 30


@dataclass
class FeaturesConf:
    seed: int = 42
    negatives_per_positive: int = 4
    history_length: int = 20
    sequence_length: int = 50           # L_seq: window of the sequence model (sasrec)
    eval_negatives: int = 99
    title_max_tokens: int = 8
    year_bucket_size: int = 5
    year_origin: int = 1900             # YEAR_BUCKET 1 holds years before origin + bucket size; 0 = unknown
    rows_per_training_file: int = 200_000  # training tables get at least rows / this many files


@dataclass
class ModelConf:
    embedding_dim: int = 32
    hidden_units: List[int] = field(default_factory=lambda: [64, 32])
    learning_rate: float = 0.001
    batch_size: int = 256
    epochs: int = 3
    l2: float = 0.0
    use_aux_loss: bool = True           # DIEN only
    aux_loss_weight: float = 1.0        # DIEN only
    blocks: int = 2                     # sasrec: self-attention blocks
    heads: int = 1                      # sasrec: attention heads
    dropout: float = 0.2                # sasrec
    patience: int = 0                   # retrievers: stop after this many epochs without a better
                                        # validation NDCG@10 (0: run every epoch); the best epoch is kept
    kl_beta: float = 0.2                # multvae: the KL weight's cap (beta; dropout is its input dropout)
    kl_anneal_steps: int = 200_000      # multvae: the KL weight grows by 1 / this per step up to kl_beta


@dataclass
class DQNConf(ModelConf):
    """The offline RL re-ranker (libs/models/dqn.py) and its comparison with the supervised ranker."""

    gamma: float = 0.5                  # discount of the one-step double-Q target
    horizon: int = 5                    # N: reward window (repeat bonus) and the comparison's next-N hits
    repeat_bonus: float = 0.5           # reward + bonus**k when the action recurs k events later (k < N)
    td_weight: float = 1.0              # weight of the TD loss beside the supervised softmax
    cql_weight: float = 1.0             # conservative term: keeps Q low on actions the logs never took
    holdout_buckets: int = 10           # comparison: 1 of this many user hash buckets held out of training
    comparison_epochs: int = 3          # comparison: epochs of both models (the cost cap)
    comparison_negatives: int = 100     # comparison: sampled never-touched items added to the candidates


@dataclass
class TrainConf:
    num_proc: int = 2
    start_timeout_s: int = 120          # every Horovod rank must have started within this (else a clear error)
    models: List[str] = field(default_factory=lambda: ["deep_cf", "dien", "content"])
    shuffle_seed: int = 7
    shuffle_buffer: int = 10000         # rows mixed across row groups per rank (row groups are shuffled too)
    warm_start: bool = False            # start each model from its latest published run's weights
    warm_start_epochs: int = 2          # at most this many epochs when warm-started
    deep_cf: ModelConf = field(default_factory=ModelConf)
    dien: ModelConf = field(default_factory=ModelConf)
    content: ModelConf = field(default_factory=ModelConf)
    sasrec: ModelConf = field(default_factory=ModelConf)
    multvae: ModelConf = field(default_factory=ModelConf)
    dqn: DQNConf = field(default_factory=DQNConf)


@dataclass
class RecommendConf:
    k: int = 10
    # retriever -> the top-N candidates it contributes (their union is ranked); retrievers: sasrec, deep_cf
    retrievers: Dict[str, int] = field(default_factory=lambda: {"sasrec": 100, "deep_cf": 20})
    block_size: int = 2048              # items per retrieval block
    mode: str = "evaluate"              # evaluate (hold out latest) | production (train on everything)
    blend_users: int = 2000             # validation queries the blend weights are fitted on (0: use weights)
    blend_grid_step: float = 0.1        # weights are searched on the simplex in steps of this
    weights: Dict[str, float] = field(default_factory=dict)  # blend weights when blend_users is 0
    fallback_days: int = 30             # popular items of the last N days for users without history
    diversity: float = 0.0              # MMR lambda in [0, 1] (libs.diversity); 0: ranked by the blend alone
    # models whose attention explains the ranked rows (the first that took part in the ranking is used;
    # libs/explanations.py); [] or none of them taking part: REASON is null on ranked rows
    explain_with: List[str] = field(default_factory=lambda: ["dien", "sasrec"])


@dataclass
class GateConf:
    """The quality gate a night must pass to be published (pipelines/nightly.py)."""

    metric: str = "ndcg@10"             # metrics table METRIC compared
    max_drop: float = 0.02              # largest allowed drop below the last published night (absolute)
    production_protocol: str = "validation_full_ranking"  # production mode: final vs popularity on this protocol


@dataclass
class Config:
    env: str = "local"
    dataset_name: str = "ml-100k"
    run: RunConf = field(default_factory=RunConf)
    spark: SparkConf = field(default_factory=SparkConf)
    storage: StorageConf = field(default_factory=StorageConf)
    dataset: DatasetConf = field(default_factory=DatasetConf)
    ingest: IngestConf = field(default_factory=IngestConf)
    sessions: SessionsConf = field(default_factory=SessionsConf)
    features: FeaturesConf = field(default_factory=FeaturesConf)
    train: TrainConf = field(default_factory=TrainConf)
    recommend: RecommendConf = field(default_factory=RecommendConf)
    gate: GateConf = field(default_factory=GateConf)

    @property
    def run_date(self) -> dt.date:
        return dt.date.fromisoformat(self.run.date)

    def table_path(self, table: str) -> str:
        return join_path(self.storage.warehouse, table)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


# --- loading ----------------------------------------------------------------------------

def join_path(root: str, *parts: str) -> str:
    return "/".join([root.rstrip("/")] + [p.strip("/") for p in parts])


def conf_dir() -> Path:
    """The conf/ folder: $NIGHTREC_CONF_DIR, else ./conf, else the one next to the package."""
    if os.environ.get(CONF_DIR_ENV):
        return Path(os.environ[CONF_DIR_ENV])
    for candidate in (Path.cwd() / "conf", Path(__file__).resolve().parent.parent / "conf"):
        if (candidate / "base.yaml").exists():
            return candidate
    raise ConfigError(f"conf/base.yaml not found (looked in ./conf and next to the package; set {CONF_DIR_ENV})")


def _read_yaml(path: Path) -> dict:
    if not path.exists():
        raise ConfigError(f"config file not found: {path}")
    with open(path) as fh:
        data = yaml.safe_load(fh) or {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: top level must be a mapping")
    return data


class _Replacing(dict):
    """A mapping given whole as a ``--set`` value: it replaces the mapping at its key instead of
    merging into it (``--set recommend.retrievers={sasrec: 50}`` means exactly that retriever;
    ``--set recommend.retrievers.sasrec=50`` changes one entry)."""


def deep_merge(base: dict, override: dict) -> dict:
    out = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict) and not isinstance(value, _Replacing):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def parse_override(text: str) -> dict:
    """``a.b.c=value`` -> ``{"a": {"b": {"c": value}}}`` with the value parsed as YAML."""
    if "=" not in text:
        raise ConfigError(f"--set expects key=value, got {text!r}")
    key, raw = text.split("=", 1)
    parts = key.strip().split(".")
    if not all(parts):
        raise ConfigError(f"--set has an empty key segment: {text!r}")
    try:
        value = yaml.safe_load(raw) if raw != "" else ""
    except (yaml.YAMLError, ValueError):  # e.g. "2024-13-45" looks like a date to YAML
        value = raw  # keep the text; validation says what is wrong with it
    nested: Any = _Replacing(value) if isinstance(value, dict) else value
    for part in reversed(parts):
        nested = {part: nested}
    return nested


def load_config(env: Optional[str] = None, dataset: Optional[str] = None,
                overrides: Optional[List[str]] = None, directory: Optional[Path] = None) -> Config:
    """Merge the YAML layers and overrides, validate, and fill run date / run id defaults."""
    directory = Path(directory) if directory else conf_dir()
    merged = _read_yaml(directory / "base.yaml")
    override_tree: dict = {}
    for text in overrides or []:
        override_tree = deep_merge(override_tree, parse_override(text))
    env = env or override_tree.get("env") or os.environ.get("NIGHTREC_ENV") or merged.get("env", "local")
    merged = deep_merge(merged, _read_yaml(directory / f"{env}.yaml"))
    merged["env"] = env
    dataset = dataset or override_tree.get("dataset_name") or merged.get("dataset_name", "ml-100k")
    merged = deep_merge(merged, {"dataset": _read_yaml(directory / "datasets" / f"{dataset}.yaml")})
    merged["dataset_name"] = dataset
    merged = deep_merge(merged, override_tree)
    cfg = build(Config, merged, "")
    _validate(cfg)
    _resolve_dataset_root(cfg.dataset)
    if not cfg.run.date:
        cfg.run.date = dt.datetime.now(dt.timezone.utc).date().isoformat()
    if not cfg.run.run_id:
        cfg.run.run_id = f"{cfg.run.date}-{uuid.uuid4().hex[:8]}"
    return cfg


def _resolve_dataset_root(dataset: DatasetConf) -> None:
    """Relative source paths are under ``dataset.root`` (pkg: paths and URIs are left alone)."""
    if not dataset.root:
        return
    for src in (dataset.interactions, dataset.items, dataset.users):
        if src is not None and src.path and not src.path.startswith("pkg:") and "://" not in src.path \
                and not os.path.isabs(src.path):
            src.path = join_path(dataset.root, src.path)


def build(cls, data: Any, path: str):
    """Build dataclass ``cls`` from ``data``, checking keys and types recursively."""
    if not isinstance(data, dict):
        raise ConfigError(f"{path or '<root>'}: expected a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigError(f"unknown config key(s) {', '.join(_join(path, k) for k in unknown)}; "
                          f"valid keys here: {', '.join(sorted(names))}")
    kwargs = {k: _coerce(hints[k], v, _join(path, k)) for k, v in data.items()}
    return cls(**kwargs)


def _flatten(mapping: dict, prefix: str = "") -> dict:
    flat = {}
    for key, value in mapping.items():
        name = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, dict):
            flat.update(_flatten(value, name))
        else:
            flat[name] = value
    return flat


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _coerce(tp, value, path):
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is typing.Union:  # Optional[X]
        if value is None:
            return None
        return _coerce([a for a in args if a is not type(None)][0], value, path)
    if dataclasses.is_dataclass(tp):
        return build(tp, value, path)
    if origin in (list, List):
        if not isinstance(value, list):
            raise ConfigError(f"{path}: expected a list, got {value!r}")
        return [_coerce(args[0], v, f"{path}[{i}]") for i, v in enumerate(value)]
    if origin in (dict, Dict):
        if not isinstance(value, dict):
            raise ConfigError(f"{path}: expected a mapping, got {value!r}")
        if args[1] in (str, int, float, bool):
            value = _flatten(value)  # --set spark.conf.spark.sql.x=1 arrives nested; keys have dots
        return {str(k): _coerce(args[1], v, f"{path}.{k}") for k, v in value.items()}
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tp is str and isinstance(value, (int, float, dt.date)) and not isinstance(value, bool):
        return str(value)  # e.g. spark conf values, or a date YAML parsed for us
    if tp in (int, float, bool, str) and (not isinstance(value, tp) or (tp is int and isinstance(value, bool))):
        raise ConfigError(f"{path}: expected {tp.__name__}, got {value!r} ({type(value).__name__})")
    return value


def _validate(cfg: Config) -> None:
    def need(cond, msg):
        if not cond:
            raise ConfigError(msg)

    need(cfg.storage.backend in ("auto", "spark", "delta-rs"), "storage.backend must be auto, spark or delta-rs")
    need(min(cfg.storage.rows_per_file, cfg.storage.compact_min_files, cfg.storage.target_file_mb) >= 1,
         "storage.rows_per_file, storage.compact_min_files and storage.target_file_mb must be >= 1")
    need(cfg.recommend.mode in ("evaluate", "production"), "recommend.mode must be evaluate or production")
    need(0 <= cfg.ingest.max_bad_ratio <= 1, "ingest.max_bad_ratio must be in [0, 1]")
    need(cfg.train.num_proc >= 1, "train.num_proc must be >= 1")
    need(cfg.gate.max_drop >= 0, "gate.max_drop must be >= 0")
    need(cfg.train.start_timeout_s >= 1, "train.start_timeout_s must be >= 1")
    need(cfg.train.warm_start_epochs >= 1, "train.warm_start_epochs must be >= 1")
    unknown_models = set(cfg.train.models) - set(MODEL_NAMES)
    need(not unknown_models, f"train.models: unknown model(s) {sorted(unknown_models)}; known: {MODEL_NAMES}")
    vae = cfg.train.multvae
    need(vae.kl_beta >= 0 and vae.kl_anneal_steps >= 1,
         "train.multvae.kl_beta must be >= 0 and train.multvae.kl_anneal_steps >= 1")
    need(0 <= vae.dropout < 1 and len(vae.hidden_units) >= 1 and vae.embedding_dim >= 1,
         "train.multvae needs dropout in [0, 1), at least one hidden_units layer and embedding_dim >= 1")
    dqn = cfg.train.dqn
    need(0 <= dqn.gamma < 1, "train.dqn.gamma must be in [0, 1)")
    need(dqn.horizon >= 1 and dqn.comparison_epochs >= 1 and dqn.comparison_negatives >= 0,
         "train.dqn.horizon and train.dqn.comparison_epochs must be >= 1, comparison_negatives >= 0")
    need(min(dqn.repeat_bonus, dqn.td_weight, dqn.cql_weight) >= 0,
         "train.dqn.repeat_bonus, td_weight and cql_weight must be >= 0")
    need(dqn.holdout_buckets >= 2, "train.dqn.holdout_buckets must be >= 2 (one bucket is held out)")
    need(cfg.features.history_length >= 1, "features.history_length must be >= 1")
    need(cfg.features.sequence_length >= 2, "features.sequence_length must be >= 2")
    need(cfg.recommend.k >= 1, "recommend.k must be >= 1")
    need(cfg.recommend.retrievers and all(n >= cfg.recommend.k for n in cfg.recommend.retrievers.values()),
         "recommend.retrievers must name at least one retriever, each with candidates >= recommend.k")
    need(0 < cfg.recommend.blend_grid_step <= 1, "recommend.blend_grid_step must be in (0, 1]")
    need(0 <= cfg.recommend.diversity <= 1,
         f"recommend.diversity (MMR lambda) must be in [0, 1], got {cfg.recommend.diversity}")
    unknown_explainers = [m for m in cfg.recommend.explain_with if m not in MODEL_NAMES]
    need(not unknown_explainers, f"recommend.explain_with: unknown model(s) {unknown_explainers}; known: {MODEL_NAMES}")
    for src_name in ("interactions", "items"):
        src = getattr(cfg.dataset, src_name)
        need(src.path, f"dataset.{src_name}.path is required (dataset adapter {cfg.dataset_name})")
    for src_name, src in (("interactions", cfg.dataset.interactions), ("items", cfg.dataset.items),
                          ("users", cfg.dataset.users)):
        if src is None:
            continue
        need(src.format in ("csv", "json", "parquet"), f"dataset.{src_name}.format must be csv, json or parquet")
        need(src.timestamp_format in ("epoch_seconds", "epoch_millis", "iso"),
             f"dataset.{src_name}.timestamp_format must be epoch_seconds, epoch_millis or iso")
    need(cfg.ingest.max_days_before_run_date >= 0 and cfg.ingest.max_days_after_run_date >= 0,
         "ingest.max_days_before_run_date and ingest.max_days_after_run_date must be >= 0")
    need(cfg.ingest.min_value is None or cfg.ingest.max_value is None
         or cfg.ingest.min_value <= cfg.ingest.max_value, "ingest.min_value must be <= ingest.max_value")
    if cfg.run.date:
        need(RUN_DATE_PATTERN.fullmatch(cfg.run.date) is not None,
             f"run.date must be YYYY-MM-DD (e.g. --run-date 2024-01-15), got {cfg.run.date!r}")
        try:
            dt.date.fromisoformat(cfg.run.date)
        except ValueError as exc:
            raise ConfigError(f"run.date must be YYYY-MM-DD and a calendar date, got {cfg.run.date!r} ({exc})") from exc


def add_common_args(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument("--env", help="environment conf (conf/<env>.yaml): local or cluster")
    parser.add_argument("--dataset", help="dataset adapter (conf/datasets/<name>.yaml)")
    parser.add_argument("--run-date", help="run date YYYY-MM-DD (default: today, UTC)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config key, e.g. --set train.num_proc=4 (repeatable)")
    return parser


def config_from_args(args: argparse.Namespace) -> Config:
    overrides = list(args.overrides)
    if args.run_date:
        overrides.append(f"run.date={args.run_date}")
    return load_config(env=args.env, dataset=args.dataset, overrides=overrides)
