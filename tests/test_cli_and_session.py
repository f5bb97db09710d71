import subprocess
import sys
from pathlib import Path

import pytest

from collm_udf.cli import main
from collm_udf.config import config_from_dict
from collm_udf.spark.stages import STAGES
from helpers import ROOT


def test_stages_listed_in_order(capsys):
    assert main(["stages"]) == 0
    assert capsys.readouterr().out.split() == list(STAGES)


def test_bad_conf_exits_2_with_message(tmp_path, capsys):
    p = tmp_path / "c.yaml"
    p.write_text("name: x\nunknown_section: 1\n")
    assert main(["run", "--conf", str(p)]) == 2
    assert "unknown key unknown_section" in capsys.readouterr().err


@pytest.mark.parametrize("stage", list(STAGES) + ["all"])
def test_every_job_file_has_help(stage):
    job = ROOT / "jobs" / f"{stage}.py"
    r = subprocess.run([sys.executable, str(job), "--help"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert "--conf" in r.stdout and "--ds" in r.stdout


def test_get_spark_uses_the_active_session_as_is(spark, tmp_path):
    from collm_udf.spark.session import get_spark

    cfg = config_from_dict({
        "name": "x", "tables": {"root": str(tmp_path)},
        "spark": {"master": "local[1]", "conf": {"spark.sql.shuffle.partitions": "123"}},
        "interactions": {"source": {"path": "/x"}, "columns": {"user": "u", "item": "i", "timestamp": "t",
                                                               "label": "y"}},
        "items": {"source": {"path": "/y"}, "columns": {"item": "i", "text": ["t"]}},
    })
    got = get_spark(cfg)
    assert got is spark
    assert spark.sparkContext.master == "local[2,2]"  # (conftest) a cluster's/notebook's session is never reconfigured
    assert spark.conf.get("spark.sql.shuffle.partitions") != "123"


@pytest.mark.slow
def test_stage_runs_under_spark_submit(slice_dir, tmp_path):
    """jobs/ingest.py under spark-submit: the launcher's session (master, Delta settings) is used as given."""
    import json
    import os

    import yaml

    from collm_udf.spark.session import delta_packages
    from helpers import slice_conf

    conf = tmp_path / "c.yaml"
    conf.write_text(yaml.safe_dump(slice_conf(slice_dir, tmp_path / "wh")))
    cmd = [str(Path(sys.executable).parent / "spark-submit"), "--master", "local[1]",
           "--packages", delta_packages(),
           "--conf", "spark.sql.extensions=io.delta.sql.DeltaSparkSessionExtension",
           "--conf", "spark.sql.catalog.spark_catalog=org.apache.spark.sql.delta.catalog.DeltaCatalog",
           "--conf", "spark.ui.enabled=false",
           str(ROOT / "jobs" / "ingest.py"), "--conf", str(conf), "--ds", "2026-01-15"]
    env = {**os.environ, "PYSPARK_PYTHON": sys.executable, "PYSPARK_DRIVER_PYTHON": sys.executable}
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=400, env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    summary = json.loads(r.stdout.strip().splitlines()[-1])
    assert summary["spark_master"] == "local[1]"
    assert summary["stages"]["ingest"]["interactions"] == len(__import__("pandas").read_parquet(
        slice_dir / "events.parquet"))
    assert (tmp_path / "wh" / "interactions" / "_delta_log").is_dir()
