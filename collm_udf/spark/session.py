"""The SparkSession a stage runs in.

On a cluster (spark-submit, a Databricks job or notebook) the session already exists or is configured by the
launcher: collm takes it as it is and never forces a master or Delta settings there. Only when nothing launched
Spark for us (a plain `python`/`collm` run on a laptop or in CI) do we build a local[*] session with Delta wired in
through configure_spark_with_delta_pip; its jars come from Maven Central through Ivy once and are then cached
(~/.ivy2.5.2).
"""
from __future__ import annotations

import contextlib
import logging
import os
import sys

from pyspark.sql import SparkSession

from collm_udf.config import Config

log = logging.getLogger(__name__)

# Small-machine defaults for a session we create; a conf's spark.conf overrides them.
LOCAL_DEFAULTS = {
    "spark.sql.shuffle.partitions": "4",
    "spark.default.parallelism": "4",
    "spark.databricks.delta.snapshotPartitions": "2",
    "spark.sql.session.timeZone": "UTC",
    "spark.sql.execution.arrow.pyspark.enabled": "true",
    "spark.ui.enabled": "false",
    "spark.ui.showConsoleProgress": "false",
    "spark.driver.memory": "4g",
    "spark.sql.extensions": "io.delta.sql.DeltaSparkSessionExtension",
    "spark.sql.catalog.spark_catalog": "org.apache.spark.sql.delta.catalog.DeltaCatalog",
}


def launched_by_spark() -> bool:
    """True under spark-submit / pyspark shell (the launcher hands Python a gateway) or with a live session."""
    return bool(os.environ.get("PYSPARK_GATEWAY_PORT")) or SparkSession.getActiveSession() is not None


def get_spark(cfg: Config, app_name: str = "collm") -> SparkSession:
    active = SparkSession.getActiveSession()
    if active is not None:
        spark = active
    elif launched_by_spark():
        spark = SparkSession.builder.appName(app_name).getOrCreate()
    else:
        spark = local_session(cfg.spark.master, cfg.spark.conf, app_name)
    set_checkpoint_dir(spark, cfg)
    return spark


def local_session(master: str = "local[*]", conf: dict | None = None, app_name: str = "collm") -> SparkSession:
    from delta import configure_spark_with_delta_pip

    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    # Python workers must run this interpreter (the venv with pandas/pyarrow/collm_udf), not `python3`.
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    builder = SparkSession.builder.master(master).appName(app_name)
    for k, v in {**LOCAL_DEFAULTS, **(conf or {})}.items():
        builder = builder.config(k, v)
    spark = configure_spark_with_delta_pip(builder).getOrCreate()
    spark.sparkContext.setLogLevel("ERROR")
    return spark


def delta_packages() -> str:
    """The Maven coordinate(s) of the Delta jars matching the installed delta-spark, as delta's own pip helper
    computes them (for spark-submit --packages)."""
    from delta import configure_spark_with_delta_pip

    builder = configure_spark_with_delta_pip(SparkSession.Builder())  # a builder starts no JVM
    return builder._options["spark.jars.packages"]


def set_checkpoint_dir(spark: SparkSession, cfg: Config) -> None:
    """ALS needs a checkpoint dir to cut its lineage (without one, long runs die of StackOverflowError)."""
    d = cfg.spark.checkpoint_dir
    if d is None and cfg.tables.root is not None:
        d = os.path.join(cfg.tables.root, "_checkpoints")
    if d is None:
        return  # catalog mode without a dir: the cluster's own setting (if any) stays
    try:
        if cfg.spark.checkpoint_dir is None and spark.sparkContext.getCheckpointDir():
            return  # the cluster already has one
        spark.sparkContext.setCheckpointDir(d)
    except Exception as e:  # Spark Connect sessions have no SparkContext
        log.warning("could not set checkpoint dir %s: %s", d, e)


@contextlib.contextmanager
def session_conf(spark: SparkSession, key: str, value: str):
    """Set a session setting while a block runs; the caller's session gets its value (or its absence) back."""
    old = spark.conf.get(key, None)
    spark.conf.set(key, value)
    try:
        yield
    finally:
        if old is None:
            spark.conf.unset(key)
        else:
            spark.conf.set(key, old)
