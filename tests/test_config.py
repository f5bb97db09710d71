
import pytest

from helpers import ROOT
import yaml

from collm_udf.config import ConfigError, config_from_dict, load_config



def base() -> dict:
    return {
        "name": "t",
        "tables": {"root": "/tmp/wh"},
        "interactions": {"source": {"path": "/data/events", "format": "parquet"},
                         "columns": {"user": "u", "item": "i", "timestamp": "t", "rating": "r"}},
        "items": {"source": {"table": "main.shop.items"}, "columns": {"item": "i", "text": ["title"]}},
    }


@pytest.mark.parametrize("name", ["local.yaml", "example_warehouse.yaml", "databricks.yaml"])
def test_shipped_confs_load(name):
    cfg = load_config(ROOT / "conf" / name)
    assert cfg.name


def test_the_second_warehouse_conf_is_the_shipped_one_with_other_sources():
    """conf/ml-latest-small.yaml differs from conf/local.yaml in its name, tables and sources only: what depends on
    a warehouse's size and pace is derived from the data (tempo), not tuned per warehouse."""
    import dataclasses

    a, b = (dataclasses.asdict(load_config(ROOT / "conf" / n)) for n in ("local.yaml", "ml-latest-small.yaml"))
    own = ("name", "tables", "interactions", "items", "source_path")
    assert {k: v for k, v in a.items() if k not in own} == {k: v for k, v in b.items() if k not in own}
    assert a["tempo"]["enabled"] and a["interactions"] != b["interactions"]


def test_defaults_and_types():
    cfg = config_from_dict(base())
    assert cfg.prepare.like_threshold == 4.0 and cfg.prepare.split.test == 0.1
    assert cfg.als.implicit is False and cfg.candidates.top_k == 50
    # the production default: every run as of its day, judged by the week after it
    assert cfg.asof.mode == "daily" and cfg.evaluate.horizon_days == 7 and cfg.asof.label_window_days == 28


@pytest.mark.parametrize("patch, message", [
    ({"als": {"rnak": 8}}, "unknown key als.rnak"),
    ({"bogus": 1}, "unknown key bogus"),
    ({"als": {"rank": "8"}}, "als.rank: expected an integer"),
    ({"als": {"implicit": "yes"}}, "als.implicit: expected true/false"),
    ({"prepare": {"split": {"train": 0.5, "valid": 0.1, "test": 0.1}}}, "must sum to 1"),
    ({"tables": {"root": "/x", "schema": "s"}}, "set either 'root'"),
    ({"tables": {"schema": "bad-name", "models_dir": "/m"}}, "not a valid identifier"),
    ({"items": {"source": {"table": "main.shop; DROP TABLE x"}, "columns": {"item": "i", "text": ["t"]}}},
     "not a valid identifier"),
    ({"items": {"source": {"path": "/a", "table": "t"}, "columns": {"item": "i", "text": ["t"]}}},
     "exactly one of"),
    ({"score": {"scorer": "magic"}}, "score.scorer"),
    ({"score": {"scorer": "collm"}}, "needs a model section"),
    ({"score": {"scorer": "features"}}, "'features' needs a model section"),
    ({"score": {"scorer": "features"}, "model": {"signals": []}}, "'features' ranks by model.signals"),
    ({"score": {"fallback": "random"}}, "score.fallback: 'random' is not one of"),
    ({"gate": {"holdout_users": 1.0}}, r"gate.holdout_users: 1.0 is not in \(0, 1\)"),
    ({"gate": {"margin": -0.1}}, r"gate.margin: -0.1 is not in \[0, 1\)"),
    ({"gate": {"enabeld": False}}, "unknown key gate.enabeld"),
    ({"model": {"kind": "seq2seq"}}, "model.kind"),
    ({"model": {"train": {"lr": 0.1}}}, "unknown key model.train.lr"),
    ({"model": {"template": "{history} {candidate}"}}, "model.template: .*exactly once"),
    ({"model": {"backbone": "https://huggingface.co/x"}}, "must be a local directory"),
    ({"model": {"train": {"text_lr": "fast"}}}, "model.train.text_lr: expected a number"),
    ({"asof": {"mode": "weekly"}}, "asof.mode: 'weekly' is not daily or split"),
    ({"asof": {"mode": "split"}, "model": {"train": {"cf_negatives": 10}}}, "cf_negatives: 10 candidate-pool"),
    ({"asof": {"mode": "split"}, "model": {"train": {"cf_negatives": 0, "text_negatives": 5}}},
     "text_negatives: 5 candidate-pool"),
    ({"model": {"signals": ["als_dot"], "skip_segments": True}}, "skip_segments: .*add it to model.signals"),
    ({"model": {"signals": [], "lm_scale": True}}, "model.lm_scale: .*name model.signals"),
    ({"model": {"skip_hidden": 8, "train": {"skip_init": "features"}}}, "skip_init features: .*skip_hidden 0"),
    ({"model": {"train": {"skip_init": "ranker"}}}, "'ranker' is not logistic, refit, features or zero"),
    ({"model": {"train": {"ranker_fit": "per_user"}}}, "ranker_fit: 'per_user' is not pooled or within_user"),
    ({"items": {"source": {"table": "main.shop.items"}, "columns": {"item": "i", "text": ["t"], "flag_prefix": "g_",
                                                                     "flags": ["g_sci_fi", "sci_fi"]}}},
     r"items.columns.flags: .*'sci fi', 'sci fi'.* empty or repeated"),
    ({"asof": {"label_window_days": 0}}, "label_window_days must be >= 1"),
    ({"als": {"retrain_every_days": 0}}, "als.retrain_every_days must be >= 1"),
    ({"model": {"train": {"retrain_every_days": 0}}}, "retrain_every_days must be >= 1"),
    ({"model": {"train": {"pool_users": -1}}}, "pool_users >= 0"),
    ({"evaluate": {"horizon_days": 0}}, "horizon_days must be >= 1"),
    ({"candidates": {"popular_k": -1}}, "popular_k must be >= 0"),
])
def test_bad_values_name_the_key(patch, message):
    d = base()
    d.update(patch)
    with pytest.raises(ConfigError, match=message):
        config_from_dict(d)


