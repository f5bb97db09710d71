"""The command line without Spark: --help of every command and entry point (with examples, no pyspark import),
the --catalog/--schema/--models-dir overrides, and `collm report`'s options and wiring."""
from __future__ import annotations

import dataclasses
import subprocess
import sys

import pytest

from helpers import ROOT

from collm_udf import cli
from collm_udf.config import load_config
from collm_udf.spark.stages import STAGES

HEAVY = ("pyspark", "py4j", "torch", "transformers", "matplotlib")

# Runs a command's --help in a fresh interpreter, then lists the heavy modules it imported: --help must start
# no JVM (pyspark is what would start one) and load no model code.
PROBE = """
import runpy, sys
target, args = sys.argv[1], sys.argv[2:]
code = 0
try:
    if target.endswith(".py"):
        sys.argv = [target] + args
        runpy.run_path(target, run_name="__main__")
    else:
        from collm_udf.cli import main
        code = main(args)
except SystemExit as e:
    code = e.code
heavy = sorted({m.split(".")[0] for m in sys.modules} & set(%r))
print("HEAVY_MODULES=" + ",".join(heavy))
sys.exit(code)
""" % (HEAVY,)

HELP_CASES = [("collm", []), ("collm", ["run"]), ("collm", ["replay"]), ("collm", ["report"]),
              ("collm", ["stages"])] + \
    [(f"jobs/{s}.py", []) for s in (*STAGES, "all")]


@pytest.mark.parametrize("target,args", HELP_CASES, ids=[" ".join([t, *a]) for t, a in HELP_CASES])
def test_help_shows_an_example_and_imports_no_spark(target, args):
    path = str(ROOT / target) if target.endswith(".py") else target
    r = subprocess.run([sys.executable, "-c", PROBE, path, *args, "--help"], capture_output=True, text=True,
                       timeout=60, cwd=ROOT)
    assert r.returncode == 0, r.stderr
    out = r.stdout
    assert "HEAVY_MODULES=\n" in out, f"--help imported {out.split('HEAVY_MODULES=')[-1].strip()}"
    lines = out.splitlines()
    i = next((k for k, line in enumerate(lines) if line.strip().lower() in ("examples:", "example:")), None)
    assert i is not None, f"no examples section in:\n{out}"
    example = lines[i + 1].strip()
    command = "python jobs/" if target.endswith(".py") else "collm "
    assert example.startswith(command), f"first example {example!r} does not start with {command!r}"
    if target.endswith(".py"):
        assert "--conf" in out and "--ds" in out and "--catalog" in out and "--schema" in out


def test_stage_parser_maps_catalog_schema_and_models_dir_to_the_tables_section():
    args = cli.stage_parser("score").parse_args([
        "--conf", str(ROOT / "conf/databricks.yaml"), "--ds", "2026-11-27", "--catalog", "dev_cat",
        "--schema", "dev_schema", "--models-dir", "/Volumes/dev_cat/dev_schema/models"])
    cfg = load_config(args.conf, cli.conf_overrides(args))
    assert (cfg.tables.catalog, cfg.tables.schema, cfg.tables.models_dir) == \
        ("dev_cat", "dev_schema", "/Volumes/dev_cat/dev_schema/models")
    assert cli.conf_overrides(cli.stage_parser("ingest").parse_args(["--conf", "c.yaml"])) is None


def test_run_master_overrides_spark_master_and_keeps_the_conf_settings():
    args = cli.parser().parse_args(["run", "--conf", str(ROOT / "conf/local.yaml"), "--master", "spark://h:7077"])
    cfg = load_config(args.conf, cli.conf_overrides(args))
    assert cfg.spark.master == "spark://h:7077" and cfg.spark == dataclasses.replace(
        load_config(args.conf).spark, master="spark://h:7077")
    with pytest.raises(SystemExit):  # a spark-submit job takes spark-submit's --master, not its own
        cli.stage_parser("score").parse_args(["--conf", "c.yaml", "--master", "local[2]"])


@pytest.mark.parametrize("argv", [["--conf", "c.yaml", "--ds", "2026-02-30"], ["--conf", "c.yaml", "--cat", "x"],
                                  ["--ds", "2026-11-27"]])
def test_stage_parser_rejects_bad_dates_abbreviations_and_a_missing_conf(argv):
    with pytest.raises(SystemExit):
        cli.stage_parser("als").parse_args(argv)


def test_stage_parser_refuses_an_unknown_stage():
    with pytest.raises(ValueError, match="unknown stage"):
        cli.stage_parser("scoring")


def test_report_parser_accepts_its_options():
    a = cli.parser().parse_args(["report", "--conf", "conf/local.yaml", "--ds", "2026-11-27", "--out", "/tmp/r",
                                 "--root", "/tmp/wh"])
    assert (a.cmd, a.conf, a.ds, a.out, a.root) == ("report", "conf/local.yaml", "2026-11-27", "/tmp/r", "/tmp/wh")
    b = cli.parser().parse_args(["report", "--conf", "c.yaml", "--catalog", "main", "--schema", "recsys"])
    assert (b.catalog, b.schema, b.out, b.ds) == ("main", "recsys", None, None)
    with pytest.raises(SystemExit):
        cli.parser().parse_args(["report", "--conf", "c.yaml", "--stage", "score"])  # report has no stages


def test_report_with_a_bad_conf_exits_2_before_spark(tmp_path, capsys):
    p = tmp_path / "c.yaml"
    p.write_text("name: x\nunknown_section: 1\n")
    assert cli.main(["report", "--conf", str(p), "--ds", "2026-11-27"]) == 2
    assert "unknown key unknown_section" in capsys.readouterr().err


def test_report_calls_write_report_with_the_conf_tables_ds_and_out(tmp_path, monkeypatch, capsys):
    """The wiring only (the report itself is tested with its module): a stand-in session and write_report."""
    import collm_udf.spark.report_data as report_mod
    import collm_udf.spark.session as session_mod

    fake_spark = object()
    calls = []
    monkeypatch.setattr(session_mod, "get_spark", lambda cfg, app_name="collm": fake_spark)

    def fake_write_report(spark, cfg, tables, ds, out_dir):
        calls.append((spark, cfg.tables.root, tables.cfg.root, tables.spark, ds, out_dir))
        return str(tmp_path / "out" / "index.html")

    monkeypatch.setattr(report_mod, "write_report", fake_write_report)
    wh = tmp_path / "wh"
    assert cli.main(["report", "--conf", str(ROOT / "conf/local.yaml"), "--root", str(wh), "--ds", "2026-11-27",
                     "--out", str(tmp_path / "out")]) == 0
    assert calls == [(fake_spark, str(wh), str(wh), fake_spark, "2026-11-27", str(tmp_path / "out"))]
    assert capsys.readouterr().out.strip().splitlines()[-1] == str(tmp_path / "out" / "index.html")
