"""Typed run configuration, loaded from YAML (the conf layer: it builds the core's model description, and
imports neither pyspark nor anything above it).

Every section is a dataclass whose fields carry help text and are validated in __post_init__ (the peft
pattern). Loading goes further than peft: an unknown key anywhere is an error that names its dotted path and
the keys that are allowed, and every value is type-checked, so a typo in a scheduled job's conf fails at load
time instead of silently running with a default.

No value from a conf is ever evaluated or pasted into SQL: table names are checked against an identifier
pattern and stage filters are not offered at all.
"""

from __future__ import annotations

from collm_udf.config.base import ConfigError, check_identifier, check_table_name
from collm_udf.config.load import Config, config_from_dict, load_config, local_abspath, merge, to_dict
from collm_udf.config.model_conf import DistributedConfig, MlflowConfig, ModelConfig, TrainingConfig
from collm_udf.config.sections import (ALSConfig, AsOfConfig, CandidatesConfig, EvaluateConfig, GateConfig,
                                       PrepareConfig, ScoreConfig, SparkConfig, SplitConfig, TablesConfig,
                                       TempoConfig)
from collm_udf.config.sources import (InteractionColumns, InteractionsConfig, ItemColumns, ItemsConfig,
                                      SourceConfig, flag_name)

__all__ = ["ALSConfig", "AsOfConfig", "CandidatesConfig", "Config", "ConfigError", "DistributedConfig",
           "EvaluateConfig", "GateConfig", "InteractionColumns", "InteractionsConfig", "ItemColumns", "ItemsConfig",
           "MlflowConfig", "ModelConfig", "PrepareConfig", "ScoreConfig", "SourceConfig", "SparkConfig",
           "SplitConfig", "TablesConfig", "TempoConfig", "TrainingConfig", "check_identifier", "check_table_name",
           "config_from_dict", "flag_name", "load_config", "local_abspath", "merge", "to_dict"]