def test_a_given_split_column_belongs_to_the_benchmark_mode():
    d = base()
    d["interactions"]["columns"]["split"] = "s"
    with pytest.raises(ConfigError, match="columns.split: a given split column is the benchmark mode's"):
        config_from_dict(d)
    d["asof"] = {"mode": "split"}
    assert config_from_dict(d).interactions.columns.split == "s"


def test_rating_target_needs_rating_column():
    d = base()
    d["interactions"]["columns"] = {"user": "u", "item": "i", "timestamp": "t", "label": "y"}
    d["als"] = {"target": "rating"}
    with pytest.raises(ConfigError, match="needs interactions.columns.rating"):
        config_from_dict(d)
    d["als"] = {"target": "label"}
    assert config_from_dict(d).als.target == "label"


def test_load_config_names_file_and_merges_overrides(tmp_path):
    p = tmp_path / "c.yaml"
    d = base()
    d["evaluate"] = {"k": 10, "typo": 1}
    p.write_text(yaml.safe_dump(d))
    with pytest.raises(ConfigError, match=r"c\.yaml: unknown key evaluate\.typo"):
        load_config(p)
    del d["evaluate"]
    p.write_text(yaml.safe_dump(d))
    cfg = load_config(p, {"tables": {"root": str(tmp_path / "wh")}})
    assert cfg.tables.root == str(tmp_path / "wh")


def test_implicit_als_target_is_the_mapped_count_and_impossible_combinations_are_refused():
    d = base()
    d["als"] = {"implicit": True}
    assert config_from_dict(d).als.target == "rating"  # a mapped rating (e.g. a listen count) weighs the fit
    d["als"] = {"implicit": True, "target": "label"}
    assert config_from_dict(d).als.target == "label"
    assert config_from_dict(base()).als.target == "label"  # explicit: the like label, as before
    for als, interactions, message in [
            ({"implicit": True, "alpha": 0.0}, {}, r"als\.alpha: implicit ALS with target rating .* alpha = 0"),
            ({"implicit": True}, {"rating_min": None}, r"interactions\.rating_min: .* must be >= 0"),
            ({"implicit": True}, {"rating_min": -1.0}, r"interactions\.rating_min: .* must be >= 0")]:
        d = base()
        d["als"] = als
        d["interactions"].update(interactions)
        with pytest.raises(ConfigError, match=message):
            config_from_dict(d)
    d = base()
    d["interactions"]["columns"] = {"user": "u", "item": "i", "timestamp": "t", "label": "y"}
    d["als"] = {"implicit": True, "target": "rating"}
    with pytest.raises(ConfigError, match="needs interactions.columns.rating"):
        config_from_dict(d)
    d["als"] = {"implicit": True}
    assert config_from_dict(d).als.target == "label"  # no rating column: the given label


def test_csv_modes_that_drop_rows_uncounted_are_refused():
    d = base()
    d["interactions"]["source"] = {"path": "/x.csv", "format": "csv", "options": {"mode": "dropMalformed"}}
    with pytest.raises(ConfigError, match="mode: DROPMALFORMED drops malformed CSV rows without counting them"):
        config_from_dict(d)
    d["interactions"]["source"]["options"] = {"mode": "FAILFAST"}
    assert config_from_dict(d).interactions.source.options == {"mode": "FAILFAST"}
